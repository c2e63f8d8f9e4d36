"""Engine cache logic (no TensorRT needed): keys, sidecar validation, stale rebuilds, concurrency."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from panoptic_depthlab_core.export.engine_cache import (
    BuildEnvironment,
    EngineCache,
    EngineCacheError,
    make_engine_key,
)

REPO = Path(__file__).resolve().parents[3]
ENV = BuildEnvironment("NVIDIA Orin", "8.7", "10.3.0")
SHAPE = (1, 3, 512, 1024)


class FakeBuilder:
    """Stands in for TensorRT: writes engine bytes derived from the ONNX content and counts builds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, onnx_path: Path, out_path: Path) -> None:
        self.calls += 1
        out_path.write_bytes(b"ENGINE:" + onnx_path.read_bytes() + f":{self.calls}".encode())


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"fake onnx graph v1")
    return path


def test_key_changes_when_any_input_changes() -> None:
    sha = "a" * 64
    base = make_engine_key(sha, "fp16", SHAPE, ENV)
    variants = [
        make_engine_key("b" * 64, "fp16", SHAPE, ENV),
        make_engine_key(sha, "int8", SHAPE, ENV),
        make_engine_key(sha, "fp16", SHAPE, ENV, builder_optimization_level=5),
        make_engine_key(sha, "fp16", SHAPE, ENV, workspace_mb=1024),
        make_engine_key(sha, "fp16", (1, 3, 1024, 2048), ENV),
        make_engine_key(sha, "fp16", (2, 3, 512, 1024), ENV),
        make_engine_key(sha, "fp16", SHAPE, BuildEnvironment("NVIDIA H100", "8.7", "10.3.0")),
        make_engine_key(sha, "fp16", SHAPE, BuildEnvironment("NVIDIA Orin", "9.0", "10.3.0")),
        make_engine_key(sha, "fp16", SHAPE, BuildEnvironment("NVIDIA Orin", "8.7", "10.4.0")),
    ]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == len(variants) + 1
    assert make_engine_key(sha, "fp16", list(SHAPE), ENV).digest() == base.digest()


def test_key_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="precision"):
        make_engine_key("a" * 64, "int4", SHAPE, ENV)
    with pytest.raises(ValueError, match="input_shape"):
        make_engine_key("a" * 64, "fp16", (1, 512, 1024), ENV)
    with pytest.raises(ValueError, match="sha256"):
        make_engine_key("abc", "fp16", SHAPE, ENV)
    with pytest.raises(ValueError, match="precision"):
        make_engine_key("a" * 64, "bf16", SHAPE, ENV)  # TensorRT precision comes from fp32/fp16/int8 ONNX files
    with pytest.raises(ValueError, match="builder_optimization_level"):
        make_engine_key("a" * 64, "fp16", SHAPE, ENV, builder_optimization_level=9)
    with pytest.raises(ValueError, match="workspace_mb"):
        make_engine_key("a" * 64, "fp16", SHAPE, ENV, workspace_mb=0)


def test_optimization_level_and_workspace_build_engines_of_their_own(tmp_path: Path, onnx_file: Path) -> None:
    cache, build = EngineCache(tmp_path / "engines"), FakeBuilder()
    first = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    level5 = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV, builder_optimization_level=5)
    small = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV, workspace_mb=1024)
    assert build.calls == 3 and len({first.engine_path, level5.engine_path, small.engine_path}) == 3
    assert json.loads(level5.sidecar_path.read_text())["key"]["builder_optimization_level"] == 5
    assert not cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV, builder_optimization_level=5).built


def test_build_then_hit(tmp_path: Path, onnx_file: Path) -> None:
    cache, build = EngineCache(tmp_path / "engines"), FakeBuilder()
    first = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    assert first.built and build.calls == 1 and first.engine_path.is_file()
    sidecar = json.loads(first.sidecar_path.read_text())
    assert sidecar["key"]["tensorrt_version"] == "10.3.0" and sidecar["key"]["input_shape"] == list(SHAPE)
    second = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    assert not second.built and build.calls == 1
    assert cache.read_engine(second).startswith(b"ENGINE:fake onnx graph v1")


def test_tensorrt_version_change_rebuilds_and_logs(tmp_path: Path, onnx_file: Path, caplog) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    newer = BuildEnvironment(ENV.gpu_name, ENV.compute_capability, "10.5.0")
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_core.export.engine_cache"):
        entry = cache.get_or_build(onnx_file, "fp16", SHAPE, build, newer)
    assert entry.built and build.calls == 2
    assert any("tensorrt_version changed: cached '10.3.0', now '10.5.0'" in r for r in entry.rebuild_reasons)
    assert "rebuilding TensorRT engine" in caplog.text and "10.5.0" in caplog.text
    assert json.loads(entry.sidecar_path.read_text())["key"]["tensorrt_version"] == "10.5.0"


