"""``panoptic-depthlab demo`` (``make demo`` runs it whole): argument checks, output folder safety, and the
environment every child gets (loopback-only ROS 2 on a domain id of its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rosbags", reason="the demo reads its bags with rosbags")

from panoptic_depthlab_ros.cli import main  # noqa: E402
from panoptic_depthlab_ros.demo import MARKER, prepare_out_dir, ros_environment  # noqa: E402


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "16x16"], "at least 32x32"),
        (["--size", "wide"], "HEIGHTxWIDTH"),
        (["--frames", "0"], "--frames >= 1"),
        (["--rate", "0"], "--rate must be > 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["demo", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("panoptic-depthlab demo: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_no_demo_output_is_never_replaced(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out)]) == 2
    assert "not a previous demo output" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    # a previous demo output (marker file) is replaced
    (out / "notes.txt").unlink()
    (out / MARKER).write_text("")
    (out / "old.png").write_bytes(b"x")
    prepare_out_dir(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


def test_children_stay_on_loopback(monkeypatch) -> None:
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    env = ros_environment(threads=1)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"].isdigit() and 0 <= int(env["ROS_DOMAIN_ID"]) <= 101
    assert "ROS_LOCALHOST_ONLY" not in env
    assert env["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="--threads"):
        ros_environment(threads=0)
