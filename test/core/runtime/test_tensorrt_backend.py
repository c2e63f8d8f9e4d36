"""TensorRT builder and backend.

Without TensorRT (here): the strongly typed build path against fake TensorRT 10.x and 11.x modules
(the 11.x one lacks the removed weak-typing API, so any use of it fails), prebuilt-engine checks
through the sidecar (another GPU/TensorRT, truncated, wrong precision/shape) with a fake build
environment, the precision read from the ONNX file, and the "how to install" error.
With TensorRT + CUDA (skipped otherwise, run by scripts/gpu_checks.sh): fp32/fp16/int8 engines from
explicit-precision ONNX files against torch, cache hits, stale rebuilds, a prebuilt engine.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from qdq_model import write_qdq_onnx
from tiny_models import tiny_model_config
from trt_fakes import make_fake_tensorrt

from panoptic_depthlab_core.export.artefacts import check_precision, graph_precision, onnx_precision
from panoptic_depthlab_core.export.engine_cache import BuildEnvironment, EngineCacheError, sidecar_path_for
from panoptic_depthlab_core.export.onnx_export import export_onnx, realistic_test_image
from panoptic_depthlab_core.export.tensorrt_build import (
    BuildOptions,
    build_engine,
    network_creation_flags,
    timing_cache_file,
)
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.runtime import BackendConfig, create_backend
from panoptic_depthlab_core.runtime.tensorrt_backend import (
    TensorRTNotAvailable,
    check_tensorrt_version,
    import_tensorrt,
    prepare_engine,
    tensorrt_available,
)

REPO = Path(__file__).resolve().parents[3]
TINY = tiny_model_config()
INPUT_HW = (64, 128)
ORIN = BuildEnvironment("NVIDIA Orin", "8.7", "10.3.0.30")
H100 = BuildEnvironment("NVIDIA H100 80GB HBM3", "9.0", "11.4.0.106")

needs_trt = pytest.mark.skipif(not tensorrt_available(), reason="TensorRT not importable")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def qdq_onnx(path: Path, hw: tuple[int, int] = INPUT_HW, precision_metadata: str | None = "int8") -> Path:
    """A minimal valid int8 (explicit Q/DQ) model with the project's I/O contract."""
    return write_qdq_onnx(path, hw, precision_metadata)


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_onnx(build_model(TINY).eval(), tmp_path_factory.mktemp("onnx") / "tiny_fp32.onnx", *INPUT_HW)


