"""Tracking and video panoptic metrics: HOTA/IDF1/MOTA against TrackEval (the HOTA authors' code)
on the same sequences, plus textbook cases and STQ by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_depthlab_core.eval.tracking_metrics import (
    FrameMatchData,
    STQAccumulator,
    clear_mot,
    frame_overlaps,
    hota,
    identity,
    tracking_scores,
)


def _random_sequence(rng: np.random.Generator, frames: int = 25, objects: int = 6, size=(60, 90)):
    """GT boxes moving across an id map; predictions with misses, false positives, jitter and id swaps."""
    h, w = size
    start = rng.uniform([0, 0], [h - 15, w - 15], (objects, 2))
    vel = rng.uniform(-1.5, 1.5, (objects, 2))
    dims = rng.integers(6, 15, (objects, 2))
    pred_id = np.arange(1, objects + 1) + 100
    out = []
    for t in range(frames):
        gt = np.zeros(size, np.int64)
        pr = np.zeros(size, np.int64)
        if rng.random() < 0.15:  # an identity switch between two predicted tracks
            i, j = rng.choice(objects, 2, replace=False)
            pred_id[[i, j]] = pred_id[[j, i]]
        if rng.random() < 0.1:  # a fresh id for one object (fragmentation)
            pred_id[rng.integers(objects)] = 1000 + t
        for k in range(objects):
            y, x = (start[k] + vel[k] * t).astype(int)
            y, x = np.clip(y, 0, h - 2), np.clip(x, 0, w - 2)
            dh, dw = dims[k]
            gt[y:y + dh, x:x + dw] = k + 1
            if rng.random() < 0.85:  # detected, with jitter
                jy, jx = rng.integers(-3, 4, 2)
                pr[max(y + jy, 0):y + jy + dh, max(x + jx, 0):x + jx + dw] = pred_id[k]
        if rng.random() < 0.3:  # a false positive
            y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
            pr[y:y + 5, x:x + 5] = 5000 + t
        out.append(frame_overlaps(gt, pr))
    return out


def _trackeval_data(frames: list[FrameMatchData]) -> dict:
    g_all = np.unique(np.concatenate([f.gt_ids for f in frames]))
    p_all = np.unique(np.concatenate([f.pred_ids for f in frames]))
    return {
        "num_gt_ids": len(g_all),
        "num_tracker_ids": len(p_all),
        "num_gt_dets": sum(len(f.gt_ids) for f in frames),
        "num_tracker_dets": sum(len(f.pred_ids) for f in frames),
        "num_timesteps": len(frames),
        "gt_ids": [np.searchsorted(g_all, f.gt_ids) for f in frames],
        "tracker_ids": [np.searchsorted(p_all, f.pred_ids) for f in frames],
        "similarity_scores": [f.similarity for f in frames],
        "seq": "s",
    }


def test_hota_idf1_mota_equal_trackeval_on_the_same_sequences() -> None:
    metrics = pytest.importorskip("trackeval.metrics")
    rng = np.random.default_rng(0)
    sequences = [_random_sequence(rng) for _ in range(3)]
    te_hota, te_id, te_clear = metrics.HOTA(), metrics.Identity(), metrics.CLEAR()
    per_seq = {}
    for n, frames in enumerate(sequences):
        data = _trackeval_data(frames)
        ref = {"HOTA": te_hota.eval_sequence(data), "Identity": te_id.eval_sequence(data),
               "CLEAR": te_clear.eval_sequence(data)}
        per_seq[f"s{n}"] = ref
        ours_h, ours_i, ours_c = hota(frames), identity(frames), clear_mot(frames)
        assert ours_h["HOTA"] == pytest.approx(float(np.mean(ref["HOTA"]["HOTA"])), abs=1e-12)
        assert ours_h["DetA"] == pytest.approx(float(np.mean(ref["HOTA"]["DetA"])), abs=1e-12)
        assert ours_h["AssA"] == pytest.approx(float(np.mean(ref["HOTA"]["AssA"])), abs=1e-12)
        assert ours_h["LocA"] == pytest.approx(float(np.mean(ref["HOTA"]["LocA"])), abs=1e-12)
        assert ours_i["IDF1"] == pytest.approx(ref["Identity"]["IDF1"], abs=1e-12)
        assert ours_c["MOTA"] == pytest.approx(ref["CLEAR"]["MOTA"], abs=1e-12)
        assert ours_c["IDSW"] == ref["CLEAR"]["IDSW"]
    combined_hota = te_hota.combine_sequences({k: v["HOTA"] for k, v in per_seq.items()})
    combined_id = te_id.combine_sequences({k: v["Identity"] for k, v in per_seq.items()})
    combined_clear = te_clear.combine_sequences({k: v["CLEAR"] for k, v in per_seq.items()})
    ours = tracking_scores(sequences)
    assert ours.HOTA == pytest.approx(float(np.mean(combined_hota["HOTA"])), abs=1e-12)
    assert ours.AssA == pytest.approx(float(np.mean(combined_hota["AssA"])), abs=1e-12)
    assert ours.DetA == pytest.approx(float(np.mean(combined_hota["DetA"])), abs=1e-12)
    assert ours.IDF1 == pytest.approx(combined_id["IDF1"], abs=1e-12)
    assert ours.MOTA == pytest.approx(combined_clear["MOTA"], abs=1e-12)
    assert 0.2 < ours.HOTA < 0.95  # a sequence with errors of every kind: neither trivial nor empty


def _frames(pairs):
    """[(gt ids, pred ids, similarity)] -> FrameMatchData list."""
    return [FrameMatchData(np.array(g), np.array(p), np.array(s, dtype=float).reshape(len(g), len(p)))
            for g, p, s in pairs]


def test_textbook_cases() -> None:
    # perfect tracking of one object over 4 frames: every metric 1
    perfect = _frames([([1], [7], [[1.0]])] * 4)
    assert hota(perfect)["HOTA"] == pytest.approx(1.0)
    assert identity(perfect)["IDF1"] == 1.0 and clear_mot(perfect)["MOTA"] == 1.0
    # one object, the tracker switches id halfway: detection perfect, association halved
    switch = _frames([([1], [7], [[1.0]])] * 2 + [([1], [8], [[1.0]])] * 2)
    h = hota(switch)
    assert h["DetA"] == pytest.approx(1.0)
    assert h["AssA"] == pytest.approx(0.5)  # each TP: |TPA| 2 / (2 + 2 FNA + 0 FPA)
    assert h["HOTA"] == pytest.approx(math.sqrt(0.5))
    assert identity(switch)["IDF1"] == pytest.approx(0.5)  # IDTP 2 of 4 GT and 4 predicted
    c = clear_mot(switch)
    assert c["IDSW"] == 1 and c["MOTA"] == pytest.approx(0.75)
    # a missed half: DetA 2 / 4; AssA counts the GT track's unmatched frames as FNA too (2 / 4)
    missed = _frames([([1], [7], [[1.0]])] * 2 + [([1], [], [])] * 2)
    h = hota(missed)
    assert h["AssA"] == pytest.approx(0.5) and h["DetA"] == pytest.approx(0.5)
    # a false positive beside a perfectly tracked object changes DetA only
    fp = _frames([([1], [7, 9], [[1.0, 0.0]])] * 4)
    h = hota(fp)
    assert h["AssA"] == pytest.approx(1.0) and h["DetA"] == pytest.approx(4 / 8)


def test_frame_overlaps_is_mask_iou() -> None:
    gt = np.zeros((4, 6), np.int64)
    pr = np.zeros((4, 6), np.int64)
    gt[:, :3] = 1
    pr[:, 1:4] = 9
    f = frame_overlaps(gt, pr)
    assert f.gt_ids.tolist() == [1] and f.pred_ids.tolist() == [9]
    assert f.similarity[0, 0] == pytest.approx(8 / 16)  # 2 shared columns of 4 rows / 4 columns


def test_stq_by_hand() -> None:
    # one class (car, train id 13) thing tube over two frames; the prediction splits it in two ids
    acc = STQAccumulator()
    gt = np.full((2, 4), 0, np.int64)  # road elsewhere
    gt[:, :2] = 13001
    pr = gt.copy()
    acc.update(gt, np.where(gt == 13001, 13005, gt), "a")
    acc.update(gt, np.where(gt == 13001, 13006, gt), "a")
    r = acc.result()
    assert r["SQ"] == pytest.approx(1.0)  # every pixel's class right
    # |g| = 8; each predicted tube: TPA 4, IoU 4/8 -> AQ = (4*0.5 + 4*0.5) / 8 = 0.5
    assert r["AQ"] == pytest.approx(0.5)
    assert r["STQ"] == pytest.approx(math.sqrt(0.5))
    del pr
