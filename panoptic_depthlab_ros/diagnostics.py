"""What the node reports on /diagnostics: frame counters that add up, latencies, and the status.

Every image message the node's callback sees ends in exactly one counter (``FrameStats``)::

    received = processed + dropped_replaced + skipped_no_subscribers + rejected + discarded_inactive
               + in_progress

``dropped_replaced``: a newer frame replaced it while it waited for the worker (latest frame wins).
``discarded_inactive``: the node was deactivated (or had no model) before the frame's outputs left.
``in_progress``: waiting or being processed right now (0 once the input stops).

A CameraInfo is not a frame: its problems are counted per CameraInfo message (``camera_info_rejected``),
once however many frames use it. Frames that the middleware itself replaces before the node takes
them (history depth 1) never reach the callback; ``MiddlewareGaps`` estimates them from the
publisher's sequence numbers where the rmw reports them (see docs/ros.md, "What the counters cannot see").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from panoptic_depthlab_core.runtime import describe_artefact

LATENCY_WINDOW = 200  # frames kept for the latency percentiles

# The ways a frame the callback saw can end (besides being rejected, which is counted by reason).
FRAME_OUTCOMES = ("processed", "dropped_replaced", "skipped_no_subscribers", "discarded_inactive")
# The /diagnostics counters a received frame ends in exactly one of: frames_received is their sum
# (a dashboard can check that no frame went unaccounted for).
FRAME_END_KEYS = (
    "frames_processed",
    "frames_dropped",
    "frames_skipped_no_subscribers",
    "frames_rejected",
    "frames_discarded_inactive",
    "frames_in_progress",
)


@dataclass
class CameraInfoInput:
    """The newest CameraInfo and whether its problem was already counted.

    A frame keeps the entry it was processed with, so a newer CameraInfo arriving meanwhile neither
    hides nor repeats the count of the one the frame used."""

    msg: Any
    counted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def claim_count(self) -> bool:
        """True exactly once per entry: the caller counts its problem."""
        with self._lock:
            if self.counted:
                return False
            self.counted = True
            return True


class MiddlewareGaps:
    """Frames the middleware replaced before the node took them, from publication sequence numbers.

    rclpy passes the publisher's sequence number to a callback that takes a message info (Jazzy and
    later; rmw_fastrtps fills it, an rmw that does not reports 0). The numbers belong to one
    publisher and the message info does not say which, so gaps are counted only while exactly one
    publisher is matched; a number that goes back (a restarted publisher) starts over uncounted.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replaced = 0
        self.unmeasured_frames = 0  # frames seen while the gaps could not be measured
        self.reason = ""
        self._last_seq: int | None = None

    def observe(self, publication_seq: int | None, publishers: int) -> None:
        with self.lock:
            if not publication_seq:
                self._last_seq = None
                self.unmeasured_frames += 1
                self.reason = "the rmw reports no publication sequence numbers"
                return
            if publishers != 1:
                self._last_seq = None
                self.unmeasured_frames += 1
                self.reason = f"{publishers} publishers on the input (sequence numbers are per publisher)"
                return
            if self._last_seq is not None and publication_seq > self._last_seq:
                self.replaced += publication_seq - self._last_seq - 1
            self._last_seq = publication_seq
            self.reason = ""

    def unavailable(self, reason: str) -> None:
        """This rclpy gives callbacks no message info at all (Humble)."""
        with self.lock:
            self.reason = reason

    def reset(self) -> None:
        """A new subscription: the next number starts a new sequence."""
        with self.lock:
            self._last_seq = None

    def values(self) -> dict[str, str]:
        """/diagnostics keys: the count ("unknown" where rclpy gives no message info), the frames
        seen while it could not be measured, and why."""
        with self.lock:
            unknown = self.reason.startswith("this rclpy")
            return {
                "frames_replaced_in_middleware": "unknown" if unknown else str(self.replaced),
                "frames_replaced_in_middleware_unmeasured": str(self.unmeasured_frames),
                "frames_replaced_in_middleware_note": self.reason,
            }


