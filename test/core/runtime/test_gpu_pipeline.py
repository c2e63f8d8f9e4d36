"""GPU pipeline pieces: decode (CPU fallback everywhere, nvJPEG on CUDA), pinned transfers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from panoptic_depthlab_core.export.onnx_export import realistic_test_image
from panoptic_depthlab_core.runtime.gpu_pipeline import PinnedStager, decode_image, gpu_jpeg_available, upload


def _encoded(ext: str) -> tuple[np.ndarray, bytes]:
    rgb = realistic_test_image(48, 80, seed=2)
    ok, buf = cv2.imencode(ext, rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    assert ok
    return rgb, buf.tobytes()


@pytest.mark.parametrize("ext,tol", [(".png", 0.0), (".jpg", 8.0)])
def test_decode_on_cpu_gives_rgb(ext: str, tol: float) -> None:
    rgb, data = _encoded(ext)
    out = decode_image(data, "cpu")
    assert out.shape == (48, 80, 3) and out.dtype == torch.uint8 and out.device.type == "cpu"
    assert np.abs(out.numpy().astype(int) - rgb.astype(int)).mean() <= tol  # JPEG is lossy; PNG exact


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(b"\x00\x01\x02 definitely not an image", "cpu")
    with pytest.raises(ValueError, match="encoded image bytes"):
        decode_image(np.zeros((4, 4), np.uint8), "cpu")


def test_stager_to_host_cpu_passthrough() -> None:
    host = PinnedStager().to_host({"a": torch.arange(6).view(2, 3)})
    np.testing.assert_array_equal(host["a"], np.arange(6).reshape(2, 3))
    assert not gpu_jpeg_available("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_decode_and_pinned_round_trip() -> None:
    rgb, data = _encoded(".jpg")
    on_gpu = decode_image(data, "cuda")
    assert on_gpu.is_cuda and on_gpu.shape == (48, 80, 3)
    cpu = decode_image(data, "cpu")
    assert (on_gpu.cpu().int() - cpu.int()).abs().float().mean() <= 3.0  # nvJPEG vs libjpeg rounding
    up = upload(torch.from_numpy(rgb), "cuda")
    stager = PinnedStager()
    back = stager.to_host({"img": up, "depth": up.float().mean(-1)})
    np.testing.assert_array_equal(back["img"], rgb)
    assert back["depth"].shape == (48, 80)


def test_jpeg_decoder_is_named_and_falls_back_when_the_probe_fails(monkeypatch) -> None:
    from panoptic_depthlab_core.runtime import gpu_pipeline

    assert gpu_pipeline.jpeg_decoder("cpu") == "cpu (opencv)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(gpu_pipeline, "_probe_nvjpeg", lambda key: (False, f"RuntimeError: no nvJPEG for {key}"))
    assert gpu_pipeline.jpeg_decoder("cuda") == (
        "cpu (opencv): nvJPEG probe failed on cuda:0: RuntimeError: no nvJPEG for cuda:0"
    )
    assert not gpu_pipeline.gpu_jpeg_available("cuda:0")
    monkeypatch.setattr(gpu_pipeline, "_probe_nvjpeg", lambda key: (True, ""))
    assert gpu_pipeline.jpeg_decoder("cuda:1") == "nvjpeg (cuda:1)" and gpu_pipeline.gpu_jpeg_available("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_nvjpeg_probe_runs_once_and_names_the_decoder() -> None:
    from panoptic_depthlab_core.runtime import gpu_pipeline

    name = gpu_pipeline.jpeg_decoder("cuda")
    assert name.startswith(("nvjpeg (cuda:", "cpu (opencv): nvJPEG probe failed")), name
    assert gpu_pipeline._probe_nvjpeg.cache_info().currsize >= 1
    _, data = _encoded(".jpg")
    out = decode_image(data, "cuda")  # nvJPEG or the CPU fallback: either way RGB on the device
    assert out.is_cuda and out.shape == (48, 80, 3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_stager_waits_for_the_tensors_device_not_the_current_one() -> None:
    with torch.cuda.device(0):
        big = torch.ones(4096, 4096, device="cuda:1")
        out = big @ big  # queued on cuda:1's stream while cuda:0 is current
        host = PinnedStager().to_host({"out": out[:2, :2]})
    np.testing.assert_array_equal(host["out"], np.full((2, 2), 4096.0, np.float32))
