"""The static TensorRT API check (scripts/typecheck_tensorrt.py: mypy against tensorrt-stubs 10.13) that
`make test` runs: the project's TensorRT code passes it, and a wrong attribute name fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "typecheck_tensorrt.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_project_tensorrt_code_passes_the_api_check() -> None:
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout and "3 source files" in result.stdout


def test_api_check_fails_on_a_wrong_attribute_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad_builder.py"
    bad.write_text(
        "import tensorrt as trt\n\n\n"
        "def configure(config: trt.IBuilderConfig) -> None:\n"
        "    config.set_flag(trt.BuilderFlag.FP17)\n"
        "    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)\n"
    )
    result = _run(str(bad))
    assert result.returncode != 0
    assert 'bad_builder.py:5: error: "type[BuilderFlag]" has no attribute "FP17"' in result.stdout, result.stdout
    assert "bad_builder.py:6" not in result.stdout  # the correct call beside it passes: the API is really known
