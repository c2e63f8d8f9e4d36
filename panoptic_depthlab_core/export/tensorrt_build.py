"""TensorRT engine builder for TensorRT 10.x and 11.x: strongly typed networks from explicit-precision ONNX.

The precision is the ONNX file's (fp16 weights and casts, or int8 Q/DQ pairs; see
``export.artefacts``). The network is strongly typed, so TensorRT computes in exactly the types the
graph states. There are no weak-typing precision flags and no implicit INT8 calibrators here: TensorRT
deprecated both in 10.x (calibration in 10.1, weak typing in 10.12) and removed them in 11.x, and
explicit Q/DQ graphs build on every version from 8 to 11 without a calibrator.

What differs between the major versions is chosen from ``trt.__version__`` (``network_creation_flags``)
and tested both ways with fake ``tensorrt`` modules whose 11.x variant lacks the removed API. The
calls are checked statically against the TensorRT 10.13 API (``tensorrt-stubs``, mypy; ``make test``).

Timing caches hold measured kernel timings that are only valid for one GPU model and TensorRT version
(combining caches from different devices can produce functional or performance bugs, say NVIDIA's
docs), so each (GPU name, compute capability, TensorRT version) has a cache file of its own, and a
cache is only ever combined with one of the same key, never with ``ignore_mismatch=True``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .engine_cache import BuildEnvironment
from .locking import atomic_write_bytes, file_lock

if TYPE_CHECKING:
    import tensorrt

log = logging.getLogger(__name__)

# NVIDIA, "Migrating Python Code from TensorRT 10.x to 11.x": every network is strongly typed in 11.x
# and NetworkDefinitionCreationFlag.STRONGLY_TYPED is deprecated there (accepted and ignored).
# https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api.html
# https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
TENSORRT_11_MIGRATION_DOC = (
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api.html"
)


@dataclass
class BuildOptions:
    workspace_mb: int = 4096
    builder_optimization_level: int = 3  # TensorRT default; 5 searches longer for faster kernels
    timing_cache_dir: str = ""  # per-GPU/TensorRT timing caches live here; "" = none
    # For ONNX files with symbolic dims: the one shape the engine is optimised for (min=opt=max).
    input_shape: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.workspace_mb < 16:
            raise ValueError(f"workspace_mb must be >= 16, got {self.workspace_mb}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(f"builder_optimization_level must be 0..5, got {self.builder_optimization_level}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d


def tensorrt_major(version: str) -> int:
    """Major version of a TensorRT version string ("10.3.0.26" -> 10)."""
    match = re.match(r"(\d+)\.", version)
    if match is None:
        raise ValueError(f"cannot read the TensorRT version from {version!r}")
    return int(match.group(1))


def network_creation_flags() -> int:
    """``create_network`` flags for a strongly typed network on the installed TensorRT.

    10.x: opt in with ``STRONGLY_TYPED`` (available since 9.x; the only supported typing from 11.x).
    11.x: strong typing is always on and the flag is deprecated and ignored (see
    TENSORRT_11_MIGRATION_DOC), so none is passed, which keeps 11.x free of deprecation warnings."""
    import tensorrt as trt

    if tensorrt_major(trt.__version__) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def timing_cache_file(cache_dir: str | Path, env: BuildEnvironment) -> Path:
    """One timing cache per GPU model, compute capability and TensorRT version."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", env.gpu_name).strip("-") or "gpu"
    trt_version = re.sub(r"[^0-9.]+", "", env.tensorrt_version) or "unknown"
    return Path(cache_dir) / f"timing_{gpu}_sm{env.compute_capability}_trt{trt_version}.cache"


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    options: BuildOptions,
    env: BuildEnvironment | None = None,
) -> None:
    """Parse ``onnx_path`` into a strongly typed network, build it with ``options``, write the serialized
    engine to ``engine_path``. Run it inside ``torch.cuda.device(...)`` of the GPU it is for: TensorRT
    builds on the current CUDA device. ``env`` (this GPU and TensorRT) names the timing cache."""
    from ..runtime.tensorrt_backend import import_tensorrt

    import_tensorrt()  # a supported TensorRT, or TensorRTNotAvailable naming the install command
    import tensorrt as trt  # the same module, typed (tensorrt-stubs) for the static API check

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_creation_flags())
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
        shape = [tensor.shape[j] for j in range(len(tensor.shape))]
        if any(d < 0 for d in shape):
            if options.input_shape is None:
                raise ValueError(f"ONNX input {tensor.name} has dynamic shape {shape}; pass input_shape")
            profile = profile or builder.create_optimization_profile()
            fixed = trt.Dims(list(options.input_shape))
            profile.set_shape(tensor.name, fixed, fixed, fixed)
    if profile is not None:
        config.add_optimization_profile(profile)

    cache_file = timing_cache_file(options.timing_cache_dir, env) if options.timing_cache_dir and env else None
    serialized_cache = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    timing_cache = config.create_timing_cache(serialized_cache)
    # ignore_mismatch=False: a cache from another device or version is rejected, not merged
    config.set_timing_cache(timing_cache, False)

    start = time.monotonic()
    log.info(
        "building TensorRT %s engine (strongly typed) from %s (workspace %d MiB, optimisation level %d)",
        trt.__version__,
        onnx_path.name,
        options.workspace_mb,
        options.builder_optimization_level,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    data = bytes(memoryview(serialized))
    Path(engine_path).write_bytes(data)
    log.info("built engine in %.1f s (%.1f MiB)", time.monotonic() - start, len(data) / 2**20)

    if cache_file is not None:
        save_timing_cache(config, cache_file)


def save_timing_cache(config: tensorrt.IBuilderConfig, cache_file: Path) -> None:
    """Publish the builder's timing cache, first combined with what another builder of the same GPU and
    TensorRT saved meanwhile (same file, so the same key; a mismatching file is replaced, not merged)."""
    with file_lock(cache_file.with_name(cache_file.name + ".lock")):
        ours = config.get_timing_cache()
        if cache_file.is_file():
            other = config.create_timing_cache(cache_file.read_bytes())
            if not ours.combine(other, False):
                log.warning("timing cache %s does not match this GPU/TensorRT; replacing it", cache_file)
        atomic_write_bytes(cache_file, bytes(memoryview(ours.serialize())))
