#!/usr/bin/env python3
"""Write the ROS interface tables (topics, parameters) into README.md and docs/ros.md from params.py.

``panoptic_depthlab_ros/params.py`` is the one table of node parameters (type, default, range,
description, configure/live); the README and docs/ros.md show it between markers

    <!-- BEGIN GENERATED: parameters (scripts/gen_readme_tables.py) -->
    ...
    <!-- END GENERATED: parameters -->

and likewise ``topics``. Run it after changing a parameter; ``--check`` (used by the tests) exits 1
and names the stale blocks instead of writing. Needs no ROS: params.py imports only the stdlib.

    python scripts/gen_readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_depthlab_ros.params import CONFIGURE_TIME_PARAMETERS, parameter_specs  # noqa: E402

TARGETS = (REPO / "README.md", REPO / "docs" / "ros.md")
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


TABLES = {"topics": topics_table, "parameters": parameters_table}


def block_pattern(name: str) -> re.Pattern[str]:
    begin = rf"<!-- BEGIN GENERATED: {name} \(scripts/gen_readme_tables.py\) -->\n"
    return re.compile(rf"({begin})(.*?)\n?(<!-- END GENERATED: {name} -->)", re.DOTALL)


def render(text: str) -> str:
    """``text`` with every generated block it has brought up to date."""
    for name, make in TABLES.items():
        table = make()
        text = block_pattern(name).sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(3), text)
    return text


def blocks(text: str) -> dict[str, str]:
    """The generated blocks present in ``text``, by name."""
    return {name: m.group(2) for name in TABLES if (m := block_pattern(name).search(text))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file's tables are stale")
    args = parser.parse_args(argv)
    stale = []
    for path in TARGETS:
        text = path.read_text()
        new = render(text)
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
