"""Backend protocol and factory.

A backend takes float32 RGB 0-255 images ``[B, 3, H, W]`` (a torch tensor on the backend's device)
and returns the model's output dict (``sem_logits``, ``center``, ``offset``, ``depth``) as torch
tensors on that device, so post-processing never depends on which engine ran the network.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from ..export.artefacts import ArtefactInfo


@dataclass
class BackendConfig:
    # auto: onnxruntime for fp32 on a CPU when it is installed (its fused CPU kernels run the network
    # faster than torch's eager ops; measured in docs/performance.md), else torch (on CUDA the all-GPU
    # path); see resolve_backend_name
    name: Literal["auto", "torch", "onnxruntime", "tensorrt"] = "torch"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    # torch: fp32/fp16/bf16 by autocast. onnxruntime/tensorrt: the precision of the ONNX file
    # (fp32, fp16, int8), checked against it; it is never chosen by a builder flag
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    channels_last: bool = False
    cuda_graph: bool = False  # torch backend: capture one graph for the fixed input shape
    # onnxruntime / tensorrt: a prebuilt ONNX file, used as it is (empty: the model is exported into
    # the cache once, fp32 only)
    onnx_path: str = ""
    engine_path: str = ""  # tensorrt: a prebuilt engine (export tensorrt --engine) with its .json sidecar
    engine_cache_dir: str = ""  # tensorrt engines, timing caches, ORT's TensorRT EP cache; "" = default
    allow_engine_rebuild: bool = True  # false: a missing or mismatching engine fails instead of building
    workspace_mb: int = 4096  # tensorrt builder workspace (part of the engine key)
    builder_optimization_level: int = 3  # tensorrt builder 0..5 (part of the engine key)
    # onnxruntime on CUDA: put the TensorRT execution provider first (off: CUDA EP only, no
    # TensorRT build at every start)
    onnxruntime_tensorrt: bool = False
    num_threads: int = 0  # CPU intra-op threads; 0 = library default


class Backend(Protocol):
    device: torch.device

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


def describe_artefact(backend: object, cfg: BackendConfig) -> ArtefactInfo:
    """Which artefact ``backend`` runs, where it came from and what it was built on (log, /diagnostics)."""
    known = getattr(backend, "artefact", None)
    if isinstance(known, ArtefactInfo):  # the TensorRT backend records its engine's origin itself
        return known
    onnx_path = getattr(backend, "onnx_path", None)
    if onnx_path is not None:
        providers = getattr(backend, "providers", None) or []
        return ArtefactInfo(
            kind="onnx",
            path=str(onnx_path),
            origin="given, used as is" if cfg.onnx_path else "exported from the model into the cache",
            precision=str(getattr(backend, "precision", cfg.precision)),
            providers=",".join(p if isinstance(p, str) else p[0] for p in providers),
        )
    return ArtefactInfo(kind="torch model", origin="weights loaded in this process", precision=cfg.precision)


def resolve_backend_name(name: str, device: str, precision: str = "fp32") -> str:
    """The backend ``auto`` stands for on ``device``/``precision``; other names are returned as they are."""
    if name != "auto":
        return name
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu and precision == "fp32" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime"
    return "torch"


def create_backend(cfg: BackendConfig, model: torch.nn.Module, input_hw: tuple[int, int]) -> Backend:
    """Build the backend ``cfg.name`` for ``model`` at the fixed network input size ``input_hw``."""
    # Imported here: each backend module imports this one (BackendConfig), and onnxruntime/TensorRT
    # are optional dependencies.
    if cfg.name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, cfg, input_hw)
    if cfg.name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, cfg, input_hw)
    if cfg.name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model, cfg, input_hw)
    raise ValueError(f"unknown backend {cfg.name!r}; expected auto, torch, onnxruntime or tensorrt")
