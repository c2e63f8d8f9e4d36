"""All-GPU pipeline pieces: decode compressed frames on the device, pinned-memory async transfers.

At 1024x2048 a raw RGB frame is 6 MiB; a JPEG is ~0.5 MiB. Uploading the JPEG and decoding with
nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``) saves both the CPU decode and most of the
PCIe traffic. Results come back through reused pinned buffers with non-blocking copies, so the host
only waits once, for everything, at the end.
"""

from __future__ import annotations

import numpy as np
import torch

JPEG_MAGIC = b"\xff\xd8"


def gpu_jpeg_available(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def decode_image(data: bytes | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Encoded JPEG/PNG bytes -> uint8 RGB [H, W, 3] on ``device`` (JPEG decoded there when CUDA)."""
    device = torch.device(device)
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.ndim != 1 or buf.size < 4:
        raise ValueError(f"expected encoded image bytes, got an array of shape {buf.shape}")
    if buf[:2].tobytes() == JPEG_MAGIC and gpu_jpeg_available(device):
        from torchvision.io import ImageReadMode, decode_jpeg

        raw = torch.from_numpy(buf.copy())  # torchvision wants a writable CPU byte tensor
        chw = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        return chw.permute(1, 2, 0)
    import cv2

    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cannot decode image bytes (not a JPEG/PNG, or corrupt)")
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))
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
        for name, t in tensors.items():
            if t.device.type == "cpu":
                out[name] = t
                continue
            host = self.buffer(name, t)
            host.copy_(t, non_blocking=True)
            out[name] = host
        if any(t.device.type == "cuda" for t in tensors.values()):
            torch.cuda.current_stream().synchronize()
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
