"""diagnostics: counters that add up, a CameraInfo counted once, middleware gaps from sequence numbers."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("diagnostic_msgs.msg", reason="diagnostic_msgs (ROS 2) is not importable here")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from panoptic_depthlab_ros.diagnostics import (  # noqa: E402
    FRAME_END_KEYS,
    CameraInfoInput,
    FrameStats,
    MiddlewareGaps,
    counter_values,
    node_status,
)


def test_every_frame_ends_in_one_counter():
    stats = FrameStats()
    stats.frame_received(replaced_waiting=False)  # 1: processed
    stats.frame_processed({"total": 5.0})
    stats.frame_received(replaced_waiting=False)  # 2: replaced by 3 while waiting
    stats.frame_received(replaced_waiting=True)  # 3: rejected
    stats.frame_rejected("step_too_small")
    stats.frame_received(replaced_waiting=False)  # 4: no subscribers
    stats.frame_ended("skipped_no_subscribers")
    stats.frame_received(replaced_waiting=False)  # 5: deactivated meanwhile
    stats.frame_ended("discarded_inactive")
    stats.frame_received(replaced_waiting=False)  # 6: still waiting
    stats.camera_info_seen()
    stats.camera_info_problem("invalid_camera_info")
    values = counter_values(stats.snapshot())
    assert values["frames_received"] == "6"
    assert [values[k] for k in FRAME_END_KEYS] == ["1", "1", "1", "1", "1", "1"]
    assert sum(int(values[k]) for k in FRAME_END_KEYS) == 6
    # frames and CameraInfo messages are counted apart; each reason has its key
    assert values["frames_rejected"] == "1" and values["camera_info_rejected"] == "1"
    assert values["rejected_step_too_small"] == "1" and values["rejected_invalid_camera_info"] == "1"
    assert values["latency_total_p50_ms"] == "5.00"


def test_status_level_names_the_rejections():
    stats = FrameStats()
    snap = stats.snapshot()
    assert node_status("n", "cpu", "active", snap, {}).level == DiagnosticStatus.OK
    assert node_status("n", "cpu", "inactive", snap, {}).message == "not processing (inactive)"
    stats.camera_info_problem("invalid_camera_info")
    status = node_status("n", "cpu", "active", stats.snapshot(), {"a": "b"})
    assert status.level == DiagnosticStatus.WARN and "1 input(s) rejected" in status.message
    assert [(kv.key, kv.value) for kv in status.values] == [("a", "b")]


def test_camera_info_count_claimed_once_across_threads():
    entry = CameraInfoInput(msg=object())
    claims = []
    threads = [threading.Thread(target=lambda: claims.append(entry.claim_count())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claims.count(True) == 1
    assert CameraInfoInput(msg=None).claim_count()  # a new CameraInfo starts uncounted


def test_middleware_gaps_one_publisher():
    gaps = MiddlewareGaps()
    for seq in (1, 2, 5, 6, 10):
        gaps.observe(seq, publishers=1)
    assert gaps.values()["frames_replaced_in_middleware"] == "5"  # 3, 4, 7, 8, 9
    gaps.observe(1, publishers=1)  # the publisher restarted: a new sequence, nothing counted
    gaps.observe(3, publishers=1)
    assert gaps.values()["frames_replaced_in_middleware"] == "6"
    gaps.reset()  # new subscription
    gaps.observe(50, publishers=1)
    assert gaps.values()["frames_replaced_in_middleware"] == "6"


def test_middleware_gaps_not_measured_with_two_publishers_or_no_numbers():
    gaps = MiddlewareGaps()
    gaps.observe(1, publishers=1)
    gaps.observe(100, publishers=2)  # whose 100? not counted
    gaps.observe(2, publishers=2)
    gaps.observe(0, publishers=1)  # rmw without sequence numbers reports 0
    values = gaps.values()
    assert values["frames_replaced_in_middleware"] == "0"
    assert values["frames_replaced_in_middleware_unmeasured"] == "3"
    assert "sequence numbers" in values["frames_replaced_in_middleware_note"]
    gaps.observe(7, publishers=1)
    gaps.observe(8, publishers=1)
    assert gaps.values()["frames_replaced_in_middleware"] == "0"
    assert gaps.values()["frames_replaced_in_middleware_note"] == ""


def test_middleware_gaps_unknown_without_message_info():
    gaps = MiddlewareGaps()
    gaps.unavailable("this rclpy gives callbacks no message info")
    assert gaps.values()["frames_replaced_in_middleware"] == "unknown"
