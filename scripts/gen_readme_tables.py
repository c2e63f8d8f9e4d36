#!/usr/bin/env python3
"""Write the generated tables into README.md and docs/: the ROS interface (topics, parameters) from
params.py, and what each precision costs from the precision benchmark's JSON.

``panoptic_depthlab_ros/params.py`` is the one table of node parameters (type, default, range,
description, configure/live); ``benchmarks/results/precision_<machine>.json`` (written by
``benchmarks/precision.py``) is the one record of the precision measurements. The README and docs
show them between markers

    <!-- BEGIN GENERATED: parameters (scripts/gen_readme_tables.py) -->
    ...
    <!-- END GENERATED: parameters -->

and likewise ``topics`` and ``precision``. Run it after changing a parameter or re-running the
precision benchmark; ``--check`` (used by the tests) exits 1
and names the stale blocks instead of writing. Needs no ROS: params.py imports only the stdlib.

    python scripts/gen_readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_depthlab_ros.params import CONFIGURE_TIME_PARAMETERS, parameter_specs  # noqa: E402

TARGETS = (REPO / "README.md", REPO / "docs" / "ros.md", REPO / "docs" / "precision.md")
# The shipped parameter file: its comment lines are generated too (render_yaml).
PARAMETERS_YAML = REPO / "config" / "panoptic_depthlab.yaml"
# The precision table's one machine (docs/performance.md: one machine per table).
PRECISION_RESULTS = REPO / "benchmarks" / "results" / "precision_cpu2-amd-epyc.json"
# The files the precision benchmark measures: what each is, how it is made, where it runs.
PRECISION_FILES = {
    "fp32": ("fp32", "`--precision fp32` (the default)", "everywhere"),
    "fp16": ("fp16 (sensitive parts fp32)", "`--precision fp16`", "GPUs (a CPU runs it, no faster)"),
    "int8": (
        "int8, symmetric activations (default int8)",
        "`--precision int8`",
        "TensorRT (a CPU runs it, slower)",
    ),
    "int8-uint8act": (
        "int8, uint8 activations",
        "`--precision int8 --int8-uint8-activations`",
        "ONNX Runtime on a CPU only",
    ),
}  # the JSON's int8-stem-int8 (a comparison, not a file users make) is in docs/precision.md's text
# Input topics: type, content, and the parameter value that selects each.
INPUT_TOPICS = (
    ("image", "sensor_msgs/Image", "the camera image (docs/ros.md lists the encodings)", "image_transport: raw"),
    ("image/compressed", "sensor_msgs/CompressedImage", "JPEG or PNG", "image_transport: compressed"),
    ("camera_info", "sensor_msgs/CameraInfo", "K (P if rectified); 3D outputs need it", "use_camera_info: true"),
)
# Message type per output (the node's OUTPUT_TYPES, which needs rclpy; a test keeps them equal).
OUTPUT_MESSAGE_TYPES = {
    "panoptic": "sensor_msgs/Image",
    "semantic": "sensor_msgs/Image",
    "depth": "sensor_msgs/Image",
    "visualization": "sensor_msgs/Image",
    "detections": "vision_msgs/Detection2DArray",
    "detections_3d": "vision_msgs/Detection3DArray",
    "markers": "visualization_msgs/MarkerArray",
    "label_info": "vision_msgs/LabelInfo",
    "camera_info": "sensor_msgs/CameraInfo",
    "tracks": "panoptic_depthlab_msgs/TrackedSegmentArray",
}
# "Publish ~/topic (content).", "Publish ~/topic (content): more." or "Publish ~/topic content."
PUBLISH_DESCRIPTION = re.compile(
    r"^Publish (?P<topic>~/\w+) (\((?P<inner>[^)]*)\)(?::\s*(?P<more>.*?))?\.?|(?P<plain>.*?)\.?)$"
)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _range(default: object, constraint: object) -> str:
    if constraint is None:
        return ""
    if isinstance(constraint, tuple) and constraint and isinstance(constraint[0], str):
        return " \\| ".join(constraint)
    low, high, *step = constraint  # type: ignore[misc]
    text = f"[{low}, {high}]"
    return text + (f" step {step[0]}" if step else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def parameters_table() -> str:
    rows = [
        "| name | type | default | range | applies | description |",
        "|---|---|---|---|---|---|",
    ]
    for name, (default, description, constraint) in parameter_specs().items():
        applies = "configure" if name in CONFIGURE_TIME_PARAMETERS else "live"
        rows.append(
            f"| `{name}` | {type(default).__name__} | `{_value(default)}` | {_range(default, constraint)} | "
            f"{applies} | {_cell(description)} |"
        )
    return "\n".join(rows)


def topics_table() -> str:
    specs = parameter_specs()
    rows = ["| topic | direction | type | content | parameter |", "|---|---|---|---|---|"]
    for topic, msg_type, content, parameter in INPUT_TOPICS:
        rows.append(f"| `{topic}` | in | {msg_type} | {content} | `{parameter}` |")
    for name, (_, description, _) in specs.items():
        if not name.startswith("publish_"):
            continue
        match = PUBLISH_DESCRIPTION.match(description)
        if match is None:
            raise SystemExit(f"params.py: {name}'s description must read 'Publish ~/topic (content).'")
        what = match["inner"] if match["inner"] is not None else match["plain"]
        if match["more"]:
            what = f"{what}: {match['more']}"
        msg_type = OUTPUT_MESSAGE_TYPES.get(name.removeprefix("publish_"), "")  # a test keeps them complete
        what = what.removeprefix(msg_type).lstrip(";, ")  # the type has its own column
        rows.append(f"| `{match['topic']}` | out | {msg_type} | {_cell(what)} | `{name}` |")
    rows.append(
        "| `/diagnostics` | out | diagnostic_msgs/DiagnosticArray | state, rates, latencies, frame counters "
        "(docs/ros.md) | `diagnostics_period_s` |"
    )
    return "\n".join(rows)


def precision_table() -> str:
    """What each precision costs on synthetic val and how fast its network runs in ONNX Runtime,
    from the precision benchmark's JSON (one machine, named under the table)."""
    report = json.loads(PRECISION_RESULTS.read_text())
    acc, net, speed = report["accuracy"], report["network_time"], report["speedup_vs_fp32"]
    rows = [
        "| file | made by `export onnx` | runs on | PQ | mIoU | AbsRel | segment distance error (m) "
        "| network ms | vs fp32 | MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (what, made, runs) in PRECISION_FILES.items():
        a = acc[key]  # a JSON without one of the files is a broken run: fail, do not drop the row
        rows.append(
            f"| {what} | {made} | {runs} | {a['pq']:.2f} | {a['miou']:.2f} | {a['abs_rel']:.4f} | "
            f"{a['distance_mean_abs_m']:.2f} | {net[key]['ms_min_round']:.1f} | {speed[key]:.2f}x | "
            f"{report['files'][key]['bytes'] / 1e6:.1f} |"
        )
    machine = report["machine"]
    load = report.get("load_average_before_timing", [float("nan")])[0]
    calib = report["files"]["int8"]["metadata"]
    rows.append("")
    rows.append(
        f"The shipped default model at 256x512, {acc['fp32']['frames']} synthetic val frames through the "
        f"Predictor end to end; network ms: ONNX Runtime {machine['onnxruntime']} alone "
        f"(`CPUExecutionProvider`, {report['threads']} threads, best of {len(net['fp32']['rounds_ms'])} "
        f"interleaved rounds) on {machine['cpu_cores_usable']} cores of an {machine['cpu']} "
        f"(load {load:.1f}). int8 calibration: {calib.get('calibration.method', '?')} over "
        f"{calib.get('calibration.images', '?')} frames of {calib.get('calibration.source', '?')}. "
        f"`{PRECISION_RESULTS.relative_to(REPO)}`, `benchmarks/precision.py`."
    )
    return "\n".join(rows)


TABLES = {"topics": topics_table, "parameters": parameters_table, "precision": precision_table}


def block_pattern(name: str) -> re.Pattern[str]:
    begin = rf"<!-- BEGIN GENERATED: {name} \(scripts/gen_readme_tables.py\) -->\n"
    return re.compile(rf"({begin})(.*?)\n?(<!-- END GENERATED: {name} -->)", re.DOTALL)


def render(text: str) -> str:
    """``text`` with every generated block it has brought up to date."""
    for name, make in TABLES.items():
        table = make()
        text = block_pattern(name).sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(3), text)
    return text


