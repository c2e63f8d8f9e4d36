"""Depth metrics, DPQ and per-segment distance error on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_depthlab_core.eval.depth_metrics import (
    MANYDEPTH,
    DepthAccumulator,
    DepthProtocol,
    depth_errors,
    manydepth_crop,
)
from panoptic_depthlab_core.eval.distance import DistanceErrorAccumulator
from panoptic_depthlab_core.eval.dpq import DPQAccumulator


def test_depth_errors_by_hand():
    gt = np.array([1.0, 2.0, 4.0, 10.0])
    pred = np.array([1.0, 2.5, 3.0, 10.0])
    e = depth_errors(pred, gt)
    assert e["abs_rel"] == pytest.approx((0 + 0.25 + 0.25 + 0) / 4)
    assert e["sq_rel"] == pytest.approx((0 + 0.25 / 2 + 1.0 / 4 + 0) / 4)
    assert e["rmse"] == pytest.approx(math.sqrt((0.25 + 1.0) / 4))
    l1, l2 = math.log(1.25), math.log(0.75)
    assert e["rmse_log"] == pytest.approx(math.sqrt((l1**2 + l2**2) / 4))
    mean_sq, mean = (l1**2 + l2**2) / 4, (l1 + l2) / 4
    assert e["silog"] == pytest.approx(100 * math.sqrt(mean_sq - mean**2))
    assert e["delta1"] == pytest.approx(0.5)  # ratios 1, 1.25 (not < 1.25), 4/3, 1
    assert e["delta2"] == 1.0 and e["delta3"] == 1.0
    with pytest.raises(ValueError, match="positive"):
        depth_errors(np.array([0.0]), np.array([1.0]))


def test_standard_protocol_masks_and_clamps():
    gt = np.array([[1.0, 2.0, 100.0], [0.0, np.nan, 50.0]])
    pred = np.array([[1.0, 2.0, 5.0], [7.0, 3.0, 200.0]])
    acc = DepthAccumulator(DepthProtocol("standard", 1e-3, 80.0))
    errs = acc.add_frame(pred, gt)
    # valid: 1, 2, 50 (100 > cap, 0 and NaN invalid); pred 200 clamped to 80 -> rel err 0.6
    assert errs["abs_rel"] == pytest.approx(0.6 / 3)
    assert acc.add_frame(pred, np.zeros_like(gt)) is None  # no valid GT: image skipped
    assert acc.compute()["images"] == 1
    with pytest.raises(ValueError, match="equal in shape"):
        acc.add_frame(pred[:, :2], gt)


def test_manydepth_crop_and_protocol():
    rows, cols = manydepth_crop(1024, 2048)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (256, 768, 192, 1856)
    h, w = 64, 128
    gt = np.full((h, w), 10.0)
    pred = np.full((h, w), 10.0)
    pred[48:] = 1.0  # bottom 25 %: cut away, must not count
    pred[:, :4] = 1.0  # left margin outside the crop
    acc = DepthAccumulator(MANYDEPTH)
    assert acc.add_frame(pred, gt)["abs_rel"] == pytest.approx(0.0)


def test_dpq_by_hand():
    gt_pan = np.zeros((4, 8), np.int64)
    gt_pan[:2, :4] = 13001
    gt_depth = np.full((4, 8), 10.0)
    pred_depth = gt_depth.copy()
    pred_depth[:2, :4] = 13.0  # relative error 0.3 on the whole car
    acc = DPQAccumulator()
    acc.add_frame(gt_pan, gt_pan.copy(), pred_depth, gt_depth)
    res = acc.compute()
    # λ=0.5: perfect (PQ 1); λ=0.25 and 0.1: car voided -> car FN, road perfect -> PQ 0.5
    assert res["per_lambda"]["0.5"]["All"]["pq"] == pytest.approx(1.0)
    assert res["per_lambda"]["0.1"]["All"]["pq"] == pytest.approx(0.5)
    assert res["dpq"] == pytest.approx(2 / 3)


def test_distance_error_by_hand():
    frame_matches = [(13001, 13001, 1.0), (11001, 11002, 0.9), (0, 0, 0.8), (13002, 13003, 0.7)]
    gt = {13001: 10.0, 11001: 30.0, 0: 30.0, 13002: float("nan")}
    pred = {13001: 11.0, 11002: 27.0, 0: 10.0, 13003: 5.0}
    acc = DistanceErrorAccumulator()
    acc.add_frame(frame_matches, gt, pred)
    res = acc.compute()
    assert res["per_class"]["car"]["median_abs_m"] == pytest.approx(1.0)
    assert res["per_class"]["car"]["median_rel"] == pytest.approx(0.1)
    assert res["per_class"]["person"]["median_abs_m"] == pytest.approx(3.0)
    assert res["per_class"]["road"]["median_abs_m"] == pytest.approx(20.0)
    assert res["per_range"]["0-20m"]["count"] == 1 and res["per_range"]["20-40m"]["count"] == 2
    assert res["all"]["count"] == 3 and res["matched_segments"] == 4 and res["skipped_no_gt_depth"] == 1
    assert res["all"]["median_rel"] == pytest.approx(0.1)  # rel errors 0.1, 0.1, 0.667


def test_evaluator_end_to_end(tmp_path):
    """Frame API with a FrameResult: the GT distance uses the segments module's statistic."""
    from panoptic_depthlab_core.eval.evaluator import Evaluator, write_report
    from panoptic_depthlab_core.results import FrameResult, Segment
    from panoptic_depthlab_core.segments import SegmentsConfig

    gt_pan = np.zeros((16, 32), np.int64)
    gt_pan[2:10, 4:12] = 13001
    gt_depth = np.full((16, 32), 20.0)
    gt_depth[2:10, 4:12] = 10.0
    gt_depth[2:4, 4:12] = 12.0  # median of the car stays 10, mean would be 10.5
    pred = FrameResult(
        panoptic_ids=gt_pan.astype(np.int32),
        semantic=(gt_pan // 1000).astype(np.uint8),
        depth_m=np.full((16, 32), 11.0, np.float32),
    )
    pred.segments = [
        Segment(
            id=13001,
            class_id=13,
            class_name="car",
            is_thing=True,
            score=1.0,
            area=64,
            bbox_xywh=(4, 2, 8, 8),
            centroid_xy=(8, 6),
            distance_m=11.0,
        )
    ]
    ev = Evaluator(segments=SegmentsConfig(distance_statistic="median"))
    ev.add_frame(pred, gt_pan, gt_depth=gt_depth)
    s = ev.summary()
    assert s["panoptic"]["All"]["pq"] == pytest.approx(100.0)
    assert s["semantic"]["miou"] == pytest.approx(100.0)
    assert s["distance"]["per_class"]["car"]["median_abs_m"] == pytest.approx(1.0)
    # road: no reported segment -> absent from the distance table, the car's is used as reported
    assert s["depth"]["abs_rel"] > 0 and s["frames"] == 1
    json_path, md_path = write_report(s, tmp_path)
    assert "PQ" in md_path.read_text() and json_path.stat().st_size > 100
