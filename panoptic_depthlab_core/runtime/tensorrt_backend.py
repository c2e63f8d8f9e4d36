"""Native TensorRT backend (TensorRT 10.3 up to 11.x): a prebuilt or cached engine, I/O as torch CUDA tensors.

Where the engine comes from, in order (``prepare_engine``):

1. ``engine_path``: an engine built by ``panoptic-depthlab export tensorrt --engine`` with its sidecar
   (``<engine>.json``). It is loaded as it is when the sidecar says it was built from the configured
   precision and input shape, on this GPU model, by this TensorRT. Otherwise it is rebuilt from
   ``onnx_path`` into the cache when ``allow_engine_rebuild`` is true, else the load fails naming the
   file and every mismatch. The file checks run before TensorRT is needed, so a truncated engine or
   one from another machine is reported as such even where TensorRT or the GPU is missing.
2. ``onnx_path`` (precision read from the file; a different ``precision`` setting is an error) or, for
   fp32 only, the model exported once into the cache: the engine cache returns the engine built
   for this ONNX, shape, optimisation level and workspace on this GPU and TensorRT, building it
   first when needed (and not allowed when ``allow_engine_rebuild`` is false).

Everything runs inside ``torch.cuda.device(cfg.device)``: TensorRT builds and deserialises on the
current CUDA device, so ``cuda:1`` builds on device 1 and keys the engine by device 1's GPU. The
engine runs with ``execute_async_v3`` on torch's current stream of that device, with tensor addresses
pointing at torch allocations, so the outputs are ordinary CUDA tensors and ordering with the
surrounding torch work is automatic.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..export import engine_cache
from ..export.artefacts import ArtefactInfo, check_precision
from ..export.engine_cache import EngineCache, EngineCacheError, check_prebuilt, read_engine_bytes, sidecar_path_for
from ..export.onnx_export import cached_onnx_for_model, check_onnx_file, default_cache_dir, onnx_input_shape
from ..export.tensorrt_build import BuildOptions, build_engine
from ..weights import file_sha256
from .backend import BackendConfig

if TYPE_CHECKING:
    import tensorrt

    from ..export.engine_cache import BuildEnvironment

log = logging.getLogger(__name__)

# The supported range, also pinned by setup.py's ``tensorrt`` extra: JetPack 6 ships 10.3, x86
# ``pip install tensorrt`` gives 11.x.
TENSORRT_MIN = (10, 3)
TENSORRT_BELOW = (12, 0)
INSTALL_COMMAND = 'pip install ".[tensorrt]"  (TensorRT >=10.3,<12)'
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTNotAvailable(ImportError):
    """TensorRT's Python package cannot be imported here, or its version is not supported."""


def check_tensorrt_version(version: str) -> tuple[int, int]:
    """(major, minor) of a supported TensorRT version; TensorRTNotAvailable otherwise."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise TensorRTNotAvailable(f"cannot read the TensorRT version {version!r}; reinstall: {INSTALL_COMMAND}")
    major_minor = (int(match.group(1)), int(match.group(2)))
    if not TENSORRT_MIN <= major_minor < TENSORRT_BELOW:
        raise TensorRTNotAvailable(
            f"TensorRT {version} is not supported (supported: >=10.3,<12, strongly typed networks); "
            f"install a supported one: {INSTALL_COMMAND}"
        )
    return major_minor


def import_tensorrt() -> Any:
    """``import tensorrt`` (a supported version) or raise TensorRTNotAvailable saying how to install it."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        raise TensorRTNotAvailable(
            f"TensorRT not importable ({type(exc).__name__}: {exc}); install it on a machine with an NVIDIA "
            f"GPU: {INSTALL_COMMAND}, or use backend torch/onnxruntime"
        ) from exc
    version = getattr(trt, "__version__", None)
    if not isinstance(version, str) or not hasattr(trt, "Builder"):
        # e.g. only tensorrt-stubs installed: a bare namespace package of .pyi files imports fine
        where = getattr(trt, "__file__", None) or list(getattr(trt, "__path__", []))
        raise TensorRTNotAvailable(
            f"TensorRT not importable: 'tensorrt' at {where} is not the TensorRT library (type stubs only?); "
            f"install it: {INSTALL_COMMAND}, or use backend torch/onnxruntime"
        )
    check_tensorrt_version(version)
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except TensorRTNotAvailable:
        return False
    return True


def _torch_dtype(dtype: Any) -> torch.dtype:
    import tensorrt as trt

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
        trt.bfloat16: torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"unsupported TensorRT tensor dtype {dtype}")
    return table[dtype]


