"""Each loss against a hand computation, and the warmup-poly schedule."""

from __future__ import annotations

import math

import pytest
import torch

from panoptic_depthlab_core.train.losses import (
    LossConfig,
    center_loss,
    deeplab_ce,
    depth_berhu_loss,
    depth_l1_loss,
    depth_silog_loss,
    offset_loss,
    panoptic_depth_losses,
)
from panoptic_depthlab_core.train.schedule import WarmupPolyLR, warmup_poly_factor


def test_deeplab_ce_top_k_by_hand():
    # 1 image, 2 classes, 1x5 pixels. Logits (0, 0) everywhere except strong/weak wrong guesses.
    logits = torch.zeros(1, 2, 1, 5)
    logits[0, 0, 0, 1] = 2.0  # pixel 1 labelled 1, predicts 0 strongly
    labels = torch.tensor([[[0, 1, 0, 255, 1]]])
    weights = torch.tensor([[[1.0, 1.0, 3.0, 1.0, 1.0]]])
    ce_uniform = math.log(2)
    ce_p1 = math.log(1 + math.exp(2.0))  # -log softmax for the label 1 when logits are (2, 0)
    per_pixel = [ce_uniform, ce_p1, 3 * ce_uniform, 0.0, ce_uniform]
    # top 20 % of 5 pixels (ignored one included in the count) = 1 pixel -> the largest
    assert deeplab_ce(logits, labels, weights, 0.2).item() == pytest.approx(max(per_pixel), rel=1e-6)
    # top 60 % -> 3 largest
    top3 = sorted(per_pixel, reverse=True)[:3]
    assert deeplab_ce(logits, labels, weights, 0.6).item() == pytest.approx(sum(top3) / 3, rel=1e-6)
    assert deeplab_ce(logits, labels, None, 1.0).item() == pytest.approx(
        (3 * ce_uniform + ce_p1) / 5, rel=1e-6
    )  # mean over all 5, ignored = 0


def test_center_and_offset_by_hand():
    pred_c = torch.tensor([[[[0.5, 1.0], [0.0, 0.2]]]])
    tgt_c = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    w = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    # (0.25 + 0 + 0.04) / 3 (the zero-weight pixel counts in neither sum)
    assert center_loss(pred_c, tgt_c, w).item() == pytest.approx((0.25 + 0.04) / 3)
    pred_o = torch.zeros(1, 2, 2, 2)
    tgt_o = torch.tensor([[[[1.0, 2.0], [5.0, 0.0]], [[-1.0, 0.0], [5.0, 4.0]]]])
    ow = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # weighted pixels (0,0): |1| + |-1|; (1,1): |0| + |4| -> 6, weights counted once: / 2
    assert offset_loss(pred_o, tgt_o, ow).item() == pytest.approx(3.0)
    assert offset_loss(pred_o, tgt_o, torch.zeros_like(ow)).item() == 0.0


def test_depth_losses_by_hand():
    pred = torch.tensor([[[[2.0, 4.0, 9.0]]]])
    gt = torch.tensor([[[[1.0, 4.0, 5.0]]]])
    valid = torch.tensor([[[[True, True, False]]]])
    assert depth_l1_loss(pred, gt, valid).item() == pytest.approx(0.5)
    d = torch.tensor([math.log(1 / 2), 0.0])
    silog = (d**2).mean() - d.mean() ** 2
    rel = math.sqrt(((1 - 2) ** 2 / 1 + 0) / 2)
    assert depth_silog_loss(pred, gt, valid).item() == pytest.approx(silog.item() + rel, rel=1e-6)
    # berHu: errors (1, 0, 4 on valid [1, 0] with 4 excluded) -> c = 0.2; |1| > c -> (1 + c²) / 2c
    c = 0.2
    assert depth_berhu_loss(pred, gt, valid).item() == pytest.approx(((1 + c * c) / (2 * c) + 0) / 2)
    nothing = torch.zeros_like(valid)
    for fn in (depth_l1_loss, depth_silog_loss, depth_berhu_loss):
        assert fn(pred, gt, nothing).item() == 0.0


def test_weighted_sum_and_keys():
    b, h, w = 1, 4, 4
    outputs = {
        "sem_logits": torch.zeros(b, 19, h, w),
        "center": torch.zeros(b, 1, h, w),
        "offset": torch.zeros(b, 2, h, w),
        "depth": torch.full((b, 1, h, w), 2.0),
    }
    batch = {
        "sem_seg": torch.zeros(b, h, w, dtype=torch.long),
        "sem_seg_weights": torch.ones(b, h, w),
        "center": torch.ones(b, 1, h, w),
        "center_weights": torch.ones(b, h, w),
        "offset": torch.ones(b, 2, h, w),
        "offset_weights": torch.ones(b, h, w),
        "depth": torch.ones(b, 1, h, w),
        "depth_valid": torch.ones(b, 1, h, w, dtype=torch.bool),
    }
    losses = panoptic_depth_losses(outputs, batch, LossConfig(depth_weight=0.5))
    assert losses["loss_sem_seg"].item() == pytest.approx(math.log(19), rel=1e-6)
    assert losses["loss_center"].item() == pytest.approx(200.0)
    assert losses["loss_offset"].item() == pytest.approx(0.01 * 2)
    assert losses["loss_depth"].item() == pytest.approx(0.5)
    assert "loss_center" not in panoptic_depth_losses(outputs, batch, LossConfig(center_weight=0.0))


def test_warmup_poly():
    assert warmup_poly_factor(0, 100, 10, 0.001) == pytest.approx(0.001)
    assert warmup_poly_factor(5, 100, 10, 0.001) == pytest.approx((0.001 * 0.5 + 0.5) * 0.95**0.9)
    assert warmup_poly_factor(50, 100, 10, 0.001) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(120, 100, 10, 0.001) == 0.0
    assert warmup_poly_factor(99, 100, 0, 1.0, constant_ending=0.1) == pytest.approx(0.1)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = WarmupPolyLR(opt, max_iter=100, warmup_iters=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**0.9)
