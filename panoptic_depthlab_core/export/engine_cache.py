"""TensorRT engine cache: never silently stale, never rebuilt without a reason.

An engine is only valid for one ONNX file, precision and input shape, built on one GPU model
(compute capability) by one TensorRT version -- and, for INT8, from one calibration (the
fingerprint of the calibration images, or of the calibration cache it was built from). Each engine
file has a JSON sidecar recording all of that plus the engine's own sha256. Loading re-derives the
key for *this* machine and compares field by field; any difference (or a missing/corrupt/tampered
file) is a named reason, and the engine is rebuilt with those reasons logged, or, when rebuilding is
disabled, the load fails with them.

The file name depends only on what is built (ONNX hash, precision, shape), not on the machine, so a
TensorRT upgrade or a move to another GPU is detected as a stale engine and rebuilt in place rather
than silently accumulating orphans. Builders serialise on a per-engine ``fcntl`` lock and publish
with atomic renames (engine first, sidecar last), so concurrent processes never see a torn engine:
a second builder waits, re-validates, and reuses the first one's result.

This module needs neither torch nor TensorRT (``current_environment`` imports them lazily).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..weights import file_sha256
from .locking import atomic_write_bytes, atomic_write_path, file_lock

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 2  # 2: the key has ``calibration``
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
KEY_FIELDS = (
    "onnx_sha256", "precision", "input_shape", "gpu_name", "compute_capability", "tensorrt_version",
    "calibration",
)  # fmt: skip


class EngineCacheError(ValueError):
    """A cached engine cannot be used and may not be rebuilt; the message lists why."""


@dataclass(frozen=True)
class BuildEnvironment:
    """What, besides the model, an engine is bound to."""

    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100)
    tensorrt_version: str


def current_environment(device_index: int = 0) -> BuildEnvironment:
    """The GPU and TensorRT of this process (raises when either is missing)."""
    import torch

    from ..runtime.tensorrt_backend import import_tensorrt

    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA not available: TensorRT engines need an NVIDIA GPU")
    props = torch.cuda.get_device_properties(device_index)
    return BuildEnvironment(props.name, f"{props.major}.{props.minor}", str(trt.__version__))


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    precision: str
    input_shape: tuple[int, ...]
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    calibration: str = ""  # INT8 only: which calibration the engine's scales come from

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def make_engine_key(
    onnx_sha256: str,
    precision: str,
    input_shape: tuple[int, ...] | list[int],
    env: BuildEnvironment,
    calibration: str = "",
) -> EngineKey:
    """The key of one engine; ``calibration`` (INT8 only, required there) names its calibration."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be [B, 3, H, W] with positive sizes, got {list(input_shape)}")
    if len(onnx_sha256) != 64:
        raise ValueError(f"onnx_sha256 must be a sha256 hex digest, got {onnx_sha256!r}")
    if precision == "int8" and not calibration:
        raise ValueError("an int8 engine key needs the calibration it is built from")
    if precision != "int8":
        calibration = ""  # only INT8 engines depend on calibration
    return EngineKey(
        onnx_sha256, precision, shape, env.gpu_name, env.compute_capability, env.tensorrt_version,
        calibration,
    )  # fmt: skip


@dataclass
class CacheEntry:
    """The result of ``EngineCache.get_or_build``."""

    engine_path: Path
    sidecar_path: Path
    key: EngineKey
    built: bool  # True when this call built the engine
    rebuild_reasons: list[str] = field(default_factory=list)


# builder(onnx_path, engine_out_path) writes a serialized engine to engine_out_path.
BuildFn = Callable[[Path, Path], None]


