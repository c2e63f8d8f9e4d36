"""Predictor: any input size in, maps of that size out; letterboxing undone; bad input refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from panoptic_depthlab_core.model import ModelConfig
from panoptic_depthlab_core.predictor import InputConfig, PipelineConfig, Predictor

SMALL = ModelConfig(name="tiny", backbone="mobilenet_v3_large", use_dsconv=True, aspp_channels=32,
                    sem_decoder_channels=32, sem_head_channels=32, ins_decoder_channels=16, ins_head_channels=16,
                    depth_decoder_channels=32, depth_head_channels=32, pool_kernel=None)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(PipelineConfig(model=SMALL, input=InputConfig(height=128, width=256)), weights=None)


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (375, 1242, 3), (77, 33, 3)])
def test_outputs_have_the_input_size(predictor: Predictor, shape) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    result = predictor.predict(image)
    h, w = shape[:2]
    assert result.panoptic_ids.shape == (h, w) and result.panoptic_ids.dtype == np.int32
    assert result.semantic.shape == (h, w) and result.semantic.dtype == np.uint8
    assert result.depth_m.shape == (h, w) and result.depth_m.dtype == np.float32
    assert set(result.timings_ms) >= {"preprocess", "network", "postprocess", "segments", "total"}
    for name in ("panoptic_ids", "semantic", "depth_m"):  # row-major: what messages and OpenCV expect
        assert getattr(result, name).flags["C_CONTIGUOUS"], name


def test_upsampling_describes_how_the_id_map_was_made(predictor: Predictor) -> None:
    image = np.random.default_rng(3).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    result = predictor.predict(image)
    up = result.upsampling
    assert up is not None and up.panoptic_ids.shape == (128, 213)  # 300x500 letterboxed into 128x256
    np.testing.assert_array_equal(up.upsample(up.panoptic_ids), result.panoptic_ids)
    same_size = predictor.predict(np.zeros((128, 256, 3), np.uint8))
    assert same_size.upsampling is None  # nothing was upsampled


@pytest.mark.parametrize("maps", [(), ("depth",), ("semantic", "depth"), ("panoptic",)])
def test_only_the_asked_maps_are_made_when_resized(predictor: Predictor, maps) -> None:
    """``maps=``: the others are None, the asked ones and the segments are those of a full call."""
    K = np.array([[400.0, 0, 250], [0, 400.0, 150], [0, 0, 1]])
    image = np.random.default_rng(6).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    full = predictor.predict(image, K)
    handed = []
    part = predictor.predict(image, K, on_maps=handed.append, maps=maps)
    assert part.segments == full.segments and part.segments
    assert (part.height, part.width) == (300, 500) == (handed[0].height, handed[0].width)
    np.testing.assert_array_equal(part.upsampling.panoptic_ids, full.upsampling.panoptic_ids)
    for name, field_name in (("panoptic", "panoptic_ids"), ("semantic", "semantic"), ("depth", "depth_m")):
        for got in (part, handed[0]):
            if name in maps:
                np.testing.assert_array_equal(getattr(got, field_name), getattr(full, field_name))
            else:
                assert getattr(got, field_name) is None, name


def test_per_input_pixel_statistics_still_get_their_maps(predictor: Predictor) -> None:
    """``cpu_resolution: input`` computes on the full-resolution ids and depth, asked for or not."""
    from dataclasses import replace

    K = np.array([[400.0, 0, 250], [0, 400.0, 150], [0, 0, 1]])
    image = np.random.default_rng(7).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    saved = predictor.cfg.segments
    try:
        predictor.cfg.segments = replace(saved, cpu_resolution="input")
        full, part = predictor.predict(image, K), predictor.predict(image, K, maps=())
    finally:
        predictor.cfg.segments = saved
    assert part.segments == full.segments and part.segments
    assert part.semantic is None


@pytest.mark.parametrize("shape", [(540, 960), (256, 512)])
def test_stuff_segments_narrow_only_the_stuff(shape) -> None:
    """``stuff_segments``: "none" = the things of a full call; "no_depth" = every segment of it, the
    stuff without depth statistics (network-resolution statistics, and the same-size path). The
    shipped model on a synthetic street, so there are cars and stuff."""
    import math

    import cv2

    from panoptic_depthlab_core.data.synthetic.render import render_frame

    predictor = Predictor.from_config()
    image = cv2.resize(render_frame(0, 0, (256, 512)).rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    K = np.array([[400.0, 0, shape[1] / 2], [0, 400.0, shape[0] / 2], [0, 0, 1]])
    full = predictor.predict(image, K)
    assert any(s.is_thing for s in full.segments) and any(not s.is_thing for s in full.segments)
    things = predictor.predict(image, K, stuff_segments="none")
    assert things.segments == [s for s in full.segments if s.is_thing]
    no_depth = predictor.predict(image, K, stuff_segments="no_depth")
    assert [s.id for s in no_depth.segments] == [s.id for s in full.segments]
    for got, want in zip(no_depth.segments, full.segments, strict=True):
        if want.is_thing:
            assert got == want
        else:
            assert (got.area, got.bbox_xywh, got.centroid_xy) == (want.area, want.bbox_xywh, want.centroid_xy)
            assert math.isnan(got.distance_m) and got.position_xyz_m is None and got.valid_depth_pixels == 0
    assert predictor.cfg.segments.stuff_depth and predictor.cfg.segments.include_stuff  # config untouched
    with pytest.raises(ValueError, match="stuff_segments must be one of full, no_depth, none, got 'things'"):
        predictor.predict(image, K, stuff_segments="things")


def test_maps_at_the_network_size_are_always_all_there(predictor: Predictor) -> None:
    """Nothing to resize, nothing to save: every map comes back, whatever was asked."""
    result = predictor.predict(np.zeros((128, 256, 3), np.uint8), maps=())
    assert result.upsampling is None
    assert all(m is not None and m.shape == (128, 256) for m in (result.panoptic_ids, result.semantic, result.depth_m))
    with pytest.raises(ValueError, match=r"unknown maps \['overlay'\]"):
        predictor.predict(np.zeros((128, 256, 3), np.uint8), maps=("depth", "overlay"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available: the all-GPU path needs an NVIDIA GPU")
def test_gpu_path_maps_and_upsampling_match_the_cpu_path() -> None:
    from panoptic_depthlab_core.runtime import BackendConfig

    cfg = PipelineConfig(model=SMALL, input=InputConfig(height=128, width=256))
    torch.manual_seed(0)
    cpu = Predictor(cfg, weights=None)
    gpu = Predictor(cfg, weights=None, backend=BackendConfig(device="cuda"), model=copy.deepcopy(cpu.model))
    image = np.random.default_rng(4).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    want, got = cpu.predict(image), gpu.predict(image)
    assert got.upsampling is not None
    np.testing.assert_array_equal(got.upsampling.rows, want.upsampling.rows)
    np.testing.assert_array_equal(got.upsampling.cols, want.upsampling.cols)
    np.testing.assert_array_equal(got.upsampling.upsample(got.upsampling.panoptic_ids), got.panoptic_ids)
    # the CPU resizes the uint8 input as uint8 (within a grey level): a few pixels may differ
    assert (got.panoptic_ids == want.panoptic_ids).mean() > 0.9
    depth_only = gpu.predict(image, maps=("depth",))  # the other maps never leave the device
    assert depth_only.panoptic_ids is None and depth_only.semantic is None
    np.testing.assert_array_equal(depth_only.depth_m, got.depth_m)
    assert depth_only.segments == got.segments


def test_letterbox_is_undone_exactly(predictor: Predictor) -> None:
    """With a model that outputs depth = the image's own column index, the mapped-back depth must
    follow the input's columns: the padding never leaks into the result."""

    class ColumnModel(torch.nn.Module):
        def forward(self, images):
            b, _, h, w = images.shape
            depth = images[:, :1].clone()  # red channel carries the encoded column
            sem = torch.zeros(b, 19, h, w)
            sem[:, 0] = 1.0
            return {"sem_logits": sem, "center": torch.zeros(b, 1, h, w), "offset": torch.zeros(b, 2, h, w),
                    "depth": depth}

    p = Predictor(PipelineConfig(model=SMALL, input=InputConfig(height=128, width=256)), weights=None,
                  model=ColumnModel())
    h, w = 300, 400  # letterboxed into 128x256 as 128x171 + padding
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = (np.arange(w) * 200 // w)[None, :]
    result = p.predict(image)
    # Interior columns: the resampled value stays within one input quantisation step of the truth.
    err = np.abs(result.depth_m[:, 5:-5] - image[:, 5:-5, 0].astype(np.float32))
    assert err.max() <= 3.0
    assert (result.panoptic_ids == 0).all()  # road everywhere, area above stuff_area


def test_intrinsics_give_3d_positions(predictor: Predictor) -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    result = predictor.predict(image, K)
    for seg in result.segments:
        if np.isfinite(seg.distance_m):
            assert seg.position_xyz_m is not None
            assert seg.position_xyz_m[2] == pytest.approx(seg.distance_m, rel=1e-4)


def test_maps_are_handed_over_before_the_segment_statistics(predictor: Predictor, monkeypatch) -> None:
    import panoptic_depthlab_core.predictor as predictor_module

    events: list[str] = []
    handed = []

    def spy(real):
        def call(*args, **kwargs):
            events.append("segments")
            return real(*args, **kwargs)

        return call

    for name in ("compute_segments", "compute_segments_upsampled"):  # input- and network-resolution
        monkeypatch.setattr(predictor_module, name, spy(getattr(predictor_module, name)))
    K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    image = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    result = predictor.predict(image, K, on_maps=lambda maps: (events.append("maps"), handed.append(maps)))
    assert events == ["maps", "segments"]
    maps = handed[0]
    assert maps.segments == [] and maps.K is result.K
    for name in ("panoptic_ids", "semantic", "depth_m"):
        np.testing.assert_array_equal(getattr(maps, name), getattr(result, name))


@pytest.mark.parametrize("shape", [(120, 160, 3), (250, 500, 3), (64, 100, 3)])
def test_statistics_at_network_resolution_describe_the_returned_maps(predictor: Predictor, shape) -> None:
    """Upsampled maps: the default statistics over the network's pixels give exactly the segments,
    areas, boxes and centroids of the returned map; their distances are those of the network's own
    depth (the returned depth is its bilinear upsampling: close, not equal, at segment borders)."""
    from dataclasses import replace

    from panoptic_depthlab_core.segments import compute_segments

    h, w = shape[:2]
    K = np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1]])
    image = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    assert predictor.cfg.segments.cpu_resolution == "network"
    fast = predictor.predict(image, K)
    want = compute_segments(fast.panoptic_ids, fast.depth_m, K=K, cfg=predictor.cfg.segments)
    assert [s.id for s in fast.segments] == [s.id for s in want] and want
    for got, ref in zip(fast.segments, want, strict=True):
        assert (got.area, got.bbox_xywh) == (ref.area, ref.bbox_xywh)
        assert got.centroid_xy == pytest.approx(ref.centroid_xy, rel=1e-12)
        assert got.depth_median_m == pytest.approx(ref.depth_median_m, rel=0.05, abs=0.05)
    saved = predictor.cfg.segments
    try:
        predictor.cfg.segments = replace(saved, cpu_resolution="input")
        slow = predictor.predict(image, K)
    finally:
        predictor.cfg.segments = saved
    assert slow.segments == compute_segments(slow.panoptic_ids, slow.depth_m, K=K, scores={
        s.id: s.score for s in slow.segments}, cfg=replace(saved, cpu_resolution="input"))  # fmt: skip


