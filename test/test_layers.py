"""The import-linter layer contracts (pyproject.toml ``[tool.importlinter]``) hold, and can fail.

``make test`` runs ``lint-imports`` itself; this also shows that the contracts see an import inside a
function (most of the optional imports are there), by breaking each contract in a copy of the packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_layer_contracts_are_kept() -> None:
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("panoptic_depthlab_core/viz.py", "from sensor_msgs.msg import Image", "The core never imports ROS"),
        ("panoptic_depthlab_core/viz.py", "import rclpy.node", "The core never imports ROS"),
        ("panoptic_depthlab_core/cli.py", "from panoptic_depthlab_ros import messages", "The core never imports ROS"),
        ("panoptic_depthlab_core/model/layers.py", "from ..train import losses", "The model is independent"),
        ("panoptic_depthlab_ros/messages.py", "from panoptic_depthlab_core.train import cli", "does not train"),
    ],
)
def test_a_function_level_import_breaks_its_contract(
    tmp_path: Path, module: str, statement: str, contract: str
) -> None:
    for name in ("panoptic_depthlab_core", "panoptic_depthlab_ros"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as f:
        f.write(f"\n\ndef _late_import():\n    {statement}  # noqa\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    broken = proc.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, proc.stdout
