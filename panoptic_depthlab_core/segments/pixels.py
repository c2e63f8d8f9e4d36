"""Which pixels the numpy statistics read: the kept segments' pixels, and where their depth is valid.

Shared by the input-resolution statistics (``numpy_stats``) and the network-resolution ones
(``network_resolution``), so both keep and drop exactly the same pixels.
"""

from __future__ import annotations

import numpy as np

from .config import SegmentsConfig


def select_pixels(flat: np.ndarray, cfg: SegmentsConfig):
    """Pixels to describe (ascending), their sorted unique ids, compact index per pixel and areas.

    None when no pixel is kept (all void, or stuff only with ``include_stuff`` off). One lookup
    table over the id range replaces per-pixel class arithmetic.
    """
    if flat.size == 0:
        return None
    if flat.dtype == np.uint64 or (flat.dtype.kind == "i" and flat.dtype.itemsize < 4):
        flat = flat.astype(np.int64)  # id - min(id) must not overflow the dtype below
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo >= (1 << 24):  # sparse huge ids: sort-based
        flat = flat.astype(np.int64, copy=False)
        keep = flat != cfg.void_label
        if not cfg.include_stuff:
            keep &= np.isin(flat // cfg.label_divisor, cfg.thing_ids)
        pix = np.flatnonzero(keep)
        if pix.size == 0:
            return None
        seg_ids, idx, area = np.unique(flat[pix], return_inverse=True, return_counts=True)
        return pix, seg_ids, idx.reshape(-1), area
    id_range = np.arange(lo, hi + 1, dtype=np.int64)
    wanted = id_range != cfg.void_label
    if not cfg.include_stuff:
        wanted &= np.isin(id_range // cfg.label_divisor, cfg.thing_ids)
    offset = flat - np.asarray(lo, dtype=flat.dtype) if lo else flat  # in [0, hi - lo]
    pix = np.flatnonzero(wanted[offset])
    if pix.size == 0:
        return None
    sub = offset[pix]
    counts = np.bincount(sub, minlength=hi - lo + 1)
    present = counts > 0
    lut = np.cumsum(present) - 1
    return pix, id_range[present], lut[sub], counts[present]


def valid_depth(depth: np.ndarray, pix: np.ndarray, cfg: SegmentsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Depth at the flat pixel indices and which of it is valid (finite, in [min_depth_m, max_depth_m])."""
    d = depth.reshape(-1)[pix]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d >= cfg.min_depth_m) & (d <= cfg.max_depth_m)
    return d, valid


def segments_with_depth(seg_ids: np.ndarray, cfg: SegmentsConfig) -> np.ndarray | None:
    """Per segment, whether it gets depth statistics: None when all do; else only things
    (``stuff_depth`` off)."""
    if cfg.stuff_depth:
        return None
    return np.isin(seg_ids // cfg.label_divisor, cfg.thing_ids)


def depth_to_describe(
    depth: np.ndarray,
    pix: np.ndarray,
    seg_ids: np.ndarray,
    cfg: SegmentsConfig,
    *,
    idx: np.ndarray | None = None,
    grouped_area: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth at the flat pixel indices ``pix`` and which of it the depth statistics read: valid
    (:func:`valid_depth`) and, with ``stuff_depth`` off, in a segment that gets depth statistics.

    Each pixel's segment comes from ``idx`` (compact segment index per pixel) or, when ``pix`` is
    grouped by segment, from the segments' pixel counts ``grouped_area`` (no per-pixel gather).
    """
    d, valid = valid_depth(depth, pix, cfg)
    with_depth = segments_with_depth(seg_ids, cfg)
    if with_depth is not None:
        valid &= np.repeat(with_depth, grouped_area) if idx is None else with_depth[idx]
    return d, valid
