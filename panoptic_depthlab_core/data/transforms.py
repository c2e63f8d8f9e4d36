"""Training augmentation applied identically to image, panoptic label and depth.

Random scale s in [0.5, 2.0], then a random crop (padding with ignore where the scaled image is
smaller than the crop), then a horizontal flip with p = 0.5 -- detectron2's Panoptic-DeepLab recipe.
All of it is one output->input pixel mapping, so every map is sampled through the same geometry:
the image bilinearly (cv2.warpAffine), labels and depth by nearest neighbour (no mixed ids, no depth
blended across object edges).

Depth is divided by s: enlarging the image by s makes everything look s times closer, so the
depth target follows the apparent size (as ViP-DeepLab does). Padding is void (segment id 0),
invalid depth and ``pad_value`` pixels (ImageNet mean, i.e. zero after normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    scale: float
    crop_y0: int  # top-left of the crop in the scaled image
    crop_x0: int
    crop_h: int
    crop_w: int
    flip: bool


def sample_augmentation(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    crop_hw: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip_prob: float = 0.5,
) -> AugmentParams:
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
    h, w = image_hw
    ch, cw = crop_hw
    if ch < 1 or cw < 1:
        raise ValueError(f"crop size must be positive, got {crop_hw}")
    s = float(rng.uniform(lo, hi))
    sh, sw = int(round(h * s)), int(round(w * s))
    y0 = int(rng.integers(0, max(sh - ch, 0) + 1))
    x0 = int(rng.integers(0, max(sw - cw, 0) + 1))
    flip = bool(rng.random() < flip_prob)
    return AugmentParams(s, y0, x0, ch, cw, flip)


def _source_index(n_out: int, start: int, scale: float, n_src: int, scaled: int, flip: bool):
    """Nearest source index per output index and whether it lies inside the scaled image."""
    pos = np.arange(n_out, dtype=np.float64)
    if flip:
        pos = pos[::-1]
    scaled_pos = start + pos
    src = np.floor((scaled_pos + 0.5) / scale).astype(np.int64)
    inside = (scaled_pos < scaled) & (src >= 0) & (src < n_src)
    return np.clip(src, 0, n_src - 1), inside


def apply_augmentation(
    params: AugmentParams,
    image: np.ndarray,
    segment_ids: np.ndarray,
    depth_m: np.ndarray,
    depth_valid: np.ndarray,
    pad_value: tuple[int, int, int] = (124, 116, 104),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scale, crop/pad, flip. Returns image (uint8), segment ids (0 = void pad), depth / s, valid.

    The scaled size is (round(h s), round(w s)); the per-axis factors sh/h and sw/w map pixels (so
    the image's edges land on pixel edges) and depth is divided by s.
    """
    h, w = segment_ids.shape
    if image.shape[:2] != (h, w) or depth_m.shape != (h, w) or depth_valid.shape != (h, w):
        raise ValueError(
            f"image {image.shape[:2]}, labels {(h, w)}, depth {depth_m.shape} "
            f"and valid {depth_valid.shape} differ"
        )
    s = params.scale
    ch, cw = params.crop_h, params.crop_w
    sh, sw = max(int(round(h * s)), 1), max(int(round(w * s)), 1)
    sy, sx = sh / h, sw / w
    rows, rows_in = _source_index(ch, params.crop_y0, sy, h, sh, False)
    cols, cols_in = _source_index(cw, params.crop_x0, sx, w, sw, params.flip)
    inside = rows_in[:, None] & cols_in[None, :]

    seg = np.where(inside, segment_ids[rows[:, None], cols[None, :]], 0)
    valid = depth_valid[rows[:, None], cols[None, :]] & inside
    depth = np.where(valid, depth_m[rows[:, None], cols[None, :]] / np.float32(s), 0.0).astype(np.float32)

    if s < 1.0:
        # shrink with area averaging first (no aliasing), then crop/flip with a pure translation
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        sy = sx = 1.0
    # output pixel c -> scaled coordinate x0 + c (+ flip) -> source (x + 0.5) / s - 0.5
    if params.flip:
        m = np.array([[-1.0 / sx, 0.0, (params.crop_x0 + cw - 0.5) / sx - 0.5],
                      [0.0, 1.0 / sy, (params.crop_y0 + 0.5) / sy - 0.5]])  # fmt: skip
    else:
        m = np.array([[1.0 / sx, 0.0, (params.crop_x0 + 0.5) / sx - 0.5],
                      [0.0, 1.0 / sy, (params.crop_y0 + 0.5) / sy - 0.5]])  # fmt: skip
    out = cv2.warpAffine(image, m, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    out[~inside] = pad_value
    return out, seg.astype(np.int32), depth, valid
