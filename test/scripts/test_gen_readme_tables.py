"""The generated tables in README.md and docs/ equal what their sources give (no drift): the ROS
interface from params.py, the precision costs from the precision benchmark's JSON."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_readme_tables.py"


def _load():
    spec = importlib.util.spec_from_file_location("gen_readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_readme_tables"] = module
    spec.loader.exec_module(module)
    return module


gen = _load()


@pytest.mark.parametrize(
    "path,names",
    [
        (REPO / "README.md", {"topics", "parameters", "precision"}),
        (REPO / "docs" / "ros.md", {"parameters"}),
        (REPO / "docs" / "precision.md", {"precision"}),
    ],
)
def test_generated_tables_are_current(path: Path, names: set[str]):
    text = path.read_text()
    found = gen.blocks(text)
    assert names <= set(found), f"{path.name} lacks the generated blocks {sorted(names - set(found))}"
    for name in names:
        assert found[name] == gen.TABLES[name](), f"{path.name}: {name} table is stale; run {SCRIPT.name}"


def test_check_mode_passes_on_the_repository():
    assert gen.main(["--check"]) == 0


def test_every_parameter_and_output_is_in_the_tables():
    from panoptic_depthlab_ros.params import PARAMETER_NAMES, parameter_specs

    parameters = gen.parameters_table()
    topics = gen.topics_table()
    for name in PARAMETER_NAMES:
        assert f"| `{name}` |" in parameters
        default = parameter_specs()[name][0]
        assert f"`{gen._value(default)}`" in parameters.split(f"| `{name}` |")[1].split("\n")[0]
    for name in (n for n in PARAMETER_NAMES if n.startswith("publish_")):
        assert f"`~/{name.removeprefix('publish_')}`" in topics


def test_the_precision_table_shows_the_benchmark_json():
    import json

    report = json.loads(gen.PRECISION_RESULTS.read_text())
    table = gen.precision_table()
    for key, (what, made, _) in gen.PRECISION_FILES.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {what} |"))
        assert made in row
        assert f"| {report['accuracy'][key]['pq']:.2f} |" in row
        assert f"| {report['speedup_vs_fp32'][key]:.2f}x |" in row
    assert report["machine"]["cpu"] in table and str(gen.PRECISION_RESULTS.relative_to(REPO)) in table
    # the int8 file the table describes is the CLI's default: symmetric, 32 calibration frames
    meta = report["files"]["int8"]["metadata"]
    assert meta["activations"] == "int8 symmetric" and meta["calibration.images"] == "32"


def test_a_stale_table_is_found_and_rewritten():
    text = (REPO / "docs" / "ros.md").read_text()
    stale = text.replace("| `nms_kernel` | int | `-1` |", "| `nms_kernel` | int | `7` |")
    assert stale != text
    assert gen.blocks(stale)["parameters"] != gen.parameters_table()
    assert gen.render(stale) == text


def test_output_types_equal_the_nodes():
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (scripts/build_vision_msgs.sh)")
    from panoptic_depthlab_ros.node import OUTPUT_TYPES

    def name(msg_type) -> str:
        return f"{msg_type.__module__.split('.')[0]}/{msg_type.__name__}"

    assert {k: name(v) for k, v in OUTPUT_TYPES.items()} == {
        k: v for k, v in gen.OUTPUT_MESSAGE_TYPES.items() if k != "label_info"
    }
    assert gen.OUTPUT_MESSAGE_TYPES["label_info"] == "vision_msgs/LabelInfo"


def test_the_parameter_yaml_comments_are_generated():
    from panoptic_depthlab_ros.params import PARAMETER_NAMES

    text = gen.PARAMETERS_YAML.read_text()
    assert gen.render_yaml(text) == text
    lines = text.splitlines()
    for name in PARAMETER_NAMES:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}: "))
        assert lines[index - 1].strip() == f"# {gen.parameter_comment(name)}", name
    stale = text.replace("(bool, default true)\n    tracking: true", "(bool, default false)\n    tracking: true")
    assert stale != text and gen.render_yaml(stale) == text