def engine_cache_dir(cfg: BackendConfig) -> Path:
    return Path(cfg.engine_cache_dir) if cfg.engine_cache_dir else default_cache_dir() / "engines"


def cuda_device(device: str) -> torch.device:
    """``cuda`` -> ``cuda:<current>``; anything but a CUDA device is refused."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"backend tensorrt needs a CUDA device, got device {device!r}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return dev


def probe_environment(device_index: int) -> tuple[BuildEnvironment | None, str]:
    """(this machine's GPU and TensorRT, "") or (None, why they are missing)."""
    try:  # through the module: tests replace current_environment there
        return engine_cache.current_environment(device_index), ""
    except (TensorRTNotAvailable, RuntimeError) as exc:
        return None, str(exc)


@dataclass
class PreparedEngine:
    engine_path: Path
    sidecar_path: Path
    key: dict  # the sidecar's key: ONNX sha256, precision, input shape, GPU, TensorRT, ...
    artefact: ArtefactInfo
    rebuild_reasons: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.key["input_shape"][0])


def _artefact(path: Path, key: dict, origin: str, detail: str = "") -> ArtefactInfo:
    return ArtefactInfo(
        kind="tensorrt engine",
        path=str(path),
        origin=origin,
        precision=str(key.get("precision", "")),
        built_on=f"{key.get('gpu_name')} (compute capability {key.get('compute_capability')})",
        tensorrt_version=str(key.get("tensorrt_version", "")),
        detail=detail,
    )


def prepare_engine(
    cfg: BackendConfig,
    input_hw: tuple[int, int],
    model: torch.nn.Module | None = None,
    env: BuildEnvironment | None = None,
    env_problem: str = "",
    build_fn: Any = None,
) -> PreparedEngine:
    """Find, check and if needed (re)build the engine ``cfg`` describes (see the module docstring).

    ``env`` is this machine's GPU and TensorRT (probed on ``cfg.device`` when None; tests pass a
    fake one with ``build_fn``, the builder ``(onnx_path, engine_out_path) -> None``)."""
    if cfg.precision not in ENGINE_PRECISIONS:
        raise ValueError(
            f"backend tensorrt runs precision fp32, fp16 or int8 (from the ONNX file), not {cfg.precision!r}"
        )
    device = cuda_device(cfg.device)
    if env is None and not env_problem:
        env, env_problem = probe_environment(device.index or 0)
    onnx_sha = file_sha256(cfg.onnx_path) if cfg.onnx_path and Path(cfg.onnx_path).is_file() else ""

    prebuilt_reasons: list[str] = []
    if cfg.engine_path:
        engine_path = Path(cfg.engine_path)
        sidecar, prebuilt_reasons = check_prebuilt(
            engine_path, env, cfg.precision, None, onnx_sha, env_problem
        )
        if sidecar is not None:
            shape = sidecar["key"].get("input_shape") or []
            if list(shape[2:]) != list(input_hw):
                prebuilt_reasons.append(f"engine input {shape}, network input size {list(input_hw)}")
        if not prebuilt_reasons and sidecar is not None:
            log.info("prebuilt TensorRT engine %s matches this GPU and TensorRT: loading it", engine_path)
            key = sidecar["key"]
            artefact = _artefact(engine_path, key, "prebuilt")
            return PreparedEngine(engine_path, sidecar_path_for(engine_path), key, artefact)
        problem = f"TensorRT engine {engine_path} cannot be used here: {'; '.join(prebuilt_reasons)}"
        if not cfg.allow_engine_rebuild:
            raise EngineCacheError(
                f"{problem}. Rebuilding is disabled (allow_engine_rebuild false): build it on this machine "
                f"(panoptic-depthlab export tensorrt --onnx MODEL.onnx --engine {engine_path}) or allow rebuilding"
            )
        if not cfg.onnx_path:
            raise EngineCacheError(f"{problem}; set onnx_path to rebuild it from its ONNX file")
        log.warning("%s; rebuilding it from %s into the engine cache", problem, cfg.onnx_path)

    if cfg.onnx_path:
        onnx_path = Path(cfg.onnx_path)
        proto = check_onnx_file(onnx_path)
        check_precision(proto, onnx_path, cfg.precision)
        onnx_origin = "given"
    else:
        if cfg.precision != "fp32":
            raise ValueError(
                f"precision {cfg.precision} needs a {cfg.precision} ONNX file (onnx_path): make one with "
                f"`panoptic-depthlab export onnx --precision {cfg.precision} ...`; the precision lives in the file"
            )
        if model is None:
            raise ValueError("backend tensorrt needs onnx_path, engine_path or a model to export")
        cache_dir = engine_cache_dir(cfg)
        onnx_path = cached_onnx_for_model(model, input_hw, cache_dir.parent if not cfg.engine_cache_dir else cache_dir)
        proto = check_onnx_file(onnx_path)
        onnx_origin = "exported from the model"
    dims = onnx_input_shape(proto)
    del proto
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    input_shape = (batch, 3, int(input_hw[0]), int(input_hw[1]))
    if all(isinstance(d, int) and d > 0 for d in dims) and tuple(dims) != input_shape:
        raise ValueError(
            f"ONNX model {onnx_path} has fixed input shape {dims}, but the network input size is "
            f"{list(input_shape)} (export it at {input_hw[0]}x{input_hw[1]} or use --dynamic)"
        )
    if env is None:
        raise TensorRTNotAvailable(f"cannot build or load a TensorRT engine for {onnx_path}: {env_problem}")
    cache_dir = engine_cache_dir(cfg)
    options = BuildOptions(
        workspace_mb=cfg.workspace_mb,
        builder_optimization_level=cfg.builder_optimization_level,
        timing_cache_dir=str(cache_dir),
        input_shape=input_shape,
    )
    if build_fn is None:

        def build_fn(src: Path, dst: Path) -> None:
            build_engine(src, dst, options, env)

    entry = EngineCache(cache_dir).get_or_build(
        onnx_path,
        cfg.precision,
        input_shape,
        build_fn,
        env,
        allow_rebuild=cfg.allow_engine_rebuild,
        build_options={**options.to_dict(), "device": str(device), "onnx_origin": onnx_origin},
        builder_optimization_level=cfg.builder_optimization_level,
        workspace_mb=cfg.workspace_mb,
    )
    reasons = prebuilt_reasons + entry.rebuild_reasons
    origin = ("rebuilt at configure" if reasons else "built at configure") if entry.built else "cache hit"
    key = entry.key.to_dict()
    return PreparedEngine(
        entry.engine_path,
        entry.sidecar_path,
        key,
        _artefact(entry.engine_path, key, f"{origin}, from {onnx_path} ({onnx_origin})", "; ".join(reasons)),
        reasons,
    )


