"""Sequence evaluation: exact GT through the tracker scores perfectly on the association metrics and
the velocity error; ``eval --sequences`` end to end on a ``synth --sequence`` data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from panoptic_depthlab_core.cli import main
from panoptic_depthlab_core.eval.sequence_eval import (
    SequenceMetrics,
    drive_sequence,
    load_sequences,
    read_sequence_frames,
)
from panoptic_depthlab_core.results import FrameResult
from panoptic_depthlab_core.segments import compute_segments
from panoptic_depthlab_core.tracking import Tracker


def test_ground_truth_as_prediction_tracks_perfectly() -> None:
    metrics = SequenceMetrics()
    for name, seed in (("a", 31), ("b", 32)):
        metrics.begin(name)
        tracker = Tracker()
        for frame in drive_sequence(seed, 12, (128, 256)):
            segments = compute_segments(frame.gt_panoptic, frame.gt_depth_m, K=frame.K)
            result = FrameResult(frame.gt_panoptic, None, frame.gt_depth_m, segments, K=frame.K)
            tracking = tracker.update(result, frame.stamp_s, "camera")
            lut = np.zeros(tracking.id_lut.size, np.int64)
            tracks, distances = {}, {}
            for seg, state in zip(segments, tracking.tracks, strict=True):
                if state is not None:
                    lut[seg.id] = state.track_id
                    tracks[state.track_id] = state
                    distances[state.track_id] = {"decoder": seg.distance_m, "ground": np.nan,
                                                 "ground_reliable": False, "published": seg.distance_m,
                                                 "source": "depth"}
            track_map = np.take(lut, frame.gt_panoptic, mode="wrap")
            metrics.add(frame, track_map, tracking.remap_ids(frame.gt_panoptic), tracks, distances)
    out = metrics.result()
    t = out["tracking"]
    assert t["DetA"] == pytest.approx(1.0) and t["LocA"] == pytest.approx(1.0)
    assert t["AssA"] > 0.97 and t["IDF1"] > 0.97 and t["IDSW"] <= 1
    assert out["video_panoptic"]["SQ"] == pytest.approx(1.0)
    assert out["video_panoptic"]["AQ"] > 0.9
    assert out["distance"]["within_40m"]["published"]["median_rel_error"] == pytest.approx(0.0, abs=1e-6)
    if out["velocity"]["samples"]:
        assert out["velocity"]["median_error_mps"] < 1.0


def test_eval_sequences_cli_on_a_synth_sequence_data_set(tmp_path, capsys) -> None:
    data = tmp_path / "drives"
    assert main(["synth", "--out", str(data), "--num", "3", "--size", "128x256", "--sequence", "--sequences", "2",
                 "--seed", "40", "--split", "val", "--quiet"]) == 0
    drives = load_sequences(data, "val")
    assert [n for n, _ in drives] == ["synthville_000000", "synthville_000001"]
    frames = list(read_sequence_frames(data, "val", drives[0][1]))
    assert [f.stamp_s for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert frames[0].motion is not None and frames[0].mount is not None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["eval", "--sequences", "--data", str(data), "--split", "val", "--out", str(tmp_path / "out"),
                     "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads((tmp_path / "out" / "sequence_metrics.json").read_text())
    assert summary["sequences"] == 2 and summary["frames"] == 6
    assert 0.0 <= summary["tracking"]["HOTA"] <= 1.0
    assert summary["run"]["depth_decoder_trained"] is True
    assert (tmp_path / "out" / "sequence_metrics.md").read_text().startswith("# Sequence evaluation")
    missing = tmp_path / "nothing"
    missing.mkdir()
    capsys.readouterr()
    assert main(["eval", "--sequences", "--data", str(missing), "--out", str(tmp_path / "o2"), "--quiet"]) != 0
    assert "synth --sequence" in capsys.readouterr().err
