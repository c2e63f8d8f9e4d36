"""Slow references for the segment statistics tests: per-segment numpy masks, random frames, and
comparisons of segment lists. Nothing here shares code with the statistics under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_depthlab_core.segments import SegmentsConfig

K = np.array([[500.0, 0.0, 32.0], [0.0, 400.0, 24.0], [0.0, 0.0, 1.0]])


def trim_mean(values: np.ndarray, fraction: float) -> float:
    v = np.sort(values)
    cut = int(fraction * len(v))
    return float(v[cut : len(v) - cut].mean())


def reference_segment(ids, depth, seg_id, cfg: SegmentsConfig, K=None) -> dict:
    """One segment from its boolean mask with plain numpy, nothing shared with the fast code."""
    mask = ids == seg_id
    ys, xs = np.nonzero(mask)
    out = {
        "area": int(mask.sum()),
        "bbox_xywh": (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1),
        "centroid_xy": (xs.mean(), ys.mean()),
    }
    d = depth[mask].astype(np.float64)
    valid = np.isfinite(d) & (d >= cfg.min_depth_m) & (d <= cfg.max_depth_m)
    out["valid_depth_pixels"] = int(valid.sum())
    if not valid.any():
        return out
    dv = d[valid]
    out.update(
        depth_mean_m=dv.mean(),
        depth_median_m=np.median(dv),
        depth_trimmed_mean_m=trim_mean(dv, cfg.trim_fraction),
        depth_p10_m=np.percentile(dv, 10),
    )
    out["distance_m"] = out[f"depth_{cfg.distance_statistic}_m"]
    if K is not None:
        u, v = xs[valid].astype(np.float64), ys[valid].astype(np.float64)
        pts = np.stack(((u - K[0, 2]) * dv / K[0, 0], (v - K[1, 2]) * dv / K[1, 1], dv), axis=1)
        lo, hi = cfg.extent_percentiles
        out["extent_xyz_m"] = tuple(np.percentile(pts, hi, axis=0) - np.percentile(pts, lo, axis=0))
        z = out["distance_m"]
        out["position_xyz_m"] = ((u.mean() - K[0, 2]) / K[0, 0] * z, (v.mean() - K[1, 2]) / K[1, 1] * z, z)
    return out


def assert_matches_reference(segments, ids, depth, cfg, K=None):
    expected_ids = sorted(set(np.unique(ids).tolist()) - {cfg.void_label})
    assert [s.id for s in segments] == expected_ids
    for seg in segments:
        ref = reference_segment(ids, depth, seg.id, cfg, K)
        for key, value in ref.items():
            got = getattr(seg, key)
            if isinstance(value, tuple):
                np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=f"{seg.id} {key}")
            else:
                assert got == pytest.approx(value, rel=1e-5, abs=1e-6), f"{seg.id} {key}"
        if ref["valid_depth_pixels"] == 0:
            assert math.isnan(seg.distance_m) and seg.position_xyz_m is None


def random_frame(seed: int, h: int = 48, w: int = 64):
    rng = np.random.default_rng(seed)
    ids = np.full((h, w), -1, np.int32)
    ids[h // 2 :] = 0  # road
    ids[: h // 2] = 10000  # sky
    for n in range(int(rng.integers(0, 8))):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        ids[y : y + int(rng.integers(1, 20)), x : x + int(rng.integers(1, 20))] = 13001 + n
    ids[rng.random((h, w)) < 0.05] = -1
    depth = rng.uniform(0.0, 100.0, (h, w)).astype(np.float32)  # some out of [0.1, 80]
    depth[rng.random((h, w)) < 0.05] = np.nan
    depth[rng.random((h, w)) < 0.02] = np.inf
    depth = np.round(depth, 1) if seed % 2 else depth  # repeated values (ties in the sort)
    return ids, depth


def random_scene(seed: int, h: int = 60, w: int = 90):
    rng = np.random.default_rng(seed)
    ids = np.full((h, w), -1, np.int32)
    ids[h // 2 :] = 0  # road
    ids[: h // 5] = 10000  # sky
    for n in range(8):
        y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 15))
        ids[y : y + int(rng.integers(3, 12)), x : x + int(rng.integers(3, 15))] = (11 + n % 8) * 1000 + n + 1
    depth = rng.uniform(0.5, 90.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = np.nan
    depth[rng.random((h, w)) < 0.05] = -1.0
    return ids, depth


def assert_same_segments(got, want) -> None:
    assert [s.id for s in got] == [s.id for s in want]
    for a, b in zip(got, want, strict=True):
        da, db = vars(a), vars(b)
        for key, value in db.items():
            other = da[key]
            if isinstance(value, float) or (isinstance(value, tuple) and value and isinstance(value[0], float)):
                np.testing.assert_allclose(np.array(other, float), np.array(value, float), rtol=1e-9, atol=1e-9,
                                           equal_nan=True, err_msg=f"segment {b.id} {key}")  # fmt: skip
            else:
                assert other == value, (b.id, key, other, value)


def assert_stuff_without_depth(got, full) -> None:
    """Same segments and geometry; things keep every statistic, stuff has none of depth."""
    assert [s.id for s in got] == [s.id for s in full]
    assert any(s.is_thing for s in full) and any(not s.is_thing for s in full)
    for g, f in zip(got, full, strict=True):
        assert (g.area, g.bbox_xywh, g.centroid_xy, g.is_thing) == (f.area, f.bbox_xywh, f.centroid_xy, f.is_thing)
        if f.is_thing:
            assert_same_segments([g], [f])
        else:
            assert g.valid_depth_pixels == 0 and g.position_xyz_m is None and g.extent_xyz_m is None
            assert all(math.isnan(v) for v in (g.distance_m, g.depth_mean_m, g.depth_median_m, g.depth_p10_m))
