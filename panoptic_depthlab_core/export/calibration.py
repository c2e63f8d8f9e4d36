"""INT8 calibration data: images from a directory, letterboxed exactly as the Predictor does.

Calibration must see what the network sees at run time, so the same letterbox (aspect kept,
bilinear with antialias, bottom/right padding with the pixel mean) is applied; otherwise the
activation ranges TensorRT measures are those of a different input distribution.
"""

from __future__ import annotations

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
