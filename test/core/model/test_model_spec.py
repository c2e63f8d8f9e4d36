"""The network against the written specification of detectron2's Panoptic-DeepLab R-52.

Expected key sets and parameter counts are built here from the spec (issue text / reference notes),
not from the model's own state_dict, so a renamed or reshaped tensor fails.
"""

from __future__ import annotations

import pytest
import torch

from panoptic_depthlab_core.model import ModelConfig, build_model

BN = ("norm.weight", "norm.bias", "norm.running_mean", "norm.running_var")


def conv_bn(prefix: str, cout: int, cin: int, k: int, groups: int = 1) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.weight": (cout, cin // groups, k, k)}
    shapes.update({f"{prefix}.{n}": (cout,) for n in BN})
    return shapes


def dsconv(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    return {**conv_bn(f"{prefix}.depthwise", cin, cin, k, groups=cin), **conv_bn(f"{prefix}.pointwise", cout, cin, 1)}


def spec_backbone() -> dict[str, tuple[int, ...]]:
    s = {}
    s.update(conv_bn("backbone.stem.conv1", 64, 3, 3))
    s.update(conv_bn("backbone.stem.conv2", 64, 64, 3))
    s.update(conv_bn("backbone.stem.conv3", 128, 64, 3))
    cin = 128
    stages = [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)]
    for stage, (n, bott, cout) in zip(range(2, 6), stages, strict=True):
        for b in range(n):
            p = f"backbone.res{stage}.{b}"
            if b == 0:
                s.update(conv_bn(f"{p}.shortcut", cout, cin, 1))
            s.update(conv_bn(f"{p}.conv1", bott, cin if b == 0 else cout, 1))
            s.update(conv_bn(f"{p}.conv2", bott, bott, 3))
            s.update(conv_bn(f"{p}.conv3", cout, bott, 1))
        cin = cout
    return s


def spec_decoder(prefix: str, dec: int, ds: bool) -> dict[str, tuple[int, ...]]:
    s = {}
    a = f"{prefix}.decoder.res5.project_conv"
    s.update(conv_bn(f"{a}.convs.0", 256, 2048, 1))
    for i in (1, 2, 3):
        s.update(dsconv(f"{a}.convs.{i}", 2048, 256, 3) if ds else conv_bn(f"{a}.convs.{i}", 256, 2048, 3))
    s[f"{a}.convs.4.1.weight"] = (256, 2048, 1, 1)
    s[f"{a}.convs.4.1.bias"] = (256,)
    s.update(conv_bn(f"{a}.project", 256, 1280, 1))
    s.update(conv_bn(f"{prefix}.decoder.res3.project_conv", 64, 512, 1))
    s.update(conv_bn(f"{prefix}.decoder.res2.project_conv", 32, 256, 1))
    for name, cin in (("res3", 64 + 256), ("res2", 32 + dec)):
        f = f"{prefix}.decoder.{name}.fuse_conv"
        if ds:
            s.update(dsconv(f, cin, dec, 5))
        else:
            s.update(conv_bn(f"{f}.0", dec, cin, 3))
            s.update(conv_bn(f"{f}.1", dec, dec, 3))
    return s


def two_convs(prefix: str, cin: int, cout: int, ds: bool) -> dict[str, tuple[int, ...]]:
    if ds:
        return dsconv(prefix, cin, cout, 5)
    return {**conv_bn(f"{prefix}.0", cin, cin, 3), **conv_bn(f"{prefix}.1", cout, cin, 3)}


def spec_keys(ds: bool, with_depth: bool = True) -> dict[str, tuple[int, ...]]:
    s = spec_backbone()
    s.update(spec_decoder("sem_seg_head", 256, ds))
    s.update(two_convs("sem_seg_head.head", 256, 256, ds))
    s.update({"sem_seg_head.predictor.weight": (19, 256, 1, 1), "sem_seg_head.predictor.bias": (19,)})
    s.update(spec_decoder("ins_embed_head", 128, ds))
    s.update(two_convs("ins_embed_head.center_head", 128, 32, False))  # regular even with DSConv
    s.update({"ins_embed_head.center_predictor.weight": (1, 32, 1, 1), "ins_embed_head.center_predictor.bias": (1,)})
    s.update(two_convs("ins_embed_head.offset_head", 128, 32, ds))
    s.update({"ins_embed_head.offset_predictor.weight": (2, 32, 1, 1), "ins_embed_head.offset_predictor.bias": (2,)})
    if with_depth:
        s.update(spec_decoder("depth_head", 256, ds))
        s.update(two_convs("depth_head.head", 256, 256, ds))
        s.update({"depth_head.predictor.weight": (1, 256, 1, 1), "depth_head.predictor.bias": (1,)})
    return s


