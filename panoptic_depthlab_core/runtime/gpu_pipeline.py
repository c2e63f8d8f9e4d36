"""All-GPU pipeline pieces: decode compressed frames on the device, pinned-memory async transfers.

At 1024x2048 a raw RGB frame is 6 MiB; a JPEG is ~0.5 MiB. Uploading the JPEG and decoding with
nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``) saves both the CPU decode and most of the
PCIe traffic. Whether nvJPEG works is not assumed from torchvision importing: it is probed once per
device by decoding a tiny JPEG there (a torchvision built without nvJPEG, a missing libnvjpeg or a
driver problem fails that probe), and JPEGs are decoded on the CPU (OpenCV) otherwise;
``jpeg_decoder(device)`` says which decoder runs and why, for logs and /diagnostics. Results come
back through reused pinned buffers with non-blocking copies, so the host only waits once, for
everything, at the end.
"""

from __future__ import annotations

import functools
import logging

import cv2
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"


@functools.cache
def _probe_nvjpeg(device: str) -> tuple[bool, str]:
    """(works, why): decode an 8x8 JPEG with nvJPEG on ``device`` and compare it with OpenCV's decode."""
    if not torch.cuda.is_available():
        return False, "CUDA not available"
    try:
        pattern = np.zeros((8, 8, 3), np.uint8)
        pattern[:4] = (200, 40, 40)
        pattern[4:] = (40, 40, 200)
        ok, encoded = cv2.imencode(".jpg", pattern[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            return False, "could not encode the probe JPEG"
        decoded = decode_jpeg(torch.from_numpy(encoded.reshape(-1).copy()), mode=ImageReadMode.RGB, device=device)
        decoded = decoded.permute(1, 2, 0).cpu().numpy().astype(int)
        error = float(np.abs(decoded - pattern.astype(int)).mean())
        if decoded.shape != (8, 8, 3) or error > 12:
            return False, f"nvJPEG decoded the probe wrongly (shape {decoded.shape}, mean error {error:.1f})"
    except Exception as exc:  # no nvJPEG in this torchvision build, libnvjpeg missing, driver error
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _device_key(device: torch.device | str) -> str | None:
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


def gpu_jpeg_available(device: torch.device | str) -> bool:
    """True when nvJPEG decoded a probe JPEG on ``device`` (probed once per device)."""
    key = _device_key(device) if torch.cuda.is_available() else None
    return key is not None and _probe_nvjpeg(key)[0]


def jpeg_decoder(device: torch.device | str) -> str:
    """Which decoder JPEG frames for ``device`` get: ``nvjpeg (cuda:N)`` or ``cpu (opencv)`` and why."""
    if torch.device(device).type != "cuda":
        return "cpu (opencv)"
    if not torch.cuda.is_available():
        return "cpu (opencv): CUDA not available"
    key = _device_key(device)
    works, why = _probe_nvjpeg(key)
    return f"nvjpeg ({key})" if works else f"cpu (opencv): nvJPEG probe failed on {key}: {why}"


def _decode_on_cpu(buf: np.ndarray) -> torch.Tensor:
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cannot decode image bytes (not a JPEG/PNG, or corrupt)")
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))


def decode_image(data: bytes | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Encoded JPEG/PNG bytes -> uint8 RGB [H, W, 3] on ``device`` (JPEG decoded there when nvJPEG works)."""
    device = torch.device(device)
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.ndim != 1 or buf.size < 4:
        raise ValueError(f"expected encoded image bytes, got an array of shape {buf.shape}")
    if buf[:2].tobytes() == JPEG_MAGIC and gpu_jpeg_available(device):
        raw = torch.from_numpy(buf.copy())  # torchvision wants a writable CPU byte tensor
        try:
            chw = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
            return chw.permute(1, 2, 0)
        except RuntimeError as exc:  # a JPEG nvJPEG does not support (e.g. progressive): the CPU may
            log.debug("nvJPEG could not decode a frame (%s); decoding on the CPU", exc)
    rgb = _decode_on_cpu(buf)
    return upload(rgb, device) if device.type == "cuda" else rgb


class PinnedStager:
    """Reusable pinned host buffers keyed by (name, shape, dtype) for async H2D and D2H copies."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, tuple(like.shape), like.dtype)
        buf = self._buffers.get(key)
        if buf is None:
            buf = torch.empty(like.shape, dtype=like.dtype, pin_memory=torch.cuda.is_available())
            self._buffers[key] = buf
        return buf

    def to_host(self, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Copy every tensor to pinned host memory asynchronously, synchronise once, return numpy views.

        The returned arrays alias the reused buffers: copy them if they must outlive the next call.
        """
        out: dict[str, torch.Tensor] = {}
        devices: set[torch.device] = set()
        for name, t in tensors.items():
            if t.device.type == "cpu":
                out[name] = t
                continue
            host = self.buffer(name, t)
            host.copy_(t, non_blocking=True)  # enqueued on the current stream of t's device
            out[name] = host
            devices.add(t.device)
        for device in devices:  # the tensors' devices' streams, not the current device's (cuda:1)
            torch.cuda.current_stream(device).synchronize()
        return {k: v.numpy() for k, v in out.items()}


_UPLOAD_STAGER = PinnedStager()
_UPLOAD_DONE: dict[tuple, torch.cuda.Event] = {}


def upload(image: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Host image -> device through a pinned staging buffer (non-blocking DMA, no pageable copy)."""
    device = torch.device(device)
    tensor = torch.as_tensor(image)
    if device.type != "cuda":
        return tensor
    key = (tuple(tensor.shape), tensor.dtype)
    if key in _UPLOAD_DONE:
        _UPLOAD_DONE[key].synchronize()  # the previous DMA out of this buffer must finish before reuse
    staged = _UPLOAD_STAGER.buffer("upload", tensor)
    staged.copy_(tensor)
    on_device = staged.to(device, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    _UPLOAD_DONE[key] = event
    return on_device
