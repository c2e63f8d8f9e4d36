"""Core ``bench``: per-stage JSON + markdown on a tiny model; skips carry reasons; no message column."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_checks import run_tiny_bench

from panoptic_depthlab_core.cli import main
from panoptic_depthlab_core.config import parse_size


def test_bench_writes_json_and_table(tmp_path: Path, capsys) -> None:
    report, _, table = run_tiny_bench(main, tmp_path)
    assert report["message_building"].startswith("not measured")
    assert "messages ms" not in table  # the core builds no messages: column dropped, not faked


def test_bench_bad_arguments(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="512x1024"):
        parse_size("512-1024")
    assert main(["bench", "--models", "nonexistent", "--out", str(tmp_path / "b.json")]) == 2
    assert "unknown model" in capsys.readouterr().err
