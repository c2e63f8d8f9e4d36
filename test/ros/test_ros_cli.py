"""The installed ``panoptic-depthlab`` (``panoptic_depthlab_ros.cli``) on a machine without ROS 2.

The core's subcommands still run; a ROS subcommand exits 2 with one line naming the missing module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ros_blocker import blocking_env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "panoptic_depthlab_ros.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_without_ros_core_subcommands_run_and_ros_ones_name_what_is_missing(tmp_path: Path) -> None:
    env, _ = blocking_env(tmp_path, also_block=())  # our ROS package is there, ROS 2 itself is not
    listing = _cli(env, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "synth-bag" in listing.stdout and "infer" in listing.stdout

    synth = _cli(env, "synth", "--out", str(tmp_path / "d"), "--num", "1", "--size", "32x64", "--quiet")
    assert synth.returncode == 0, synth.stderr
    assert list((tmp_path / "d" / "leftImg8bit" / "train").glob("*/*.png"))

    for argv, missing in ((["bench", "--out", str(tmp_path / "b.json")], "std_msgs"),
                          (["play", str(tmp_path / "no_bag")], "rclpy")):  # fmt: skip
        proc = _cli(env, *argv)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"panoptic-depthlab {argv[0]}: error: needs the Python module '{missing}'")
        assert "ROS 2" in lines[0]


def test_core_cli_alone_lists_no_ros_subcommand() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "panoptic_depthlab_core.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "infer" in proc.stdout and "bench" in proc.stdout
    for ros_only in ("synth-bag", "bag-eval", "play", "record", "demo"):
        assert ros_only not in proc.stdout
