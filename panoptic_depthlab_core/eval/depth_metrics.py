"""Dense depth metrics (Eigen / Monodepth definitions) and the two evaluation protocols.

- ``standard``: every pixel with finite GT in (min_depth, cap]; predictions clamped to [min_depth, cap].
- ``manydepth``: the ManyDepth Cityscapes protocol for comparison with published numbers — drop the
  bottom 25 % (ego car), keep rows from 1/3 of the remainder and columns 192/2048..1856/2048
  (``gt[:768][256:, 192:1856]`` at 1024×2048), mask 1e-3 < gt < 80 m, clamp predictions to that range.
  Optional per-image median scaling (for scale-ambiguous models; our model is metric, so off).

Metrics are computed per image, then averaged over images (as ManyDepth and deeplab2 do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "delta1", "delta2", "delta3")


def depth_errors(pred_m: np.ndarray, gt_m: np.ndarray) -> dict[str, float]:
    """All metrics over matching 1-D arrays of positive depths (already masked and clamped).

    SqRel is the Eigen form mean((gt − pred)² / gt) in metres; SILog = 100·sqrt(mean(e²) − mean(e)²),
    e = ln pred − ln gt; δ_t = fraction with max(gt/pred, pred/gt) < 1.25^t.
    """
    pred = np.asarray(pred_m, dtype=np.float64).ravel()
    gt = np.asarray(gt_m, dtype=np.float64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"depth_errors: pred has {pred.size} values, gt has {gt.size}")
    if gt.size == 0:
        raise ValueError("depth_errors: no valid pixels")
    if (pred <= 0).any() or (gt <= 0).any():
        raise ValueError("depth_errors: depths must be positive (mask and clamp first)")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    log_diff = np.log(pred) - np.log(gt)
    silog_var = max(float(np.mean(log_diff**2) - np.mean(log_diff) ** 2), 0.0)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "silog": float(100.0 * np.sqrt(silog_var)),
        "delta1": float(np.mean(thresh < 1.25)),
        "delta2": float(np.mean(thresh < 1.25**2)),
        "delta3": float(np.mean(thresh < 1.25**3)),
    }


@dataclass
class DepthProtocol:
    """Which pixels count and how predictions are clamped."""

    name: Literal["standard", "manydepth"] = "standard"
    min_depth_m: float = 1e-3
    cap_m: float = 80.0
    median_scaling: bool = False


MANYDEPTH = DepthProtocol("manydepth", 1e-3, 80.0, False)


def manydepth_crop(h: int, w: int) -> tuple[slice, slice]:
    """Row/column slices of the ManyDepth Cityscapes crop for an h×w image (bottom 25 % removed)."""
    kept_h = int(round(h * 0.75))
    return slice(int(round(kept_h / 3)), kept_h), slice(
        int(round(w * 192 / 2048)), int(round(w * 1856 / 2048))
    )


def select_pixels(
    pred_m: np.ndarray, gt_m: np.ndarray, protocol: DepthProtocol
) -> tuple[np.ndarray, np.ndarray] | None:
    """Masked, clamped (pred, gt) 1-D arrays for one image, or None when it has no valid GT pixel."""
    pred = np.asarray(pred_m, dtype=np.float64)
    gt = np.asarray(gt_m, dtype=np.float64)
    pred, gt = np.squeeze(pred), np.squeeze(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"depth maps must be 2-D and equal in shape: pred {pred.shape}, gt {gt.shape}")
    if protocol.name == "manydepth":
        rows, cols = manydepth_crop(*gt.shape)
        pred, gt = pred[rows, cols], gt[rows, cols]
        valid = np.isfinite(gt) & (gt > protocol.min_depth_m) & (gt < protocol.cap_m)
    elif protocol.name == "standard":
        valid = np.isfinite(gt) & (gt > protocol.min_depth_m) & (gt <= protocol.cap_m)
    else:
        raise ValueError(f"unknown depth protocol {protocol.name!r} (use standard or manydepth)")
    if not valid.any():
        return None
    p, g = pred[valid], gt[valid]
    p = np.where(np.isfinite(p), p, protocol.cap_m)  # a missing prediction counts as the far limit
    if protocol.median_scaling:
        p = p * (np.median(g) / max(float(np.median(p)), 1e-12))
    return np.clip(p, protocol.min_depth_m, protocol.cap_m), g


class DepthAccumulator:
    """Per-image metrics averaged over the images that have valid GT."""

    def __init__(self, protocol: DepthProtocol | None = None) -> None:
        self.protocol = protocol or DepthProtocol()
        self.sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self.images = 0

    def add_frame(self, pred_m: np.ndarray, gt_m: np.ndarray) -> dict[str, float] | None:
        picked = select_pixels(pred_m, gt_m, self.protocol)
        if picked is None:
            return None
        errs = depth_errors(*picked)
        for k, v in errs.items():
            self.sums[k] += v
        self.images += 1
        return errs

    def compute(self) -> dict[str, float]:
        if self.images == 0:
            return {**dict.fromkeys(METRIC_NAMES, float("nan")), "images": 0}
        return {**{k: v / self.images for k, v in self.sums.items()}, "images": self.images}
