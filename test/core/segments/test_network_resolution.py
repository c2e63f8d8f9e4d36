"""Segments from the network-resolution maps equal those of the nearest-upsampled maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_depthlab_core.maps import nearest_index
from panoptic_depthlab_core.segments import SegmentsConfig, compute_segments, compute_segments_upsampled, nearest_blocks


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """The Predictor's nearest-neighbour index (pixel centres)."""
    return nearest_index(src, dst).numpy()


def _maps(seed: int, h: int = 9, w: int = 13):
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.array([-1, 0, 2000, 8000, 10000, 11001, 13001, 13002, 13003, 14001]), size=(h, w))
    ids[2:6, 3:8] = 13001  # one big car, so some segments have many pixels
    depth = rng.uniform(1.0, 90.0, (h, w)).astype(np.float32)  # some beyond max_depth_m: invalid
    depth[rng.random((h, w)) < 0.1] = np.nan
    depth[0, :3] = 0.05  # below min_depth_m
    return ids.astype(np.int32), depth


def _upsample(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values[rows][:, cols])


@pytest.mark.parametrize(("src", "dst"), [(5, 12), (7, 3), (4, 4), (3, 10)])
def test_nearest_blocks_match_the_index(src, dst):
    index = _nearest_index(src, dst)
    size, first, last, total = nearest_blocks(index, src)
    for p in range(src):
        where = np.flatnonzero(index == p)
        assert size[p] == where.size
        if where.size:
            assert (first[p], last[p], total[p]) == (where[0], where[-1], where.sum())
        else:
            assert total[p] == 0


def test_nearest_blocks_refuse_a_permutation_or_out_of_range():
    with pytest.raises(ValueError, match="non-decreasing"):
        nearest_blocks(np.array([0, 2, 1]), 3)
    with pytest.raises(ValueError, match="non-decreasing"):
        nearest_blocks(np.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="integer"):
        nearest_blocks(np.array([0.0, 1.0]), 2)


def _check_equal(got, want, max_block: tuple[int, int], K: np.ndarray | None):
    assert [s.id for s in got] == [s.id for s in want]
    for g, e in zip(got, want, strict=True):
        assert (g.class_id, g.class_name, g.is_thing, g.area, g.bbox_xywh, g.valid_depth_pixels) == (
            e.class_id, e.class_name, e.is_thing, e.area, e.bbox_xywh, e.valid_depth_pixels,
        )  # fmt: skip
        assert g.centroid_xy == pytest.approx(e.centroid_xy, rel=1e-12)
        assert math.isnan(g.score) == math.isnan(e.score) and (math.isnan(e.score) or g.score == e.score)
        for name in ("depth_mean_m", "depth_median_m", "depth_trimmed_mean_m", "depth_p10_m", "distance_m"):
            a, b = getattr(g, name), getattr(e, name)
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9), name
        if e.position_xyz_m is None:
            assert g.position_xyz_m is None and g.extent_xyz_m is None
            continue
        assert g.position_xyz_m == pytest.approx(e.position_xyz_m, rel=1e-9, abs=1e-9)
        # x/y extents come from block centres: each percentile within half a block (at the farthest
        # valid depth, max_depth_m), so the spread within one block
        z_max = SegmentsConfig().max_depth_m
        assert abs(g.extent_xyz_m[0] - e.extent_xyz_m[0]) <= max_block[1] * z_max / K[0, 0] + 1e-6
        assert abs(g.extent_xyz_m[1] - e.extent_xyz_m[1]) <= max_block[0] * z_max / K[1, 1] + 1e-6
        assert g.extent_xyz_m[2] == pytest.approx(e.extent_xyz_m[2], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("out_h", "out_w"), [(40, 57), (9, 13), (6, 30), (23, 8)])
def test_equal_to_the_statistics_of_the_upsampled_maps(seed, out_h, out_w):
    ids, depth = _maps(seed)
    rows, cols = _nearest_index(ids.shape[0], out_h), _nearest_index(ids.shape[1], out_w)
    K = np.array([[0.9 * out_w, 0.0, out_w / 2], [0.0, 0.8 * out_w, out_h / 2], [0.0, 0.0, 1.0]])
    cfg = SegmentsConfig(distance_statistic=("median", "mean", "trimmed_mean", "p10")[seed])
    scores = {13001: 0.9, 13002: 0.4}
    got = compute_segments_upsampled(ids, depth, rows, cols, K=K, scores=scores, cfg=cfg)
    want = compute_segments(_upsample(ids, rows, cols), _upsample(depth, rows, cols), K=K, scores=scores, cfg=cfg)
    max_block = (int(nearest_blocks(rows, ids.shape[0])[0].max()), int(nearest_blocks(cols, ids.shape[1])[0].max()))
    _check_equal(got, want, max_block, K)


