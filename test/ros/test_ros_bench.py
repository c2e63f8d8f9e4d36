"""``panoptic-depthlab bench`` with ROS 2: the core's stages plus message building, in JSON and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_models import TINY_MODEL

pytest.importorskip("std_msgs", reason="ROS 2 message packages are not importable in this environment")

from panoptic_depthlab_ros.cli import main  # noqa: E402


def test_ros_bench_includes_message_building(tmp_path: Path, capsys) -> None:
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
    assert report["message_building"] == "included"
    assert "messages ms" in table
    for backend in ("torch", "onnxruntime"):
        stages = runs[(backend, "fp32")]["stages"]
        assert stages["messages"]["median_ms"] > 0
        assert stages["end_to_end"]["median_ms"] >= stages["messages"]["median_ms"]  # per sample, so per median


def test_ros_cli_lists_core_and_ros_subcommands(capsys) -> None:
    from panoptic_depthlab_core.cli import SUBCOMMANDS as CORE
    from panoptic_depthlab_ros.cli import SUBCOMMANDS

    assert set(CORE) < set(SUBCOMMANDS)
    assert {"synth-bag", "bag-eval", "play", "record", "demo", "bench"} <= set(SUBCOMMANDS)
    assert SUBCOMMANDS["bench"][0] == "panoptic_depthlab_ros.bench"
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in SUBCOMMANDS)
