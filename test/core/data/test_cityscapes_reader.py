"""Reading Cityscapes-format files: depth from disparity, GT encoding, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from panoptic_depthlab_core.data.cityscapes import (
    CameraCalibration,
    disparity_to_depth,
    find_records,
    load_gt,
    read_camera,
    read_image,
)
from panoptic_depthlab_core.data.loader import DataConfig, PanopticDepthDataset
from panoptic_depthlab_core.data.synthetic import SyntheticFrame, create_panoptic, write_frame
from panoptic_depthlab_core.data.synthetic.camera import CameraParams

H, W = 40, 60


def _hand_frame(depth_m: np.ndarray | None = None) -> SyntheticFrame:
    """Road, a car (26000), a second car (26001), a crowd of persons (bare 24), a void strip (0)."""
    labels = np.full((H, W), 7, np.uint8)
    inst = np.full((H, W), 7, np.int32)
    labels[5:15, 5:20], inst[5:15, 5:20] = 26, 26000
    labels[20:30, 30:50], inst[20:30, 30:50] = 26, 26001
    labels[2:8, 40:55], inst[2:8, 40:55] = 24, 24  # crowd: no instance
    labels[:, :2], inst[:, :2] = 0, 0  # unlabeled
    cam = CameraParams(W, H, 66.0, 66.0, 30.0, 20.0, 0.21, 1.4, 0.0)
    if depth_m is None:
        depth_m = np.linspace(3.0, 50.0, H * W, dtype=np.float32).reshape(H, W)
    rgb = np.zeros((H, W, 3), np.uint8)
    return SyntheticFrame(rgb, labels, inst, depth_m, cam, 0, 0.0, np.eye(4))


def _write(root, frame, split="val"):
    write_frame(root, split, "hand", 1, 19, frame)
    create_panoptic(root, split)
    return find_records(root, split)[0]


def test_disparity_decoding_rules():
    cam = CameraCalibration(baseline=0.2, fx=1000.0, fy=1000.0, u0=0, v0=0)
    p = np.array([[0, 1, 257, 2 * 256 + 1, 65535]], np.uint16)
    depth, valid = disparity_to_depth(p, cam)
    np.testing.assert_array_equal(valid, [[False, False, True, True, True]])
    np.testing.assert_allclose(depth[0, 2:], [200.0, 100.0, 200.0 * 256 / 65534], rtol=1e-6)
    assert depth[0, 0] == 0 and depth[0, 1] == 0  # p <= 1 is invalid, never a cap value
    depth, valid = disparity_to_depth(p, cam, max_depth_m=150.0)
    np.testing.assert_array_equal(valid, [[False, False, False, True, True]])
    assert depth[0, 2] == 0


def test_load_gt_uses_the_model_encoding_with_crowd_and_void(tmp_path):
    frame = _hand_frame()
    gt = load_gt(_write(tmp_path, frame))
    assert gt.panoptic[10, 10] == 13 * 1000 + 1  # car k=0 -> instance 1
    assert gt.panoptic[25, 40] == 13 * 1000 + 2
    assert gt.panoptic[4, 45] == 11 * 1000 + 0  # crowd persons: class kept, instance 0
    assert gt.panoptic[35, 10] == 0 * 1000  # road (stuff)
    assert (gt.panoptic[:, :2] == -1).all()  # void
    assert gt.semantic[4, 45] == 11 and gt.semantic[0, 0] == 255
    crowd = [s for s in gt.segments if s.iscrowd]
    assert [(s.id, s.train_id) for s in crowd] == [(24, 11)]
    finite = np.isfinite(gt.depth_m)
    assert finite.all()
    np.testing.assert_allclose(gt.depth_m, frame.depth_m, rtol=0.5 / 256 * 50.0 / (0.21 * 66.0) * 1.01)
    capped = load_gt(_write(tmp_path / "c", frame), max_depth_m=20.0).depth_m
    assert np.isnan(capped[frame.depth_m > 20.1]).all()


def test_no_valid_disparity_gives_zero_depth_weight_and_no_nan(tmp_path):
    depth = np.full((H, W), np.nan, np.float32)  # -> disparity 0 everywhere
    _write(tmp_path, _hand_frame(depth))
    ds = PanopticDepthDataset(DataConfig(root=str(tmp_path), split="val", crop_size=(32, 48)))
    for key in (0, (0, 123)):
        item = ds[key]
        assert not item["depth_valid"].any()
        assert (item["depth"] == 0).all()
        for name in ("depth", "center", "offset", "sem_seg_weights"):
            assert not item[name].isnan().any()


def test_missing_files_name_the_path(synthetic_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    victim = next((root / "disparity" / "train").rglob("*_disparity.png"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=str(victim)):
        find_records(root, "train")
    (root / "gtFine" / "cityscapes_panoptic_val.json").unlink()
    with pytest.raises(FileNotFoundError, match="cityscapes_panoptic_val.json"):
        find_records(root, "val")
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        find_records(root, "test")


def test_corrupt_files_name_the_path(synthetic_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    rec = find_records(root, "val")[0]
    rec.image_path.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=str(rec.image_path)):
        read_image(rec.image_path)
    ds = PanopticDepthDataset(DataConfig(root=str(root), split="val", crop_size=(32, 48)))
    with pytest.raises(ValueError, match=str(rec.image_path)):
        ds[0]
    rec.camera_path.write_text('{"extrinsic": {}}')
    with pytest.raises(ValueError, match=str(rec.camera_path)):
        read_camera(rec.camera_path)
    # an 8-bit disparity is not Cityscapes disparity
    import cv2

    rec2 = find_records(root, "val")[1]
    cv2.imwrite(str(rec2.disparity_path), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=str(rec2.disparity_path)):
        ds[1]
    # panoptic json with garbage
    (root / "gtFine" / "cityscapes_panoptic_train.json").write_text("{not json")
    with pytest.raises(ValueError, match="cityscapes_panoptic_train.json"):
        find_records(root, "train")
