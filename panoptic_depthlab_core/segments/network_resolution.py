"""Segments of an input-resolution frame, computed from the network-resolution maps (the CPU default).

The published panoptic map is the network's map upsampled by nearest neighbour: each network pixel
becomes a block of input pixels (``rows[y]``/``cols[x]`` name the network row/column of input row
y/column x). So every segment is a union of blocks, and its statistics can be taken over the
network pixels, each weighted by the number of input pixels its block covers — at 1080p from a
256x455 map that is ~17x fewer pixels.

What is exact and what is not, against ``compute_segments`` on the upsampled maps:
- area, box, centroid, valid-pixel count and the mean pixel behind ``position_xyz_m``: exact.
- depth mean/median/trimmed mean/p10 and the z extent: exact when the depth is block-constant (the
  network's depth upsampled by nearest neighbour). The published depth is the bilinear upsampling,
  whose border pixels blend neighbouring segments' depths; here each segment only sees its own
  network pixels, which is what the network said about it.
- x and y extents: from each block's centre pixel, so within half a block (~2 px at 1080p) of the
  per-pixel percentiles.
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


def nearest_blocks(index: np.ndarray, src_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per source position of a nearest-neighbour upsampling index: block size, first and last
    output position, and the sum of its output positions (exact integers).

    ``index[i]`` is the source position of output position i; it must be non-decreasing (a
    resize, not a permutation) and within [0, src_len). Sources no output position maps to have
    size 0 (a downscale)."""
    index = np.asarray(index)
    if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"index must be a non-empty 1-D integer array, got {index.dtype} {index.shape}")
    index = index.astype(np.int64)
    if index[0] < 0 or index[-1] >= src_len or np.any(np.diff(index) < 0):
        raise ValueError(f"index must be non-decreasing within [0, {src_len})")
    positions = np.arange(src_len)
    first = np.searchsorted(index, positions, side="left")
    end = np.searchsorted(index, positions, side="right")
    size = end - first
    last = end - 1
    total = (first + last) * size // 2  # sum of first..last (0 where size is 0)
    return size, first, last, total


