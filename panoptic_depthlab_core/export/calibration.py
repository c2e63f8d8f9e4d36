"""INT8 calibration data: images from a directory, letterboxed exactly as the Predictor does.

Calibration must see what the network sees at run time, so the same letterbox (aspect kept,
bilinear with antialias, bottom/right padding with the pixel mean) is applied; otherwise the
activation ranges TensorRT measures are those of a different input distribution.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..preprocess import DEFAULT_PAD_RGB, letterbox_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def list_calibration_images(directory: str | Path, max_images: int | None = None) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted so runs are reproducible)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"calibration image directory not found: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no calibration images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"calibration image count must be >= 1, got {max_images}")
        if len(files) > max_images:
            # Spread the pick over the whole (sorted) set rather than taking the first sequence.
            idx = np.linspace(0, len(files) - 1, max_images).round().astype(int)
            files = [files[i] for i in idx]
    return files


def read_rgb(path: str | Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path} (unsupported or corrupt)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


class CalibrationDataReader:
    """Iterates float32 NCHW numpy batches (RGB 0-255) for a fixed network input size.

    Usable as TensorRT calibrator input and as ONNX Runtime's quantization ``CalibrationDataReader``
    (``get_next()`` returns ``{"images": batch}`` then ``None``).
    """

    def __init__(
        self,
        directory: str | Path,
        input_hw: tuple[int, int],
        batch_size: int = 1,
        max_images: int | None = None,
        pad_rgb: tuple[float, float, float] = DEFAULT_PAD_RGB,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.files = list_calibration_images(directory, max_images)
        if len(self.files) < batch_size:
            raise ValueError(
                f"{len(self.files)} calibration image(s) under {directory}, fewer than one batch "
                f"of {batch_size}"
            )
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.batch_size = batch_size
        self.pad_rgb = pad_rgb
        self._iter: Iterator[np.ndarray] | None = None

    def __len__(self) -> int:
        """Number of full batches (a trailing partial batch is dropped: engines have a fixed batch)."""
        return len(self.files) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = [
                letterbox_rgb(read_rgb(p), self.input_hw, self.pad_rgb)[0]
                for p in self.files[start : start + self.batch_size]
            ]
            yield torch.cat(batch).numpy()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self)
        batch = next(self._iter, None)
        return None if batch is None else {"images": batch}

    def rewind(self) -> None:
        self._iter = None

    def fingerprint(self) -> str:
        """sha256 over what the calibration sees: every image's bytes (in order), the input size,
        batch size and padding. Different data -> a different INT8 calibration and engine."""
        h = hashlib.sha256()
        h.update(json.dumps([list(self.input_hw), self.batch_size, list(self.pad_rgb)]).encode())
        for path in self.files[: len(self) * self.batch_size]:
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


# ------------------------------------------------------------------------------ calibration cache
# TensorRT's calibration cache holds the INT8 scales. Beside it, ``<cache>.json`` records which
# calibration produced them, so new calibration images are never silently answered from an old cache
# and an engine rebuilt from the cache alone gets the same engine-cache key as the one built from data.


def calibration_id(data_fingerprint: str, calibrator: str) -> str:
    """The identity of one calibration: its data and the calibrator algorithm."""
    return hashlib.sha256(f"{calibrator}|{data_fingerprint}".encode()).hexdigest()


def _cache_sidecar(cache_path: str | Path) -> Path:
    return Path(str(cache_path) + ".json")


def cached_calibration_id(cache_path: str | Path) -> str | None:
    """The calibration id recorded for an existing cache (sha256 of its bytes when it has no
    record: a cache brought from elsewhere is still one definite calibration); None if no cache."""
    path = Path(cache_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(_cache_sidecar(path).read_text())
        if isinstance(record, dict) and isinstance(record.get("calibration_id"), str):
            return record["calibration_id"]
    except (OSError, ValueError):
        pass
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reusable_calibration_cache(cache_path: str | Path, wanted_id: str | None) -> bytes | None:
    """The cache bytes if they may answer this calibration, else None (TensorRT then calibrates).

    ``wanted_id`` None: no calibration data was given, so an existing cache is the calibration."""
    path = Path(cache_path) if cache_path else None
    if path is None or not path.is_file():
        return None
    if wanted_id is not None and cached_calibration_id(path) != wanted_id:
        return None
    return path.read_bytes()


def write_calibration_record(cache_path: str | Path, cal_id: str) -> None:
    """Record which calibration wrote ``cache_path`` (called after TensorRT wrote the cache)."""
    from .locking import atomic_write_bytes

    atomic_write_bytes(_cache_sidecar(cache_path), (json.dumps({"calibration_id": cal_id}) + "\n").encode())
