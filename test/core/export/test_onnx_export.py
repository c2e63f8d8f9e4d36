"""ONNX export: parity with torch fp32 for every model variant, named I/O, checker, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_depthlab_core.export.onnx_export import (
    cached_onnx_for_model,
    check_onnx_file,
    check_parity,
    export_onnx,
    model_fingerprint,
    onnx_parity,
    realistic_test_image,
    with_trained_like_statistics,
)
from panoptic_depthlab_core.model import OUTPUT_NAMES, build_model, load_model_config

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config" / "models"
HEIGHT, WIDTH = 64, 128


def _model(name: str) -> torch.nn.Module:
    cfg = load_model_config(CONFIG_DIR / f"{name}.yaml")
    if cfg.pool_kernel is not None:
        cfg.pool_kernel = (2, 4)  # windowed ASPP pooling at test size (crop/16 of a 32x64 crop)
    torch.manual_seed(0)
    return with_trained_like_statistics(build_model(cfg).eval())


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = _model("panoptic_depthlab_small")
    return model, export_onnx(model, tmp_path_factory.mktemp("small") / "small.onnx", HEIGHT, WIDTH)


def _images(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(realistic_test_image(height, width, seed)).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize(
    "name", ["panoptic_deeplab_r52", "panoptic_deeplab_r52_dsconv", "panoptic_depthlab_small"]
)
def test_onnx_parity_with_torch(name: str, tmp_path: Path) -> None:
    model = _model(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", HEIGHT, WIDTH)
    proto = check_onnx_file(path)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    images = _images(seed=1)
    with torch.no_grad():
        ref = model(images)
    assert ref["sem_logits"].abs().max() > 0.5  # outputs are not trivially ~0
    diffs = check_parity(model, path, images)
    assert diffs["sem_logits"] <= 1e-3 and diffs["depth"] <= 1e-3, diffs
    assert diffs["center"] <= 1e-3 and diffs["offset"] <= 1e-2, diffs


def test_dynamic_export_runs_other_sizes(tmp_path: Path) -> None:
    model = _model("panoptic_depthlab_small")
    path = export_onnx(model, tmp_path / "dyn.onnx", HEIGHT, WIDTH, dynamic=True)
    for h, w in [(64, 128), (72, 100), (96, 96)]:  # divisible and not: in-graph padding must follow
        diffs = onnx_parity(model, path, _images(h, w, seed=h))
        assert diffs["sem_logits"] <= 1e-3 and diffs["depth"] <= 1e-3, (h, w, diffs)


def test_parity_check_detects_a_different_model(small_export) -> None:
    _, path = small_export
    model = _model("panoptic_depthlab_small")
    with torch.no_grad():
        model.sem_seg_head.predictor.bias.add_(0.1)
    with pytest.raises(ValueError, match="differs from torch"):
        check_parity(model, path, _images())


def test_missing_and_corrupt_onnx_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        check_onnx_file(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        check_onnx_file(empty)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"garbage\.onnx"):
        check_onnx_file(garbage)


def test_truncated_onnx_is_rejected(small_export, tmp_path: Path) -> None:
    data = small_export[1].read_bytes()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="m.onnx"):
        check_onnx_file(path)


def test_export_rejects_bad_arguments(small_export, tmp_path: Path) -> None:
    model = small_export[0]
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", HEIGHT, WIDTH, opset=13)
    with pytest.raises(ValueError, match="at least 32x32"):
        export_onnx(model, tmp_path / "m.onnx", 16, WIDTH)
    assert not (tmp_path / "m.onnx").exists()


def test_cached_export_is_reused_and_follows_weights(small_export, tmp_path: Path) -> None:
    model = small_export[0]
    first = cached_onnx_for_model(model, (HEIGHT, WIDTH), tmp_path)
    mtime = first.stat().st_mtime_ns
    assert cached_onnx_for_model(model, (HEIGHT, WIDTH), tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # not re-exported
    before = model_fingerprint(model)
    param = next(model.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
        try:
            assert model_fingerprint(model) != before  # changed weights -> another cache file
        finally:
            param.copy_(saved)
    assert model_fingerprint(model) == before
