"""Training losses: detectron2's Panoptic-DeepLab losses plus a selectable metric-depth loss.

All predictions arrive at the input resolution (the model upsamples ×4 and scales offsets ×4 itself),
so every loss here compares tensors of the same size, exactly as detectron2 does after upsampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from panoptic_depthlab_core.metadata import IGNORE_LABEL

DepthLossType = Literal["l1", "silog", "berhu"]


@dataclass
class LossConfig:
    """Per-task weights and loss choices (detectron2 defaults; depth weight 1.0 as in the seed)."""

    semantic_weight: float = 1.0
    semantic_top_k: float = 0.2  # DeepLabCE: mean over the hardest 20 % of pixels
    center_weight: float = 200.0
    offset_weight: float = 0.01
    depth_type: DepthLossType = "l1"
    depth_weight: float = 1.0
    silog_lambda: float = 1.0  # ViP-DeepLab: mean(d^2) - lambda * mean(d)^2
    berhu_c_fraction: float = 0.2  # berHu threshold c = fraction * max |error| in the batch
    depth_min_m: float = 1e-3  # predictions are clamped to this before taking logs / relative errors


def deeplab_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    top_k: float = 0.2,
    ignore_label: int = IGNORE_LABEL,
) -> torch.Tensor:
    """DeepLabCE: per-pixel CE (ignored pixels count as 0) × weights, mean of the top ``top_k`` fraction.

    The fraction is of *all* pixels in the batch, ignored ones included, as in detectron2.
    """
    pixel_losses = F.cross_entropy(logits.float(), labels, ignore_index=ignore_label, reduction="none")
    if weights is not None:
        pixel_losses = pixel_losses * weights
    pixel_losses = pixel_losses.contiguous().view(-1)
    if top_k >= 1.0:
        return pixel_losses.mean()
    k = max(int(top_k * pixel_losses.numel()), 1)
    top_losses, _ = torch.topk(pixel_losses, k)
    return top_losses.mean()


def _weighted_mean(pixel_losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(loss × w) / sum(w) with weights [B,H,W] broadcast over channels and counted once."""
    weighted = pixel_losses * weights[:, None]
    denom = weights.sum()
    if denom > 0:
        return weighted.sum() / denom
    return weighted.sum() * 0.0  # keeps the graph connected, contributes nothing


def center_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Center heatmap MSE × weights / Σ weights (unscaled; the ×200 is the task weight)."""
    return _weighted_mean(F.mse_loss(pred.float(), target, reduction="none"), weights)


def offset_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Offset L1 over (dy, dx) × weights / Σ weights (unscaled; the ×0.01 is the task weight)."""
    return _weighted_mean(F.l1_loss(pred.float(), target, reduction="none"), weights)


def depth_l1_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The seed's depth loss: L1 over valid pixels, sum / count."""
    mask = valid.float()
    err = (pred.float() - target).abs() * mask
    count = mask.sum()
    return err.sum() / count if count > 0 else err.sum() * 0.0


def depth_silog_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = 1.0, min_depth: float = 1e-3
) -> torch.Tensor:
    """ViP-DeepLab depth loss per image: SILog (mean d² − λ mean(d)², d = ln gt − ln pred) plus
    sqrt(mean(((gt − pred) / gt)²)); averaged over the images that have valid pixels."""
    pred = pred.float().clamp(min=min_depth)
    losses = []
    for p, t, m in zip(pred, target, valid.bool(), strict=True):
        if not m.any():
            continue
        p_v, t_v = p[m], t[m].clamp(min=min_depth)
        d = torch.log(t_v) - torch.log(p_v)
        silog = (d * d).mean() - lam * d.mean() ** 2
        rel_sq = torch.sqrt((((t_v - p_v) / t_v) ** 2).mean())
        losses.append(silog + rel_sq)
    if not losses:
        return pred.sum() * 0.0
    return torch.stack(losses).mean()


def depth_berhu_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, c_fraction: float = 0.2
) -> torch.Tensor:
    """Reverse Huber over valid pixels: |e| up to c, (e² + c²) / 2c above; c = fraction × max |e|."""
    m = valid.bool()
    if not m.any():
        return pred.sum() * 0.0
    err = (pred.float() - target)[m].abs()
    c = (c_fraction * err.max()).detach()
    if c <= 0:
        return err.mean()
    quad = (err * err + c * c) / (2 * c)
    return torch.where(err <= c, err, quad).mean()


def depth_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, cfg: LossConfig
) -> torch.Tensor:
    if cfg.depth_type == "l1":
        return depth_l1_loss(pred, target, valid)
    if cfg.depth_type == "silog":
        return depth_silog_loss(pred, target, valid, cfg.silog_lambda, cfg.depth_min_m)
    if cfg.depth_type == "berhu":
        return depth_berhu_loss(pred, target, valid, cfg.berhu_c_fraction)
    raise ValueError(f"loss.depth_type: unknown depth loss {cfg.depth_type!r} (use l1, silog or berhu)")


def panoptic_depth_losses(
    outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: LossConfig
) -> dict[str, torch.Tensor]:
    """All weighted task losses, keyed like detectron2 (``loss_sem_seg`` …), plus ``loss_depth``.

    A task whose weight is 0 is skipped entirely (so a frozen head costs nothing).
    """
    losses: dict[str, torch.Tensor] = {}
    if cfg.semantic_weight:
        losses["loss_sem_seg"] = cfg.semantic_weight * deeplab_ce(
            outputs["sem_logits"], batch["sem_seg"], batch.get("sem_seg_weights"), cfg.semantic_top_k
        )
    if cfg.center_weight:
        losses["loss_center"] = cfg.center_weight * center_loss(
            outputs["center"], batch["center"], batch["center_weights"]
        )
    if cfg.offset_weight:
        losses["loss_offset"] = cfg.offset_weight * offset_loss(
            outputs["offset"], batch["offset"], batch["offset_weights"]
        )
    if cfg.depth_weight:
        losses["loss_depth"] = cfg.depth_weight * depth_loss(
            outputs["depth"], batch["depth"], batch["depth_valid"], cfg
        )
    return losses
