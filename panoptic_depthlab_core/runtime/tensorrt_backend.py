"""Native TensorRT backend: engine from the engine cache, I/O as torch CUDA tensors (no host copies).

The engine is executed with ``execute_async_v3`` on torch's current CUDA stream, with tensor
addresses pointing straight at torch allocations, so the outputs are ordinary CUDA tensors that
post-processing consumes in place and ordering with surrounding torch work is automatic.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .backend import BackendConfig

log = logging.getLogger(__name__)


class TensorRTNotAvailable(ImportError):
    """TensorRT's Python package cannot be imported here."""


def import_tensorrt():
    """``import tensorrt`` or raise TensorRTNotAvailable with what to do about it."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        raise TensorRTNotAvailable(
            f"TensorRT not importable ({exc}); install TensorRT 10 (pip install tensorrt) on a machine with "
            "an NVIDIA GPU, or use backend torch/onnxruntime"
        ) from exc
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except TensorRTNotAvailable:
        return False
    return True


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise ValueError(f"unsupported TensorRT tensor dtype {dtype}")
    return table[dtype]


def engine_cache_dir(cfg: BackendConfig) -> Path:
    from ..export.onnx_export import default_cache_dir

    return Path(cfg.engine_cache_dir) if cfg.engine_cache_dir else default_cache_dir() / "engines"


def prepare_engine(
    model: torch.nn.Module | None,
    cfg: BackendConfig,
    input_hw: tuple[int, int],
    onnx_path: str | Path | None = None,
    workspace_mb: int = 4096,
    calibration_batches=None,
    calibration_cache_path: str = "",
    calibrator: str = "minmax",
):
    """Export (if needed) and build-or-load the cached engine; returns the cache entry.

    INT8: ``calibration_batches`` (a ``CalibrationDataReader``) calibrates; without them the
    calibration cache is used as it is. Either way the engine's cache key names that calibration,
    so new calibration images (or a new cache) rebuild the engine instead of reusing stale scales.

    This is the ``build_only`` entry point: the node calls it at configure time so the first frame
    never waits for a build.
    """
    from ..export.engine_cache import EngineCache, current_environment
    from ..export.onnx_export import cached_onnx_for_model, check_onnx_file, onnx_input_shape
    from ..export.tensorrt_build import BuildOptions, build_engine

    import_tensorrt()
    device = torch.device(cfg.device)
    if device.type != "cuda":
        raise ValueError(f"backend tensorrt needs a CUDA device, got device {cfg.device!r}")
    if not torch.cuda.is_available():
        raise ValueError("backend tensorrt: CUDA not available")
    cache_dir = engine_cache_dir(cfg)
    onnx_path = onnx_path or cfg.onnx_path
    if not onnx_path:
        if model is None:
            raise ValueError("no ONNX file given and no model to export")
        onnx_path = cached_onnx_for_model(
            model, input_hw, cache_dir.parent if not cfg.engine_cache_dir else cache_dir
        )
    proto = check_onnx_file(onnx_path)
    dims = onnx_input_shape(proto)
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    input_shape = (batch, 3, int(input_hw[0]), int(input_hw[1]))
    static = all(isinstance(d, int) and d > 0 for d in dims)
    if static and tuple(dims) != input_shape:
        raise ValueError(
            f"ONNX model {onnx_path} has fixed input shape {dims}, but the network input size is "
            f"{list(input_shape)} (export it at {input_hw[0]}x{input_hw[1]} or use --dynamic)"
        )
    if cfg.precision == "int8" and not calibration_cache_path:
        # Where `export tensorrt --precision int8` leaves it, so a stale engine can be rebuilt unattended.
        calibration_cache_path = str(cache_dir / f"{Path(onnx_path).stem}.calib")
    data_cal_id, engine_calibration = "", ""
    if cfg.precision == "int8":
        from ..export.calibration import cached_calibration_id, calibration_id

        if calibration_batches is not None:
            fingerprint = getattr(calibration_batches, "fingerprint", None)
            if fingerprint is None:
                raise ValueError("int8 calibration batches must come from a CalibrationDataReader")
            data_cal_id = engine_calibration = calibration_id(fingerprint(), calibrator)
        else:
            engine_calibration = cached_calibration_id(calibration_cache_path) or ""
            if not engine_calibration:
                raise ValueError(
                    f"int8 needs calibration images (export tensorrt --calib-data DIR) or the calibration "
                    f"cache {calibration_cache_path}, which does not exist"
                )
    options = BuildOptions(
        precision=cfg.precision,
        workspace_mb=workspace_mb,
        timing_cache_path=str(cache_dir / "timing.cache"),
        input_shape=input_shape,
        calibrator=calibrator,
        calibration_cache_path=calibration_cache_path,
        calibration_id=data_cal_id,
    )

    def build(src: Path, dst: Path) -> None:
        build_engine(src, dst, options, calibration_batches)

    env = current_environment(device.index or 0)
    return EngineCache(cache_dir).get_or_build(
        onnx_path,
        cfg.precision,
        input_shape,
        build,
        env,
        allow_rebuild=cfg.allow_engine_rebuild,
        build_options=options.to_dict(),
        calibration=engine_calibration,
    )


class TensorRTBackend:
    def __init__(self, model: torch.nn.Module | None, cfg: BackendConfig, input_hw: tuple[int, int]) -> None:
        from ..export.engine_cache import EngineCache

        trt = import_tensorrt()
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device(
                "cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0
            )
        self.input_hw = input_hw
        with torch.cuda.device(self.device):
            entry = prepare_engine(model, cfg, input_hw)
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(
                EngineCache(entry.engine_path.parent).read_engine(entry)
            )
            if self.engine is None:
                raise RuntimeError(
                    f"TensorRT could not deserialize {entry.engine_path}; delete it to rebuild"
                )
            self.context = self.engine.create_execution_context()
        self.engine_path = entry.engine_path
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if self.input_names != ["images"]:
            raise ValueError(f"engine {entry.engine_path} has inputs {self.input_names}, expected ['images']")
        self.batch_size = entry.key.input_shape[0]
        self._trt = trt
        self._outputs: dict[str, torch.Tensor] = {}
        log.info("TensorRT engine ready: %s", self.engine_path)

    def _run_one(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        ctx = self.context
        ctx.set_input_shape("images", tuple(images.shape))
        ctx.set_tensor_address("images", images.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            out = torch.empty(shape, dtype=dtype, device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        return {k: v.float() for k, v in outputs.items()}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, torch.float32, non_blocking=True).contiguous()
        if tuple(images.shape[-2:]) != tuple(self.input_hw):
            raise ValueError(
                f"TensorRT engine expects {self.input_hw} inputs, got {tuple(images.shape[-2:])}"
            )
        b = self.batch_size
        if images.shape[0] == b:
            return self._run_one(images)
        if images.shape[0] % b:
            raise ValueError(f"batch {images.shape[0]} is not a multiple of the engine batch {b}")
        parts = [self._run_one(images[i : i + b]) for i in range(0, images.shape[0], b)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