class TensorRTBackend:
    def __init__(self, model: torch.nn.Module | None, cfg: BackendConfig, input_hw: tuple[int, int]) -> None:
        self.device = cuda_device(cfg.device)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        if torch.cuda.is_available():
            with torch.cuda.device(self.device):
                prepared = prepare_engine(cfg, self.input_hw, model)
        else:  # the artefact checks still run and name what is wrong before "no CUDA" does
            prepared = prepare_engine(cfg, self.input_hw, model)
            raise ValueError(f"backend tensorrt: CUDA is not available for {prepared.engine_path}")
        import_tensorrt()
        import tensorrt as trt

        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine: tensorrt.ICudaEngine = self._runtime.deserialize_cuda_engine(
                read_engine_bytes(prepared.engine_path, prepared.sidecar_path)
            )
            if self.engine is None:
                raise RuntimeError(
                    f"TensorRT could not deserialize {prepared.engine_path} (see the TensorRT log); "
                    "delete it (and its .json sidecar) to rebuild"
                )
            self.context = self.engine.create_execution_context()
        self.engine_path = prepared.engine_path
        self.artefact = prepared.artefact
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if self.input_names != ["images"]:
            raise ValueError(f"engine {prepared.engine_path} has inputs {self.input_names}, expected ['images']")
        self.batch_size = prepared.batch_size
        log.info("TensorRT engine ready: %s", self.artefact.summary())

    def _run_one(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        ctx = self.context
        ctx.set_input_shape("images", tuple(images.shape))
        ctx.set_tensor_address("images", images.data_ptr())
        outputs = {}
        for name in self.output_names:
            dims = ctx.get_tensor_shape(name)
            shape = [dims[j] for j in range(len(dims))]
            dtype = _torch_dtype(self.engine.get_tensor_dtype(name))
            out = torch.empty(shape, dtype=dtype, device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        return {k: v.float() for k, v in outputs.items()}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.cuda.device(self.device):
            images = images.to(self.device, torch.float32, non_blocking=True).contiguous()
            if tuple(images.shape[-2:]) != tuple(self.input_hw):
                raise ValueError(f"TensorRT engine expects {self.input_hw} inputs, got {tuple(images.shape[-2:])}")
            b = self.batch_size
            if images.shape[0] == b:
                return self._run_one(images)
            if images.shape[0] % b:
                raise ValueError(f"batch {images.shape[0]} is not a multiple of the engine batch {b}")
            parts = [self._run_one(images[i : i + b]) for i in range(0, images.shape[0], b)]
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
