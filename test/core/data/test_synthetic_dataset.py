"""The generator's Cityscapes-layout output: bytes, files, disparity, panoptic GT, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from panoptic_depthlab_core.data.cityscapes import (
    find_records,
    read_camera,
    read_depth,
    read_disparity,
    read_image,
    read_instance_ids,
    read_label_ids,
    read_panoptic_png,
)
from panoptic_depthlab_core.data.synthetic import cli, render_frame, write_dataset

SIZE = (64, 128)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_the_same_bytes(tmp_path):
    write_dataset(tmp_path / "a", 2, SIZE, seed=1, split="val")
    write_dataset(tmp_path / "b", 2, SIZE, seed=1, split="val")
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert len(a) == 2 * 5 + 3  # 5 files per frame + panoptic json + 2 panoptic pngs
    assert a == b
    write_dataset(tmp_path / "c", 2, SIZE, seed=2, split="val")
    assert _tree(tmp_path / "c") != a


def test_layout_is_cityscapes_and_every_file_decodes(synthetic_root):
    records = find_records(synthetic_root, "train")
    assert [r.image_id for r in records] == [f"synthville_{i:06d}_000019" for i in range(4)]
    for rec in records:
        assert (
            rec.image_path
            == synthetic_root / "leftImg8bit/train/synthville" / f"{rec.image_id}_leftImg8bit.png"
        )
        img = read_image(rec.image_path)
        assert img.shape == (128, 256, 3) and img.dtype == np.uint8
        assert read_label_ids(rec.label_ids_path).shape == (128, 256)
        assert read_instance_ids(rec.instance_ids_path).shape == (128, 256)
        assert read_disparity(rec.disparity_path).dtype == np.uint16
        cam = read_camera(rec.camera_path)
        assert 0.19 < cam.baseline < 0.23
        assert cam.fx == pytest.approx(2262.52 * 256 / 2048, rel=0.05)
        assert read_panoptic_png(rec.panoptic_path).shape == (128, 256)
    cam_json = json.loads(records[0].camera_path.read_text())
    assert set(cam_json["extrinsic"]) >= {"baseline", "pitch", "roll", "yaw", "x", "y", "z"}
    assert set(cam_json["intrinsic"]) == {"fx", "fy", "u0", "v0"}


def test_depth_decoded_from_disparity_equals_exact_depth_within_quantisation(synthetic_root):
    for rec, index in zip(find_records(synthetic_root, "train"), range(4), strict=True):
        frame = render_frame(7, index, (128, 256))
        depth, valid = read_depth(rec)
        exact = frame.depth_m
        np.testing.assert_array_equal(valid, np.isfinite(exact))
        bf = frame.camera.baseline * frame.camera.fx
        cam = read_camera(rec.camera_path)
        # the camera JSON is rounded to 1e-6; disparity is rounded to 1/256 px
        disp_err = np.abs(cam.baseline * cam.fx / depth[valid] - bf / exact[valid])
        assert disp_err.max() <= 0.5 / 256 + 1e-4
        rel = np.abs(depth[valid] - exact[valid]) / exact[valid]
        # at z, one half quantisation step is z * (0.5/256) / d
        bound = (0.5 / 256 + 1e-4) * exact[valid] / bf * 1.01
        assert (rel <= bound).all()
        assert (depth[~valid] == 0).all()


def test_panoptic_gt_is_cityscapesscripts_own_and_its_evaluation_reads_it(synthetic_root, tmp_path):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    gt_json = synthetic_root / "gtFine" / "cityscapes_panoptic_train.json"
    data = json.loads(gt_json.read_text())
    assert {c["id"] for c in data["categories"]} >= {7, 24, 26}  # label ids, not train ids
    rec = find_records(synthetic_root, "train")[0]
    pan = read_panoptic_png(rec.panoptic_path)
    inst = read_instance_ids(rec.instance_ids_path)
    kept = pan > 0
    np.testing.assert_array_equal(pan[kept], inst[kept])  # id = R + 256 G + 256^2 B = instanceIds
    assert set(np.unique(inst[~kept]).tolist()) <= {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30}
    # prediction = ground truth must give PQ 100 with the official evaluation
    results = evaluatePanoptic(str(gt_json), str(gt_json.with_suffix("")), str(gt_json),
                               str(gt_json.with_suffix("")), str(tmp_path / "pq.json"))  # fmt: skip
    assert results["All"]["pq"] == pytest.approx(1.0)
    assert results["All"]["n"] >= 10


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_a_sequence(tmp_path, capsys):
    args = _parse(["--out", str(tmp_path), "--num", "3", "--size", "32x64", "--seed", "2", "--split", "val",
                   "--sequence", "--quiet"])  # fmt: skip
    assert cli.run(args) == 0
    ids = [r.image_id for r in find_records(tmp_path, "val")]
    assert ids == [f"synthville_000000_{i:06d}" for i in range(3)]


def test_cli_rejects_bad_size():
    with pytest.raises(SystemExit):
        _parse(["--out", "x", "--num", "1", "--size", "big"])
    with pytest.raises(ValueError, match="num"):
        write_dataset("unused", 0)
