"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

On the CPU the session runs with every graph optimisation (operator fusion, NCHWc layouts) and one
intra-op thread per core, which is where it beats torch eager. On CUDA the input and outputs are
bound to torch CUDA tensors through I/O binding, so nothing crosses to the host. When no ONNX file
is configured, the Predictor's model is exported once into the cache and reused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..export.artefacts import check_precision
from ..export.onnx_export import cached_onnx_for_model, check_onnx_file, default_cache_dir, onnx_input_shape
from .backend import BackendConfig

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("sem_logits", "center", "offset", "depth")


def default_num_threads() -> int:
    """Cores this process may run on (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def select_providers(
    device: torch.device,
    precision: str,
    available: list[str],
    engine_cache_dir: str = "",
    tensorrt: bool = False,
) -> list:
    """Provider list for ``device``/``precision`` out of the ``available`` ones; ValueError if impossible.

    The precision is the ONNX file's (fp32, fp16 or Q/DQ int8); every provider runs the graph as it
    is. ONNX Runtime's TensorRT execution provider is used only when asked for (``tensorrt``): it
    builds a TensorRT engine when a session starts, minutes for a large model, so it must not happen
    behind the user's back; its engines and timing caches go to ``<engine_cache_dir>/ort_trt`` (the
    default cache folder when empty), so the second start reuses them."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"onnxruntime runs fp32, fp16 or int8 ONNX files, got precision {precision!r}")
    if device.type == "cpu":
        if tensorrt:
            raise ValueError("the TensorRT execution provider needs a CUDA device, not cpu")
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise ValueError(f"onnxruntime backend supports devices cpu and cuda, got {device}")
    device_id = device.index or 0
    providers: list = []
    if tensorrt:
        if "TensorrtExecutionProvider" not in available:
            raise ValueError(
                f"onnxruntime_tensorrt requested but onnxruntime has no TensorRT execution provider "
                f"(available: {available}); install onnxruntime-gpu with TensorRT, or use backend tensorrt"
            )
        cache = str(Path(engine_cache_dir or default_cache_dir() / "engines") / "ort_trt")
        trt_opts = {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            # the EP's own switches that let it keep the file's fp16/int8 (Q/DQ scales, no calibration
            # table) on TensorRT 10; ONNX Runtime >= 1.27 handles TensorRT 11, where typing is always strong
            "trt_fp16_enable": precision == "fp16",
            "trt_int8_enable": precision == "int8",
        }
        providers.append(("TensorrtExecutionProvider", trt_opts))
    if "CUDAExecutionProvider" not in available and not providers:
        raise ValueError(
            f"device {device} requested but onnxruntime has no CUDA execution provider "
            f"(available: {available}); install onnxruntime-gpu"
        )
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    providers.append("CPUExecutionProvider")
    return providers


class OnnxRuntimeBackend:
    def __init__(self, model: torch.nn.Module | None, cfg: BackendConfig, input_hw: tuple[int, int]) -> None:
        import onnxruntime as ort

        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        providers = select_providers(
            self.device, cfg.precision, ort.get_available_providers(), cfg.engine_cache_dir, cfg.onnxruntime_tensorrt
        )
        if cfg.onnx_path:
            onnx_path = Path(cfg.onnx_path)
        else:
            if model is None:
                raise ValueError("backend onnxruntime needs onnx_path or a model to export")
            if cfg.precision != "fp32":
                raise ValueError(
                    f"onnxruntime precision {cfg.precision} runs a {cfg.precision} ONNX file: make one with "
                    f"`panoptic-depthlab export onnx --precision {cfg.precision}` and set onnx_path"
                )
            onnx_path = cached_onnx_for_model(model, self.input_hw, cfg.engine_cache_dir or None)
        proto = check_onnx_file(onnx_path)
        self.precision = check_precision(proto, onnx_path, cfg.precision).precision
        dims = onnx_input_shape(proto)
        static = all(isinstance(d, int) and d > 0 for d in dims)
        if static and tuple(dims[2:]) != self.input_hw:
            raise ValueError(
                f"ONNX model {onnx_path} has fixed input size {dims[2:]}, but the network input "
                f"size is {list(self.input_hw)}"
            )
        self.batch_size = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        num_classes = None
        for out in proto.graph.output:
            if out.name == "sem_logits":
                d = out.type.tensor_type.shape.dim[1]
                num_classes = d.dim_value if d.HasField("dim_value") else None
        self.num_classes = num_classes
        del proto

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = cfg.num_threads if cfg.num_threads > 0 else default_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if self.device.type == "cpu":
            # ORT's idle threads otherwise spin after each run, taking the cores from the torch
            # post-processing that follows, which then waits for them on a small CPU (measured in
            # docs/performance.md)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as exc:  # ORT's own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
        self.onnx_path = onnx_path
        self.providers = self.session.get_providers()
        if self.device.type == "cuda" and self.providers == ["CPUExecutionProvider"]:
            raise ValueError(f"onnxruntime fell back to the CPU for device {self.device}")
        log.info(
            "onnxruntime session on %s (%s), %d threads",
            onnx_path.name,
            self.providers,
            opts.intra_op_num_threads,
        )

    def _run_cpu(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        arr = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(list(OUTPUT_NAMES), {"images": arr})
        return {name: torch.from_numpy(v) for name, v in zip(OUTPUT_NAMES, outs, strict=True)}

    def _run_cuda(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """I/O binding straight onto torch CUDA memory; no host round trip."""
        images = images.to(self.device, torch.float32).contiguous()
        b, _, h, w = images.shape
        channels = {"sem_logits": self.num_classes, "center": 1, "offset": 2, "depth": 1}
        if channels["sem_logits"] is None:
            raise ValueError("ONNX model has a symbolic class dimension; cannot pre-allocate outputs")
        outputs = {
            n: torch.empty((b, c, h, w), dtype=torch.float32, device=self.device) for n, c in channels.items()
        }
        binding = self.session.io_binding()
        dev_id = self.device.index or 0
        binding.bind_input("images", "cuda", dev_id, np.float32, tuple(images.shape), images.data_ptr())
        for name, t in outputs.items():
            binding.bind_output(name, "cuda", dev_id, np.float32, tuple(t.shape), t.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # ORT uses its own stream; input must be ready
        self.session.run_with_iobinding(binding)  # synchronises ORT's stream before returning
        return outputs

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(images.shape[-2:]) != self.input_hw:
            raise ValueError(
                f"onnxruntime backend expects {self.input_hw} inputs, got {tuple(images.shape[-2:])}"
            )
        run = self._run_cuda if self.device.type == "cuda" else self._run_cpu
        b = self.batch_size
        if b is None or images.shape[0] == b:
            return run(images)
        if images.shape[0] % b:
            raise ValueError(f"batch {images.shape[0]} is not a multiple of the ONNX model's batch {b}")
        parts = [run(images[i : i + b]) for i in range(0, images.shape[0], b)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