PARAMETER_LINE = re.compile(r"^(?P<indent> +)(?P<name>\w+): ", re.MULTILINE)


def parameter_comment(name: str) -> str:
    """The comment above ``name`` in the shipped parameter YAML: description, type, default, range."""
    default, description, constraint = parameter_specs()[name]
    spec = f"{type(default).__name__}, default {_value(default)}"
    if isinstance(constraint, tuple) and constraint and isinstance(constraint[0], str):
        spec += "; one of " + " | ".join(constraint)
    elif constraint is not None:
        spec += "; range " + _range(default, constraint)
    return f"{description} ({spec})"


def render_yaml(text: str) -> str:
    """The shipped parameter YAML with each parameter's comment line (the line above it) rewritten
    from params.py, so the file users copy never disagrees with the node."""
    specs = parameter_specs()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        match = PARAMETER_LINE.match(line)
        if match and match["name"] in specs and i > 0 and lines[i - 1].lstrip().startswith("# "):
            lines[i - 1] = f"{match['indent']}# {parameter_comment(match['name'])}"
    return "\n".join(lines)


def blocks(text: str) -> dict[str, str]:
    """The generated blocks present in ``text``, by name."""
    return {name: m.group(2) for name in TABLES if (m := block_pattern(name).search(text))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file's tables are stale")
    args = parser.parse_args(argv)
    stale = []
    for path in TARGETS + (PARAMETERS_YAML,):
        text = path.read_text()
        new = render_yaml(text) if path == PARAMETERS_YAML else render(text)
        if new != text:
            stale.append(str(path.relative_to(REPO)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale generated tables in {', '.join(stale)}: run scripts/gen_readme_tables.py", file=sys.stderr)
        return 1
    if not args.check:
        print(f"updated: {', '.join(stale) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
