"""TensorRT engine cache: never silently stale, never rebuilt without a reason.

An engine is only valid for one ONNX file (whose graph carries the precision: fp16 weights or
int8 Q/DQ), input shape, builder optimisation level and workspace, built on one GPU model (name and
compute capability) by one TensorRT version. Each engine file has a JSON sidecar recording all of
that plus the engine's own sha256. Loading re-derives the
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

SIDECAR_FORMAT = 3  # 3: precision from the ONNX (no calibration), optimisation level and workspace in the key
PRECISIONS = ("fp32", "fp16", "int8")
KEY_FIELDS = (
    "onnx_sha256", "precision", "input_shape", "gpu_name", "compute_capability", "tensorrt_version",
    "builder_optimization_level", "workspace_mb",
)  # fmt: skip
# What a prebuilt engine (no ONNX at hand) is checked against on this machine.
ENVIRONMENT_FIELDS = ("gpu_name", "compute_capability", "tensorrt_version")


class EngineCacheError(ValueError):
    """A cached engine cannot be used and may not be rebuilt; the message lists why."""


@dataclass(frozen=True)
class BuildEnvironment:
    """What, besides the model, an engine is bound to."""

    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100)
    tensorrt_version: str

    def describe(self) -> str:
        return f"{self.gpu_name} (compute capability {self.compute_capability}), TensorRT {self.tensorrt_version}"


def current_environment(device_index: int = 0) -> BuildEnvironment:
    """The GPU ``cuda:device_index`` and the TensorRT of this process (raises when either is missing).

    The engine is keyed by the properties of the device it is built and run on, which is why
    the backend builds inside ``torch.cuda.device(device_index)``."""
    import torch

    from ..runtime.tensorrt_backend import import_tensorrt

    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA not available: TensorRT engines need an NVIDIA GPU")
    if device_index >= torch.cuda.device_count():
        raise RuntimeError(f"no CUDA device cuda:{device_index} (this machine has {torch.cuda.device_count()})")
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
    builder_optimization_level: int = 3
    workspace_mb: int = 4096

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
    builder_optimization_level: int = 3,
    workspace_mb: int = 4096,
) -> EngineKey:
    """The key of one engine. The precision is the ONNX file's (its sha covers it too); it is in
    the key so a sidecar says what the engine computes in."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be [B, 3, H, W] with positive sizes, got {list(input_shape)}")
    if len(onnx_sha256) != 64:
        raise ValueError(f"onnx_sha256 must be a sha256 hex digest, got {onnx_sha256!r}")
    if not 0 <= builder_optimization_level <= 5:
        raise ValueError(f"builder_optimization_level must be 0..5, got {builder_optimization_level}")
    if workspace_mb < 16:
        raise ValueError(f"workspace_mb must be >= 16, got {workspace_mb}")
    return EngineKey(
        onnx_sha256, precision, shape, env.gpu_name, env.compute_capability, env.tensorrt_version,
        int(builder_optimization_level), int(workspace_mb),
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
            f"{key.onnx_sha256}|{key.precision}|{list(key.input_shape)}|"
            f"{key.builder_optimization_level}|{key.workspace_mb}".encode()
        ).hexdigest()
        b, _, h, w = key.input_shape
        stem = f"{Path(onnx_name).stem}_{key.precision}_b{b}_{h}x{w}_{what[:12]}"
        engine = self.cache_dir / f"{stem}.engine"
        return engine, sidecar_path_for(engine)

    def validate(self, key: EngineKey, engine_path: Path, sidecar_path: Path) -> list[str]:
        """Reasons why the cached engine cannot be used for ``key``; empty when it can."""
        sidecar, reasons = read_sidecar(engine_path, sidecar_path)
        if sidecar is None:
            return reasons
        cached, wanted = sidecar["key"], key.to_dict()
        for name in KEY_FIELDS:
            if cached.get(name) != wanted[name]:
                reasons.append(f"{name} changed: cached {cached.get(name)!r}, now {wanted[name]!r}")
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
        builder_optimization_level: int = 3,
        workspace_mb: int = 4096,
    ) -> CacheEntry:
        """Return a valid engine for this ONNX/precision/shape on ``env``, building it if needed.

        ``build_only`` callers simply ignore the returned entry (the node can pre-build at configure
        time; the CLI's ``export tensorrt`` does exactly this).
        """
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
        key = make_engine_key(
            file_sha256(onnx_path), precision, input_shape, env, builder_optimization_level, workspace_mb
        )
        engine_path, sidecar_path = self.paths(key, onnx_path.name)
        reasons = self.validate(key, engine_path, sidecar_path)
        if not reasons:
            log.info("engine cache hit: %s", engine_path)
            return CacheEntry(engine_path, sidecar_path, key, built=False)
        if not allow_rebuild:
            raise EngineCacheError(
                f"cached TensorRT engine {engine_path} is not usable: {'; '.join(reasons)}; rebuilding is "
                f"disabled (allow_engine_rebuild false). Build it with `panoptic-depthlab export tensorrt "
                f"--onnx {onnx_path} --engine-cache-dir {self.cache_dir}` on this machine"
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
        return read_engine_bytes(entry.engine_path, entry.sidecar_path)


def sidecar_path_for(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: Path, sidecar_path: Path) -> tuple[dict | None, list[str]]:
    """(sidecar, reasons): the parsed sidecar of an intact engine, or None and why it cannot be used.

    Intact: the engine exists and its size and sha256 are the sidecar's (a truncated copy, a
    corrupt download or a replaced file is caught here, before TensorRT ever sees the bytes)."""
    if not engine_path.is_file():
        return None, [f"no engine file {engine_path}"]
    if not sidecar_path.is_file():
        return None, [f"no sidecar {sidecar_path.name} beside {engine_path} (engine of unknown origin)"]
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"sidecar {sidecar_path.name} is not valid JSON: {exc}"]
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("key"), dict):
        return None, [f"sidecar {sidecar_path.name} has no 'key' mapping"]
    reasons = []
    if sidecar.get("format") != SIDECAR_FORMAT:
        reasons.append(f"sidecar format {sidecar.get('format')!r}, expected {SIDECAR_FORMAT}")
    size = engine_path.stat().st_size
    if sidecar.get("engine_bytes") != size:
        reasons.append(
            f"engine size {size} B differs from sidecar {sidecar.get('engine_bytes')!r} B (truncated or replaced)"
        )
    elif sidecar.get("engine_sha256") != file_sha256(engine_path):
        reasons.append("engine sha256 differs from sidecar (corrupt or tampered)")
    return sidecar, reasons


