"""PyTorch eager backend: CPU or CUDA, fp32/fp16/bf16, channels_last, optional CUDA graph."""

from __future__ import annotations

import torch

from .backend import BackendConfig

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend:
    def __init__(self, model: torch.nn.Module, cfg: BackendConfig, input_hw: tuple[int, int]) -> None:
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        if cfg.precision not in _DTYPES:
            raise ValueError(f"torch backend supports precision fp32, fp16, bf16, not {cfg.precision!r}")
        if cfg.precision == "fp16" and self.device.type == "cpu":
            raise ValueError("precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.dtype = _DTYPES[cfg.precision]
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        self.input_hw = input_hw
        self._graph: torch.cuda.CUDAGraph | None = None
        self._use_graph = cfg.cuda_graph and self.device.type == "cuda"
        self._static_in: torch.Tensor | None = None
        self._static_out: dict[str, torch.Tensor] = {}

    def _run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.contiguous(memory_format=self.memory_format)
        if self.dtype == torch.float32:
            return self.model(images)
        with torch.autocast(self.device.type, dtype=self.dtype):
            out = self.model(images)
        return {k: v.float() for k, v in out.items()}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if not self._use_graph:
            return self._run(images)
        # graph capture and replay use the current device's streams: make it ours (cuda:1 from device 0)
        with torch.cuda.device(self.device):
            if self._graph is None or self._static_in is None or self._static_in.shape != images.shape:
                self._capture(images)
            self._static_in.copy_(images)
            self._graph.replay()
            return {k: v.clone() for k, v in self._static_out.items()}

    def _capture(self, images: torch.Tensor) -> None:
        """Warm up on a side stream, then capture one graph for this exact input shape."""
        self._static_in = images.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._run(self._static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._static_out = self._run(self._static_in)
