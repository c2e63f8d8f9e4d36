"""Segment statistics over every pixel (numpy) against per-segment numpy masks and analytic planes
with known K; the grouped and the sorted path against each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from segments_reference import (
    K,
    assert_matches_reference,
    assert_same_segments,
    assert_stuff_without_depth,
    random_frame,
    random_scene,
    reference_segment,
    trim_mean,
)

import panoptic_depthlab_core.segments.numpy_stats as numpy_stats
from panoptic_depthlab_core.segments import SegmentsConfig, compute_segments, compute_segments_torch


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("statistic", ["median", "mean", "trimmed_mean", "p10"])
def test_segments_match_per_segment_reference(seed, statistic):
    ids, depth = random_frame(seed)
    cfg = SegmentsConfig(distance_statistic=statistic, trim_fraction=[0.1, 0.0, 0.25][seed % 3])
    segments = compute_segments(ids, depth, K=K, cfg=cfg)
    assert_matches_reference(segments, ids, depth, cfg, K)


def test_segments_fronto_parallel_plane_exact_3d():
    h, w = 48, 64
    ids = np.full((h, w), 0, np.int64)
    ids[10:30, 20:50] = 13001  # car: columns 20..49, rows 10..29
    depth = np.full((h, w), 40.0, np.float32)
    depth[10:30, 20:50] = 12.5
    cfg = SegmentsConfig(extent_percentiles=(0.0, 100.0))
    car = {s.id: s for s in compute_segments(ids, depth, K=K, cfg=cfg)}[13001]
    assert car.class_name == "car" and car.is_thing and car.area == 600
    assert car.bbox_xywh == (20.0, 10.0, 30.0, 20.0)
    assert car.centroid_xy == pytest.approx((34.5, 19.5))
    for stat in (
        car.depth_mean_m,
        car.depth_median_m,
        car.depth_trimmed_mean_m,
        car.depth_p10_m,
        car.distance_m,
    ):
        assert stat == pytest.approx(12.5, rel=1e-12)
    # Mean pixel (34.5, 19.5) back-projected at z = 12.5 with fx=500, cx=32, fy=400, cy=24.
    assert car.position_xyz_m == pytest.approx(((34.5 - 32) / 500 * 12.5, (19.5 - 24) / 400 * 12.5, 12.5))
    # Full extent: columns 20..49 -> 29 px * z / fx, rows 10..29 -> 19 px * z / fy, flat in z.
    # (x and y are ordered as float32: relative error below 1e-7.)
    assert car.extent_xyz_m == pytest.approx((29 * 12.5 / 500, 19 * 12.5 / 400, 0.0), rel=1e-7, abs=1e-9)


def test_segments_tilted_ground_plane_statistics():
    # Camera 1.5 m above a flat road: z = fy * 1.5 / (v - cy) for rows below the horizon.
    h, w = 48, 64
    v = np.arange(h, dtype=np.float64)[:, None].repeat(w, 1)
    depth = np.where(v > K[1, 2], K[1, 1] * 1.5 / np.maximum(v - K[1, 2], 1e-9), np.inf).astype(np.float32)
    ids = np.where(v > K[1, 2], 0, 10000).astype(np.int32)
    cfg = SegmentsConfig(max_depth_m=1000.0)
    segs = {s.id: s for s in compute_segments(ids, depth, K=K, cfg=cfg)}
    road = segs[0]
    rows = np.arange(25, 48)
    z_rows = (K[1, 1] * 1.5 / (rows - K[1, 2])).astype(np.float32).astype(np.float64)
    z_all = np.repeat(z_rows, w)
    assert road.valid_depth_pixels == z_all.size
    assert road.depth_mean_m == pytest.approx(z_all.mean(), rel=1e-9)
    assert road.depth_median_m == pytest.approx(np.median(z_all), rel=1e-9)
    assert road.depth_p10_m == pytest.approx(np.percentile(z_all, 10), rel=1e-9)
    assert road.depth_trimmed_mean_m == pytest.approx(trim_mean(z_all, 0.1), rel=1e-9)
    # Every back-projected road point has y = +1.5 m (below the camera): zero spread in y.
    assert road.extent_xyz_m[1] == pytest.approx(0.0, abs=1e-5)
    assert segs[10000].valid_depth_pixels == 0 and math.isnan(segs[10000].distance_m)
    assert segs[10000].position_xyz_m is None and segs[10000].extent_xyz_m is None


def test_segments_median_is_robust_to_border_bleed():
    ids = np.zeros((10, 10), np.int32) + 13001
    depth = np.full((10, 10), 20.0, np.float32)
    depth[:, :2] = 70.0  # background bleeding in at the border: 20 % of the pixels
    seg = compute_segments(ids, depth)[0]
    assert seg.distance_m == pytest.approx(20.0)  # default statistic: median
    assert seg.depth_mean_m == pytest.approx(30.0)


def test_segments_scores_torch_input_and_filters():
    ids = torch.tensor([[0, 0, 13001, 13001], [-1, 11001, 11001, 0]], dtype=torch.int32)
    depth = torch.tensor([[5.0, 5.0, 10.0, 11.0], [1.0, 0.05, 3.0, 5.0]])
    segs = compute_segments(ids, depth, scores={13001: 0.9, 0: 0.5})
    by_id = {s.id: s for s in segs}
    assert by_id[13001].score == pytest.approx(0.9) and by_id[0].score == pytest.approx(0.5)
    assert math.isnan(by_id[11001].score)
    assert by_id[11001].valid_depth_pixels == 1  # 0.05 m is below min_depth_m
    assert by_id[13001].position_xyz_m is None  # no K, no 3D
    things = compute_segments(ids, depth, cfg=SegmentsConfig(include_stuff=False))
    assert [s.id for s in things] == [11001, 13001]
    no_depth = compute_segments(ids)
    assert all(math.isnan(s.distance_m) and s.valid_depth_pixels == 0 for s in no_depth)
    assert no_depth[0].to_dict()["distance_m"] is None


def test_segments_nothing_detected_returns_empty_list():
    assert compute_segments(np.full((6, 8), -1, np.int32), np.ones((6, 8), np.float32), K=K) == []
    assert compute_segments(np.zeros((0, 0), np.int32)) == []


# --- the two numpy paths: per-segment partitions (few segments) and global sorts (many) -------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_k", [False, True])
def test_grouped_and_sorted_paths_agree(seed, with_k, monkeypatch):
    ids, depth = random_frame(seed)
    ids_dtype = [np.int32, np.int64, np.uint16][seed % 3]
    if ids_dtype is np.uint16:
        ids = np.where(ids < 0, 65535, ids)  # 16UC1 messages: 65535 = void
    ids = ids.astype(ids_dtype)
    depth = depth.astype(np.float64) if seed % 2 else depth  # float64 maps: validity in float64
    cfg = SegmentsConfig(
        trim_fraction=[0.1, 0.0, 0.25][seed % 3],
        include_stuff=seed % 4 != 1,
        void_label=65535 if ids_dtype is np.uint16 else -1,
    )
    grouped = compute_segments(ids, depth, K=K if with_k else None, cfg=cfg)
    monkeypatch.setattr(numpy_stats, "_GROUPED_MAX_SEGMENTS", 0)
    by_sorting = compute_segments(ids, depth, K=K if with_k else None, cfg=cfg)
    assert grouped
    assert_same_segments(grouped, by_sorting)


def test_many_segments_take_the_sorted_path_and_match_the_reference():
    rng = np.random.default_rng(4)
    h, w = 64, 96
    ids = (np.arange(h // 2)[:, None] * (w // 2) + np.arange(w // 2)[None, :]).repeat(2, 0).repeat(2, 1)
    ids = (ids % 1500 + 13001).astype(np.int32)  # 2x2 cars, 1,500 distinct ids (> the grouped limit)
    ids[rng.random((h, w)) < 0.05] = -1
    depth = rng.uniform(0.0, 100.0, (h, w)).astype(np.float32)
    cfg = SegmentsConfig()
    segments = compute_segments(ids, depth, K=K, cfg=cfg)
    assert len(segments) > 1000
    for seg in segments[::97]:
        ref = reference_segment(ids, depth, seg.id, cfg, K)
        assert seg.area == ref["area"] and seg.valid_depth_pixels == ref["valid_depth_pixels"]
        assert seg.bbox_xywh == pytest.approx(ref["bbox_xywh"])
        if ref["valid_depth_pixels"]:
            assert seg.depth_median_m == pytest.approx(ref["depth_median_m"], rel=1e-6)



def test_sparse_huge_ids_are_described_too():
    ids = np.zeros((4, 6), np.int64)
    ids[:, 3:] = 13001
    ids[0, 0] = 2**40  # an id range too wide for the lookup table
    ids[3, 5] = -1
    segments = compute_segments(ids, np.full((4, 6), 7.0, np.float32))
    assert [(s.id, s.area) for s in segments] == [(0, 11), (13001, 11), (2**40, 1)]
    assert segments[1].bbox_xywh == (3.0, 0.0, 3.0, 4.0) and segments[1].distance_m == 7.0
    things = compute_segments(ids, None, cfg=SegmentsConfig(include_stuff=False))
    assert [s.id for s in things] == [13001]
    small = np.array([[-1, 32767, 32767], [0, 0, -1]], np.int16)  # 32767 - (-1) overflows int16
    assert [(s.id, s.area) for s in compute_segments(small)] == [(0, 2), (32767, 2)]


# --- stuff without depth statistics (SegmentsConfig.stuff_depth=False) -----------------------------


@pytest.mark.parametrize("path", ["grouped", "sorted", "torch"])
@pytest.mark.parametrize("with_k", [False, True])
def test_stuff_without_depth_keeps_geometry_and_the_things_statistics(path, with_k, monkeypatch):
    ids, depth = random_scene(5)
    k = K if with_k else None
    full = compute_segments(ids, depth, K=k)
    cfg = SegmentsConfig(stuff_depth=False)
    if path == "torch":
        got = compute_segments_torch(torch.from_numpy(ids), torch.from_numpy(depth), K=k, cfg=cfg)
    else:
        if path == "sorted":
            monkeypatch.setattr(numpy_stats, "_GROUPED_MAX_SEGMENTS", 0)
        got = compute_segments(ids, depth, K=k, cfg=cfg)
    assert_stuff_without_depth(got, full)
