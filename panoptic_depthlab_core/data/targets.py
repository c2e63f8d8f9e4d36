"""Panoptic-DeepLab training targets, as detectron2's ``PanopticDeepLabTargetGenerator`` builds them.

Built on the augmented (cropped) panoptic label at input resolution:

- ``sem_seg``: train id of each pixel's segment, 255 on void (crowd keeps its class unless
  ``ignore_crowd_in_semantic``).
- ``sem_seg_weights``: ``small_instance_weight`` on thing segments smaller than
  ``small_instance_area`` pixels (area counted in the crop), 1 elsewhere.
- ``center``: a Gaussian (sigma, kernel 6 sigma + 3, peak 1) at each thing segment's rounded mask
  centroid, overlapping ones combined by max. As in detectron2 this includes crowd thing regions;
  their ``center_weights`` are 0.
- ``offset``: (dy, dx) from each thing pixel to its segment's centroid, in pixels.
- ``center_weights``: 1 on every non-crowd segment (thing or stuff), 0 on void and crowd.
- ``offset_weights``: 1 on non-crowd thing pixels (and stuff too if not ``ignore_stuff_in_offset``).

detectron2 loops with one full-image mask per segment; this does the same arithmetic with one
lookup per pixel (segment index) and bincounts, which keeps data loading cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from panoptic_depthlab_core.metadata import IGNORE_LABEL

from .cityscapes import PanopticSegment


def gaussian_kernel(sigma: float) -> np.ndarray:
    """detectron2's kernel: size 6 sigma + 3, centre at 3 sigma + 1, unnormalised (peak 1)."""
    size = int(6 * sigma + 3)
    x = np.arange(0, size, 1, dtype=np.float64)
    y = x[:, np.newaxis]
    c = 3 * sigma + 1
    return np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2))


def segment_index_map(segment_ids: np.ndarray, segments: Sequence[PanopticSegment]) -> np.ndarray:
    """Per pixel, the position of its segment in ``segments`` or -1 (void / unknown id)."""
    if not segments:
        return np.full(segment_ids.shape, -1, dtype=np.int64)
    ids = np.array([s.id for s in segments], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, segment_ids), 0, len(ids) - 1)
    return np.where(sorted_ids[pos] == segment_ids, order[pos], -1)


def build_panoptic_targets(
    segment_ids: np.ndarray,
    segments: Sequence[PanopticSegment],
    sigma: float = 10.0,
    small_instance_area: int = 4096,
    small_instance_weight: float = 3.0,
    ignore_stuff_in_offset: bool = True,
    ignore_crowd_in_semantic: bool = False,
    ignore_label: int = IGNORE_LABEL,
) -> dict[str, np.ndarray]:
    """Targets for one (augmented) label map; shapes: sem_seg/weights (H, W), center (1, H, W),
    offset (2, H, W). Segments absent from the crop are skipped."""
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must be (H, W), got {segment_ids.shape}")
    h, w = segment_ids.shape
    n = len(segments)
    seg_index = segment_index_map(segment_ids, segments)
    slot = (seg_index + 1).ravel()  # 0 = void

    train = np.array([s.train_id for s in segments], dtype=np.int64)
    crowd = np.array([s.iscrowd for s in segments], dtype=bool)
    thing = np.array([s.is_thing for s in segments], dtype=bool)

    sem_lut = np.full(n + 1, ignore_label, dtype=np.int64)
    sem_lut[1:] = np.where(ignore_crowd_in_semantic & crowd, ignore_label, train)
    center_w_lut = np.zeros(n + 1, dtype=np.float32)
    center_w_lut[1:] = ~crowd
    offset_w_lut = np.zeros(n + 1, dtype=np.float32)
    offset_w_lut[1:] = ~crowd & (thing | (not ignore_stuff_in_offset))

    area = np.bincount(slot, minlength=n + 1)
    ys, xs = np.divmod(np.arange(h * w, dtype=np.int64), w)
    sum_y = np.bincount(slot, weights=ys, minlength=n + 1)
    sum_x = np.bincount(slot, weights=xs, minlength=n + 1)
    present = area > 0
    cy = np.where(present, sum_y / np.maximum(area, 1), 0.0)
    cx = np.where(present, sum_x / np.maximum(area, 1), 0.0)

    thing_lut = np.zeros(n + 1, dtype=bool)
    thing_lut[1:] = thing
    weight_lut = np.ones(n + 1, dtype=np.float32)
    small = thing_lut & present & (area < small_instance_area)
    weight_lut[small] = small_instance_weight

    is_thing_px = thing_lut[slot]
    offset = np.zeros((2, h * w), dtype=np.float32)
    offset[0, is_thing_px] = (cy[slot[is_thing_px]] - ys[is_thing_px]).astype(np.float32)
    offset[1, is_thing_px] = (cx[slot[is_thing_px]] - xs[is_thing_px]).astype(np.float32)

    center = np.zeros((h, w), dtype=np.float32)
    g = gaussian_kernel(sigma)
    for k in np.nonzero(thing_lut & present)[0]:
        y, x = int(round(cy[k])), int(round(cx[k]))
        ul = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
        br = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
        gx0, gx1 = max(0, -ul[0]), min(br[0], w) - ul[0]
        gy0, gy1 = max(0, -ul[1]), min(br[1], h) - ul[1]
        x0, x1 = max(0, ul[0]), min(br[0], w)
        y0, y1 = max(0, ul[1]), min(br[1], h)
        center[y0:y1, x0:x1] = np.maximum(center[y0:y1, x0:x1], g[gy0:gy1, gx0:gx1])

    return {
        "sem_seg": sem_lut[slot].reshape(h, w),
        "sem_seg_weights": weight_lut[slot].reshape(h, w),
        "center": center[None],
        "center_weights": center_w_lut[slot].reshape(h, w),
        "offset": offset.reshape(2, h, w),
        "offset_weights": offset_w_lut[slot].reshape(h, w),
    }
