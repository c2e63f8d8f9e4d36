"""The launch file: arguments name real parameters (always checked); the description builds where
launch_ros is importable (skipped with that reason otherwise: there is no launch package here)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from panoptic_depthlab_ros.params import PARAMETER_NAMES

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "panoptic_depthlab.launch.py"
REQUIRED_ARGUMENTS = {
    "namespace",
    "image",
    "camera_info",
    "params_file",
    "weights",
    "backend",
    "device",
    "use_rviz",
    "autostart",
}


def _module_constant(name: str) -> tuple[str, ...]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{LAUNCH_FILE.name} defines no {name}")


def _declared_argument_names() -> set[str]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            names.add(ast.literal_eval(node.args[0]))
    return names


def test_launch_arguments_are_parameters_or_known_names() -> None:
    parameter_args = set(_module_constant("PARAMETER_ARGUMENTS"))
    other_args = set(_module_constant("OTHER_ARGUMENTS"))
    assert parameter_args <= set(PARAMETER_NAMES), parameter_args - set(PARAMETER_NAMES)
    declared = _declared_argument_names()
    assert declared == parameter_args | other_args
    assert REQUIRED_ARGUMENTS <= declared


def test_launch_description_builds() -> None:
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not importable here (no ROS 2 launch packages on this machine)")
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("panoptic_depthlab_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    names = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert REQUIRED_ARGUMENTS <= names