class EngineCache:
    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)

    def paths(self, key: EngineKey, onnx_name: str = "model") -> tuple[Path, Path]:
        """Engine and sidecar paths; the name depends on what is built, not on the machine."""
        what = hashlib.sha256(
            f"{key.onnx_sha256}|{key.precision}|{list(key.input_shape)}".encode()
        ).hexdigest()
        b, _, h, w = key.input_shape
        stem = f"{Path(onnx_name).stem}_{key.precision}_b{b}_{h}x{w}_{what[:12]}"
        engine = self.cache_dir / f"{stem}.engine"
        return engine, engine.with_suffix(".engine.json")

    def validate(self, key: EngineKey, engine_path: Path, sidecar_path: Path) -> list[str]:
        """Reasons why the cached engine cannot be used for ``key``; empty when it can."""
        if not engine_path.is_file():
            return [f"no engine file {engine_path.name}"]
        if not sidecar_path.is_file():
            return [f"no sidecar {sidecar_path.name} (engine of unknown origin)"]
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [f"sidecar {sidecar_path.name} is not valid JSON: {exc}"]
        if not isinstance(sidecar, dict) or not isinstance(sidecar.get("key"), dict):
            return [f"sidecar {sidecar_path.name} has no 'key' mapping"]
        reasons = []
        if sidecar.get("format") != SIDECAR_FORMAT:
            reasons.append(f"sidecar format {sidecar.get('format')!r}, expected {SIDECAR_FORMAT}")
        cached, wanted = sidecar["key"], key.to_dict()
        for name in KEY_FIELDS:
            if cached.get(name) != wanted[name]:
                reasons.append(f"{name} changed: cached {cached.get(name)!r}, now {wanted[name]!r}")
        size = engine_path.stat().st_size
        if sidecar.get("engine_bytes") != size:
            reasons.append(
                f"engine size {size} B differs from sidecar {sidecar.get('engine_bytes')!r} B "
                "(truncated or replaced)"
            )
        elif sidecar.get("engine_sha256") != file_sha256(engine_path):
            reasons.append("engine sha256 differs from sidecar (corrupt or tampered)")
        return reasons

    def get_or_build(
        self,
        onnx_path: str | Path,
        precision: str,
        input_shape: tuple[int, ...],
        build_fn: BuildFn,
        env: BuildEnvironment,
        allow_rebuild: bool = True,
        build_options: dict | None = None,
        lock_timeout_s: float | None = None,
        calibration: str = "",
    ) -> CacheEntry:
        """Return a valid engine for this ONNX/precision/shape on ``env``, building it if needed.

        ``build_only`` callers simply ignore the returned entry (the node can pre-build at configure
        time; the CLI's ``export tensorrt`` does exactly this).
        """
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
        key = make_engine_key(file_sha256(onnx_path), precision, input_shape, env, calibration)
        engine_path, sidecar_path = self.paths(key, onnx_path.name)
        reasons = self.validate(key, engine_path, sidecar_path)
        if not reasons:
            log.info("engine cache hit: %s", engine_path)
            return CacheEntry(engine_path, sidecar_path, key, built=False)
        if not allow_rebuild:
            raise EngineCacheError(
                f"cached TensorRT engine {engine_path} is not usable: {'; '.join(reasons)}; rebuilding is "
                f"disabled (allow_engine_rebuild=false). Build it with `panoptic-depthlab export tensorrt "
                f"--onnx {onnx_path} --precision {precision} --engine-cache-dir {self.cache_dir}`"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(engine_path.with_name(engine_path.name + ".lock"), timeout_s=lock_timeout_s):
            # Another process may have built it while we waited for the lock.
            reasons_now = self.validate(key, engine_path, sidecar_path)
            if not reasons_now:
                log.info("engine built by another process meanwhile: %s", engine_path)
                return CacheEntry(engine_path, sidecar_path, key, built=False)
            if engine_path.exists() or sidecar_path.exists():
                log.warning("rebuilding TensorRT engine %s: %s", engine_path.name, "; ".join(reasons_now))
            else:
                log.info("building TensorRT engine %s (first use; this can take minutes)", engine_path.name)
            with atomic_write_path(engine_path) as tmp:
                build_fn(onnx_path, tmp)
                if not tmp.is_file() or tmp.stat().st_size == 0:
                    raise RuntimeError(f"engine builder wrote nothing for {engine_path}")
                engine_sha = file_sha256(tmp)
                engine_bytes = tmp.stat().st_size
            sidecar = {
                "format": SIDECAR_FORMAT,
                "key": key.to_dict(),
                "onnx_file": onnx_path.name,
                "engine_sha256": engine_sha,
                "engine_bytes": engine_bytes,
                "build_options": build_options or {},
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "rebuild_reasons": reasons_now,
            }
            atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2) + "\n").encode())
        return CacheEntry(engine_path, sidecar_path, key, built=True, rebuild_reasons=reasons_now)

    def read_engine(self, entry: CacheEntry) -> bytes:
        """The engine bytes, checked against the sidecar hash (guards a replace between validate and read)."""
        data = entry.engine_path.read_bytes()
        sidecar = json.loads(entry.sidecar_path.read_text())
        if hashlib.sha256(data).hexdigest() != sidecar.get("engine_sha256"):
            raise EngineCacheError(f"engine {entry.engine_path} changed while loading; retry")
        return data