def test_gpu_change_rebuilds(tmp_path: Path, onnx_file: Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    entry = cache.get_or_build(
        onnx_file, "fp16", SHAPE, build, BuildEnvironment("NVIDIA H100 80GB", "9.0", "10.3.0")
    )
    assert entry.built
    assert {r.split(" changed")[0] for r in entry.rebuild_reasons} == {"gpu_name", "compute_capability"}


def test_changed_onnx_builds_a_new_engine(tmp_path: Path, onnx_file: Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    first = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    onnx_file.write_bytes(b"fake onnx graph v2")
    second = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    assert second.built and second.engine_path != first.engine_path
    assert b"v2" in cache.read_engine(second)


@pytest.mark.parametrize(
    "damage",
    [
        "tamper_engine",
        "truncate_engine",
        "sidecar_garbage",
        "sidecar_missing",
        "sidecar_key_edit",
        "sidecar_format",
    ],
)
def test_damaged_cache_takes_rebuild_path(tmp_path: Path, onnx_file: Path, damage: str) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    entry = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    data = entry.engine_path.read_bytes()
    sidecar = json.loads(entry.sidecar_path.read_text())
    if damage == "tamper_engine":
        entry.engine_path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other content
    elif damage == "truncate_engine":
        entry.engine_path.write_bytes(data[:5])
    elif damage == "sidecar_garbage":
        entry.sidecar_path.write_text("{not json")
    elif damage == "sidecar_missing":
        entry.sidecar_path.unlink()
    elif damage == "sidecar_key_edit":
        sidecar["key"]["precision"] = "fp32"
        entry.sidecar_path.write_text(json.dumps(sidecar))
    elif damage == "sidecar_format":
        sidecar["format"] = 99
        entry.sidecar_path.write_text(json.dumps(sidecar))
    reasons = cache.validate(entry.key, entry.engine_path, entry.sidecar_path)
    assert reasons, damage
    rebuilt = cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    assert rebuilt.built and build.calls == 2 and rebuilt.rebuild_reasons == reasons
    assert cache.validate(rebuilt.key, rebuilt.engine_path, rebuilt.sidecar_path) == []


def test_rebuild_disabled_fails_with_reasons(tmp_path: Path, onnx_file: Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    with pytest.raises(EngineCacheError, match="no engine file.*rebuilding is disabled"):
        cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV, allow_rebuild=False)
    cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV)
    newer = BuildEnvironment(ENV.gpu_name, ENV.compute_capability, "10.5.0")
    with pytest.raises(EngineCacheError, match=r"tensorrt_version changed.*export tensorrt"):
        cache.get_or_build(onnx_file, "fp16", SHAPE, build, newer, allow_rebuild=False)
    assert build.calls == 1
    # A valid engine is still served with rebuilding disabled.
    assert not cache.get_or_build(onnx_file, "fp16", SHAPE, build, ENV, allow_rebuild=False).built


def test_missing_onnx_and_failing_builder(tmp_path: Path, onnx_file: Path) -> None:
    cache = EngineCache(tmp_path)
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        cache.get_or_build(tmp_path / "missing.onnx", "fp16", SHAPE, FakeBuilder(), ENV)

    def broken(onnx_path: Path, out_path: Path) -> None:
        out_path.write_bytes(b"half an eng")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.get_or_build(onnx_file, "fp16", SHAPE, broken, ENV)
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".engine", ".tmp", ".json")] == []


_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from panoptic_depthlab_core.export.engine_cache import BuildEnvironment, EngineCache

    cache_dir, onnx, log_path, tag = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]

    def slow_build(onnx_path, out_path):
        with open(log_path, "a") as log:
            log.write(f"build {tag}\\n")
        with open(out_path, "wb") as f:  # written in pieces, slowly: a torn read would show
            for i in range(20):
                f.write(f"{tag}-chunk{i:02d};".encode() * 100)
                f.flush()
                time.sleep(0.02)

    env = BuildEnvironment("Fake GPU", "8.6", "10.3.0")
    entry = EngineCache(cache_dir).get_or_build(onnx, "fp16", (1, 3, 64, 128), slow_build, env)
    data = EngineCache(cache_dir).read_engine(entry)
    print(entry.built, data[:2].decode(), len(data))
""")


def test_concurrent_builders_do_not_corrupt_the_cache(tmp_path: Path, onnx_file: Path) -> None:
    cache_dir, log_path = tmp_path / "engines", tmp_path / "builds.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(REPO), str(cache_dir), str(onnx_file), str(log_path), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(out.split())
    assert log_path.read_text().count("build") == 1  # the second process waited and reused the engine
    assert sorted(r[0] for r in results) == ["False", "True"]
    assert results[0][1:] == results[1][1:]  # both read the same, complete engine
    engines = list(cache_dir.glob("*.engine"))
    assert len(engines) == 1 and not list(cache_dir.glob("*.tmp"))
    env = BuildEnvironment("Fake GPU", "8.6", "10.3.0")
    entry = EngineCache(cache_dir).get_or_build(onnx_file, "fp16", (1, 3, 64, 128), FakeBuilder(), env)
    assert not entry.built