@pytest.fixture(params=["10.3.0.30", "11.4.0.106"], ids=["trt10", "trt11"])
def fake_trt(request, monkeypatch):
    trt, calls = make_fake_tensorrt(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, calls


# ------------------------------------------------------------------------------ without TensorRT
@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is importable here")
def test_missing_tensorrt_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(TensorRTNotAvailable, match=r"pip install \"\.\[tensorrt\]\""):
        import_tensorrt()
    with pytest.raises(TensorRTNotAvailable, match="TensorRT not importable"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.engine", BuildOptions())


def test_stub_only_tensorrt_is_not_mistaken_for_the_library(monkeypatch, tmp_path: Path) -> None:
    """tensorrt-stubs installs a bare ``tensorrt`` folder of .pyi files, which imports as a namespace package."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("__version__: str\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TensorRTNotAvailable, match=r"type stubs only.*pip install"):
        import_tensorrt()
    assert not tensorrt_available()


@pytest.mark.parametrize("version,ok", [("8.6.1", False), ("10.2.0", False), ("10.3.0.30", True),
                                        ("10.13.3.9", True), ("11.4.0.106", True), ("12.0.0", False)])  # fmt: skip
def test_supported_tensorrt_range(version: str, ok: bool) -> None:
    if ok:
        check_tensorrt_version(version)
    else:
        with pytest.raises(TensorRTNotAvailable, match=r">=10.3,<12.*pip install"):
            check_tensorrt_version(version)


def test_build_options_are_validated() -> None:
    with pytest.raises(ValueError, match="workspace_mb"):
        BuildOptions(workspace_mb=0)
    with pytest.raises(ValueError, match="builder_optimization_level"):
        BuildOptions(builder_optimization_level=6)


def test_no_weak_typing_or_implicit_calibration_anywhere() -> None:
    """TensorRT 11 removed them; on 10.x they are deprecated. No source file may use them."""
    forbidden = ("BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "int8_calibrator",
                 "set_calibration_profile", "IInt8", "platform_has_fast", "OBEY_PRECISION")  # fmt: skip
    hits = []
    sources = [p for pkg in ("panoptic_depthlab_core", "panoptic_depthlab_ros") for p in (REPO / pkg).rglob("*.py")]
    for path in sources:
        text = path.read_text()
        hits += [f"{path.relative_to(REPO)}: {name}" for name in forbidden if name in text]
    assert hits == []


# ------------------------------------------------------------------------------ precision from the ONNX
def test_precision_is_read_from_the_onnx_file(tmp_path: Path, fp32_onnx: Path) -> None:
    int8 = qdq_onnx(tmp_path / "int8.onnx")
    assert onnx_precision(onnx.load(str(int8)), int8).precision == "int8"
    bare = qdq_onnx(tmp_path / "bare.onnx", precision_metadata=None)  # made elsewhere: no metadata
    assert graph_precision(onnx.load(str(bare))).precision == "int8"
    assert onnx_precision(onnx.load(str(fp32_onnx))).precision == "fp32"
    with pytest.raises(ValueError, match=r"int8\.onnx is int8 .*quantize.*but precision is fp32"):
        check_precision(onnx.load(str(int8)), int8, "fp32")
    lying = qdq_onnx(tmp_path / "lying.onnx", precision_metadata="fp16")
    with pytest.raises(ValueError, match="records precision fp16 in its metadata, but its graph is int8"):
        onnx_precision(onnx.load(str(lying)), lying)


# ------------------------------------------------------------------------------ strongly typed build, fake TensorRT
def test_strongly_typed_build_on_both_major_versions(fake_trt, tmp_path: Path, fp32_onnx: Path) -> None:
    trt, calls = fake_trt
    major = int(trt.__version__.split(".")[0])
    env = replace(ORIN, tensorrt_version=trt.__version__)
    options = BuildOptions(workspace_mb=512, builder_optimization_level=4, timing_cache_dir=str(tmp_path))
    build_engine(fp32_onnx, tmp_path / "a.engine", options, env)
    expected_flags = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert calls.network_flags == [expected_flags] == [network_creation_flags()]
    assert calls.set_flags == [] and calls.deprecation_warnings == []
    assert calls.workspace == [512 << 20] and calls.optimization_level == [4]
    assert (tmp_path / "a.engine").read_bytes().startswith(f"FAKE-ENGINE trt{trt.__version__}".encode())
    if major >= 11:  # the removed API is really absent from the 11.x fake
        assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
        config = trt.Builder(trt.Logger()).create_builder_config()
        with pytest.raises(AttributeError):
            config.int8_calibrator = object()
        assert not hasattr(config, "set_calibration_profile") and not hasattr(trt, "IInt8MinMaxCalibrator")

    # the timing cache is this GPU's and TensorRT's own, and never merged ignoring mismatches
    cache = timing_cache_file(tmp_path, env)
    assert cache.is_file() and "NVIDIA-Orin_sm8.7_trt" in cache.name
    build_engine(fp32_onnx, tmp_path / "b.engine", options, env)
    other_gpu = replace(env, gpu_name="NVIDIA A100", compute_capability="8.0")
    build_engine(fp32_onnx, tmp_path / "c.engine", options, other_gpu)
    assert timing_cache_file(tmp_path, other_gpu) != cache and timing_cache_file(tmp_path, other_gpu).is_file()
    assert calls.timing_cache_ignore_mismatch == [False, False, False]
    assert calls.combine_ignore_mismatch == [False]  # only b combined with a's cache (same GPU/TensorRT)


def test_parse_error_names_the_file(fake_trt, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ValueError, match="cannot parse ONNX model .*bad.onnx"):
        build_engine(bad, tmp_path / "x.engine", BuildOptions(), ORIN)


def _cfg(tmp_path: Path, **kw) -> BackendConfig:
    return BackendConfig(name="tensorrt", device="cuda:0", engine_cache_dir=str(tmp_path / "engines"), **kw)


def test_prepare_builds_int8_from_qdq_onnx_then_hits_the_cache(fake_trt, tmp_path: Path) -> None:
    trt, calls = fake_trt
    env = replace(ORIN, tensorrt_version=trt.__version__)
    onnx_path = qdq_onnx(tmp_path / "model_int8.onnx")
    cfg = _cfg(tmp_path, precision="int8", onnx_path=str(onnx_path))
    first = prepare_engine(cfg, INPUT_HW, env=env)
    assert calls.builds == 1 and first.key["precision"] == "int8" and "built at configure" in first.artefact.origin
    again = prepare_engine(cfg, INPUT_HW, env=env)
    assert calls.builds == 1 and again.artefact.origin.startswith("cache hit")
    # optimisation level and workspace are part of the engine key
    prepare_engine(replace(cfg, builder_optimization_level=5), INPUT_HW, env=env)
    prepare_engine(replace(cfg, workspace_mb=1024), INPUT_HW, env=env)
    assert calls.builds == 3
    with pytest.raises(ValueError, match=r"model_int8\.onnx is int8 .* but precision is fp16"):
        prepare_engine(replace(cfg, precision="fp16"), INPUT_HW, env=env)
    with pytest.raises(ValueError, match="precision int8 needs a int8 ONNX file"):
        prepare_engine(replace(cfg, onnx_path=""), INPUT_HW, model=build_model(TINY), env=env)


def _ship_engine(tmp_path: Path, env: BuildEnvironment, precision: str = "int8") -> tuple[Path, Path]:
    """Build with the fake builder into the cache, then copy engine + sidecar as a shipped artefact."""
    onnx_path = qdq_onnx(tmp_path / "model_int8.onnx")

    def fake_build(src: Path, dst: Path) -> None:
        dst.write_bytes(b"ENGINE from " + src.read_bytes()[:64])

    entry = prepare_engine(_cfg(tmp_path, precision=precision, onnx_path=str(onnx_path)), INPUT_HW, env=env,
                           build_fn=fake_build)  # fmt: skip
    shipped = tmp_path / "ship" / "model_int8.engine"
    shipped.parent.mkdir()
    shutil.copy(entry.engine_path, shipped)
    shutil.copy(entry.sidecar_path, shipped.with_name(shipped.name + ".json"))
    return shipped, onnx_path


def test_prebuilt_engine_for_this_gpu_is_loaded_without_a_build(tmp_path: Path) -> None:
    shipped, onnx_path = _ship_engine(tmp_path, ORIN)

    def must_not_build(src: Path, dst: Path) -> None:
        raise AssertionError("a matching prebuilt engine was rebuilt")

    cfg = _cfg(tmp_path / "elsewhere", precision="int8", engine_path=str(shipped), allow_engine_rebuild=False)
    prepared = prepare_engine(cfg, INPUT_HW, env=ORIN, build_fn=must_not_build)
    assert prepared.engine_path == shipped and prepared.artefact.origin == "prebuilt"
    summary = prepared.artefact.summary()
    assert "NVIDIA Orin (compute capability 8.7)" in summary and "TensorRT 10.3.0.30" in summary
    # with its ONNX given too, the engine must have been built from that file
    prepare_engine(replace(cfg, onnx_path=str(onnx_path)), INPUT_HW, env=ORIN, build_fn=must_not_build)


def test_prebuilt_engine_from_another_gpu_and_tensorrt(tmp_path: Path) -> None:
    shipped, onnx_path = _ship_engine(tmp_path, ORIN)
    cfg = _cfg(tmp_path, precision="int8", engine_path=str(shipped), allow_engine_rebuild=False)
    expected = (r"model_int8\.engine cannot be used here: gpu_name: engine 'NVIDIA Orin', here 'NVIDIA H100.*"
                r"tensorrt_version: engine '10\.3\.0\.30', here '11\.4.*allow_engine_rebuild false")  # fmt: skip
    with pytest.raises(EngineCacheError, match=expected):
        prepare_engine(cfg, INPUT_HW, env=H100)
    # no GPU/TensorRT here at all: the sidecar still says what the engine needs
    expected = r"built on NVIDIA Orin .*TensorRT 10\.3\.0\.30; here: TensorRT not importable"
    with pytest.raises(EngineCacheError, match=expected):
        prepare_engine(cfg, INPUT_HW, env=None, env_problem="TensorRT not importable (no module)")
    # rebuilding allowed, but nothing to rebuild from
    with pytest.raises(EngineCacheError, match="set onnx_path to rebuild it"):
        prepare_engine(replace(cfg, allow_engine_rebuild=True), INPUT_HW, env=H100)
    rebuilt = prepare_engine(replace(cfg, allow_engine_rebuild=True, onnx_path=str(onnx_path)), INPUT_HW, env=H100,
                             build_fn=lambda src, dst: dst.write_bytes(b"H100 engine"))  # fmt: skip
    assert rebuilt.engine_path != shipped and rebuilt.artefact.origin.startswith("rebuilt at configure")
    assert rebuilt.key["gpu_name"] == H100.gpu_name and "gpu_name" in rebuilt.artefact.detail
    assert shipped.read_bytes().startswith(b"ENGINE from")  # the shipped file is left as it was


@pytest.mark.parametrize("damage", ["truncated", "no_sidecar", "precision", "input_size"])
def test_bad_prebuilt_engine_is_refused_with_the_reason(tmp_path: Path, damage: str) -> None:
    shipped, _ = _ship_engine(tmp_path, ORIN)
    cfg = _cfg(tmp_path, precision="int8", engine_path=str(shipped), allow_engine_rebuild=False)
    hw, expected = INPUT_HW, ""
    if damage == "truncated":
        shipped.write_bytes(shipped.read_bytes()[:7])
        expected = "truncated"
    elif damage == "no_sidecar":
        shipped.with_name(shipped.name + ".json").unlink()
        expected = "no sidecar model_int8.engine.json"
    elif damage == "precision":
        cfg = replace(cfg, precision="fp32")
        expected = "engine is int8, but precision is fp32"
    else:
        hw, expected = (128, 256), r"engine input \[1, 3, 64, 128\], network input size \[128, 256\]"
    with pytest.raises(EngineCacheError, match=rf"model_int8\.engine cannot be used here: .*{expected}"):
        prepare_engine(cfg, hw, env=ORIN)


# ------------------------------------------------------------------------------ GPU + TensorRT
@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    onnx_path = export_onnx(model, tmp_path_factory.mktemp("trt") / "tiny.onnx", *INPUT_HW)
    images = torch.from_numpy(realistic_test_image(*INPUT_HW)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        ref = model(images)
    return model, onnx_path, images, ref


def _precision_onnx(model, precision: str, out: Path) -> Path:
    """The model exported at ``precision`` by the project's own export (precision lives in the file)."""
    from panoptic_depthlab_core.export.calibration import CalibrationDataReader

    calibration = CalibrationDataReader("synthetic", INPUT_HW, max_images=8) if precision == "int8" else None
    return export_onnx(model, out, *INPUT_HW, precision=precision, calibration=calibration)


@needs_cuda
@needs_trt
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_cuda_tensorrt_engine_matches_torch_and_is_cached(gpu_setup, tmp_path: Path, precision, atol) -> None:
    model, _, images, ref = gpu_setup
    onnx_path = _precision_onnx(model, precision, tmp_path / f"tiny_{precision}.onnx")
    cfg = BackendConfig(name="tensorrt", device="cuda", precision=precision, onnx_path=str(onnx_path),
                        engine_cache_dir=str(tmp_path))  # fmt: skip
    backend = create_backend(cfg, model, INPUT_HW)
    out = backend(images.cuda())
    assert all(v.is_cuda for v in out.values())
    for name in ("sem_logits", "depth"):
        assert (out[name].cpu() - ref[name]).abs().max() <= atol * max(1.0, float(ref[name].abs().max()))
    assert len(list(tmp_path.glob("*.engine.json"))) == 1 and list(tmp_path.glob("timing_*.cache"))
    mtime = backend.engine_path.stat().st_mtime_ns
    again = create_backend(cfg, model, INPUT_HW)  # second start: cache hit, no rebuild
    assert again.engine_path.stat().st_mtime_ns == mtime and again.artefact.origin.startswith("cache hit")


@needs_cuda
@needs_trt
def test_cuda_tensorrt_stale_engine_is_rebuilt(gpu_setup, tmp_path: Path) -> None:
    model, onnx_path, images, _ = gpu_setup
    cfg = BackendConfig(name="tensorrt", device="cuda", onnx_path=str(onnx_path), engine_cache_dir=str(tmp_path))
    backend = create_backend(cfg, model, INPUT_HW)
    sidecar_path = backend.engine_path.with_name(backend.engine_path.name + ".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["key"]["tensorrt_version"] = "9.0.0"  # as if built by an older TensorRT
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="tensorrt_version changed"):
        create_backend(replace(cfg, allow_engine_rebuild=False), model, INPUT_HW)
    rebuilt = create_backend(cfg, model, INPUT_HW)
    assert json.loads(sidecar_path.read_text())["rebuild_reasons"]
    assert rebuilt(images.cuda())["depth"].shape == (1, 1, *INPUT_HW)


@needs_cuda
@needs_trt
def test_cuda_tensorrt_int8_from_explicit_qdq_onnx(gpu_setup, tmp_path: Path) -> None:
    """int8 is explicit Q/DQ in the ONNX (T19a's export): no calibrator, no INT8 flag, on 10.x and 11.x."""
    model, _, images, ref = gpu_setup
    onnx_path = _precision_onnx(model, "int8", tmp_path / "tiny_int8.onnx")
    cfg = BackendConfig(name="tensorrt", device="cuda", precision="int8", onnx_path=str(onnx_path),
                        engine_cache_dir=str(tmp_path))  # fmt: skip
    backend = create_backend(cfg, model, INPUT_HW)
    assert backend.artefact.precision == "int8"
    out = backend(images.cuda())
    assert np.isfinite(out["depth"].cpu().numpy()).all()
    # a prebuilt copy of that engine loads with no build, rebuilding disabled
    shipped = tmp_path / "ship" / "tiny_int8.engine"
    shipped.parent.mkdir()
    shutil.copy(backend.engine_path, shipped)
    shutil.copy(sidecar_path_for(backend.engine_path), sidecar_path_for(shipped))
    prebuilt = replace(cfg, onnx_path="", engine_path=str(shipped), allow_engine_rebuild=False)
    loaded = create_backend(prebuilt, None, INPUT_HW)
    assert loaded.artefact.origin == "prebuilt"
    assert torch.equal(loaded(images.cuda())["sem_logits"].argmax(1), out["sem_logits"].argmax(1))


@needs_cuda
@needs_trt
def test_cuda_tensorrt_missing_onnx(tmp_path: Path) -> None:
    cfg = BackendConfig(name="tensorrt", device="cuda", onnx_path=str(tmp_path / "none.onnx"),
                        engine_cache_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        create_backend(cfg, build_model(TINY), INPUT_HW)


@needs_trt
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_tensorrt_builds_on_the_configured_device(gpu_setup, tmp_path: Path) -> None:
    model, onnx_path, images, _ = gpu_setup
    cfg = BackendConfig(name="tensorrt", device="cuda:1", onnx_path=str(onnx_path), engine_cache_dir=str(tmp_path))
    backend = create_backend(cfg, model, INPUT_HW)
    assert backend.artefact.built_on.startswith(torch.cuda.get_device_name(1))
    out = backend(images.to("cuda:1"))
    assert out["depth"].device == torch.device("cuda:1")


def test_export_tensorrt_cli_ships_engine_and_sidecar(fake_trt, monkeypatch, tmp_path: Path, capsys) -> None:
    """`export tensorrt --engine`: the precision comes from the file, the engine and its sidecar land where asked."""
    from panoptic_depthlab_core.cli import main
    from panoptic_depthlab_core.export import engine_cache

    trt, calls = fake_trt
    env = replace(ORIN, tensorrt_version=trt.__version__)
    monkeypatch.setattr(engine_cache, "current_environment", lambda device_index=0: env)
    onnx_path = qdq_onnx(tmp_path / "model_int8.onnx")
    shipped = tmp_path / "ship" / "model_int8.engine"
    argv = ["export", "tensorrt", "--onnx", str(onnx_path), "--engine", str(shipped),
            "--engine-cache-dir", str(tmp_path / "engines"), "--optimization-level", "4"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    sidecar = json.loads(sidecar_path_for(shipped).read_text())
    assert shipped.read_bytes().startswith(b"FAKE-ENGINE") and calls.builds == 1
    assert sidecar["key"]["precision"] == "int8" and sidecar["key"]["builder_optimization_level"] == 4
    assert report["engine"] == str(shipped) and "int8 built on NVIDIA Orin" in report["artefact"]
    # the shipped engine is what the node then loads, with no build
    cfg = _cfg(tmp_path, precision="int8", engine_path=str(shipped), allow_engine_rebuild=False)
    assert prepare_engine(cfg, INPUT_HW, env=env).artefact.origin == "prebuilt" and calls.builds == 1
    assert main(["export", "tensorrt", "--onnx", str(onnx_path), "--precision", "fp16"]) == 2
    assert "is int8" in capsys.readouterr().err
