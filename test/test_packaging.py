"""The package installs as a ROS user installs it, and declares what it needs.

``colcon build`` (colcon-core, colcon-ros, colcon-python-setup-py from PyPI: requirements/colcon.txt)
of a copy of this checkout, then the installed layout a ROS user relies on: package.xml and the ament
index marker (``ros2 pkg``), launch and config files (``ros2 launch``), the node executable under
``lib/panoptic_depthlab/`` (``ros2 run``, launch_ros), ``panoptic-depthlab`` on PATH after sourcing
``install/setup.bash``, and a build without a line on stderr.

Run dependencies: every third-party module the two packages import is declared in package.xml (as the
rosdep key below) or listed as a pip requirement in docs/install.md; ``synth`` runs on what
``pip install .`` brings.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "panoptic_depthlab"
COLCON = Path(sys.executable).with_name("colcon")
OUR_PACKAGES = ("panoptic_depthlab_core", "panoptic_depthlab_ros")

# pip distribution -> rosdep key, as ros/rosdistro rosdep/python.yaml defines them
# (commit 8468e88ccd523427f9131e39d2af0938f1c298b2). Distributions without a key are pip requirements.
ROSDEP_KEY_OF_DISTRIBUTION = {
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "opencv-python": "python3-opencv",
    "pyyaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "pillow": "python3-pil",
    "scipy": "python3-scipy",
    "torch": "python3-torch",
    "torchvision": "python3-torchvision",
    "rosbags": "python3-rosbags-pip",
}

pytestmark = pytest.mark.skipif(not COLCON.exists(), reason="colcon is not installed (requirements/colcon.txt)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _copy_checkout(dest: Path) -> Path:
    """The files a clone has (tracked and new, not ignored), as a workspace's src/ would hold them."""
    src = dest / "src" / PACKAGE
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    return src


def _build_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine (else setuptools warns it skips .pyc)
    env["PATH"] = os.pathsep.join([str(COLCON.parent), env.get("PATH", "")])
    return env


def _colcon_build(workspace: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(COLCON), "--log-base", "log", "build", "--base-paths", "src", *options],
        cwd=workspace,
        env=_build_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    _copy_checkout(ws)
    return ws


