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
