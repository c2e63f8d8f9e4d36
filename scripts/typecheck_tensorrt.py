"""Static check of the TensorRT code against the real TensorRT 10.13 Python API, without TensorRT.

``tensorrt-stubs`` (requirements/dev.txt) holds that API as .pyi files, but as published mypy cannot use
them: they sit in a plain ``tensorrt/`` folder without a ``py.typed`` marker (so mypy ignores them),
and a few generated signatures are not valid Python (parameters named ``in``, a parameter without a
default after ones with defaults). This script copies them into ``build/typing`` with exactly those
lines repaired, checks that every copied file parses, and runs mypy (configured in pyproject.toml
``[tool.mypy]``) with that folder on its path. Extra arguments are passed to mypy (the tests use this
to show that a wrong attribute name fails the check).

    python scripts/typecheck_tensorrt.py            # the project's TensorRT modules (make test)
    python scripts/typecheck_tensorrt.py FILE.py    # FILE.py against the same API
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUBS_DISTRIBUTION = "tensorrt-stubs"
PACKAGES = ("tensorrt", "tensorrt_bindings")
_KEYWORD_PARAMETER = re.compile(r"([(,]\s*)in(\s*:)")  # ``def f(self, in: list[...], out: ...)``
_MISSING_DEFAULT = re.compile(r"(power: Weights = None, channel_axis: int)\)")  # add_scale_nd


def repair(text: str) -> str:
    text = _KEYWORD_PARAMETER.sub(r"\1in_\2", text)
    return _MISSING_DEFAULT.sub(r"\1 = ...)", text)


def prepare_stubs(out_dir: Path) -> Path:
    """Copy the installed TensorRT stubs into ``out_dir`` (repaired, with py.typed); returns ``out_dir``."""
    try:
        dist = importlib.metadata.distribution(STUBS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{STUBS_DISTRIBUTION} is not installed: pip install -r requirements/dev.txt")
    files = [f for f in dist.files or [] if f.parts and f.parts[0] in PACKAGES and f.suffix == ".pyi"]
    if not files:
        sys.exit(f"{STUBS_DISTRIBUTION} {dist.version} holds no tensorrt .pyi files")
    for rel in files:
        src = Path(dist.locate_file(rel))
        text = repair(src.read_text())
        ast.parse(text, filename=str(rel))  # a stub mypy cannot parse would stop the whole check
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file() or dst.read_text() != text:
            dst.write_text(text)
    for package in PACKAGES:
        (out_dir / package / "py.typed").write_text("")
    return out_dir


def main(argv: list[str]) -> int:
    stubs = prepare_stubs(REPO / "build" / "typing")
    env = dict(os.environ, MYPYPATH=str(stubs))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), *argv]
    return subprocess.call(cmd, cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
