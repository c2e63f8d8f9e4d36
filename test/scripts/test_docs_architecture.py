"""docs/architecture.md stays true: the modules it names exist, its config map matches the code."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "architecture.md").read_text()
ROOTS = {
    "PipelineConfig": "panoptic_depthlab_core.predictor",
    "TrainConfig": "panoptic_depthlab_core.train.config",
    "TrackerConfig": "panoptic_depthlab_core.tracking.config",
}


def _map_rows() -> list[tuple[str, str, str]]:
    """(section, class, file) of each row of the YAML map table."""
    rows = []
    for line in DOC.split("## Configuration")[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].startswith("`") and cells[3].startswith("`"):
            section = re.match(r"`([^`]+)`", cells[1])
            rows.append((section.group(1) if section else "", cells[2].strip("`"), cells[3].strip("`")))
    return rows


def _defined_classes(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)}


def test_every_module_path_named_exists():
    paths = set(re.findall(r"`((?:panoptic_depthlab_core|panoptic_depthlab_ros)/[\w/]*(?:\.py|/))`", DOC))
    assert len(paths) > 20
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_each_config_class_is_defined_where_the_map_says():
    rows = _map_rows()
    assert len(rows) >= 15
    for _, cls, file in rows:
        assert cls in _defined_classes(REPO / file), f"{cls} is not defined in {file}"


def _nested_configs(root: type) -> dict[str, type]:
    """Field name -> dataclass type, for the dataclass fields of ``root``."""
    hints = typing.get_type_hints(root)
    return {f.name: hints[f.name] for f in dataclasses.fields(root) if dataclasses.is_dataclass(hints[f.name])}


def test_every_nested_config_section_has_a_row():
    rows = _map_rows()
    documented = {(section, cls) for section, cls, _ in rows}
    for root_name, module in ROOTS.items():
        root = getattr(importlib.import_module(module), root_name)
        assert any(cls == root_name for _, cls, _ in rows), f"{root_name} has no row"
        todo = [root]
        while todo:
            cls = todo.pop()
            for name, sub in _nested_configs(cls).items():
                assert (name, sub.__name__) in documented, (
                    f"{cls.__name__}.{name} ({sub.__name__}) is not in docs/architecture.md's YAML map"
                )
                todo.append(sub)


def test_every_file_name_named_exists_in_a_package():
    names = set(re.findall(r"`([\w]+\.py)`", DOC))
    files = {p.name for pkg in ("panoptic_depthlab_core", "panoptic_depthlab_ros") for p in (REPO / pkg).rglob("*.py")}
    assert len(names) > 10
    assert not sorted(names - files), f"docs/architecture.md names files that do not exist: {sorted(names - files)}"