@pytest.mark.parametrize("src_hw, dst_hw", [((64, 114), (1080, 1920)), ((128, 171), (300, 400)), ((37, 50), (20, 31))])
def test_host_upsampling_equals_the_torch_path(src_hw, dst_hw) -> None:
    """The CPU path resizes the maps with numpy/OpenCV; the GPU path with torch: same maps (ids
    exactly, depth to float rounding), for up- and downscales and odd sizes."""
    from panoptic_depthlab_core.maps import nearest_index, upsample_maps_device, upsample_maps_host
    from panoptic_depthlab_core.results import NearestUpsampling

    rng = np.random.default_rng(1)
    panoptic = torch.from_numpy(rng.integers(-1, 19000, src_hw)).to(torch.int64)
    semantic = torch.from_numpy(rng.integers(0, 19, src_hw)).to(torch.int64)
    depth = torch.from_numpy(rng.uniform(1, 80, src_hw).astype(np.float32))
    rows, cols = nearest_index(src_hw[0], dst_hw[0]), nearest_index(src_hw[1], dst_hw[1])
    small = {"panoptic": panoptic.to(torch.int32).numpy(), "semantic": semantic.to(torch.uint8).numpy(),
             "depth": depth.numpy()}  # fmt: skip
    host = upsample_maps_host(small, NearestUpsampling(small["panoptic"], rows.numpy(), cols.numpy()))
    device = upsample_maps_device({"panoptic": panoptic, "semantic": semantic, "depth": depth}, rows, cols)
    np.testing.assert_array_equal(host["panoptic"], device["panoptic"].to(torch.int32).numpy())
    np.testing.assert_array_equal(host["semantic"], device["semantic"].to(torch.uint8).numpy())
    want = device["depth"].numpy()
    assert host["depth"].dtype == np.float32 and host["depth"].shape == dst_hw
    # the bilinear weights differ in their last float32 bits: ~1e-5 of the jump between neighbours
    # (here random 1-80 m), i.e. below 2 mm; smooth real depth differs far less
    np.testing.assert_allclose(host["depth"], want, rtol=0, atol=2e-5 * (80 - 1))


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((10, 10), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ([[0, 0, 0]], "numpy"),
    ],
)
def test_bad_image_is_a_clear_error(predictor: Predictor, image, match) -> None:
    with pytest.raises(ValueError, match=match):
        predictor.predict(image)


