"""The ``bench`` run the core and ROS CLI tests share: one tiny model, one size, every backend.

Both CLIs expose the same ``bench`` (the ROS one adds message building), so the run and the
checks on the core's stages live here once; each test then checks only what its side adds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from tiny_models import TINY_MODEL

CORE_STAGES = ("decode", "preprocess", "network", "postprocess", "segments", "end_to_end")
TIMED_BACKENDS = ("torch", "onnxruntime")  # TensorRT skips here (no CUDA) with a reason


def run_tiny_bench(main: Callable[[list[str]], int], tmp_path: Path) -> tuple[dict, dict, str]:
    """Run ``bench`` through ``main`` on the tiny model, check the core's stages and return
    (JSON report, runs keyed by (backend, precision), markdown table)."""
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
    for backend in TIMED_BACKENDS:
        stages = runs[(backend, "fp32")]["stages"]
        for stage in CORE_STAGES:
            assert stages[stage]["median_ms"] > 0, (backend, stage)
        assert stages["end_to_end"]["median_ms"] >= stages["network"]["median_ms"]
    trt = runs[("tensorrt", "fp32")]
    assert "stages" in trt or trt["skipped"] in ("TensorRT not importable", "tensorrt needs a CUDA device")
    assert report["speedups"] and report["speedups"][0]["ort_vs_torch"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| tiny | 64x128 | onnxruntime | fp32 |" in table and "Machine:" in table
    return report, runs, table
