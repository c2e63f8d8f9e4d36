"""ONNX Runtime backend: same panoptic result as torch through the Predictor; providers; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_model_config

from panoptic_depthlab_core.export.onnx_export import export_onnx, realistic_test_image
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.predictor import InputConfig, PipelineConfig, Predictor
from panoptic_depthlab_core.runtime import BackendConfig, create_backend
from panoptic_depthlab_core.runtime.onnxruntime_backend import OnnxRuntimeBackend, select_providers

TINY = tiny_model_config()
INPUT_HW = (96, 192)


def _trained_like_model() -> torch.nn.Module:
    """Fresh weights with output magnitudes of a trained model: class logits of several units and
    center peaks above the 0.1 threshold, so post-processing produces classes *and* instances."""
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            if name.endswith("predictor") and isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 5.0 / m.in_channels**0.5)
        # Random features barely vary over the image, so one class would win everywhere: centre each
        # logit on its image mean so the spatial variation decides, as it does in a trained model.
        images = torch.from_numpy(realistic_test_image(*INPUT_HW, seed=3)).permute(2, 0, 1)[None].float()
        out = model(images)
        sem_std = out["sem_logits"].std(dim=(0, 2, 3))
        model.sem_seg_head.predictor.weight /= sem_std[:, None, None, None]
        model.sem_seg_head.predictor.bias.copy_(model.sem_seg_head.predictor.bias / sem_std)
        out = model(images)
        model.sem_seg_head.predictor.bias -= out["sem_logits"].mean(dim=(0, 2, 3))
        center = out["center"]
        model.ins_embed_head.center_predictor.bias += 0.1 - center.quantile(0.995)
    return model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _trained_like_model()


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("ort") / "tiny.onnx", *INPUT_HW)


def _predictor(model, backend: BackendConfig) -> Predictor:
    cfg = PipelineConfig(model=TINY, input=InputConfig(height=INPUT_HW[0], width=INPUT_HW[1]))
    return Predictor(cfg, weights=None, backend=backend, model=model)


def test_ort_predictor_gives_the_same_panoptic_ids_as_torch(model, onnx_path: Path) -> None:
    image = realistic_test_image(150, 260, seed=3)  # letterboxed: exercises padding and resizing back
    ref = _predictor(model, BackendConfig(name="torch")).predict(image)
    ort_pred = _predictor(model, BackendConfig(name="onnxruntime", onnx_path=str(onnx_path), num_threads=1))
    got = ort_pred.predict(image)
    classes = np.unique(ref.semantic)
    instances = np.unique(ref.panoptic_ids[ref.panoptic_ids % 1000 > 0])
    assert len(classes) >= 3 and len(instances) >= 1, (classes, instances)  # a non-trivial scene
    np.testing.assert_array_equal(got.panoptic_ids, ref.panoptic_ids)
    np.testing.assert_array_equal(got.semantic, ref.semantic)
    np.testing.assert_allclose(got.depth_m, ref.depth_m, atol=1e-3, equal_nan=True)
    assert [s.id for s in got.segments] == [s.id for s in ref.segments]
    assert got.timings_ms["network"] > 0


def test_ort_exports_into_the_cache_when_no_onnx_path(model, tmp_path: Path) -> None:
    backend = create_backend(
        BackendConfig(name="onnxruntime", engine_cache_dir=str(tmp_path)), model, INPUT_HW
    )
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.onnx_path.parent == tmp_path / "onnx" and backend.onnx_path.is_file()
    images = (
        torch.from_numpy(realistic_test_image(*INPUT_HW)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1)
    )
    out = backend(images)  # batch 2 through a batch-1 model
    with torch.no_grad():
        ref = model(images)
    for name in ("sem_logits", "depth"):
        assert out[name].shape == ref[name].shape
        assert (out[name] - ref[name]).abs().max() <= 1e-3


def test_ort_bad_onnx_files(model, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxRuntimeBackend(
            model, BackendConfig(name="onnxruntime", onnx_path=str(tmp_path / "x.onnx")), INPUT_HW
        )
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not protobuf" * 10)
    with pytest.raises(ValueError, match="corrupt.onnx"):
        OnnxRuntimeBackend(model, BackendConfig(name="onnxruntime", onnx_path=str(corrupt)), INPUT_HW)


def test_ort_rejects_a_model_of_another_size(model, onnx_path: Path) -> None:
    with pytest.raises(ValueError, match="fixed input size"):
        OnnxRuntimeBackend(model, BackendConfig(name="onnxruntime", onnx_path=str(onnx_path)), (128, 256))
    backend = OnnxRuntimeBackend(model, BackendConfig(name="onnxruntime", onnx_path=str(onnx_path)), INPUT_HW)
    with pytest.raises(ValueError, match="expects"):
        backend(torch.zeros(1, 3, 64, 64))


def test_provider_selection(tmp_path: Path, monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda:1")
    for precision in ("fp32", "fp16", "int8"):  # the file's precision; the CPU provider runs all three
        assert select_providers(cpu, precision, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="bf16"):
        select_providers(cpu, "bf16", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="no CUDA execution provider"):
        select_providers(cuda, "fp32", ["CPUExecutionProvider"])
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    # the TensorRT EP only when asked for: no TensorRT build at every start by default
    for precision in ("fp32", "fp16", "int8"):
        providers = select_providers(cuda, precision, everything)
        assert providers == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    trt = select_providers(cuda, "int8", everything, str(tmp_path), tensorrt=True)
    assert trt[0][0] == "TensorrtExecutionProvider" and trt[0][1]["device_id"] == 1
    assert trt[0][1]["trt_engine_cache_path"] == str(tmp_path / "ort_trt") and trt[0][1]["trt_int8_enable"]
    monkeypatch.setenv("PANOPTIC_DEPTHLAB_CACHE", str(tmp_path / "default"))
    default = select_providers(cuda, "fp32", everything, tensorrt=True)  # cache in the default folder
    assert default[0][1]["trt_engine_cache_path"] == str(tmp_path / "default" / "engines" / "ort_trt")
    with pytest.raises(ValueError, match="no TensorRT execution provider"):
        select_providers(cuda, "fp16", ["CUDAExecutionProvider", "CPUExecutionProvider"], tensorrt=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_ort_cuda_io_binding_matches_cpu(model, onnx_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider (install onnxruntime-gpu)")
    images = torch.from_numpy(realistic_test_image(*INPUT_HW)).permute(2, 0, 1)[None].float()
    cpu = OnnxRuntimeBackend(model, BackendConfig(name="onnxruntime", onnx_path=str(onnx_path)), INPUT_HW)(
        images
    )
    gpu_backend = OnnxRuntimeBackend(
        model, BackendConfig(name="onnxruntime", device="cuda", onnx_path=str(onnx_path)), INPUT_HW
    )
    out = gpu_backend(images.cuda())
    assert all(v.is_cuda for v in out.values())
    for name in ("sem_logits", "depth"):
        assert (out[name].cpu() - cpu[name]).abs().max() <= 1e-2


# --- backend "auto" -------------------------------------------------------------------------------


def test_auto_resolves_to_onnxruntime_on_a_cpu_only():
    from panoptic_depthlab_core.runtime import resolve_backend_name

    assert resolve_backend_name("auto", "cpu") == "onnxruntime"  # onnxruntime is installed here
    assert resolve_backend_name("auto", "cpu", "bf16") == "torch"  # ORT on the CPU is fp32 only
    assert resolve_backend_name("auto", "cuda") == "torch"  # the all-GPU path
    assert resolve_backend_name("auto", "cuda:1", "fp16") == "torch"
    for name in ("torch", "onnxruntime", "tensorrt"):
        assert resolve_backend_name(name, "cpu") == name


def _tiny_pipeline() -> PipelineConfig:
    return PipelineConfig(model=TINY, input=InputConfig(height=INPUT_HW[0], width=INPUT_HW[1]))


def test_auto_predictor_runs_onnxruntime_and_matches_torch(tmp_path):
    model = _trained_like_model()
    auto = Predictor(_tiny_pipeline(), None, BackendConfig(name="auto", engine_cache_dir=str(tmp_path)), model=model)
    assert auto.backend_cfg.name == "onnxruntime" and isinstance(auto.backend, OnnxRuntimeBackend)
    torch_predictor = Predictor(_tiny_pipeline(), None, BackendConfig(name="torch"), model=model)
    image = realistic_test_image(*INPUT_HW, seed=5)
    got, want = auto.predict(image), torch_predictor.predict(image)
    assert (got.panoptic_ids == want.panoptic_ids).mean() > 0.999
    np.testing.assert_allclose(got.depth_m, want.depth_m, atol=1e-3)


def test_auto_falls_back_to_torch_when_onnxruntime_cannot_be_set_up(tmp_path, caplog):
    blocked = tmp_path / "not_a_directory"
    blocked.write_text("a file where the export cache would go")
    model = _trained_like_model()
    with caplog.at_level("WARNING"):
        auto = Predictor(_tiny_pipeline(), None, BackendConfig(name="auto", engine_cache_dir=str(blocked)), model=model)
    assert auto.backend_cfg.name == "torch"
    assert "backend auto: onnxruntime could not be set up" in caplog.text
    with pytest.raises(OSError):  # asked for by name: the error is the caller's
        Predictor(_tiny_pipeline(), None, BackendConfig(name="onnxruntime", engine_cache_dir=str(blocked)), model=model)
