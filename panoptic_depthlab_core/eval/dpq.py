"""Depth-aware panoptic quality (DPQ, PanopticDepth; = ViP-DeepLab's DVPQ with a window of 1 frame).

For each λ, predicted pixels with valid GT depth (finite, > 0) whose relative depth error
|d̂ − d| / d exceeds λ (or whose prediction is missing) become void, then PQ is computed as usual.
DPQ is the mean of the three PQ values.
"""

from __future__ import annotations

import numpy as np

from panoptic_depthlab_core.eval.panoptic_quality import VOID_ID, PQAccumulator
from panoptic_depthlab_core.metadata import NUM_CLASSES, THING_TRAIN_IDS

DPQ_LAMBDAS = (0.5, 0.25, 0.1)


def depth_voided_panoptic(
    pred_panoptic: np.ndarray, pred_depth_m: np.ndarray, gt_depth_m: np.ndarray, lam: float
) -> np.ndarray:
    """A copy of ``pred_panoptic`` with pixels of relative depth error > ``lam`` set to void."""
    pred_panoptic = np.asarray(pred_panoptic)
    pred = np.squeeze(np.asarray(pred_depth_m, dtype=np.float64))
    gt = np.squeeze(np.asarray(gt_depth_m, dtype=np.float64))
    if pred.shape != gt.shape or pred.shape != pred_panoptic.shape:
        raise ValueError(
            f"DPQ: shapes differ: panoptic {pred_panoptic.shape}, pred depth {pred.shape}, "
            f"gt depth {gt.shape}"
        )
    gt_valid = np.isfinite(gt) & (gt > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(pred - gt) / np.where(gt_valid, gt, 1.0)
    bad = gt_valid & (~np.isfinite(pred) | (rel > lam))
    out = pred_panoptic.astype(np.int64).copy()
    out[bad] = VOID_ID
    return out


class DPQAccumulator:
    def __init__(
        self,
        lambdas: tuple[float, ...] = DPQ_LAMBDAS,
        num_classes: int = NUM_CLASSES,
        thing_ids: tuple[int, ...] = THING_TRAIN_IDS,
    ) -> None:
        self.lambdas = tuple(lambdas)
        self.pq = {lam: PQAccumulator(num_classes, thing_ids) for lam in self.lambdas}

    def add_frame(
        self,
        gt_panoptic: np.ndarray,
        pred_panoptic: np.ndarray,
        pred_depth_m: np.ndarray,
        gt_depth_m: np.ndarray,
    ) -> None:
        for lam, acc in self.pq.items():
            acc.add_frame(gt_panoptic, depth_voided_panoptic(pred_panoptic, pred_depth_m, gt_depth_m, lam))

    def compute(self) -> dict:
        """``{"dpq", "dpq_things", "dpq_stuff", "per_lambda": {λ: {All, Things, Stuff}}}``, fractions."""
        per = {lam: acc.compute() for lam, acc in self.pq.items()}
        out: dict = {
            "per_lambda": {str(lam): {k: per[lam][k] for k in ("All", "Things", "Stuff")} for lam in per}
        }
        for key, part in (("dpq", "All"), ("dpq_things", "Things"), ("dpq_stuff", "Stuff")):
            out[key] = float(np.mean([per[lam][part]["pq"] for lam in self.lambdas]))
        return out
