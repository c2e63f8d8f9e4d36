"""Segment statistics computed where the tensors are, in torch (the all-GPU pipeline).

Same statistics and definitions as ``numpy_stats.compute_segments``; only the per-segment results
(a few numbers per segment) are copied to the host, in one transfer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from panoptic_depthlab_core.metadata import CLASS_NAMES
from panoptic_depthlab_core.results import Segment

from .assemble import assemble_segments
from .checks import check_inputs
from .config import SegmentsConfig


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
    cfg = cfg or SegmentsConfig()
    for name, t in (("panoptic_ids", panoptic_ids), ("depth_m", depth_m)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor, got {type(t).__name__}")
    K = check_inputs(panoptic_ids, depth_m, K, scores)
    h, w = panoptic_ids.shape
    device = panoptic_ids.device

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
    return assemble_segments(
        host["seg_ids"], host["area"], (host["x_min"], host["y_min"], host["x_max"], host["y_max"]),
        (host["cx"], host["cy"]), {k: host[k] for k in stats}, host["n_valid"], host.get("position"),
        host.get("extent"), scores, cfg, class_names,
    )  # fmt: skip