class FrameStats:
    """Counters and recent latencies for /diagnostics; every method is thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.in_progress = 0
        self.outcomes = dict.fromkeys(FRAME_OUTCOMES, 0)
        self.rejected: dict[str, int] = {}  # frames, by reason
        self.camera_info_received = 0
        self.camera_info_rejected: dict[str, int] = {}  # CameraInfo messages, by reason
        self.middleware_lost_reported = 0  # message_lost events of the subscription
        self.latencies: deque[dict[str, float]] = deque(maxlen=LATENCY_WINDOW)
        self._last_rates = (time.monotonic(), 0, 0)

    def frame_received(self, replaced_waiting: bool) -> None:
        """One more frame; ``replaced_waiting``: it replaced a frame still waiting (dropped)."""
        with self.lock:
            self.received += 1
            self.in_progress += 1
            if replaced_waiting:
                self._end("dropped_replaced")

    def frame_ended(self, outcome: str) -> None:
        with self.lock:
            self._end(outcome)

    def frame_rejected(self, reason: str) -> None:
        with self.lock:
            self.in_progress -= 1
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def frame_processed(self, timings_ms: dict[str, float]) -> None:
        with self.lock:
            self._end("processed")
            self.latencies.append(dict(timings_ms))

    def camera_info_seen(self) -> None:
        with self.lock:
            self.camera_info_received += 1

    def camera_info_problem(self, reason: str) -> None:
        with self.lock:
            self.camera_info_rejected[reason] = self.camera_info_rejected.get(reason, 0) + 1

    def messages_lost(self, count: int) -> None:
        with self.lock:
            self.middleware_lost_reported += count

    def _end(self, outcome: str) -> None:
        self.in_progress -= 1
        self.outcomes[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        """Counters, rates since the previous snapshot, and p50/p95 per stage."""
        with self.lock:
            now = time.monotonic()
            then, received_then, processed_then = self._last_rates
            elapsed = max(now - then, 1e-6)
            processed = self.outcomes["processed"]
            snap = {
                "received": self.received,
                "in_progress": self.in_progress,
                **self.outcomes,
                "rejected": dict(self.rejected),
                "camera_info_received": self.camera_info_received,
                "camera_info_rejected": dict(self.camera_info_rejected),
                "middleware_lost_reported": self.middleware_lost_reported,
                "input_rate_hz": (self.received - received_then) / elapsed,
                "output_rate_hz": (processed - processed_then) / elapsed,
            }
            self._last_rates = (now, self.received, processed)
            recent = list(self.latencies)
        stages: dict[str, list[float]] = {}
        for timings in recent:
            for stage, value in timings.items():
                stages.setdefault(stage, []).append(value)
        snap["latency_ms"] = {
            stage: (float(np.percentile(values, 50)), float(np.percentile(values, 95)))
            for stage, values in stages.items()
        }
        return snap


def counter_values(snap: dict[str, Any]) -> dict[str, str]:
    """The /diagnostics key-values of a ``FrameStats.snapshot``: frames, CameraInfo, latencies."""
    frames_rejected = sum(snap["rejected"].values())
    values = {
        "input_rate_hz": f"{snap['input_rate_hz']:.2f}",
        "output_rate_hz": f"{snap['output_rate_hz']:.2f}",
        "frames_received": str(snap["received"]),
        "frames_processed": str(snap["processed"]),
        "frames_dropped": str(snap["dropped_replaced"]),
        "frames_skipped_no_subscribers": str(snap["skipped_no_subscribers"]),
        "frames_rejected": str(frames_rejected),
        "frames_discarded_inactive": str(snap["discarded_inactive"]),
        "frames_in_progress": str(snap["in_progress"]),
        "camera_info_received": str(snap["camera_info_received"]),
        "camera_info_rejected": str(sum(snap["camera_info_rejected"].values())),
        "middleware_messages_lost_reported": str(snap["middleware_lost_reported"]),
    }
    # One key per reason; frame and CameraInfo reasons never share a name.
    for reason, count in sorted({**snap["rejected"], **snap["camera_info_rejected"]}.items()):
        values[f"rejected_{reason}"] = str(count)
    for stage, (p50, p95) in sorted(snap["latency_ms"].items()):
        values[f"latency_{stage}_p50_ms"] = f"{p50:.2f}"
        values[f"latency_{stage}_p95_ms"] = f"{p95:.2f}"
    return values


def artefact_values(predictor: Any, image_transport: str, image_decoder: str) -> dict[str, str]:
    """Which network artefact runs (ONNX file, TensorRT engine or the torch model), built on what, with
    which TensorRT, and which decoder compressed frames get (``gpu_pipeline.jpeg_decoder``)."""
    values = {"image_decoder": image_decoder if image_transport == "compressed" else "none (raw images)"}
    if predictor is None:
        return {"artefact": "(not configured)", **values}
    info = describe_artefact(predictor.backend, predictor.backend_cfg)
    values["artefact"] = info.summary()
    values["artefact_precision"] = info.precision
    if info.built_on:
        values["artefact_built_on"] = info.built_on
    if info.tensorrt_version:
        values["tensorrt_version"] = info.tensorrt_version
    return values


def node_status(
    name: str, hardware_id: str, state: str, snap: dict[str, Any], values: dict[str, str],
    warnings: list[str] | None = None,
) -> DiagnosticStatus:
    """OK while active with no rejected input and no ``warnings`` (e.g. the depth decoder's health,
    frames without CameraInfo); WARN otherwise (the message says why)."""
    status = DiagnosticStatus()
    status.name = name
    status.hardware_id = hardware_id
    rejected = sum(snap["rejected"].values()) + sum(snap["camera_info_rejected"].values())
    if state != "active":
        status.level, status.message = DiagnosticStatus.WARN, f"not processing ({state})"
    elif rejected:
        status.level, status.message = DiagnosticStatus.WARN, f"{rejected} input(s) rejected so far"
    elif warnings:
        status.level, status.message = DiagnosticStatus.WARN, "; ".join(warnings)
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status


def diagnostic_array(stamp: Any, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = statuses
    return array


__all__ = [
    "FRAME_END_KEYS",
    "FRAME_OUTCOMES",
    "artefact_values",
    "LATENCY_WINDOW",
    "CameraInfoInput",
    "FrameStats",
    "MiddlewareGaps",
    "counter_values",
    "diagnostic_array",
    "node_status",
]
