"""PQ against cityscapesscripts' evalPanopticSemanticLabeling on generated files, plus mIoU by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from panoptic_depthlab_core.eval.panoptic_quality import PQAccumulator, SemanticConfusion, match_frame
from panoptic_depthlab_core.metadata import CITYSCAPES_CLASSES, LABEL_DIVISOR, THING_TRAIN_IDS

STUFF = (0, 1, 2, 8, 10)


def _random_pair(rng: np.random.Generator, h: int = 64, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A GT id map with stuff bands, thing boxes, crowd and void, and a perturbed prediction."""
    gt = np.empty((h, w), np.int64)
    bands = np.sort(rng.choice(np.arange(4, h - 4), size=3, replace=False))
    edges = [0, *bands.tolist(), h]
    for i in range(4):
        gt[edges[i] : edges[i + 1]] = rng.choice(STUFF) * LABEL_DIVISOR
    gt[rng.integers(0, h - 8) :][:6, rng.integers(0, w - 20) :][:, :18] = -1  # void patch
    pred = gt.copy()
    counters: dict[int, int] = {}
    for _ in range(int(rng.integers(3, 9))):
        cls = int(rng.choice(THING_TRAIN_IDS))
        y, x = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
        bh, bw = int(rng.integers(4, 24)), int(rng.integers(4, 40))
        crowd = rng.random() < 0.15
        if crowd:
            gid = cls * LABEL_DIVISOR
        else:
            counters[cls] = counters.get(cls, 0) + 1
            gid = cls * LABEL_DIVISOR + counters[cls]
        gt[y : y + bh, x : x + bw] = gid
        r = rng.random()
        pcls = int(rng.choice(THING_TRAIN_IDS)) if r < 0.15 else cls
        if r < 0.8:  # predicted, maybe shifted/resized
            dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
            sh, sw = (int(v) for v in rng.integers(-3, 4, size=2))
            pid = pcls * LABEL_DIVISOR + int(rng.integers(1, 50))
            pred[max(y + dy, 0) : max(y + dy + bh + sh, 0), max(x + dx, 0) : max(x + dx + bw + sw, 0)] = pid
    for _ in range(int(rng.integers(0, 3))):  # spurious predictions
        cls = int(rng.choice(THING_TRAIN_IDS))
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        pred[y : y + 8, x : x + 12] = cls * LABEL_DIVISOR + 77
    if rng.random() < 0.5:  # some stuff mislabelled, some void prediction
        y = int(rng.integers(0, h - 10))
        pred[y : y + 10, :30] = int(rng.choice(STUFF)) * LABEL_DIVISOR
        pred[y : y + 3, 40:60] = -1
    return gt, pred


def _to_cs(ids: np.ndarray, is_gt: bool) -> tuple[np.ndarray, list[dict]]:
    """Our encoding -> cityscapes label-id panoptic ids (+ segments_info)."""
    cs = np.zeros(ids.shape, np.int64)
    segments = []
    for seg_id in np.unique(ids):
        if seg_id < 0:
            continue
        info = CITYSCAPES_CLASSES[seg_id // LABEL_DIVISOR]
        inst = seg_id % LABEL_DIVISOR
        crowd = is_gt and info.is_thing and inst == 0
        cs_id = info.label_id * LABEL_DIVISOR + inst if (info.is_thing and inst) else info.label_id
        mask = ids == seg_id
        cs[mask] = cs_id
        ys, xs = np.nonzero(mask)
        segments.append(
            {
                "id": int(cs_id),
                "category_id": info.label_id,
                "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                "iscrowd": int(crowd),
            }
        )
    return cs, segments


def _write(folder, name, cs_ids):
    rgb = np.stack([cs_ids % 256, cs_ids // 256 % 256, cs_ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / name)


def test_pq_matches_cityscapesscripts(tmp_path, capsys):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    rng = np.random.default_rng(0)
    categories = [
        {
            "id": c.label_id,
            "name": c.name,
            "color": list(c.color),
            "supercategory": "x",
            "isthing": int(c.is_thing),
        }
        for c in CITYSCAPES_CLASSES
    ]
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt_json = {"images": [], "annotations": [], "categories": categories}
    pred_json = {"images": [], "annotations": [], "categories": categories}
    acc = PQAccumulator()
    for i in range(12):
        gt, pred = _random_pair(rng)
        acc.add_frame(gt, pred)
        image_id = f"city_{i:06d}_000019"
        for ids, folder, js, is_gt in ((gt, gt_dir, gt_json, True), (pred, pred_dir, pred_json, False)):
            cs, segs = _to_cs(ids, is_gt)
            _write(folder, f"{image_id}.png", cs)
            js["images"].append({"id": image_id, "file_name": f"{image_id}.png", "width": 128, "height": 64})
            js["annotations"].append(
                {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segs}
            )
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "pred.json").write_text(json.dumps(pred_json))
    ref = evaluatePanoptic(
        str(tmp_path / "gt.json"),
        str(gt_dir),
        str(tmp_path / "pred.json"),
        str(pred_dir),
        str(tmp_path / "result.json"),
    )
    ours = acc.compute()
    assert acc.tp.sum() > 10 and acc.fp.sum() > 3 and acc.fn.sum() > 3  # the cases are exercised
    for part in ("All", "Things", "Stuff"):
        assert ours[part]["n"] == ref[part]["n"]
        for k in ("pq", "sq", "rq"):
            assert ours[part][k] == pytest.approx(ref[part][k], abs=1e-12), (part, k)
    for c in CITYSCAPES_CLASSES:
        for k in ("pq", "sq", "rq"):
            assert ours["per_class"][c.train_id][k] == pytest.approx(
                ref["per_class"][c.label_id][k], abs=1e-12
            )


def test_pq_hand_case():
    # GT: a car (13001) of 10 px on road; prediction covers 8 of them + 2 road pixels -> IoU 8/12.
    gt = np.zeros((4, 10), np.int64)
    gt[0, :] = 13001
    pred = np.zeros((4, 10), np.int64)
    pred[0, :8] = 13005
    pred[1, :2] = 13005
    frame = match_frame(gt, pred)
    assert frame.tp[13] == 1 and frame.iou[13] == pytest.approx(8 / 12)
    assert frame.tp[0] == 1 and frame.iou[0] == pytest.approx(
        28 / 32
    )  # pred road 30 px, GT road 30 px, overlap 28
    assert frame.matches[0][:2] in ((0, 0), (13001, 13005))
    # Void prediction pixels are simply missing; GT void is excluded from the union.
    pred2 = pred.copy()
    pred2[0, :8] = -1
    assert match_frame(gt, pred2).fn[13] == 1


def test_pq_rejects_unknown_class():
    gt = np.zeros((2, 2), np.int64)
    with pytest.raises(ValueError, match="pred_panoptic.*class 25"):
        match_frame(gt, np.full((2, 2), 25001))


def test_miou_hand():
    conf = SemanticConfusion(num_classes=3)
    gt = np.array([[0, 0, 1, 1, 255, 2]])
    pred = np.array([[0, 1, 1, 1, 0, 255]])
    conf.add_frame(gt, pred)
    res = conf.compute()
    # class0: tp1, union 2 -> .5; class1: tp2 union 3 -> 2/3; class2: tp0, union 1 -> 0
    assert res["miou"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="label 7"):
        conf.add_frame(np.array([[7]]), np.array([[0]]))
