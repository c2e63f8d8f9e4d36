"""Per-segment distance error: is the distance the system reports for a segment right?

Predicted segments are matched to GT segments by the PQ rule (IoU > 0.5, same class, crowd GT never
matches). For each match, d_pred is the distance the system reported for the predicted segment and d_gt
is the *same statistic* applied to GT depth over the GT mask (the evaluator computes both with
``segments.compute_segments`` and one ``SegmentsConfig``). We report |d_pred − d_gt| and
|d_pred − d_gt| / d_gt by class and by GT range.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from panoptic_depthlab_core.metadata import CLASS_NAMES, LABEL_DIVISOR

RANGE_BINS_M: tuple[tuple[float, float], ...] = ((0.0, 20.0), (20.0, 40.0), (40.0, 80.0))


def range_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}m"


def _summary(abs_err: list[float], rel_err: list[float]) -> dict[str, float]:
    if not abs_err:
        return {
            "count": 0,
            "mean_abs_m": float("nan"),
            "median_abs_m": float("nan"),
            "mean_rel": float("nan"),
            "median_rel": float("nan"),
        }
    a, r = np.asarray(abs_err), np.asarray(rel_err)
    return {
        "count": int(a.size),
        "mean_abs_m": float(a.mean()),
        "median_abs_m": float(np.median(a)),
        "mean_rel": float(r.mean()),
        "median_rel": float(np.median(r)),
    }


class DistanceErrorAccumulator:
    """Collects (class, d_gt, |err|, rel err) for every matched segment pair."""

    def __init__(self) -> None:
        self.records: list[tuple[int, float, float, float]] = []
        self.matched = 0
        self.no_gt_depth = 0
        self.no_pred_distance = 0

    def add_frame(
        self,
        matches: list[tuple[int, int, float]],
        gt_distance_m: Mapping[int, float],
        pred_distance_m: Mapping[int, float],
    ) -> None:
        """``matches`` are (gt_id, pred_id, iou) from ``match_frame``; the mappings give each segment's
        distance (NaN or absent when it has no valid depth)."""
        for gt_id, pred_id, _ in matches:
            self.matched += 1
            d_gt = float(gt_distance_m.get(gt_id, float("nan")))
            if not math.isfinite(d_gt) or d_gt <= 0:
                self.no_gt_depth += 1
                continue
            d_pred = float(pred_distance_m.get(pred_id, float("nan")))
            if not math.isfinite(d_pred):
                self.no_pred_distance += 1
                continue
            err = abs(d_pred - d_gt)
            self.records.append((gt_id // LABEL_DIVISOR, d_gt, err, err / d_gt))

    def compute(self) -> dict:
        """Overall, per class (name) and per GT range; relative errors are fractions."""
        by_class: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        by_range: dict[str, tuple[list[float], list[float]]] = {
            range_name(lo, hi): ([], []) for lo, hi in RANGE_BINS_M
        }
        beyond = f">{RANGE_BINS_M[-1][1]:g}m"
        by_range[beyond] = ([], [])
        all_abs, all_rel = [], []
        for cls, d_gt, err, rel in self.records:
            all_abs.append(err)
            all_rel.append(rel)
            by_class[cls][0].append(err)
            by_class[cls][1].append(rel)
            key = beyond
            for lo, hi in RANGE_BINS_M:
                if lo <= d_gt < hi or (hi == RANGE_BINS_M[-1][1] and d_gt == hi):
                    key = range_name(lo, hi)
                    break
            by_range[key][0].append(err)
            by_range[key][1].append(rel)
        return {
            "all": _summary(all_abs, all_rel),
            "matched_segments": self.matched,
            "skipped_no_gt_depth": self.no_gt_depth,
            "skipped_no_pred_distance": self.no_pred_distance,
            "per_class": {
                (CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c)): _summary(*by_class[c])
                for c in sorted(by_class)
            },
            "per_range": {k: _summary(*v) for k, v in by_range.items()},
        }
