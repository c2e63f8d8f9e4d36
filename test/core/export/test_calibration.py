"""INT8 calibration reader: files, letterbox identical to inference, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from panoptic_depthlab_core.export.calibration import (
    DEFAULT_PAD_RGB,
    CalibrationDataReader,
    letterbox_rgb,
    list_calibration_images,
)


def _write_images(directory: Path, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (h, w) in enumerate(sizes):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 200  # red: checks the BGR->RGB swap
        rgb[: h // 2, :, 1] = 100
        cv2.imwrite(str(directory / f"img_{i:02d}.png"), rgb[:, :, ::-1])
        images.append(rgb)
    return images


def test_reader_letterboxes_and_batches(tmp_path: Path) -> None:
    _write_images(tmp_path / "calib", [(64, 128)] * 4 + [(100, 100)])
    (tmp_path / "calib" / "notes.txt").write_text("not an image")
    reader = CalibrationDataReader(tmp_path / "calib", (32, 64), batch_size=2)
    assert len(reader.files) == 5 and len(reader) == 2  # trailing partial batch dropped
    batches = list(reader)
    assert [b.shape for b in batches] == [(2, 3, 32, 64)] * 2
    assert all(b.dtype == np.float32 for b in batches)
    assert np.allclose(batches[0][:, 0], 200)  # channel 0 is red
    assert np.allclose(batches[0][:, 1, :15], 100) and np.allclose(
        batches[0][:, 1, 17:], 0
    )  # edge row blurred


def test_reader_matches_inference_letterbox_including_padding(tmp_path: Path) -> None:
    (image,) = _write_images(tmp_path / "c", [(100, 100)])
    reader = CalibrationDataReader(tmp_path / "c", (32, 64))
    batch = next(iter(reader))
    expected, (vh, vw) = letterbox_rgb(image, (32, 64))
    assert (vh, vw) == (32, 32)
    np.testing.assert_allclose(batch, expected.numpy())
    pad = batch[0, :, :, 32:]
    np.testing.assert_allclose(
        pad, np.broadcast_to(np.array(DEFAULT_PAD_RGB, np.float32)[:, None, None], pad.shape)
    )


def test_get_next_protocol_and_rewind(tmp_path: Path) -> None:
    _write_images(tmp_path / "c", [(32, 64)] * 3)
    reader = CalibrationDataReader(tmp_path / "c", (32, 64))
    feeds = [reader.get_next() for _ in range(4)]
    assert [f is None for f in feeds] == [False, False, False, True]
    assert set(feeds[0]) == {"images"}
    reader.rewind()
    assert reader.get_next() is not None


def test_max_images_spreads_over_the_set(tmp_path: Path) -> None:
    _write_images(tmp_path / "c", [(16, 16)] * 10)
    files = list_calibration_images(tmp_path / "c", max_images=3)
    assert [f.name for f in files] == ["img_00.png", "img_04.png", "img_09.png"]


def test_bad_calibration_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        CalibrationDataReader(tmp_path / "missing", (32, 64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no calibration images"):
        CalibrationDataReader(tmp_path / "empty", (32, 64))
    _write_images(tmp_path / "one", [(16, 16)])
    with pytest.raises(ValueError, match="fewer than one batch"):
        CalibrationDataReader(tmp_path / "one", (32, 64), batch_size=4)
    with pytest.raises(ValueError, match=">= 1"):
        list_calibration_images(tmp_path / "one", max_images=0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        next(iter(CalibrationDataReader(tmp_path / "bad", (32, 64))))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        letterbox_rgb(np.zeros((4, 4), np.uint8), (32, 64))


def test_fingerprint_follows_the_calibration_data(tmp_path: Path) -> None:
    from panoptic_depthlab_core.export.calibration import CalibrationDataReader

    root = tmp_path / "calib"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(root / f"img{i}.png"), rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    base = CalibrationDataReader(root, (32, 64)).fingerprint()
    assert CalibrationDataReader(root, (32, 64)).fingerprint() == base  # deterministic
    assert CalibrationDataReader(root, (64, 128)).fingerprint() != base  # other network input
    assert CalibrationDataReader(root, (32, 64), max_images=2).fingerprint() != base  # other subset
    cv2.imwrite(str(root / "img1.png"), rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    assert CalibrationDataReader(root, (32, 64)).fingerprint() != base  # same names, new pixels


def test_calibration_cache_is_reused_only_for_its_own_calibration(tmp_path: Path) -> None:
    import hashlib

    from panoptic_depthlab_core.export.calibration import (
        cached_calibration_id,
        calibration_id,
        reusable_calibration_cache,
        write_calibration_record,
    )

    cache = tmp_path / "model.calib"
    assert cached_calibration_id(cache) is None
    assert reusable_calibration_cache(cache, None) is None
    cache.write_bytes(b"TRT-8601-MinMaxCalibration\nimages: 3c010a14\n")
    # a cache without a record (brought from elsewhere) is identified by its bytes
    assert cached_calibration_id(cache) == hashlib.sha256(cache.read_bytes()).hexdigest()
    first = calibration_id("f" * 64, "minmax")
    assert first != calibration_id("f" * 64, "entropy") != calibration_id("e" * 64, "minmax")
    write_calibration_record(cache, first)
    assert cached_calibration_id(cache) == first
    assert reusable_calibration_cache(cache, first) == cache.read_bytes()
    assert reusable_calibration_cache(cache, None) == cache.read_bytes()  # no images: the cache is it
    assert reusable_calibration_cache(cache, calibration_id("e" * 64, "minmax")) is None  # new images
