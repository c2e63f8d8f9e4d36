"""TensorRT backend and builder. Without TensorRT: the clear "not importable" error and option
checks. With TensorRT + CUDA (skipped otherwise): build, cache hit, parity with torch, int8, stale rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_model_config

from panoptic_depthlab_core.export.onnx_export import export_onnx, realistic_test_image
from panoptic_depthlab_core.export.tensorrt_build import BuildOptions
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.runtime import BackendConfig, create_backend
from panoptic_depthlab_core.runtime.tensorrt_backend import TensorRTNotAvailable, tensorrt_available

TINY = tiny_model_config()
INPUT_HW = (64, 128)

needs_trt = pytest.mark.skipif(not tensorrt_available(), reason="TensorRT not importable")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is importable here")
def test_missing_tensorrt_gives_a_clear_error() -> None:
    model = build_model(TINY)
    with pytest.raises(TensorRTNotAvailable, match="TensorRT not importable"):
        create_backend(BackendConfig(name="tensorrt", device="cuda"), model, INPUT_HW)
    from panoptic_depthlab_core.export.tensorrt_build import build_engine

    with pytest.raises(TensorRTNotAvailable, match="TensorRT not importable"):
        build_engine("model.onnx", "model.engine", BuildOptions())


def test_build_options_are_validated() -> None:
    with pytest.raises(ValueError, match="precision"):
        BuildOptions(precision="int4")
    with pytest.raises(ValueError, match="workspace_mb"):
        BuildOptions(workspace_mb=0)
    with pytest.raises(ValueError, match="calibrator"):
        BuildOptions(calibrator="percentile")
    assert BuildOptions(precision="int8").calibrator == "minmax"  # MinMax by default, not entropy


def test_torch_backend_refuses_int8() -> None:
    with pytest.raises(ValueError, match="int8"):
        create_backend(BackendConfig(name="torch", precision="int8"), build_model(TINY), INPUT_HW)


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


@needs_cuda
@needs_trt
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_cuda_tensorrt_engine_matches_torch_and_is_cached(gpu_setup, tmp_path: Path, precision, atol) -> None:
    model, onnx_path, images, ref = gpu_setup
    cfg = BackendConfig(
        name="tensorrt",
        device="cuda",
        precision=precision,
        onnx_path=str(onnx_path),
        engine_cache_dir=str(tmp_path),
    )
    backend = create_backend(cfg, model, INPUT_HW)
    out = backend(images.cuda())
    assert all(v.is_cuda for v in out.values())
    for name in ("sem_logits", "depth"):
        assert (out[name].cpu() - ref[name]).abs().max() <= atol * max(1.0, float(ref[name].abs().max()))
    sidecars = list(tmp_path.glob("*.engine.json"))
    assert len(sidecars) == 1 and (tmp_path / "timing.cache").is_file()
    mtime = backend.engine_path.stat().st_mtime_ns
    again = create_backend(cfg, model, INPUT_HW)  # second start: cache hit, no rebuild
    assert again.engine_path.stat().st_mtime_ns == mtime


@needs_cuda
@needs_trt
def test_cuda_tensorrt_stale_engine_is_rebuilt(gpu_setup, tmp_path: Path) -> None:
    model, onnx_path, images, _ = gpu_setup
    cfg = BackendConfig(
        name="tensorrt",
        device="cuda",
        precision="fp16",
        onnx_path=str(onnx_path),
        engine_cache_dir=str(tmp_path),
    )
    backend = create_backend(cfg, model, INPUT_HW)
    sidecar_path = backend.engine_path.with_suffix(".engine.json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["key"]["tensorrt_version"] = "9.0.0"  # as if built by an older TensorRT
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="tensorrt_version changed"):
        create_backend(BackendConfig(**{**cfg.__dict__, "allow_engine_rebuild": False}), model, INPUT_HW)
    rebuilt = create_backend(cfg, model, INPUT_HW)
    assert json.loads(sidecar_path.read_text())["rebuild_reasons"]
    assert rebuilt(images.cuda())["depth"].shape == (1, 1, *INPUT_HW)


@needs_cuda
@needs_trt
def test_cuda_tensorrt_int8_with_minmax_calibration(gpu_setup, tmp_path: Path) -> None:
    from panoptic_depthlab_core.runtime.tensorrt_backend import prepare_engine

    model, onnx_path, images, ref = gpu_setup
    batches = [
        torch.from_numpy(realistic_test_image(*INPUT_HW, seed=s)).permute(2, 0, 1)[None].float().numpy()
        for s in range(8)
    ]
    calib_cache = tmp_path / "tiny.calib"
    cfg = BackendConfig(
        name="tensorrt",
        device="cuda",
        precision="int8",
        onnx_path=str(onnx_path),
        engine_cache_dir=str(tmp_path),
    )
    entry = prepare_engine(
        model, cfg, INPUT_HW, calibration_batches=batches, calibration_cache_path=str(calib_cache)
    )
    assert entry.built and calib_cache.is_file()
    backend = create_backend(cfg, model, INPUT_HW)
    out = backend(images.cuda())
    assert np.isfinite(out["depth"].cpu().numpy()).all()


@needs_cuda
@needs_trt
def test_cuda_tensorrt_missing_onnx(tmp_path: Path) -> None:
    cfg = BackendConfig(
        name="tensorrt", device="cuda", onnx_path=str(tmp_path / "none.onnx"), engine_cache_dir=str(tmp_path)
    )
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        create_backend(cfg, build_model(TINY), INPUT_HW)