def test_without_depth_k_or_stuff():
    ids, depth = _maps(7)
    rows, cols = _nearest_index(9, 31), _nearest_index(13, 44)
    up_ids = _upsample(ids, rows, cols)
    things = SegmentsConfig(include_stuff=False)
    _check_equal(compute_segments_upsampled(ids, None, rows, cols, cfg=things),
                 compute_segments(up_ids, None, cfg=things), (4, 4), None)  # fmt: skip
    _check_equal(compute_segments_upsampled(ids, depth, rows, cols),
                 compute_segments(up_ids, _upsample(depth, rows, cols)), (4, 4), None)  # fmt: skip
    assert compute_segments_upsampled(np.full((3, 3), -1, np.int32), None, rows[:5] * 0, cols[:5] * 0) == []


@pytest.mark.parametrize("valid", ["none", "one block", "one segment"])
def test_segments_without_valid_depth(valid):
    ids = np.array([[13001, 0, 0], [0, 13001, 7000]], np.int32)
    depth = np.full(ids.shape, np.nan, np.float32)
    if valid == "one block":
        depth[0, 0] = 5.0
    elif valid == "one segment":
        depth[ids == 0] = 12.0
    rows, cols = _nearest_index(2, 5), _nearest_index(3, 7)
    K = np.array([[6.0, 0.0, 3.0], [0.0, 6.0, 2.0], [0.0, 0.0, 1.0]])
    got = compute_segments_upsampled(ids, depth, rows, cols, K=K)
    want = compute_segments(_upsample(ids, rows, cols), _upsample(depth, rows, cols), K=K)
    _check_equal(got, want, (3, 3), K)


def test_bad_inputs_name_the_problem():
    ids, depth = _maps(0)
    rows, cols = _nearest_index(9, 20), _nearest_index(13, 20)
    with pytest.raises(ValueError, match="depth_m"):
        compute_segments_upsampled(ids, depth[:, :5], rows, cols)
    with pytest.raises(ValueError, match="panoptic_ids"):
        compute_segments_upsampled(ids.astype(np.float32), depth, rows, cols)
    with pytest.raises(ValueError, match="non-decreasing"):
        compute_segments_upsampled(ids, depth, rows[::-1], cols)


def test_random_maps_sizes_and_validity():
    """A sweep over map and output sizes (up- and downscales, single rows/columns), void and
    invalid-depth fractions, stuff on/off and K present/absent."""
    rng = np.random.default_rng(42)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        out_h, out_w = (int(v) for v in rng.integers(1, 40, 2))
        palette = np.array([-1, 0, 8000, 11001, 13001, 13002, 17003])
        ids = rng.choice(palette, size=(h, w), p=rng.dirichlet(np.ones(palette.size))).astype(np.int32)
        depth = rng.uniform(0.0, 100.0, (h, w)).astype(np.float32)
        depth[rng.random((h, w)) < rng.random()] = np.nan
        rows, cols = _nearest_index(h, out_h), _nearest_index(w, out_w)
        K = None
        if rng.random() < 0.7:
            K = np.array([[rng.uniform(5, 50), 0, out_w / 2], [0, rng.uniform(5, 50), out_h / 2], [0, 0, 1.0]])
        cfg = SegmentsConfig(include_stuff=bool(rng.random() < 0.7), trim_fraction=float(rng.uniform(0, 0.45)))
        got = compute_segments_upsampled(ids, depth, rows, cols, K=K, cfg=cfg)
        want = compute_segments(_upsample(ids, rows, cols), _upsample(depth, rows, cols), K=K, cfg=cfg)
        max_block = (int(nearest_blocks(rows, h)[0].max()), int(nearest_blocks(cols, w)[0].max()))
        _check_equal(got, want, max_block, K)


def test_stuff_without_depth_from_the_network_maps():
    """stuff_depth off: stuff keeps its (exact) geometry and loses its depth statistics; things are
    as with every statistic on."""
    ids, depth = _maps(3)
    rows, cols = _nearest_index(9, 40), _nearest_index(13, 57)
    K = np.array([[50.0, 0.0, 28.0], [0.0, 45.0, 20.0], [0.0, 0.0, 1.0]])
    full = compute_segments_upsampled(ids, depth, rows, cols, K=K)
    got = compute_segments_upsampled(ids, depth, rows, cols, K=K, cfg=SegmentsConfig(stuff_depth=False))
    assert any(s.is_thing for s in full) and any(not s.is_thing and s.valid_depth_pixels for s in full)
    assert [s.id for s in got] == [s.id for s in full]
    for g, f in zip(got, full, strict=True):
        assert (g.area, g.bbox_xywh, g.centroid_xy) == (f.area, f.bbox_xywh, f.centroid_xy)
        if f.is_thing:
            _check_equal([g], [f], (1, 1), K)
        else:
            assert g.valid_depth_pixels == 0 and math.isnan(g.distance_m) and g.position_xyz_m is None
