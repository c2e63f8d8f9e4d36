"""Fake ``tensorrt`` modules for the builder tests: one shaped like TensorRT 10.x, one like 11.x.

TensorRT cannot be installed here. The fakes implement the calls the builder makes and record them;
the 11.x fake LACKS what NVIDIA removed in 11.x (``BuilderFlag.FP16/BF16/INT8/...``,
``IBuilderConfig.int8_calibrator``/``set_calibration_profile``, the ``IInt8*Calibrator`` classes,
``Builder.platform_has_fast_fp16/int8``), with ``__slots__`` so even assigning a removed attribute
fails, as it does on the real 11.x bindings. Every fake refuses weak-typing precision flags on a
strongly typed network, as TensorRT 10.x does.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Calls:
    network_flags: list[int] = field(default_factory=list)
    set_flags: list[str] = field(default_factory=list)
    timing_cache_ignore_mismatch: list[bool] = field(default_factory=list)
    combine_ignore_mismatch: list[bool] = field(default_factory=list)
    workspace: list[int] = field(default_factory=list)
    optimization_level: list[int] = field(default_factory=list)
    builds: int = 0
    deprecation_warnings: list[str] = field(default_factory=list)


def make_fake_tensorrt(version: str) -> tuple[types.ModuleType, Calls]:
    major = int(version.split(".")[0])
    calls = Calls()
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = f"<fake tensorrt {version}>"

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0  # deprecated since 10.0, ignored
        STRONGLY_TYPED = 1  # 11.x: deprecated and ignored (always strongly typed)

    weak = ["FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
            "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"]  # fmt: skip
    flag_names = ["TF32", "REFIT", "DEBUG", "GPU_FALLBACK", "SPARSE_WEIGHTS"] + (weak if major < 11 else [])
    BuilderFlag = enum.IntEnum("BuilderFlag", flag_names)  # noqa: N806 - TensorRT's name

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class Logger:
        WARNING = 2

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.errors: list[str] = []

        def parse_from_file(self, path: str) -> bool:
            import onnx

            try:
                proto = onnx.load(path)
            except Exception as exc:
                self.errors.append(f"cannot parse {Path(path).name}: {exc}")
                return False
            for inp in proto.graph.input:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(inp.name, dims))
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.entries = set(bytes(data).split(b";")) - {b""}

        def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
            calls.combine_ignore_mismatch.append(ignore_mismatch)
            self.entries |= other.entries
            return True

        def serialize(self) -> bytes:
            return b";".join(sorted(self.entries))

    class OptimizationProfile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shape = (name, lo, opt, hi)

    slots = ["_cache", "_profiles", "_level", "_network"]
    if major < 11:
        slots.append("int8_calibrator")

    class BuilderConfig:
        __slots__ = tuple(slots)

        def __init__(self) -> None:
            self._cache = None
            self._profiles: list = []
            self._level = 3

        @property
        def builder_optimization_level(self) -> int:
            return self._level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level: int) -> None:
            calls.optimization_level.append(level)
            self._level = level

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            calls.workspace.append(size)

        def set_flag(self, flag: enum.IntEnum) -> None:
            calls.set_flags.append(flag.name)

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            calls.timing_cache_ignore_mismatch.append(ignore_mismatch)
            self._cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self._cache

        def add_optimization_profile(self, profile: OptimizationProfile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

    if major < 11:

        def set_calibration_profile(self, profile: OptimizationProfile) -> None:
            raise AssertionError("implicit INT8 calibration is not used any more")

        BuilderConfig.set_calibration_profile = set_calibration_profile

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            calls.network_flags.append(flags)
            if major >= 11 and flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)):
                calls.deprecation_warnings.append("STRONGLY_TYPED is deprecated in 11.x (always on)")
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            strongly_typed = major >= 11 or network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            if strongly_typed and set(calls.set_flags) & set(weak):
                raise AssertionError(f"precision flags {calls.set_flags} on a strongly typed network")
            calls.builds += 1
            cache = config.get_timing_cache()
            if cache is not None:
                cache.entries.add(f"kernel-timing-{version}".encode())
            shape = network.inputs[0].shape if network.inputs else ()
            return f"FAKE-ENGINE trt{version} flags={network.flags} input={shape}".encode()

    if major < 11:
        Builder.platform_has_fast_fp16 = property(lambda self: True)

    for name, value in dict(
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        BuilderFlag=BuilderFlag,
        MemoryPoolType=MemoryPoolType,
        Logger=Logger,
        OnnxParser=OnnxParser,
        Builder=Builder,
        IBuilderConfig=BuilderConfig,
        ITimingCache=TimingCache,
        Dims=tuple,
    ).items():
        setattr(trt, name, value)
    if major < 11:
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (), {})
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
    return trt, calls
