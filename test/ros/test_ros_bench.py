"""``panoptic-depthlab bench`` with ROS 2: the core's stages plus message building, in JSON and the table."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_checks import TIMED_BACKENDS, run_tiny_bench

pytest.importorskip("std_msgs", reason="ROS 2 message packages are not importable in this environment")

from panoptic_depthlab_ros.cli import main  # noqa: E402


def test_ros_bench_includes_message_building(tmp_path: Path, capsys) -> None:
    report, runs, table = run_tiny_bench(main, tmp_path)  # the core's stages, checked there
    assert report["message_building"] == "included"
    assert "messages ms" in table
    for backend in TIMED_BACKENDS:
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
