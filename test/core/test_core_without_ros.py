"""The core runs where ROS 2 is absent: ``infer``, ``eval``, ``synth``, ``train``, ``export`` with ROS blocked.

import-linter (``make test``) proves no ``import`` statement of the core names ROS; this proves what it
cannot see: imports by name at run time (importlib, ``python -m`` children, plugins). Every Python
process of the run (spawned children too) fails and logs any import of rclpy, a message or rosidl
package, or ``panoptic_depthlab_ros`` (``ros_blocker``): an import swallowed by an ``except
ImportError`` still fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from ros_blocker import blocking_env
from tiny_models import TINY_MODEL

DRIVER = textwrap.dedent(
    """
    import json
    import sys

    from panoptic_depthlab_core.cli import main

    for argv in json.loads(sys.argv[1]):
        rc = main(argv)
        print(f"RC {rc} {argv[0]}", flush=True)
        if rc != 0:
            sys.exit(rc)
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in ("rclpy", "panoptic_depthlab_ros"))
    print("LEAKED", leaked)
    sys.exit(1 if leaked else 0)
    """
)


def _commands(tmp: Path) -> list[list[str]]:
    data, run = tmp / "data", tmp / "run"
    model_yaml = tmp / "model.yaml"
    model_yaml.write_text(yaml.safe_dump({"model": TINY_MODEL, "input": {"height": 64, "width": 128}}))
    train_yaml = tmp / "train.yaml"
    train_yaml.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(run),
                "seed": 0,
                "cpu_threads": 1,
                "model": dict(TINY_MODEL),
                "data": {"root": str(data), "crop_size": [64, 128], "num_workers": 0, "augment": False},
                "solver": {"max_iter": 1, "ims_per_batch": 2, "warmup_iters": 0},
                "checkpoint": {"period": 1000},
                "logging": {"log_period": 1, "tensorboard": False, "progress_bar": False},
            }
        )
    )
    weights = str(run / "model_final.safetensors")
    return [
        ["synth", "--out", str(data), "--num", "2", "--size", "64x128", "--split", "train", "--quiet"],
        ["synth", "--out", str(data), "--num", "2", "--size", "64x128", "--split", "val", "--seed", "1", "--quiet"],
        ["train", "--config", str(train_yaml)],
        ["eval", "--config", str(model_yaml), "--weights", weights, "--data", str(data), "--split", "val",
         "--out", str(tmp / "eval"), "--quiet"],  # fmt: skip
        ["infer", str(data / "leftImg8bit" / "val"), "--out", str(tmp / "infer"), "--config", str(model_yaml),
         "--weights", weights],  # fmt: skip
        ["export", "onnx", "--config", str(model_yaml), "--weights", weights, str(tmp / "tiny.onnx")],
    ]


@pytest.mark.slow
def test_core_cli_runs_with_ros_blocked(tmp_path: Path) -> None:
    env, log = blocking_env(tmp_path)
    env.update(OMP_NUM_THREADS="1", PANOPTIC_DEPTHLAB_CACHE=str(tmp_path / "cache"))
    # The finder itself works: a ROS import fails in such a process.
    probe = subprocess.run(
        [sys.executable, "-c", "import panoptic_depthlab_ros.cli"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr
    log.unlink()

    commands = _commands(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    attempts = log.read_text() if log.exists() else ""
    assert not attempts, f"the core tried to import ROS:\n{attempts}\n{output[-3000:]}"
    assert proc.returncode == 0, output[-3000:]
    for argv in commands:
        assert f"RC 0 {argv[0]}" in proc.stdout
    assert (tmp_path / "run" / "model_final.safetensors").is_file()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["frames"] == 2
    assert len(list((tmp_path / "infer").glob("*_segments.json"))) == 2
    assert (tmp_path / "tiny.onnx").stat().st_size > 0
    assert "LEAKED []" in proc.stdout
