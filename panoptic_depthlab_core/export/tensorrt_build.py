"""TensorRT 10 engine builder (Python API): fp32/fp16/bf16/int8, calibration and timing caches.

Written against the documented TensorRT 10 API (``Builder``, ``OnnxParser``, ``IBuilderConfig``
with memory-pool limits, ``build_serialized_network``, ``ITimingCache``). INT8 uses implicit
quantisation with a **MinMax** calibrator by default: entropy calibration clips the long activation
tails that segmentation logits and depth regressions rely on and measurably loses accuracy. The
calibration cache makes a second INT8 build skip calibration; the timing cache (kept beside the
engines) cuts repeated builds on the same GPU from many minutes to about one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .locking import atomic_write_bytes, file_lock

log = logging.getLogger(__name__)

CALIBRATORS = ("minmax", "entropy")


@dataclass
class BuildOptions:
    precision: str = "fp16"  # fp32 | fp16 | bf16 | int8
    workspace_mb: int = 4096
    timing_cache_path: str = ""  # persisted between builds; "" = none
    calibrator: str = "minmax"  # int8 only
    calibration_cache_path: str = ""  # int8 only; reused when it holds this calibration
    # int8 only: calibration.calibration_id() of the images given; "" = no images, use the cache as is
    calibration_id: str = ""
    builder_optimization_level: int = 3  # TensorRT default; 5 searches longer for faster kernels
    # For ONNX files with symbolic dims: the one shape the engine is optimised for (min=opt=max).
    input_shape: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "bf16", "int8"):
            raise ValueError(f"precision must be fp32, fp16, bf16 or int8, got {self.precision!r}")
        if self.workspace_mb < 16:
            raise ValueError(f"workspace_mb must be >= 16, got {self.workspace_mb}")
        if self.calibrator not in CALIBRATORS:
            raise ValueError(f"calibrator must be one of {list(CALIBRATORS)}, got {self.calibrator!r}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(
                f"builder_optimization_level must be 0..5, got {self.builder_optimization_level}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d


def make_calibrator(
    batches: Iterable[np.ndarray],
    batch_shape: tuple[int, ...],
    cache_path: str | Path,
    kind: str = "minmax",
    device: str = "cuda",
    cal_id: str = "",
):
    """A TensorRT INT8 calibrator feeding float32 NCHW batches through one torch CUDA buffer.

    The cache at ``cache_path`` is only reused when it was written by the same calibration
    (``cal_id``; "" = no images given, the cache is the calibration)."""
    import torch

    from ..runtime.tensorrt_backend import import_tensorrt
    from .calibration import reusable_calibration_cache, write_calibration_record

    trt = import_tensorrt()
    base = {"minmax": trt.IInt8MinMaxCalibrator, "entropy": trt.IInt8EntropyCalibrator2}[kind]

    class _Calibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # TensorRT requires the explicit base-class constructor call
            self.cache_path = Path(cache_path) if cache_path else None
            self.batches: Iterator[np.ndarray] = iter(batches)
            self.device_buffer = torch.empty(batch_shape, dtype=torch.float32, device=device)
            self.count = 0

        def get_batch_size(self) -> int:
            return int(batch_shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                log.info("calibration: %d batches used", self.count)
                return None
            if tuple(batch.shape) != tuple(batch_shape):
                raise ValueError(f"calibration batch shape {batch.shape} != engine input {batch_shape}")
            self.device_buffer.copy_(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
            torch.cuda.synchronize(self.device_buffer.device)
            self.count += 1
            return [int(self.device_buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            if not self.cache_path:
                return None
            cached = reusable_calibration_cache(self.cache_path, cal_id or None)
            if cached is not None:
                log.info("using INT8 calibration cache %s", self.cache_path)
            elif self.cache_path.is_file():
                log.warning("INT8 calibration cache %s is from other calibration data; recalibrating",
                            self.cache_path)  # fmt: skip
            return cached

        def write_calibration_cache(self, cache) -> None:
            if self.cache_path:
                atomic_write_bytes(self.cache_path, bytes(cache))
                if cal_id:
                    write_calibration_record(self.cache_path, cal_id)
                log.info("wrote INT8 calibration cache %s", self.cache_path)

    return _Calibrator()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    options: BuildOptions,
    calibration_batches: Iterable[np.ndarray] | None = None,
) -> None:
    """Parse ``onnx_path``, build a serialized engine with ``options``, write it to ``engine_path``."""
    from ..runtime.tensorrt_backend import import_tensorrt

    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse ONNX model {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    config.builder_optimization_level = options.builder_optimization_level

    # Symbolic input dims (a --dynamic export) need an optimisation profile pinned to one shape.
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            if options.input_shape is None:
                raise ValueError(f"ONNX input {tensor.name} has dynamic shape {shape}; pass input_shape")
            profile = profile or builder.create_optimization_profile()
            fixed = tuple(options.input_shape)
            profile.set_shape(tensor.name, fixed, fixed, fixed)
    if profile is not None:
        config.add_optimization_profile(profile)

    if options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif options.precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers without INT8 kernels fall back to fp16, not fp32
        cache_ok = options.calibration_cache_path and Path(options.calibration_cache_path).is_file()
        if calibration_batches is None and not cache_ok:
            raise ValueError(
                "int8 needs calibration images (--calib-data DIR) or an existing calibration cache"
            )
        input_shape = options.input_shape or tuple(network.get_input(0).shape)
        config.int8_calibrator = make_calibrator(
            calibration_batches or [], tuple(input_shape), options.calibration_cache_path, options.calibrator,
            cal_id=options.calibration_id,
        )  # fmt: skip
        if profile is not None:
            config.set_calibration_profile(profile)

    timing_cache_path = Path(options.timing_cache_path) if options.timing_cache_path else None
    lock = (
        file_lock(timing_cache_path.with_name(timing_cache_path.name + ".lock"))
        if timing_cache_path
        else None
    )
    serialized_cache = b""
    if timing_cache_path and timing_cache_path.is_file():
        serialized_cache = timing_cache_path.read_bytes()
    timing_cache = config.create_timing_cache(serialized_cache)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    start = time.monotonic()
    log.info(
        "building TensorRT %s engine from %s (workspace %d MiB)",
        options.precision,
        onnx_path.name,
        options.workspace_mb,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)"
        )
    Path(engine_path).write_bytes(bytes(serialized))
    log.info("built engine in %.1f s (%.1f MiB)", time.monotonic() - start, serialized.nbytes / 2**20)

    if timing_cache_path:
        with lock:
            # Merge with whatever another builder saved meanwhile, then publish atomically.
            if timing_cache_path.is_file():
                other = config.create_timing_cache(timing_cache_path.read_bytes())
                config.get_timing_cache().combine(other, ignore_mismatch=True)
            atomic_write_bytes(timing_cache_path, bytes(config.get_timing_cache().serialize()))
