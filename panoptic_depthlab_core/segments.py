"""Per-segment facts from a panoptic id map and a metric depth map: area, box, depth statistics, 3D.

The kept pixels are grouped by segment with one linear-time radix sort of their 16-bit segment
index; boxes, sums and counts are ``reduceat`` over the groups, and each segment's quantiles come
from partitioning its own run around the ranks they need (linear time; a frame has at most a few
hundred segments). With more than ``_GROUPED_MAX_SEGMENTS`` segments, one sort of packed
(segment, value) keys per quantity and ``ufunc.at`` reductions are used instead; both give the
same order statistics. No Python loop over pixels. Depth statistics only use pixels with valid
depth (finite, within [min_depth_m, max_depth_m]); with ``stuff_depth`` off, only things get them.

Choices:
- ``distance_m`` is the configured statistic of the z-depth (metres along the optical axis), like
  the seed's per-segment mean but defaulting to the median, which is robust at object borders where
  the depth of the background bleeds in.
- Quantiles (median, p10, extent percentiles) interpolate linearly between order statistics
  (``numpy.percentile``'s default); the trimmed mean cuts ``int(trim_fraction * n)`` values from each
  end (``scipy.stats.trim_mean``).
- With intrinsics K, ``position_xyz_m`` is the ray through the mean pixel (u, v) of the valid-depth
  pixels scaled to z = distance_m: x = (u - cx) / fx * z, y = (v - cy) / fy * z (optical frame: x right,
  y down, z forward; pixel centres at integer coordinates, as in ROS CameraInfo). ``extent_xyz_m`` is
  the per-axis spread (high minus low extent percentile) of the back-projected valid pixels; x and y
  are ordered as float32 keys, so extents carry a relative error below 1e-7.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from panoptic_depthlab_core.metadata import CLASS_NAMES, LABEL_DIVISOR, THING_TRAIN_IDS
from panoptic_depthlab_core.results import Segment

DistanceStatistic = Literal["median", "mean", "trimmed_mean", "p10"]


@dataclass
class SegmentsConfig:
    """How segment distances and extents are computed."""

    distance_statistic: DistanceStatistic = "median"
    trim_fraction: float = 0.1  # cut from each end for trimmed_mean
    min_depth_m: float = 0.1  # depth outside [min, max] (or non-finite) is invalid
    max_depth_m: float = 80.0
    extent_percentiles: tuple[float, float] = (5.0, 95.0)
    include_stuff: bool = True
    # False: stuff segments keep area, box and centroid but get no depth statistics (NaN distance,
    # no 3D). Stuff (road, sky, buildings) is most of a frame's pixels, so this is most of the
    # statistics' time; an overlay that fills stuff by class and labels only things needs no more.
    stuff_depth: bool = True
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS
    label_divisor: int = LABEL_DIVISOR
    void_label: int = -1
    # On the CPU, when the maps are upsampled to the input size. network: over the network's pixels,
    # each weighted by the input pixels it covers (segments_network.py; 121 -> 14 ms at 1080p here);
    # input: over every input pixel of the upsampled maps. A CUDA device always uses the input
    # pixels (compute_segments_torch, fast there).
    cpu_resolution: Literal["network", "input"] = "network"

    def __post_init__(self) -> None:
        if self.cpu_resolution not in ("network", "input"):
            raise ValueError(f"cpu_resolution must be network or input, got {self.cpu_resolution!r}")
        if self.distance_statistic not in ("median", "mean", "trimmed_mean", "p10"):
            raise ValueError(
                "distance_statistic must be median, mean, trimmed_mean or p10, "
                f"got {self.distance_statistic!r}"
            )
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if not (math.isfinite(self.min_depth_m) and math.isfinite(self.max_depth_m)):
            raise ValueError(
                f"min_depth_m/max_depth_m must be finite, got {self.min_depth_m}, {self.max_depth_m}"
            )
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError(
                f"need 0 <= min_depth_m < max_depth_m, got min_depth_m={self.min_depth_m}, "
                f"max_depth_m={self.max_depth_m}"
            )
        lo, hi = self.extent_percentiles
        if not 0.0 <= lo <= hi <= 100.0:
            raise ValueError(
                f"extent_percentiles must satisfy 0 <= low <= high <= 100, got {self.extent_percentiles}"
            )
        if self.label_divisor < 1:
            raise ValueError(f"label_divisor must be >= 1, got {self.label_divisor}")
        self.thing_ids = tuple(int(t) for t in self.thing_ids)


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def validate_intrinsics(K) -> np.ndarray | None:
    """K as float64 [3,3], or None; ValueError when it is not a finite 3x3 with fx, fy > 0."""
    if K is None:
        return None
    K = np.asarray(_to_numpy(K, "K") if not isinstance(K, (list, tuple)) else K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be a 3x3 intrinsics matrix, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError("K contains non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must have positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


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
    ids_map, depth, K = _checked_inputs(panoptic_ids, depth_m, K, scores)
    h, w = ids_map.shape
    flat = ids_map.reshape(-1)
    selected = _select_pixels(flat, cfg)
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

    stats = _nan_stats(s)
    n_valid = np.zeros(s, np.int64)
    position = extent = None
    if depth is not None:
        d, valid = _valid_depth(depth, pix, cfg)
        with_depth = _segments_with_depth(seg_ids, cfg)
        if with_depth is not None:
            valid &= np.repeat(with_depth, area)  # pixels are grouped by segment here
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

    return _assemble(seg_ids, area, (x_min, y_min, x_max, y_max), (cx_px, cy_px), stats, n_valid, position,
                     extent, scores, cfg, class_names)  # fmt: skip


def _checked_inputs(panoptic_ids, depth_m, K, scores) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(ids, depth or None, K or None) as numpy, or ValueError naming what is wrong."""
    ids_map = _to_numpy(panoptic_ids, "panoptic_ids")
    if ids_map.ndim != 2:
        raise ValueError(f"panoptic_ids must be a 2-D [H,W] map, got shape {ids_map.shape}")
    if not np.issubdtype(ids_map.dtype, np.integer):
        raise ValueError(f"panoptic_ids must have an integer dtype, got {ids_map.dtype}")
    depth = None
    if depth_m is not None:
        depth = _to_numpy(depth_m, "depth_m")
        if depth.shape != ids_map.shape:
            raise ValueError(f"depth_m must have the shape of panoptic_ids {ids_map.shape}, got {depth.shape}")
        if not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f"depth_m must be a float map in metres, got dtype {depth.dtype}")
    if scores is not None and not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a mapping {{panoptic id: score}}, got {type(scores).__name__}")
    return ids_map, depth, validate_intrinsics(K)