def compute_segments_upsampled(
    panoptic_ids,
    depth_m,
    rows,
    cols,
    K=None,
    scores: Mapping[int, float] | None = None,
    cfg: SegmentsConfig | None = None,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> list[Segment]:
    """Segments (ascending id) of the maps ``panoptic_ids[rows][:, cols]`` / ``depth_m[rows][:, cols]``
    without building them.

    ``panoptic_ids``/``depth_m``: network-resolution [h, w] maps (depth may be None); ``rows``
    (length H) and ``cols`` (length W): the network row/column of every input row/column; ``K``:
    intrinsics of the H x W input. Same Segment fields and conventions as ``compute_segments``.
    """
    cfg = cfg or SegmentsConfig()
    ids_map, depth, K = numpy_inputs(panoptic_ids, depth_m, K, scores)  # K: of the input size
    h, w = ids_map.shape
    bh, y_first, y_last, y_sum = nearest_blocks(rows, h)
    bw, x_first, x_last, x_sum = nearest_blocks(cols, w)

    flat = ids_map.reshape(-1)
    if not (bh.all() and bw.all()):  # a downscale: network pixels no input pixel shows are left out
        shown = (bh[:, None] > 0) & (bw[None, :] > 0)
        flat = np.where(shown.reshape(-1), flat.astype(np.int64), cfg.void_label)
    selected = select_pixels(flat, cfg)
    if selected is None:
        return []
    pix, seg_ids, idx, _ = selected
    s = seg_ids.size
    # grouped by segment, raster order within (a radix sort when the index fits 16 bits)
    order = np.argsort(idx.astype(np.uint16) if s <= 1 << 16 else idx, kind="stable")
    pix, idx = pix[order], idx[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    r, c = np.divmod(pix, w)
    weight = bh[r] * bw[c]  # input pixels behind each network pixel
    area = np.add.reduceat(weight, starts)
    box = (
        np.minimum.reduceat(x_first[c], starts),
        np.minimum.reduceat(y_first[r], starts),
        np.maximum.reduceat(x_last[c], starts),
        np.maximum.reduceat(y_last[r], starts),
    )
    sum_x, sum_y = bh[r] * x_sum[c], bw[c] * y_sum[r]  # of the input pixels' coordinates
    centroid = (np.add.reduceat(sum_x, starts) / area, np.add.reduceat(sum_y, starts) / area)

    stats = nan_stats(s)
    n_valid = np.zeros(s, np.int64)
    position = extent = None
    if depth is not None:
        d, valid = depth_to_describe(depth, pix, seg_ids, cfg, idx=idx)
        n_valid = np.add.reduceat(np.where(valid, weight, 0), starts)
        if n_valid.any():
            blocks = (x_first[c] + x_last[c]) / 2.0, (y_first[r] + y_last[r]) / 2.0, sum_x, sum_y
            position, extent = _weighted_depth_stats(d, valid, idx, weight, blocks, n_valid, stats, K, cfg)
    return assemble_segments(seg_ids, area, box, centroid, stats, n_valid, position, extent, scores, cfg, class_names)


def _weighted_depth_stats(d, valid, idx, weight, blocks, n_valid, stats, K, cfg: SegmentsConfig):
    """Fills ``stats`` (per segment) from the network pixels' depth ``d`` (grouped by segment index
    ``idx``) each counted ``weight`` times; returns (position, extent) when K is given."""
    u_centre, v_centre, sum_x, sum_y = (b[valid] for b in blocks)
    seg, z, wv = idx[valid], d[valid].astype(np.float32), weight[valid]
    has = n_valid > 0
    v_start = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])  # one run per segment with depth
    ends = np.r_[v_start[1:], seg.size]
    stats["mean"][has] = np.add.reduceat(wv * z.astype(np.float64), v_start) / n_valid[has]
    s = n_valid.size
    extent = np.full((s, 3), np.nan) if K is not None else None
    q_lo, q_hi = (p / 100.0 for p in cfg.extent_percentiles)
    for i, a, b in zip(np.flatnonzero(has).tolist(), v_start.tolist(), ends.tolist(), strict=True):
        o = np.argsort(z[a:b])  # ties are equal values: any order gives the same statistics
        zs, ws = z[a:b][o], wv[a:b][o]
        cum = np.cumsum(ws)
        n = int(cum[-1])
        stats["median"][i] = _weighted_quantile(zs, cum, n, 0.5)
        stats["p10"][i] = _weighted_quantile(zs, cum, n, 0.1)
        stats["trimmed_mean"][i] = _weighted_trimmed_mean(zs, ws, cum, n, cfg.trim_fraction)
        if K is not None:
            z64 = z[a:b].astype(np.float64)
            x3 = ((u_centre[a:b] - K[0, 2]) * z64 / K[0, 0]).astype(np.float32)
            y3 = ((v_centre[a:b] - K[1, 2]) * z64 / K[1, 1]).astype(np.float32)
            spreads = []
            for values, weights in ((x3, wv[a:b]), (y3, wv[a:b])):
                o = np.argsort(values)
                spreads.append(_weighted_spread(values[o], np.cumsum(weights[o]), n, q_lo, q_hi))
            spreads.append(_weighted_spread(zs, cum, n, q_lo, q_hi))
            extent[i] = spreads
    if K is None:
        return None, None
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    mean_u, mean_v = np.full(s, np.nan), np.full(s, np.nan)
    mean_u[has] = np.add.reduceat(sum_x, v_start) / n_valid[has]  # exact means of the input pixels
    mean_v[has] = np.add.reduceat(sum_y, v_start) / n_valid[has]
    dist = stats[cfg.distance_statistic]
    position = np.stack(((mean_u - cx) / fx * dist, (mean_v - cy) / fy * dist, dist), axis=1)
    return position, extent


def _weighted_spread(sorted_values: np.ndarray, cum_weights: np.ndarray, n: int, q_lo: float, q_hi: float) -> float:
    """High minus low quantile of the repeated values (an extent along one axis)."""
    high = _weighted_quantile(sorted_values, cum_weights, n, q_hi)
    return high - _weighted_quantile(sorted_values, cum_weights, n, q_lo)


def _value_at_rank(sorted_values: np.ndarray, cum_weights: np.ndarray, rank: int) -> float:
    """The rank-th (0-based) value of ``sorted_values`` each repeated by its weight."""
    return float(sorted_values[np.searchsorted(cum_weights, rank, side="right")])


def _weighted_quantile(sorted_values: np.ndarray, cum_weights: np.ndarray, n: int, q: float) -> float:
    """Linear-interpolated q-quantile of the repeated values (``numpy.quantile`` of the expansion)."""
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v_lo, v_hi = _value_at_rank(sorted_values, cum_weights, lo), _value_at_rank(sorted_values, cum_weights, hi)
    return v_lo + (v_hi - v_lo) * (pos - lo)


def _weighted_trimmed_mean(
    sorted_values: np.ndarray, weights: np.ndarray, cum_weights: np.ndarray, n: int, trim_fraction: float
) -> float:
    """Mean of ranks [cut, n - cut) of the repeated values, cut = floor(trim_fraction * n)."""
    cut = math.floor(trim_fraction * n)
    start = cum_weights - weights  # first rank of each value
    kept = np.clip(np.minimum(cum_weights, n - cut) - np.maximum(start, cut), 0, None)
    return float((kept * sorted_values.astype(np.float64)).sum() / (n - 2 * cut))

