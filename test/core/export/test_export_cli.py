"""``panoptic-depthlab export``: ONNX export with weights and parity report; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import TINY_MODEL

from panoptic_depthlab_core.cli import main
from panoptic_depthlab_core.export.onnx_export import check_onnx_file, onnx_input_shape
from panoptic_depthlab_core.model import build_model, load_model_config
from panoptic_depthlab_core.runtime.tensorrt_backend import tensorrt_available
from panoptic_depthlab_core.weights import save_safetensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "input": {"height": 64, "width": 128}}))
    torch.manual_seed(1)
    model = build_model(load_model_config(config))
    weights = root / "tiny.safetensors"
    save_safetensors(model.state_dict(), weights)
    return config, weights


def test_export_onnx_cli_writes_a_checked_model(tiny, tmp_path: Path, capsys) -> None:
    config, weights = tiny
    out = tmp_path / "tiny.onnx"
    rc = main(["export", "onnx", "--config", str(config), "--weights", str(weights), str(out)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert onnx_input_shape(check_onnx_file(out)) == [1, 3, 64, 128]
    assert report["max_abs_diff_vs_torch"]["sem_logits"] <= 1e-3
    assert report["max_abs_diff_vs_torch"]["depth"] <= 1e-3


def test_export_onnx_cli_dynamic(tiny, tmp_path: Path) -> None:
    config, weights = tiny
    out = tmp_path / "dyn.onnx"
    rc = main(
        [
            "export",
            "onnx",
            "--config",
            str(config),
            "--weights",
            str(weights),
            "--height",
            "96",
            "--width",
            "160",
            "--dynamic",
            "--no-verify",
            str(out),
        ]
    )
    assert rc == 0
    assert onnx_input_shape(check_onnx_file(out)) == ["batch", 3, "height", "width"]


def test_export_cli_errors(tiny, tmp_path: Path, capsys) -> None:
    config, _ = tiny
    assert (
        main(
            [
                "export",
                "onnx",
                "--config",
                str(config),
                "--weights",
                str(tmp_path / "no.safetensors"),
                str(tmp_path / "x.onnx"),
            ]
        )
        == 2
    )
    assert "weights file not found" in capsys.readouterr().err
    assert main(["export", "tensorrt", "--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX model not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage" * 50)
    assert main(["export", "tensorrt", "--onnx", str(corrupt)]) == 2
    assert "corrupt.onnx" in capsys.readouterr().err


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is importable here")
def test_export_tensorrt_without_tensorrt(tiny, tmp_path: Path, capsys) -> None:
    config, weights = tiny
    out = tmp_path / "t.onnx"
    assert main(["export", "onnx", "--config", str(config), "--no-verify", str(out)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                "tensorrt",
                "--onnx",
                str(out),
                "--engine-cache-dir",
                str(tmp_path / "engines"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "TensorRT not importable" in err and 'pip install ".[tensorrt]"' in err
    # the precision is the file's: asking for another one names the file and both precisions
    assert main(["export", "tensorrt", "--onnx", str(out), "--precision", "int8"]) == 2
    assert f"{out} is fp32" in capsys.readouterr().err