@pytest.mark.parametrize(
    "K, match",
    [(np.eye(2), "3x3"), (np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]), "non-finite"), (np.zeros((3, 3)), "focal")],
)
def test_bad_intrinsics_are_a_clear_error(predictor: Predictor, K, match) -> None:
    with pytest.raises(ValueError, match=match):
        predictor.predict(np.zeros((32, 32, 3), np.uint8), K)


def test_nothing_detected_gives_empty_segments() -> None:
    class Void(torch.nn.Module):
        def forward(self, images):
            b, _, h, w = images.shape
            sem = torch.zeros(b, 19, h, w)
            sem[:, 13] = 1.0  # every pixel 'car' but no center: all void
            return {"sem_logits": sem, "center": torch.zeros(b, 1, h, w), "offset": torch.zeros(b, 2, h, w),
                    "depth": torch.full((b, 1, h, w), 10.0)}

    p = Predictor(PipelineConfig(model=SMALL, input=InputConfig(height=64, width=64)), weights=None, model=Void())
    result = p.predict(np.zeros((50, 70, 3), np.uint8))
    assert result.segments == []
    assert (result.panoptic_ids == -1).all()


@pytest.mark.parametrize("shape, maps", [((300, 500, 3), None), ((300, 500, 3), ("depth",)), ((128, 256, 3), ())])
def test_device_path_run_on_the_cpu_matches_the_host_path(predictor: Predictor, shape, maps) -> None:
    """The all-GPU steps (resize, statistics, copy of the wanted maps) are device-agnostic torch:
    run here on the CPU they give the host path's ids and segments (no GPU needed to test them)."""
    from panoptic_depthlab_core.predictor import StepClock, check_maps
    from panoptic_depthlab_core.segments import compute_segments_torch

    image = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
    K = np.array([[300.0, 0, shape[1] / 2], [0, 300.0, shape[0] / 2], [0, 0, 1]])
    host = predictor.predict(image, K, maps=maps)
    with torch.inference_mode():
        batch, valid_hw = predictor._preprocess(image)
        net = predictor._postprocess(predictor.backend(batch), valid_hw)
        handed = []
        got = predictor._finish_on_device(net, shape[:2], check_maps(maps), K, predictor.cfg.segments,
                                          handed.append, StepClock(lambda: None))  # fmt: skip
    assert handed[0].segments == [] and list(got.timings_ms) == ["postprocess", "segments", "to_host", "total"]
    for name in ("panoptic_ids", "semantic", "depth_m"):
        assert (getattr(got, name) is None) == (getattr(host, name) is None), name
    if host.panoptic_ids is not None:
        np.testing.assert_array_equal(got.panoptic_ids, host.panoptic_ids)
    if host.upsampling is not None:
        np.testing.assert_array_equal(got.upsampling.panoptic_ids, host.upsampling.panoptic_ids)
        np.testing.assert_array_equal(got.upsampling.rows, host.upsampling.rows)
    full_ids = host.upsampling.upsample(host.upsampling.panoptic_ids) if host.upsampling else host.panoptic_ids
    depth = torch.nn.functional.interpolate(net.depth[None, None], size=shape[:2], mode="bilinear")[0, 0]
    want = compute_segments_torch(torch.from_numpy(full_ids), depth, K=K, scores=net.scores, cfg=predictor.cfg.segments)
    assert got.segments == want
    assert [s.id for s in got.segments] == [s.id for s in host.segments]