@pytest.mark.parametrize("ds", [False, True], ids=["regular", "dsconv"])
def test_state_dict_matches_detectron2_spec(ds: bool) -> None:
    model = build_model(ModelConfig(use_dsconv=ds))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    want = spec_keys(ds)
    assert sorted(set(want) - set(got)) == []
    assert sorted(set(got) - set(want)) == []
    assert {k: got[k] for k in want if got[k] != want[k]} == {}
    # The reference's enumeration of detectron2's checkpoint: 425 (regular) / 455 (DSConv) tensors.
    assert len(spec_keys(ds, with_depth=False)) == (455 if ds else 425)


@pytest.mark.parametrize("ds", [False, True], ids=["regular", "dsconv"])
def test_parameter_counts_follow_spec(ds: bool) -> None:
    model = build_model(ModelConfig(use_dsconv=ds))
    spec = spec_keys(ds)
    # Parameters (not BN running stats) computed from the spec's shapes.
    expected = 0
    for k, shape in spec.items():
        if k.endswith(("running_mean", "running_var")):
            continue
        n = 1
        for d in shape:
            n *= d
        expected += n
    assert sum(p.numel() for p in model.parameters()) == expected
    no_depth = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("depth_head"))
    # ~59.8 M (regular) / ~30.3 M (DSConv) for detectron2's two heads + backbone.
    assert abs(no_depth / 1e6 - (30.27 if ds else 59.77)) < 0.01


def test_res5_is_dilated_multigrid_and_stride_16() -> None:
    model = build_model(ModelConfig())
    assert [model.backbone.res5[i].conv2.dilation for i in range(3)] == [(2, 2), (4, 4), (8, 8)]
    assert model.backbone.res5[0].conv2.stride == (1, 1)
    assert model.backbone.res3[0].conv2.stride == (2, 2) and model.backbone.res3[0].conv1.stride == (1, 1)
    feats = model.backbone(torch.zeros(1, 3, 64, 128))
    assert {k: tuple(v.shape[-2:]) for k, v in feats.items()} == {"res2": (16, 32), "res3": (8, 16), "res5": (4, 8)}


SMALL = dict(name="small", backbone="mobilenet_v3_large", use_dsconv=True, aspp_channels=64,
             sem_decoder_channels=64, sem_head_channels=64, ins_decoder_channels=32, ins_head_channels=16,
             depth_decoder_channels=64, depth_head_channels=64, pool_kernel=None)


@pytest.mark.parametrize(
    "cfg",
    [ModelConfig(pool_kernel=(4, 8)), ModelConfig(use_dsconv=True, pool_kernel=(4, 8)), ModelConfig(**SMALL)],
    ids=["regular", "dsconv", "small"],
)
@pytest.mark.parametrize("hw", [(64, 128), (75, 131), (37, 200)])
def test_output_shapes_any_size(cfg: ModelConfig, hw: tuple[int, int]) -> None:
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, *hw), dtype=torch.uint8))
    h, w = hw
    assert tuple(out["sem_logits"].shape) == (2, 19, h, w)
    assert tuple(out["center"].shape) == (2, 1, h, w)
    assert tuple(out["offset"].shape) == (2, 2, h, w)
    assert tuple(out["depth"].shape) == (2, 1, h, w)
    assert out["depth"].min() >= 0 and out["depth"].max() <= cfg.max_depth_m


def test_full_model_forward_512x1024_cpu() -> None:
    model = build_model(ModelConfig()).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 512, 1024) * 255)
    assert tuple(out["sem_logits"].shape) == (1, 19, 512, 1024)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_offsets_are_scaled_by_four() -> None:
    model = build_model(ModelConfig(**SMALL)).eval()
    with torch.no_grad():
        model.ins_embed_head.offset_predictor.bias.fill_(1.0)
        model.ins_embed_head.offset_predictor.weight.zero_()
        out = model(torch.zeros(1, 3, 64, 64))
    assert torch.allclose(out["offset"], torch.full_like(out["offset"], 4.0))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 64, 64), "rank 3"),
        (torch.zeros(1, 4, 64, 64), "3 RGB channels"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int32), "dtype"),
        (torch.zeros(1, 64, 64, 3), "3 RGB channels"),
    ],
)
def test_bad_input_is_a_clear_value_error(bad: torch.Tensor, match: str) -> None:
    model = build_model(ModelConfig(**SMALL)).eval()
    with pytest.raises(ValueError, match=match):
        model(bad)