@pytest.fixture(scope="module")
def built(workspace: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A plain ``colcon build`` (isolated install: install/<package>/)."""
    return workspace, _colcon_build(workspace)


def _sourced(install: Path, script: str) -> subprocess.CompletedProcess:
    env = _build_env()
    env["PATH"] = "/usr/bin:/bin"  # nothing of ours on PATH but what setup.bash adds
    return subprocess.run(
        ["bash", "-c", f"source {install / 'setup.bash'} && {script}"],
        cwd=install.parent,  # not this checkout: python's sys.path[0] would find our sources there
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert proc.stderr == "", f"colcon build wrote to stderr:\n{proc.stderr}"
    assert "--- stderr" not in proc.stdout, proc.stdout[-3000:]
    assert "warning" not in proc.stdout.lower(), [ln for ln in proc.stdout.splitlines() if "warning" in ln.lower()]


def test_colcon_build_is_clean_and_installs_what_ros_expects(built) -> None:
    workspace, proc = built
    _assert_clean(proc)
    assert f"Finished <<< {PACKAGE}" in proc.stdout
    prefix = workspace / "install" / PACKAGE
    share = prefix / "share" / PACKAGE
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    installed_xml = ET.parse(share / "package.xml").getroot()
    assert installed_xml.findtext("name") == PACKAGE
    assert (share / "package.xml").read_bytes() == (REPO / "package.xml").read_bytes()
    for rel in ("launch/panoptic_depthlab.launch.py", "config/panoptic_depthlab.yaml", "config/panoptic_depthlab.rviz",
                "config/fastdds_shm.xml", "config/models/panoptic_depthlab_small.yaml"):  # fmt: skip
        assert (share / rel).is_file(), rel
        assert (share / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    node = prefix / "lib" / PACKAGE / "panoptic_depthlab_node"
    assert node.is_file() and os.access(node, os.X_OK)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    (entry_points,) = site.glob(f"{PACKAGE}-*.egg-info/entry_points.txt")
    assert "panoptic_depthlab_node = panoptic_depthlab_ros.node:main" in entry_points.read_text()
    for package in OUR_PACKAGES:
        assert (site / package / "__init__.py").is_file()
    assert list((site / "panoptic_depthlab_core" / "default_model").glob("*.safetensors"))


def test_cli_is_on_path_after_sourcing_setup_bash(built) -> None:
    workspace, proc = built
    assert proc.returncode == 0, proc.stderr
    install = workspace / "install"
    check = _sourced(
        install,
        "command -v panoptic-depthlab && panoptic-depthlab --help && "
        f"panoptic-depthlab synth --out {workspace / 'synth'} --num 1 --size 32x64 --quiet && "
        f"{sys.executable} -c 'import panoptic_depthlab_ros.cli as m; print(m.__file__)'",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert lines[0] == str(install / PACKAGE / "bin" / "panoptic-depthlab")
    assert "synth-bag" in check.stdout and "infer" in check.stdout
    assert lines[-1].startswith(str(install / PACKAGE / "lib"))  # the installed copy, not this checkout
    assert list((workspace / "synth" / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))


def test_symlink_and_merge_install_give_the_same_commands(workspace: Path) -> None:
    proc = _colcon_build(
        workspace, "--symlink-install", "--merge-install", "--build-base", "build_merged", "--install-base",
        "install_merged",
    )  # fmt: skip
    _assert_clean(proc)
    install = workspace / "install_merged"
    assert (install / "lib" / PACKAGE / "panoptic_depthlab_node").is_file()
    assert (install / "share" / PACKAGE / "launch" / "panoptic_depthlab.launch.py").exists()
    check = _sourced(install, "command -v panoptic-depthlab && panoptic-depthlab --help")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[0] == str(install / "bin" / "panoptic-depthlab")


# ------------------------------------------------------------------------------- run dependencies


def _imported_top_level_modules() -> dict[str, set[str]]:
    """Third-party top-level module -> files importing it, over every import statement of our packages."""
    found: dict[str, set[str]] = {}
    for package in OUR_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in OUR_PACKAGES and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _pip_only_in_docs() -> set[str]:
    text = (REPO / "docs" / "install.md").read_text()
    table = text.split("<!-- pip-only", 1)[1].split("\n\n", 1)[0]
    first_cells = re.findall(r"^\|([^|]*)\|", table, flags=re.M)
    return {_normalize(name) for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}


def _exec_depends() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for e in root.iter("exec_depend")}


def test_every_imported_package_is_declared_in_package_xml_or_docs() -> None:
    exec_depends = _exec_depends()
    pip_only = _pip_only_in_docs()
    distributions = metadata.packages_distributions()
    undeclared = {}
    for module, files in _imported_top_level_modules().items():
        if module in exec_depends:  # a ROS package: its Python module has the package's name
            continue
        dists = {_normalize(d) for d in distributions.get(module, [module])}
        declared = any(ROSDEP_KEY_OF_DISTRIBUTION.get(d) in exec_depends or d in pip_only for d in dists)
        if not declared:
            undeclared[module] = (sorted(dists), sorted(files)[:3])
    assert not undeclared, f"neither in package.xml nor in docs/install.md's pip table: {undeclared}"
    # package.xml's python keys are real rosdep keys, and a pip-only package has no key
    python_keys = {d for d in exec_depends if d.startswith("python3-")}
    assert python_keys <= set(ROSDEP_KEY_OF_DISTRIBUTION.values()) | {"python3-pytest"}
    assert not pip_only & set(ROSDEP_KEY_OF_DISTRIBUTION)


def test_pip_only_requirements_file_matches_the_docs() -> None:
    listed = {
        _normalize(re.split(r"[<>=\[ ;#]", line, maxsplit=1)[0])
        for line in (REPO / "requirements" / "pip-only.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert listed == _pip_only_in_docs() - {"ray", "tensorrt"}


def _requirement_closure(names: set[str]) -> set[str]:
    """The installed distributions ``names`` pull in (with their own requirements, no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = _normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[<>=!~\[ ;(]", req, maxsplit=1)[0])
    return seen


SYNTH_PROBE = """
import json, sys
at_start = set(sys.modules)  # the interpreter's and its .pth files' imports, whatever the command
from panoptic_depthlab_core.cli import main
rc = main(["synth", "--out", sys.argv[1], "--num", "1", "--size", "32x64", "--quiet"])
print(json.dumps({"rc": rc, "modules": sorted({m.partition(".")[0] for m in set(sys.modules) - at_start})}))
"""


def test_synth_needs_only_what_pip_install_brings(built, tmp_path: Path) -> None:
    """``pip install .`` = install_requires: every distribution synth imports is in their closure."""
    workspace, proc = built
    assert proc.returncode == 0, proc.stderr
    egg_requires = workspace / "build" / PACKAGE / f"{PACKAGE}.egg-info" / "requires.txt"
    install_requires = {
        _normalize(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0])
        for line in egg_requires.read_text().split("\n[", 1)[0].splitlines()  # before the first [extra]
        if line.strip()
    }
    assert "cityscapesscripts" in install_requires
    run = subprocess.run(
        [sys.executable, "-c", SYNTH_PROBE, str(tmp_path / "synth")], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["rc"] == 0
    distributions = metadata.packages_distributions()
    closure = _requirement_closure(install_requires)
    needed = {
        _normalize(d)
        for module in result["modules"]
        if module not in sys.stdlib_module_names and module not in OUR_PACKAGES
        for d in distributions.get(module, [])
    }
    # setuptools' vendored modules and typing backports that the interpreter provides anyway
    assert needed <= closure | {"setuptools", "typing-extensions", "pip"}, sorted(needed - closure)
