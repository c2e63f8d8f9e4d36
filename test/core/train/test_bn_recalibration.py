"""BatchNorm recalibration: running stats become the plain average of the batches' statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from panoptic_depthlab_core.train.bn_recalibration import recalibrate_batchnorm


def test_running_stats_equal_average_of_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.01))
    model.eval()
    batches = [torch.randn(2, 3, 8, 8) * (i + 1) + i for i in range(5)]
    weights_before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}

    seen = recalibrate_batchnorm(model, iter(batches), max_batches=3)

    assert seen == 3
    conv_out = [model[0](b) for b in batches[:3]]
    means = torch.stack([y.mean(dim=(0, 2, 3)) for y in conv_out])
    variances = torch.stack([y.var(dim=(0, 2, 3), unbiased=True) for y in conv_out])
    bn = model[1]
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert bn.momentum == 0.01 and not model.training  # restored
    for k, v in weights_before.items():
        if "num_batches" not in k:
            assert torch.equal(model.state_dict()[k], v), k


def test_eval_mode_matches_train_mode_after_recalibration() -> None:
    """Stale statistics make eval mode differ from train mode; recalibrated ones agree on the same data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    data = torch.randn(16, 3, 8, 8) * 5 + 3
    with torch.no_grad():
        model.train()
        reference = model(data)
        model.eval()
        stale_err = (model(data) - reference).abs().max()
        recalibrate_batchnorm(model, iter([data]), max_batches=1)
        model.train(False)
        err = (model(data) - reference).abs().max()
    assert err < 0.05 * stale_err


def test_no_batches_is_an_error() -> None:
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(nn.Sequential(nn.BatchNorm2d(2)), iter([]), max_batches=5)
