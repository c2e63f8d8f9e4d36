"""Segment statistics over every pixel of the maps, in numpy (the CPU path at the input resolution).

The kept pixels are grouped by segment with one linear-time radix sort of their 16-bit segment
index; boxes, sums and counts are ``reduceat`` over the groups, and each segment's quantiles come
from partitioning its own run around the ranks they need (linear time; a frame has at most a few
hundred segments). With more than ``_GROUPED_MAX_SEGMENTS`` segments, one sort of packed
(segment, value) keys per quantity and ``ufunc.at`` reductions are used instead; both give the
same order statistics. No Python loop over pixels. The definitions of the statistics are the
package's (see ``panoptic_depthlab_core.segments``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from panoptic_depthlab_core.metadata import CLASS_NAMES
from panoptic_depthlab_core.results import Segment

from .assemble import assemble_segments, nan_stats
from .checks import numpy_inputs
from .config import SegmentsConfig
from .pixels import depth_to_describe, select_pixels

# Up to this many segments the statistics come from one pass per segment over its grouped pixels
# (np.partition: linear time); beyond, from one sort over all pixels per quantity.
_GROUPED_MAX_SEGMENTS = 512


def compute_segments(
    panoptic_ids,
    depth_m=None,
    K=None,
    scores: Mapping[int, float] | None = None,
    cfg: SegmentsConfig | None = None,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> list[Segment]:
    """Segments (ascending id) of one frame.

    ``panoptic_ids``: integer [H,W] (class * divisor + instance, void = cfg.void_label);
    ``depth_m``: float [H,W] metres along z, or None (no depth statistics); ``K``: 3x3 intrinsics of
    this resolution, or None (no 3D); ``scores``: {panoptic id: score} from the post-processing
    (missing ids get NaN). Numpy arrays or torch tensors. No segments -> an empty list.
    """
    cfg = cfg or SegmentsConfig()
    ids_map, depth, K = numpy_inputs(panoptic_ids, depth_m, K, scores)
    h, w = ids_map.shape
    flat = ids_map.reshape(-1)
    selected = select_pixels(flat, cfg)
    if selected is None:
        return []
    pix, seg_ids, idx, area = selected
    s = seg_ids.size
    if s > _GROUPED_MAX_SEGMENTS:  # many segments: one sort per quantity beats a loop over them
        return _segments_sorted(pix, seg_ids, idx, area, w, h, depth, K, scores, cfg, class_names)

    # Group the pixels by segment, raster order within each (radix sort of 16-bit keys: O(N)).
    order = np.argsort(idx.astype(np.uint16), kind="stable")
    pix = pix[order]
    ends = np.cumsum(area)
    starts = ends - area
    ys, xs = np.divmod(pix, w)
    y_min, y_max = ys[starts], ys[ends - 1]  # raster order: first and last row of each segment
    x_min, x_max = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
    cx_px = np.add.reduceat(xs, starts) / area  # exact integer sums
    cy_px = np.add.reduceat(ys, starts) / area

    stats = nan_stats(s)
    n_valid = np.zeros(s, np.int64)
    position = extent = None
    if depth is not None:
        d, valid = depth_to_describe(depth, pix, seg_ids, cfg, grouped_area=area)  # grouped here
        # still grouped by segment after dropping invalid pixels
        n_valid = np.add.reduceat(valid, starts, dtype=np.int64)
        v_start = np.cumsum(n_valid) - n_valid
        d = d[valid]
        z = d.astype(np.float32)  # a fresh copy, partitioned in place; float32 as the sorted path
        x3 = y3 = None
        if K is not None:
            fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
            u, v = xs[valid], ys[valid]
            z64 = d.astype(np.float64)
            # float32, as the sorted path orders them (extents carry a relative error below 1e-7)
            x3 = ((u - cx) * z64 / fx).astype(np.float32)
            y3 = ((v - cy) * z64 / fy).astype(np.float32)
            has = n_valid > 0
            mean_u, mean_v = np.full(s, np.nan), np.full(s, np.nan)
            mean_u[has] = np.add.reduceat(u, v_start[has]) / n_valid[has]  # exact integer sums
            mean_v[has] = np.add.reduceat(v, v_start[has]) / n_valid[has]
        stats, extent = _grouped_depth_stats(z, x3, y3, v_start, n_valid, cfg)
        if K is not None:
            dist = stats[cfg.distance_statistic]
            position = np.stack(((mean_u - cx) / fx * dist, (mean_v - cy) / fy * dist, dist), axis=1)

    box = (x_min, y_min, x_max, y_max)
    return assemble_segments(seg_ids, area, box, (cx_px, cy_px), stats, n_valid, position, extent, scores, cfg,
                             class_names)  # fmt: skip


def _grouped_depth_stats(z, x3, y3, start, count, cfg: SegmentsConfig):
    """Depth statistics (and 3D extents when x3/y3 are given) of segments stored contiguously.

    Each run is partitioned in place around the ranks the quantiles and the trimmed mean need, so
    the values are exactly the sorted path's order statistics.
    """
    s = count.size
    stats = nan_stats(s)
    extent = np.full((s, 3), np.nan) if x3 is not None else None
    q_lo, q_hi = (p / 100.0 for p in cfg.extent_percentiles)
    has = count > 0
    if has.any():
        stats["mean"][has] = np.add.reduceat(z.astype(np.float64), start[has]) / count[has]
    for i in np.flatnonzero(has).tolist():
        a, n = int(start[i]), int(count[i])
        cut = math.floor(cfg.trim_fraction * n)
        quantiles = (0.5, 0.1, q_lo, q_hi) if x3 is not None else (0.5, 0.1)
        ranks = {r for q in quantiles for r in _quantile_ranks(n, q)}
        if cut:
            ranks.update((cut, n - cut - 1))
        run = z[a : a + n]
        run.partition(sorted(ranks))
        stats["median"][i] = _ranked_quantile(run, n, 0.5)
        stats["p10"][i] = _ranked_quantile(run, n, 0.1)
        stats["trimmed_mean"][i] = run[cut : n - cut].sum(dtype=np.float64) / (n - 2 * cut)
        if x3 is not None:
            spreads = []
            for axis in (x3[a : a + n], y3[a : a + n], run):
                if axis is not run:
                    axis.partition(sorted(set(_quantile_ranks(n, q_lo) + _quantile_ranks(n, q_hi))))
                spreads.append(_ranked_quantile(axis, n, q_hi) - _ranked_quantile(axis, n, q_lo))
            extent[i] = spreads
    return stats, extent


def _quantile_ranks(n: int, q: float) -> tuple[int, int]:
    """The two order statistics (0-based) the linear-interpolated q-quantile of n values reads."""
    lo = math.floor(q * (n - 1))
    return lo, min(lo + 1, n - 1)


def _ranked_quantile(values: np.ndarray, n: int, q: float) -> float:
    """q-quantile from values whose ranks ``_quantile_ranks(n, q)`` are in place (as ``_quantile``)."""
    pos = q * (n - 1)
    lo, hi = _quantile_ranks(n, q)
    v_lo, v_hi = float(values[lo]), float(values[hi])
    return v_lo + (v_hi - v_lo) * (pos - lo)


def _segments_sorted(pix, seg_ids, idx, area, w, h, depth, K, scores, cfg, class_names) -> list[Segment]:
    """The statistics with ``ufunc.at`` reductions and one (segment, value) sort per quantity."""
    s = seg_ids.size
    ys, xs = np.divmod(pix, w)
    cx_px = np.bincount(idx, weights=xs, minlength=s) / area
    cy_px = np.bincount(idx, weights=ys, minlength=s) / area
    x_min = np.full(s, w, np.int64)
    y_min = np.full(s, h, np.int64)
    x_max = np.full(s, -1, np.int64)
    y_max = np.full(s, -1, np.int64)
    np.minimum.at(x_min, idx, xs)
    np.maximum.at(x_max, idx, xs)
    np.minimum.at(y_min, idx, ys)
    np.maximum.at(y_max, idx, ys)

    stats = nan_stats(s)
    n_valid = np.zeros(s, np.int64)
    position = extent = None
    if depth is not None:
        d, valid = depth_to_describe(depth, pix, seg_ids, cfg, idx=idx)
        v_idx, v_d = idx[valid], d[valid]
        n_valid = np.bincount(v_idx, minlength=s)
        start = np.concatenate(([0], np.cumsum(n_valid)[:-1]))
        seg_key = v_idx.astype(np.uint64) << np.uint64(32)
        z_sorted = _segment_sort(seg_key, v_d, non_negative=True)  # min_depth_m >= 0
        csum = np.concatenate(([0.0], np.cumsum(z_sorted, dtype=np.float64)))
        with np.errstate(invalid="ignore", divide="ignore"):
            stats["mean"] = (csum[start + n_valid] - csum[start]) / n_valid
            cut = np.floor(cfg.trim_fraction * n_valid).astype(np.int64)
            stats["trimmed_mean"] = (csum[start + n_valid - cut] - csum[start + cut]) / (n_valid - 2 * cut)
        stats["median"] = _quantile(z_sorted, start, n_valid, 0.5)
        stats["p10"] = _quantile(z_sorted, start, n_valid, 0.1)
        if K is not None:
            fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
            u, v = xs[valid].astype(np.float64), ys[valid].astype(np.float64)
            z = v_d.astype(np.float64)
            x3 = (u - cx) * z / fx
            y3 = (v - cy) * z / fy
            q_lo, q_hi = (p / 100.0 for p in cfg.extent_percentiles)
            spreads = []
            x_sorted = _segment_sort(seg_key, x3, non_negative=False)
            y_sorted = _segment_sort(seg_key, y3, non_negative=False)
            for axis_sorted in (x_sorted, y_sorted, z_sorted):
                spreads.append(
                    _quantile(axis_sorted, start, n_valid, q_hi)
                    - _quantile(axis_sorted, start, n_valid, q_lo)
                )
            extent = np.stack(spreads, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_u = np.bincount(v_idx, weights=u, minlength=s) / n_valid
                mean_v = np.bincount(v_idx, weights=v, minlength=s) / n_valid
            dist = stats[cfg.distance_statistic]
            position = np.stack(((mean_u - cx) / fx * dist, (mean_v - cy) / fy * dist, dist), axis=1)

    box = (x_min, y_min, x_max, y_max)
    return assemble_segments(seg_ids, area, box, (cx_px, cy_px), stats, n_valid, position, extent, scores, cfg,
                             class_names)  # fmt: skip


def _segment_sort(seg_key: np.ndarray, values: np.ndarray, non_negative: bool) -> np.ndarray:
    """float32 values sorted by (segment, value) with one uint64 sort; segments ascending.

    ``seg_key`` is ``segment << 32`` (uint64). The low 32 bits hold the float's bits, remapped so
    unsigned order equals float order (sign bit set for positives, all bits flipped for negatives).
    """
    bits = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 -> +0.0
    if non_negative:
        keys = seg_key | bits
    else:
        flip = (bits.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000)
        keys = seg_key | (bits ^ flip)
    keys.sort()
    low = keys.astype(np.uint32)  # keeps the low 32 bits
    if non_negative:
        return low.view(np.float32)
    flip = ~(low.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000)
    return (low ^ flip).view(np.float32)


def _quantile(sorted_values: np.ndarray, start: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated q-quantile (0..1) of each segment's run in the sorted array; NaN if empty."""
    out = np.full(count.shape, np.nan)
    has = count > 0
    if not has.any():
        return out
    pos = q * (count[has] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count[has] - 1)
    frac = pos - lo
    v_lo = sorted_values[start[has] + lo].astype(np.float64)
    v_hi = sorted_values[start[has] + hi].astype(np.float64)
    out[has] = v_lo + (v_hi - v_lo) * frac
    return out