def check_prebuilt(
    engine_path: str | Path,
    env: BuildEnvironment | None,
    precision: str,
    input_shape: tuple[int, ...] | None = None,
    onnx_sha256: str = "",
    env_problem: str = "",
) -> tuple[dict | None, list[str]]:
    """(sidecar, reasons) for an engine file given by the user (``export tensorrt --engine``).

    Checked without TensorRT first (the file is intact, its precision and input shape are the ones
    configured, it was built from ``onnx_sha256`` when an ONNX is given too), then against ``env``,
    this machine's GPU and TensorRT; ``env`` None means they are missing here and ``env_problem``
    says why (an engine runs only where it was built)."""
    engine_path = Path(engine_path)
    sidecar, reasons = read_sidecar(engine_path, sidecar_path_for(engine_path))
    if sidecar is None:
        return None, reasons
    key = sidecar["key"]
    if key.get("precision") != precision:
        reasons.append(f"engine is {key.get('precision')}, but precision is {precision}")
    if input_shape is not None and key.get("input_shape") != list(input_shape):
        reasons.append(f"engine input shape {key.get('input_shape')}, network input {list(input_shape)}")
    if onnx_sha256 and key.get("onnx_sha256") != onnx_sha256:
        reasons.append("engine was built from another ONNX file (sha256 differs from onnx_path's)")
    built = (
        f"{key.get('gpu_name')} (compute capability {key.get('compute_capability')}), "
        f"TensorRT {key.get('tensorrt_version')}"
    )
    if env is None:
        reasons.append(f"built on {built}; here: {env_problem or 'no GPU/TensorRT'}")
    else:
        for name in ENVIRONMENT_FIELDS:
            if key.get(name) != getattr(env, name):
                reasons.append(f"{name}: engine {key.get(name)!r}, here {getattr(env, name)!r}")
    return sidecar, reasons


def read_engine_bytes(engine_path: Path, sidecar_path: Path) -> bytes:
    """The engine bytes, checked against the sidecar hash (guards a replace between validate and read)."""
    data = engine_path.read_bytes()
    sidecar = json.loads(sidecar_path.read_text())
    if hashlib.sha256(data).hexdigest() != sidecar.get("engine_sha256"):
        raise EngineCacheError(f"engine {engine_path} changed while loading; retry")
    return data