def _nan_stats(s: int) -> dict[str, np.ndarray]:
    """The depth statistics of s segments before any depth is known (all NaN)."""
    return {k: np.full(s, np.nan) for k in ("mean", "median", "trimmed_mean", "p10")}


def _segments_with_depth(seg_ids: np.ndarray, cfg: SegmentsConfig) -> np.ndarray | None:
    """Per segment, whether it gets depth statistics: None when all do; else only things
    (``stuff_depth`` off)."""
    if cfg.stuff_depth:
        return None
    return np.isin(seg_ids // cfg.label_divisor, cfg.thing_ids)


def _valid_depth(depth: np.ndarray, pix: np.ndarray, cfg: SegmentsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Depth at the flat pixel indices and which of it is valid (finite, in [min_depth_m, max_depth_m])."""
    d = depth.reshape(-1)[pix]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d >= cfg.min_depth_m) & (d <= cfg.max_depth_m)
    return d, valid


def _select_pixels(flat: np.ndarray, cfg: SegmentsConfig):
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


def _grouped_depth_stats(z, x3, y3, start, count, cfg: SegmentsConfig):
    """Depth statistics (and 3D extents when x3/y3 are given) of segments stored contiguously.

    Each run is partitioned in place around the ranks the quantiles and the trimmed mean need, so
    the values are exactly the sorted path's order statistics.
    """
    s = count.size
    stats = _nan_stats(s)
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

    stats = _nan_stats(s)
    n_valid = np.zeros(s, np.int64)
    position = extent = None
    if depth is not None:
        d, valid = _valid_depth(depth, pix, cfg)
        with_depth = _segments_with_depth(seg_ids, cfg)
        if with_depth is not None:
            valid &= with_depth[idx]
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

    return _assemble(seg_ids, area, (x_min, y_min, x_max, y_max), (cx_px, cy_px), stats, n_valid, position,
                     extent, scores, cfg, class_names)  # fmt: skip


def _assemble(
    seg_ids: np.ndarray,
    area: np.ndarray,
    box: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    centroid: tuple[np.ndarray, np.ndarray],
    stats: dict[str, np.ndarray],
    n_valid: np.ndarray,
    position: np.ndarray | None,
    extent: np.ndarray | None,
    scores: Mapping[int, float] | None,
    cfg: SegmentsConfig,
    class_names: tuple[str, ...],
) -> list[Segment]:
    """Per-segment arrays (host numpy, one entry per segment) -> Segment objects."""
    x_min, y_min, x_max, y_max = box
    cx_px, cy_px = centroid
    distance = stats[cfg.distance_statistic]
    thing_set = set(cfg.thing_ids)
    segments = []
    for i, seg_id in enumerate(seg_ids.tolist()):
        class_id = seg_id // cfg.label_divisor
        has_depth = bool(n_valid[i] > 0)
        segments.append(
            Segment(
                id=seg_id,
                class_id=class_id,
                class_name=class_names[class_id] if 0 <= class_id < len(class_names) else f"class_{class_id}",
                is_thing=class_id in thing_set,
                score=float(scores.get(seg_id, math.nan)) if scores is not None else math.nan,
                area=int(area[i]),
                bbox_xywh=(
                    float(x_min[i]),
                    float(y_min[i]),
                    float(x_max[i] - x_min[i] + 1),
                    float(y_max[i] - y_min[i] + 1),
                ),
                centroid_xy=(float(cx_px[i]), float(cy_px[i])),
                depth_mean_m=float(stats["mean"][i]),
                depth_median_m=float(stats["median"][i]),
                depth_trimmed_mean_m=float(stats["trimmed_mean"][i]),
                depth_p10_m=float(stats["p10"][i]),
                distance_m=float(distance[i]),
                valid_depth_pixels=int(n_valid[i]),
                position_xyz_m=tuple(float(v) for v in position[i])
                if position is not None and has_depth
                else None,
                extent_xyz_m=tuple(float(v) for v in extent[i]) if extent is not None and has_depth else None,
            )
        )
    return segments


def compute_segments_torch(
    panoptic_ids,
    depth_m=None,
    K=None,
    scores: Mapping[int, float] | None = None,
    cfg: SegmentsConfig | None = None,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> list[Segment]:
    """:func:`compute_segments` computed where the tensors are (the GPU in the all-GPU pipeline).

    Same statistics and definitions; only the per-segment results (a few numbers per segment) are
    copied to the host, in one transfer. Ordering by (segment, value) uses two stable sorts instead
    of packed integer keys. On CUDA, sums are reduced in parallel, so means can differ from the
    numpy path in the last bits.
    """
    import torch

    cfg = cfg or SegmentsConfig()
    if not isinstance(panoptic_ids, torch.Tensor):
        raise ValueError(f"panoptic_ids must be a torch tensor, got {type(panoptic_ids).__name__}")
    if panoptic_ids.ndim != 2:
        raise ValueError(f"panoptic_ids must be a 2-D [H,W] map, got shape {tuple(panoptic_ids.shape)}")
    if panoptic_ids.is_floating_point() or panoptic_ids.dtype == torch.bool:
        raise ValueError(f"panoptic_ids must have an integer dtype, got {panoptic_ids.dtype}")
    h, w = panoptic_ids.shape
    device = panoptic_ids.device
    if depth_m is not None:
        if not isinstance(depth_m, torch.Tensor) or tuple(depth_m.shape) != (h, w):
            raise ValueError(f"depth_m must be a tensor of the shape of panoptic_ids {(h, w)}")
        if not depth_m.is_floating_point():
            raise ValueError(f"depth_m must be a float map in metres, got dtype {depth_m.dtype}")
    K = validate_intrinsics(K)
    if scores is not None and not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a mapping {{panoptic id: score}}, got {type(scores).__name__}")

    flat = panoptic_ids.reshape(-1).long()
    keep = flat != cfg.void_label
    if not cfg.include_stuff:
        things = torch.tensor(list(cfg.thing_ids), device=device, dtype=torch.long)
        keep &= torch.isin(flat // cfg.label_divisor, things)
    pix = torch.nonzero(keep).squeeze(1)
    if pix.numel() == 0:
        return []
    seg_ids, idx = torch.unique(flat[pix], sorted=True, return_inverse=True)
    s = int(seg_ids.numel())
    ys, xs = pix // w, pix % w
    f64 = torch.float64

    area = torch.bincount(idx, minlength=s)
    cx_px = torch.bincount(idx, weights=xs.to(f64), minlength=s) / area
    cy_px = torch.bincount(idx, weights=ys.to(f64), minlength=s) / area

    def reduce(values: torch.Tensor, how: str, init: int) -> torch.Tensor:
        out = torch.full((s,), init, dtype=torch.long, device=device)
        return out.scatter_reduce_(0, idx, values, how, include_self=True)

    x_min, x_max = reduce(xs, "amin", w), reduce(xs, "amax", -1)
    y_min, y_max = reduce(ys, "amin", h), reduce(ys, "amax", -1)

    nan = torch.full((s,), math.nan, dtype=f64, device=device)
    stats = {"mean": nan, "median": nan, "trimmed_mean": nan, "p10": nan}
    n_valid = torch.zeros(s, dtype=torch.long, device=device)
    position = extent = None
    if depth_m is not None:
        d = depth_m.reshape(-1)[pix].float()
        valid = torch.isfinite(d) & (d >= cfg.min_depth_m) & (d <= cfg.max_depth_m)
        if not cfg.stuff_depth:  # depth statistics for things only
            things = torch.tensor(list(cfg.thing_ids), device=device, dtype=torch.long)
            valid &= torch.isin(seg_ids // cfg.label_divisor, things)[idx]
        v_idx, v_d = idx[valid], d[valid]
        n_valid = torch.bincount(v_idx, minlength=s)
        start = torch.cumsum(n_valid, 0) - n_valid

        def segment_sorted(values: torch.Tensor) -> torch.Tensor:
            by_value = torch.argsort(values, stable=True)
            by_segment = torch.argsort(v_idx[by_value], stable=True)
            return values[by_value[by_segment]]

        def quantile(sorted_values: torch.Tensor, q: float) -> torch.Tensor:
            out = torch.full((s,), math.nan, dtype=f64, device=device)
            has = n_valid > 0
            if not bool(has.any()):
                return out
            count = n_valid[has]
            pos = q * (count - 1).to(f64)
            lo = torch.floor(pos).long()
            hi = torch.minimum(lo + 1, count - 1)
            v_lo = sorted_values[start[has] + lo].to(f64)
            v_hi = sorted_values[start[has] + hi].to(f64)
            out[has] = v_lo + (v_hi - v_lo) * (pos - lo.to(f64))
            return out

        z_sorted = segment_sorted(v_d)
        csum = torch.cat([torch.zeros(1, dtype=f64, device=device), torch.cumsum(z_sorted.to(f64), 0)])
        stats["mean"] = (csum[start + n_valid] - csum[start]) / n_valid
        cut = torch.floor(cfg.trim_fraction * n_valid.to(f64)).long()
        stats["trimmed_mean"] = (csum[start + n_valid - cut] - csum[start + cut]) / (n_valid - 2 * cut)
        stats["median"] = quantile(z_sorted, 0.5)
        stats["p10"] = quantile(z_sorted, 0.1)
        if K is not None:
            fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
            u, v = xs[valid].to(f64), ys[valid].to(f64)
            z = v_d.to(f64)
            # float32 keys, as in the numpy path (extents carry a relative error below 1e-7)
            x3 = ((u - cx) * z / fx).float()
            y3 = ((v - cy) * z / fy).float()
            q_lo, q_hi = (p / 100.0 for p in cfg.extent_percentiles)
            spreads = []
            for axis_sorted in (segment_sorted(x3), segment_sorted(y3), z_sorted):
                spreads.append(quantile(axis_sorted, q_hi) - quantile(axis_sorted, q_lo))
            extent = torch.stack(spreads, dim=1)
            mean_u = torch.bincount(v_idx, weights=u, minlength=s) / n_valid
            mean_v = torch.bincount(v_idx, weights=v, minlength=s) / n_valid
            dist = stats[cfg.distance_statistic]
            position = torch.stack(((mean_u - cx) / fx * dist, (mean_v - cy) / fy * dist, dist), dim=1)

    # Everything per segment, to the host in one go.
    names = ["seg_ids", "area", "x_min", "y_min", "x_max", "y_max", "cx", "cy", "n_valid", *stats]
    tensors = [seg_ids, area, x_min, y_min, x_max, y_max, cx_px, cy_px, n_valid, *stats.values()]
    if position is not None and extent is not None:
        names += ["position", "extent"]
        tensors += [position, extent]
    host = {n: t.cpu().numpy() for n, t in zip(names, tensors, strict=True)}
    return _assemble(
        host["seg_ids"], host["area"], (host["x_min"], host["y_min"], host["x_max"], host["y_max"]),
        (host["cx"], host["cy"]), {k: host[k] for k in stats}, host["n_valid"], host.get("position"),
        host.get("extent"), scores, cfg, class_names,
    )  # fmt: skip
