"""The space-to-batch dilated depthwise conv is the same convolution as nn.Conv2d, forward and backward,
and routing a model through it changes neither its state dict nor its eval-mode outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from panoptic_depthlab_core.train.cpu_speedups import space_to_batch_depthwise, use_space_to_batch_depthwise


@pytest.mark.parametrize(
    ("h", "w", "k", "d", "bias"),
    [
        (16, 32, 3, 6, False),  # ASPP branches at output stride 16 of a 256x512 input
        (16, 32, 3, 18, True),  # vertical taps only ever see padding: a 1-row kernel
        (16, 32, 5, 2, False),  # MobileNetV3's dilated tail
        (7, 9, 3, 12, True),  # dilation beyond both extents: centre tap only
        (17, 31, 5, 4, True),  # sizes that are not multiples of the dilation
    ],
)
def test_equals_native_conv_forward_and_backward(h, w, k, d, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, k, padding=d * (k // 2), dilation=d, groups=6, bias=bias)
    x = torch.randn(2, 6, h, w, requires_grad=True)
    native = conv(x)
    grad = torch.randn_like(native)
    native.backward(grad)
    expected = [x.grad.clone(), conv.weight.grad.clone()] + ([conv.bias.grad.clone()] if bias else [])
    x.grad, conv.weight.grad = None, None
    if bias:
        conv.bias.grad = None

    ours = space_to_batch_depthwise(x, conv.weight, conv.bias, conv.dilation)
    ours.backward(grad)
    got = [x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else [])
    torch.testing.assert_close(ours, native, atol=1e-5, rtol=1e-5)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_model_keeps_weights_and_outputs():
    from panoptic_depthlab_core.model import ModelConfig, build_model

    cfg = ModelConfig(
        name="panoptic_depthlab_small", backbone="mobilenet_v3_large", backbone_width_mult=0.25,
        use_dsconv=True, norm="BN", pool_kernel=None, aspp_channels=16, project_channels=[8, 8],
        sem_decoder_channels=16, sem_head_channels=16, ins_decoder_channels=16, ins_head_channels=8,
        depth_decoder_channels=16, depth_head_channels=16,
    )  # fmt: skip
    torch.manual_seed(0)
    reference = build_model(cfg)
    patched = build_model(cfg)
    patched.load_state_dict(reference.state_dict())
    keys = list(reference.state_dict())

    swapped = use_space_to_batch_depthwise(patched)
    # 3 dilated DSConv ASPP branches per decoder x 3 decoders, plus the backbone's dilated tail
    assert swapped >= 9
    assert list(patched.state_dict()) == keys
    assert all(type(m) is type(r) for m, r in zip(patched.modules(), reference.modules(), strict=True))

    image = torch.randint(0, 255, (2, 3, 64, 128), dtype=torch.uint8)
    for mode in ("train", "eval"):
        getattr(reference, mode)()
        getattr(patched, mode)()
        torch.manual_seed(1)  # ASPP's dropout draws the same mask for both
        out_ref = reference(image)
        torch.manual_seed(1)
        out = patched(image)
        for name in out_ref:
            torch.testing.assert_close(out[name], out_ref[name], atol=1e-4, rtol=1e-4)
    # the gradients of a training step are the same too
    reference.train()
    patched.train()
    torch.manual_seed(2)
    sum(v.float().mean() for v in reference(image).values()).backward()
    torch.manual_seed(2)
    sum(v.float().mean() for v in patched(image).values()).backward()
    for (name, p), q in zip(reference.named_parameters(), patched.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)
