"""Training-time replacement for dilated depthwise convolutions on the CPU.

PyTorch's CPU backward of a *dilated* depthwise convolution takes a slow path, about a hundred
times slower than without dilation (torch 2.14; docs/performance.md), and the small model's ten such
calls (the DSConv ASPP branches, dilation 6-18) were almost half of a CPU training step. A
stride-1 dilated conv equals an undilated one over the dilation's phase sub-grids (space-to-batch,
TensorFlow's atrous trick), whose channels-last depthwise kernels are fast both ways; taps that
only ever read padding are dropped first.

Only used while training on the CPU (eval mode, no-grad, export and GPU keep the native kernel);
the module, its class and its parameters stay as they are, so checkpoints are unchanged.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


def space_to_batch_depthwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: tuple[int, int]
) -> torch.Tensor:
    """Stride-1, 'same'-padded dilated depthwise conv2d (``weight`` [C, 1, kh, kw], odd kernel) as an
    undilated one over the dilation's phase sub-grids (TensorFlow's atrous trick).

    Taps that would only ever read padding (offset >= the image extent) are dropped first, so a
    dilation of 18 over a 16-row map is a 1-row kernel."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    rh, rw = kh // 2, kw // 2
    mh, mw = min(rh, (h - 1) // dilation[0]), min(rw, (w - 1) // dilation[1])
    weight = weight[:, :, rh - mh : rh + mh + 1, rw - mw : rw + mw + 1]
    dh, dw = (dilation[0] if mh else 1), (dilation[1] if mw else 1)
    hp, wp = -(-h // dh) * dh, -(-w // dw) * dw
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h))
    sub = x.reshape(n, c, hp // dh, dh, wp // dw, dw).permute(0, 3, 5, 1, 2, 4)
    sub = sub.reshape(n * dh * dw, c, hp // dh, wp // dw).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(sub, weight, bias, padding=(mh, mw), groups=c)
    y = y.reshape(n, dh, dw, c, hp // dh, wp // dw).permute(0, 3, 4, 1, 5, 2).reshape(n, c, hp, wp)
    return y[:, :, :h, :w]


def _space_to_batch_conv_forward(
    conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    if conv.training and x.device.type == "cpu" and torch.is_grad_enabled():
        return space_to_batch_depthwise(x, weight, bias, conv.dilation)  # type: ignore[arg-type]
    return nn.Conv2d._conv_forward(conv, x, weight, bias)


def _eligible(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and m.groups == m.in_channels == m.out_channels
        and m.groups > 1
        and tuple(m.stride) == (1, 1)
        and max(m.dilation) > 1
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
        and all(k % 2 == 1 for k in m.kernel_size)
        and tuple(m.padding) == tuple(d * (k // 2) for d, k in zip(m.dilation, m.kernel_size, strict=True))
    )


def use_space_to_batch_depthwise(model: nn.Module) -> int:
    """Route every stride-1 dilated depthwise conv of ``model`` (``nn.Conv2d`` or a subclass) through
    :func:`space_to_batch_depthwise` while training on the CPU; returns how many convs that is.

    Only the instance's ``_conv_forward`` changes: class, parameters and state-dict keys stay."""
    count = 0
    for m in model.modules():
        if _eligible(m):
            m._conv_forward = types.MethodType(_space_to_batch_conv_forward, m)  # type: ignore[method-assign]
            count += 1
    return count
