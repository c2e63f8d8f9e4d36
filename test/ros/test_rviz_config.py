"""config/panoptic_depthlab.rviz loads in rviz2 (Humble and later) and shows what the node publishes.

Every ``Class:`` must be a plugin class that rviz_common, rviz_default_plugins or vision_msgs_rviz_plugins
declares, of the kind its place in the file needs (panel, display, tool, view controller), in every rviz2
branch the node supports (data/rviz_plugin_classes.yaml, extracted from those packages' sources). Every
display's topic must be one of the node's outputs (``messages.OUTPUT_TOPICS`` under the node's default
name) carrying a message type that display subscribes to; the running node is checked the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RVIZ_CONFIG = REPO / "config" / "panoptic_depthlab.rviz"
PLUGIN_CLASSES = Path(__file__).resolve().parent / "data" / "rviz_plugin_classes.yaml"
DISTROS = ("humble", "jazzy", "rolling")

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from panoptic_depthlab_ros import messages  # noqa: E402
from panoptic_depthlab_ros.node import NODE_NAME, OUTPUT_TYPES  # noqa: E402


def _declared() -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["name"], c["base"]): c for c in yaml.safe_load(PLUGIN_CLASSES.read_text())["classes"]}


def _used_classes(config: dict) -> list[tuple[str, str, dict]]:
    """(class name, base class it must have, its YAML section) for every plugin the config names."""
    manager = config["Visualization Manager"]
    used = [(p["Class"], "rviz_common::Panel", p) for p in config.get("Panels", [])]

    def displays(items: list[dict]) -> None:
        for d in items:
            used.append((d["Class"], "rviz_common::Display", d))
            displays(d.get("Displays", []))  # a Group's children

    displays(manager.get("Displays", []))
    used += [(t["Class"], "rviz_common::Tool", t) for t in manager.get("Tools", [])]
    views = manager.get("Views", {})
    for view in [views.get("Current"), *views.get("Saved", [])]:
        if view:
            used.append((view["Class"], "rviz_common::ViewController", view))
    return used


def _type_name(msg_class: type) -> str:
    return f"{msg_class.__module__.partition('.')[0]}/msg/{msg_class.__name__}"


def _node_outputs(node_name: str) -> dict[str, str]:
    """Absolute topic of each output under ``node_name`` (no namespace) -> its message type."""
    return {
        f"/{node_name}/{messages.OUTPUT_TOPICS[name].removeprefix('~/')}": _type_name(msg_class)
        for name, msg_class in OUTPUT_TYPES.items()
    }


def _display_topics(config: dict) -> list[tuple[str, str, dict]]:
    return [(cls, section["Topic"]["Value"], section["Topic"]) for cls, base, section in _used_classes(config)
            if base == "rviz_common::Display" and "Topic" in section]  # fmt: skip


def test_plugin_list_is_complete_enough_to_judge() -> None:
    declared = _declared()
    names = {name for name, _ in declared}
    # the source data holds all three packages and all three rviz2 branches
    assert {"rviz_common/Displays", "rviz_default_plugins/Image", "vision_msgs_rviz_plugins/Detection3DArray"} <= names
    assert {d for c in declared.values() for d in c["distros"]} == set(DISTROS)
    assert "rviz_plugins/Detection3DArray" not in names  # the old, wrong name


def test_every_class_is_declared_by_rviz_or_vision_msgs_rviz_plugins() -> None:
    config = yaml.safe_load(RVIZ_CONFIG.read_text())
    declared = _declared()
    used = _used_classes(config)
    assert len(used) >= 8
    for name, base, _ in used:
        assert (name, base) in declared, f"{name!r} is not a {base} that rviz2 or vision_msgs_rviz_plugins declares"
        missing = set(DISTROS) - set(declared[(name, base)]["distros"])
        assert not missing, f"{name} does not exist in rviz2 {sorted(missing)}"


def test_every_topic_is_a_node_output_of_a_type_its_display_reads() -> None:
    config = yaml.safe_load(RVIZ_CONFIG.read_text())
    declared = _declared()
    outputs = _node_outputs(NODE_NAME)
    topics = _display_topics(config)
    assert {t for _, t, _ in topics} >= {f"/{NODE_NAME}/visualization", f"/{NODE_NAME}/detections_3d"}
    for cls, topic, _ in topics:
        assert topic in outputs, f"{cls} shows {topic}, which the node does not publish ({sorted(outputs)})"
        accepted = declared[(cls, "rviz_common::Display")]["message_types"]
        assert outputs[topic] in accepted, f"{cls} reads {accepted}, the node publishes {outputs[topic]} on {topic}"
    # the launch file starts the node under the name the config's topics assume
    assert f'name="{NODE_NAME}"' in (REPO / "launch" / "panoptic_depthlab.launch.py").read_text()


def test_the_running_node_publishes_every_topic_with_a_compatible_qos(pdl_client, pdl_node) -> None:
    """The shared node (another name and namespace) has a publisher for every display, reliable where asked."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    config = yaml.safe_load(RVIZ_CONFIG.read_text())
    published = dict(pdl_client.node.get_publisher_names_and_types_by_node(pdl_node.name, pdl_node.namespace))
    outputs = _node_outputs(NODE_NAME)
    for _, topic, qos in _display_topics(config):
        live_topic = topic.replace(f"/{NODE_NAME}/", f"{pdl_node.fqn}/", 1)
        assert live_topic in published, f"{live_topic} not among the node's publishers {sorted(published)}"
        assert outputs[topic] in published[live_topic]
        (info,) = [i for i in pdl_client.node.get_publishers_info_by_topic(live_topic) if i.node_name == pdl_node.name]
        if qos.get("Reliability Policy") == "Reliable":
            assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE, live_topic
        if qos.get("Durability Policy") == "Transient Local":
            assert info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL, live_topic
