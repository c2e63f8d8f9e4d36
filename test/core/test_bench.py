"""Core ``bench``: per-stage JSON + markdown on a tiny model; skips carry reasons; no message column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_models import TINY_MODEL

from panoptic_depthlab_core.cli import main
from panoptic_depthlab_core.config import parse_size


def test_bench_writes_json_and_table(tmp_path: Path, capsys) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL}))
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--models",
            str(config),
            "--sizes",
            "64x128",
            "--backends",
            "torch,onnxruntime,tensorrt",
            "--iterations",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--engine-cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    runs = {(r["backend"], r["precision"]): r for r in report["runs"]}
    for backend in ("torch", "onnxruntime"):
        stages = runs[(backend, "fp32")]["stages"]
        for stage in ("decode", "preprocess", "network", "postprocess", "segments", "end_to_end"):
            assert stages[stage]["median_ms"] > 0, (backend, stage)
        assert stages["end_to_end"]["median_ms"] >= stages["network"]["median_ms"]
    trt = runs[("tensorrt", "fp32")]
    assert "stages" in trt or trt["skipped"] in ("TensorRT not importable", "tensorrt needs a CUDA device")
    assert report["speedups"] and report["speedups"][0]["ort_vs_torch"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| tiny | 64x128 | onnxruntime | fp32 |" in table and "Machine:" in table
    assert report["message_building"].startswith("not measured")
    assert "messages ms" not in table  # the core builds no messages: column dropped, not faked


def test_bench_bad_arguments(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="512x1024"):
        parse_size("512-1024")
    assert main(["bench", "--models", "nonexistent", "--out", str(tmp_path / "b.json")]) == 2
    assert "unknown model" in capsys.readouterr().err
