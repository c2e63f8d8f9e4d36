"""Panoptic quality (PQ/SQ/RQ) and mIoU on id maps in our encoding.

Encoding (both GT and prediction): ``train_id * 1000 + instance``, -1 (or any id whose class is not a
train id) is void. In GT, a thing class with instance 0 is a *crowd* region, as Cityscapes'
``instanceIds.png`` stores groups as the bare label id. The matching and counting rules are those of
cityscapesscripts' ``evalPanopticSemanticLabeling`` (= COCO panopticapi): IoU > 0.5 with the same
class; the union leaves out the prediction's overlap with void; an unmatched prediction is not a false
positive when more than half of it lies on void or a same-class crowd region; crowd GT makes no false
negatives; class PQ is averaged over classes with TP + FP + FN > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_depthlab_core.metadata import (
    CLASS_NAMES,
    IGNORE_LABEL,
    LABEL_DIVISOR,
    NUM_CLASSES,
    THING_TRAIN_IDS,
)

VOID_ID = -1


@dataclass
class FramePQ:
    """Per-class counts of one frame plus the matched (gt_id, pred_id, iou) pairs."""

    iou: np.ndarray  # float64 [C]
    tp: np.ndarray  # int64 [C]
    fp: np.ndarray
    fn: np.ndarray
    matches: list[tuple[int, int, float]]


def _sanitize(ids: np.ndarray, num_classes: int, name: str, strict: bool) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D id map, got shape {ids.shape}")
    ids = ids.astype(np.int64)
    cls = np.floor_divide(ids, LABEL_DIVISOR)
    bad = (ids >= 0) & (cls >= num_classes)
    if strict and bad.any():
        raise ValueError(
            f"{name}: segment id {int(ids[bad][0])} has class {int(cls[bad][0])}, "
            f"not a train id 0..{num_classes - 1} (void must be -1)"
        )
    out = ids.copy()
    out[(ids < 0) | bad] = VOID_ID
    return out


def match_frame(
    gt_panoptic: np.ndarray,
    pred_panoptic: np.ndarray,
    num_classes: int = NUM_CLASSES,
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS,
) -> FramePQ:
    """Count TP/FP/FN and summed IoU per class for one frame (the cityscapesscripts algorithm)."""
    gt = _sanitize(gt_panoptic, num_classes, "gt_panoptic", strict=False)
    pred = _sanitize(pred_panoptic, num_classes, "pred_panoptic", strict=True)
    if gt.shape != pred.shape:
        raise ValueError(f"gt_panoptic shape {gt.shape} != pred_panoptic shape {pred.shape}")
    thing = np.zeros(max(num_classes, 1), dtype=bool)
    thing[[t for t in thing_ids if t < num_classes]] = True

    # Joint histogram of (gt id, pred id) pairs.
    offset = int(pred.max()) + 2
    keys, counts = np.unique((gt + 1) * offset + (pred + 1), return_counts=True)
    gt_of, pred_of = keys // offset - 1, keys % offset - 1
    gt_area: dict[int, int] = {}
    pred_area: dict[int, int] = {}
    inter: dict[tuple[int, int], int] = {}
    for g, p, c in zip(gt_of.tolist(), pred_of.tolist(), counts.tolist(), strict=True):
        inter[(g, p)] = c
        if g != VOID_ID:
            gt_area[g] = gt_area.get(g, 0) + c
        if p != VOID_ID:
            pred_area[p] = pred_area.get(p, 0) + c

    def is_crowd(g: int) -> bool:
        return g % LABEL_DIVISOR == 0 and bool(thing[g // LABEL_DIVISOR])

    iou_sum = np.zeros(num_classes, dtype=np.float64)
    tp = np.zeros(num_classes, dtype=np.int64)
    fp = np.zeros(num_classes, dtype=np.int64)
    fn = np.zeros(num_classes, dtype=np.int64)
    matches: list[tuple[int, int, float]] = []
    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    for (g, p), c in inter.items():
        if g == VOID_ID or p == VOID_ID or is_crowd(g):
            continue
        cls = g // LABEL_DIVISOR
        if cls != p // LABEL_DIVISOR:
            continue
        union = pred_area[p] + gt_area[g] - c - inter.get((VOID_ID, p), 0)
        iou = c / union
        if iou > 0.5:
            tp[cls] += 1
            iou_sum[cls] += iou
            gt_matched.add(g)
            pred_matched.add(p)
            matches.append((g, p, float(iou)))

    crowd_of_class: dict[int, int] = {}
    for g in gt_area:
        if g in gt_matched:
            continue
        if is_crowd(g):
            crowd_of_class[g // LABEL_DIVISOR] = g
            continue
        fn[g // LABEL_DIVISOR] += 1
    for p, area in pred_area.items():
        if p in pred_matched:
            continue
        cls = p // LABEL_DIVISOR
        ignored = inter.get((VOID_ID, p), 0)
        if cls in crowd_of_class:
            ignored += inter.get((crowd_of_class[cls], p), 0)
        if ignored / area > 0.5:
            continue
        fp[cls] += 1
    return FramePQ(iou_sum, tp, fp, fn, matches)


class PQAccumulator:
    """Sums per-class counts over frames; ``compute()`` gives the cityscapesscripts result layout."""

    def __init__(self, num_classes: int = NUM_CLASSES, thing_ids: tuple[int, ...] = THING_TRAIN_IDS) -> None:
        self.num_classes = num_classes
        self.thing_ids = tuple(thing_ids)
        self.iou = np.zeros(num_classes, dtype=np.float64)
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)

    def add(self, frame: FramePQ) -> None:
        self.iou += frame.iou
        self.tp += frame.tp
        self.fp += frame.fp
        self.fn += frame.fn

    def add_frame(self, gt_panoptic: np.ndarray, pred_panoptic: np.ndarray) -> FramePQ:
        frame = match_frame(gt_panoptic, pred_panoptic, self.num_classes, self.thing_ids)
        self.add(frame)
        return frame

    def compute(self) -> dict:
        """``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {train_id: {pq, sq, rq}}}``, fractions.

        An average over zero classes is NaN (cityscapesscripts would divide by zero).
        """
        per_class: dict[int, dict[str, float]] = {}
        for c in range(self.num_classes):
            denom = self.tp[c] + 0.5 * self.fp[c] + 0.5 * self.fn[c]
            if denom == 0:
                per_class[c] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            per_class[c] = {
                "pq": float(self.iou[c] / denom),
                "sq": float(self.iou[c] / self.tp[c]) if self.tp[c] else 0.0,
                "rq": float(self.tp[c] / denom),
            }
        results: dict = {}
        thing_set = set(self.thing_ids)
        for name, pick in (("All", None), ("Things", True), ("Stuff", False)):
            classes = [
                c
                for c in range(self.num_classes)
                if (pick is None or (c in thing_set) == pick) and self.tp[c] + self.fp[c] + self.fn[c] > 0
            ]
            n = len(classes)
            results[name] = {
                k: (float(np.mean([per_class[c][k] for c in classes])) if n else float("nan"))
                for k in ("pq", "sq", "rq")
            }
            results[name]["n"] = n
        results["per_class"] = per_class
        return results


class SemanticConfusion:
    """Confusion matrix on train ids; GT 255 is ignored, a void prediction counts as a miss."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)  # last column: void pred

    def add_frame(self, gt_semantic: np.ndarray, pred_semantic: np.ndarray) -> None:
        gt = np.asarray(gt_semantic).astype(np.int64)
        pred = np.asarray(pred_semantic).astype(np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"gt_semantic shape {gt.shape} != pred_semantic shape {pred.shape}")
        keep = (gt >= 0) & (gt < self.num_classes)
        bad_gt = ~keep & (gt != IGNORE_LABEL)
        if bad_gt.any():
            raise ValueError(f"gt_semantic holds label {int(gt[bad_gt][0])}: expected train ids or 255")
        p = pred[keep]
        p = np.where((p >= 0) & (p < self.num_classes), p, self.num_classes)
        idx = gt[keep] * (self.num_classes + 1) + p
        self.matrix += np.bincount(idx, minlength=self.matrix.size).reshape(self.matrix.shape)

    def compute(self) -> dict:
        """Per-class IoU (NaN where the class is in neither GT nor prediction) and their mean."""
        c = self.num_classes
        tp = np.diag(self.matrix[:, :c]).astype(np.float64)
        gt_total = self.matrix.sum(axis=1)
        pred_total = self.matrix[:, :c].sum(axis=0)
        union = gt_total + pred_total - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        valid = ~np.isnan(iou)
        pixel_acc = float(tp.sum() / gt_total.sum()) if gt_total.sum() else float("nan")
        return {
            "miou": float(iou[valid].mean()) if valid.any() else float("nan"),
            "pixel_accuracy": pixel_acc,
            "per_class_iou": {
                CLASS_NAMES[i] if i < len(CLASS_NAMES) else str(i): float(iou[i]) for i in range(c)
            },
        }
