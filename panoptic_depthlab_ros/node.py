"""The ROS 2 lifecycle node: inputs, latest-frame-wins worker, outputs, QoS following, diagnostics.

configure loads the model and warms it up; activate creates publishers and subscriptions and starts
the worker; deactivate stops them; cleanup frees the model. ``autostart`` (default true) walks the
node to active by itself. Frame processing itself lives in ``processing`` (shared with the bag tool).
Only rclpy API common to Humble, Jazzy and Kilted is used.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from panoptic_depthlab_msgs.msg import TrackedSegmentArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from panoptic_depthlab_core.image_messages import MessageConversionError
from panoptic_depthlab_core.memory import retain_freed_memory
from panoptic_depthlab_core.runtime.gpu_pipeline import jpeg_decoder
from panoptic_depthlab_ros import messages as msgs
from panoptic_depthlab_ros.diagnostics import (
    CameraInfoInput,
    FrameStats,
    MiddlewareGaps,
    artefact_values,
    counter_values,
    diagnostic_array,
    node_status,
)
from panoptic_depthlab_ros.image_conversion import camera_info_to_K
from panoptic_depthlab_ros.image_publisher import ImagePublisher
from panoptic_depthlab_ros.params import (
    CONFIGURE_TIME_PARAMETERS,
    POSTPROCESS_PARAMETERS,
    NodeParams,
    declare_all,
    read_params,
    validate_params,
    validate_value,
    with_changes,
)
from panoptic_depthlab_ros.processing import (
    FrameProcessor,
    apply_live_params,
    enabled_outputs,
    load_predictor,
    make_distance_tracking,
    message_options,
    model_postprocess,
)
from panoptic_depthlab_ros.qos import latched_qos_profile, topic_input_qos

try:  # Jazzy and later; Humble has the same class in rclpy.qos_event
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError

# Jazzy and later pass a message info (with the publisher's sequence number) to a two-argument
# callback; Humble's rclpy calls every callback with the message only.
MESSAGE_INFO_CALLBACKS = hasattr(getattr(Subscription, "CallbackType", None), "WithMessageInfo")

NODE_NAME = "panoptic_depthlab"
OUTPUT_TYPES: dict[str, Any] = {
    "panoptic": Image,
    "semantic": Image,
    "depth": Image,
    "visualization": Image,
    "detections": Detection2DArray,
    "detections_3d": Detection3DArray,
    "markers": MarkerArray,
    "camera_info": CameraInfo,
    "tracks": TrackedSegmentArray,
}
OUTPUT_QOS = QoSProfile(depth=1)  # reliable, keep last 1: consumers want the newest result


class PanopticDepthLabNode(LifecycleNode):
    """Panoptic segmentation + metric depth + per-segment distance for one camera."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for problem in declare_all(self):
            self.get_logger().error(problem)
        self.params: NodeParams = read_params(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.stats = FrameStats()
        self._processor: FrameProcessor | None = None
        self._model_postprocess: Any = None  # the model config's own post-processing settings
        self._image_decoder = "cpu (opencv)"  # which decoder compressed frames get (probed at configure)
        self._state_label = "unconfigured"
        self._out_pubs: dict[str, Any] = {}
        self._label_info_pub = None
        self._publish_lock = threading.Lock()  # held while publishing and while tearing publishers down
        self._image_publishing_warned: set[str] = set()
        self._image_sub = None
        self._image_sub_key: tuple[str, ReliabilityPolicy] | None = None
        self._image_topic_resolved = ""  # for counting the input's publishers per frame
        self._info_sub = None
        self._info_sub_key: tuple[str, ReliabilityPolicy] | None = None
        self._graph_timer = None

        self._pending_lock = threading.Condition()
        self._pending: tuple[Any, float] | None = None
        self._camera_info: CameraInfoInput | None = None  # a frame keeps the entry it used
        self.middleware_gaps = MiddlewareGaps()
        # Every torch call (load, warm-up, inference) runs on this one thread: a second thread
        # running torch ops leaves two OpenMP thread teams competing for the cores (the network
        # took almost twice as long; docs/performance.md).
        self._inference_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="panoptic_depthlab_inference")
        self._worker: Future | None = None  # the frame loop, on the inference thread while active
        self._running = False
        self._last_error_log: dict[str, float] = {}
        self._warned_no_camera_info = False

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics)

    # ------------------------------------------------------------------------------------ parameters
    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        changes = {}
        for param in parameters:
            problem = validate_value(param.name, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            changes[param.name] = param.value
        updated = with_changes(self.params, changes)
        problems = validate_params(updated)
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        old = self.params
        self.params = updated
        try:
            self._apply_live(old, updated, set(changes))
        except (ValueError, TypeError) as exc:  # a combination the core refuses: keep the old values
            self.params = old
            self._apply_live(updated, old, set(changes))
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_live(self, old: NodeParams, new: NodeParams, changed: set[str]) -> None:
        if changed & CONFIGURE_TIME_PARAMETERS:
            self.get_logger().info(
                f"{', '.join(sorted(changed & CONFIGURE_TIME_PARAMETERS))} changed; "
                "applied on the next configure"
            )
        processor = self._processor
        if processor is not None:
            apply_live_params(processor.predictor, new, self._model_postprocess)
            processor.prefer_rectified = new.prefer_rectified
            processor.max_pixels = new.max_input_pixels
            if processor.tracking is not None:  # ValueError (refused, old values kept) e.g. a mount missing
                processor.tracking.update_params(new)
        if "diagnostics_period_s" in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(new.diagnostics_period_s, self._publish_diagnostics)
        if "graph_check_period_s" in changed and self._graph_timer is not None:
            self.destroy_timer(self._graph_timer)
            self._graph_timer = self.create_timer(new.graph_check_period_s, self._update_subscriptions)
        if changed & {"publish_label_info", "min_detection_score"} and self._label_info_pub is not None:
            self._publish_label_info()

    # ------------------------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = read_params(self)
        problems = validate_params(params)
        if problems:
            for problem in problems:
                self.get_logger().error(f"configure refused: {problem}")
            return TransitionCallbackReturn.FAILURE
        self.params = params
        if params.model_config and not params.weights:
            self.get_logger().warning(f"model_config {params.model_config} without weights: random weights")
        if params.retain_freed_memory:  # before the model's and the frames' allocations
            retention = retain_freed_memory()
            self.get_logger().info(f"retain_freed_memory: {retention.detail}")
        try:  # before the model: a camera mount the distance source needs is checked at once
            tracking = make_distance_tracking(params, log=self._log_tracking)
        except ValueError as exc:
            self.get_logger().error(f"configure refused: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            t0 = time.perf_counter()
            predictor = self._inference_thread.submit(load_predictor, params).result()
            self._model_postprocess = model_postprocess(params)
            t1 = time.perf_counter()
            if params.warmup_iterations:
                self._inference_thread.submit(predictor.warmup, params.warmup_iterations).result()
            # probes nvJPEG once, on the inference thread that will decode
            self._image_decoder = self._inference_thread.submit(jpeg_decoder, predictor.device).result()
        except Exception as exc:  # a bad path, a missing backend, CUDA absent: report, stay unconfigured
            self.get_logger().error(
                f"configure failed: could not load the model: {type(exc).__name__}: {exc}"
            )
            return TransitionCallbackReturn.FAILURE
        self._processor = FrameProcessor(
            predictor, message_options(params), params.prefer_rectified, params.max_input_pixels, tracking
        )
        self.get_logger().info(tracking.describe())
        pp = predictor.cfg.postprocess
        artefact = artefact_values(predictor, params.image_transport, self._image_decoder)
        self.get_logger().info(f"network artefact: {artefact['artefact']}; image decoder: {artefact['image_decoder']}")
        self.get_logger().info(
            f"model loaded in {(t1 - t0):.1f} s, warm-up {(time.perf_counter() - t1):.1f} s "
            f"(backend {self._backend_label(predictor)}, device {params.device}, precision {params.precision}, "
            f"network input {predictor.input_hw[0]}x{predictor.input_hw[1]}); post-processing: "
            + ", ".join(f"{k} {getattr(pp, k)}" for k in POSTPROCESS_PARAMETERS)
        )
        self._state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._publish_lock:
            for name, msg_type in OUTPUT_TYPES.items():
                pub = self.create_publisher(msg_type, msgs.OUTPUT_TOPICS[name], OUTPUT_QOS)
                if msg_type is Image:  # the big ones: published with the GIL released where possible
                    pub = ImagePublisher(pub, self.params.serialized_image_publishing, self._warn_image_publishing)
                self._out_pubs[name] = pub
            self._label_info_pub = self.create_publisher(LabelInfo, "~/label_info", latched_qos_profile())
        self._publish_label_info()
        self._running = True
        self._worker = self._inference_thread.submit(self._worker_loop)
        self._update_subscriptions()
        self._graph_timer = self.create_timer(self.params.graph_check_period_s, self._update_subscriptions)
        self._state_label = "active"
        self.get_logger().info(f"active: subscribed to {self._image_topic()}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._state_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_model()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._free_model()
        self._state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._free_model()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        """Subscriptions, timer, worker and publishers go away; nothing is published afterwards."""
        # The frame loop is told first: its thread is not a daemon, so a loop left running (say
        # the context is already gone and destroying a timer raises) would keep the process alive.
        with self._pending_lock:
            self._running = False
            if self._pending is not None:
                self.stats.frame_ended("discarded_inactive")
            self._pending = None
            self._pending_lock.notify_all()
        if self._graph_timer is not None:
            self.destroy_timer(self._graph_timer)
            self._graph_timer = None
        for sub in (self._image_sub, self._info_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._image_sub = self._info_sub = None
        self._image_sub_key = self._info_sub_key = None
        if self._worker is not None:
            try:
                self._worker.result(timeout=30.0)
            except Exception as exc:  # a crash of the loop or a frame still running after 30 s
                self.get_logger().error(f"frame loop did not stop cleanly: {type(exc).__name__}: {exc}")
            self._worker = None
        with self._publish_lock:
            for pub in list(self._out_pubs.values()) + [self._label_info_pub]:
                if pub is not None:
                    self.destroy_publisher(getattr(pub, "publisher", pub))
            self._out_pubs = {}
            self._label_info_pub = None

    def destroy_node(self) -> None:
        """Also ends the inference thread (after the frame loop was stopped)."""
        with self._pending_lock:
            self._running = False
            self._pending_lock.notify_all()
        self._inference_thread.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()

    def _free_model(self) -> None:
        processor, self._processor = self._processor, None
        if processor is None:
            return
        device = str(getattr(processor.predictor, "device", "cpu"))
        processor.close()
        del processor
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------ inputs
    def _image_topic(self) -> str:
        return "image/compressed" if self.params.image_transport == "compressed" else "image"

    def _update_subscriptions(self) -> None:
        """(Re)create input subscriptions when the wanted topic or reliability changed (auto mode
        follows the publishers: best-effort as soon as one publisher is best-effort)."""
        if not self._running:
            return
        params = self.params
        topic = self._image_topic()
        profile = topic_input_qos(self, topic, params.input_reliability)
        key = (topic, profile.reliability)
        if key != self._image_sub_key:
            if self._image_sub is not None:
                self.destroy_subscription(self._image_sub)
            msg_type = CompressedImage if params.image_transport == "compressed" else Image
            callback = self._on_image_with_info if MESSAGE_INFO_CALLBACKS else self._on_image
            try:
                self._image_sub = self.create_subscription(
                    msg_type,
                    topic,
                    callback,
                    profile,
                    event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_message_lost),
                )
            except UnsupportedEventTypeError:  # an rmw without the message_lost event
                self._image_sub = self.create_subscription(msg_type, topic, callback, profile)
                self.get_logger().info("the rmw has no message_lost event: lost samples are not reported")
            self._image_sub_key = key
            self._image_topic_resolved = self.resolve_topic_name(topic)
            self.middleware_gaps.reset()
            if not MESSAGE_INFO_CALLBACKS:
                self.middleware_gaps.unavailable("this rclpy gives callbacks no message info")
            self.get_logger().info(
                f"input {self.resolve_topic_name(topic)}: {msg_type.__name__}, "
                f"{'best-effort' if profile.reliability == ReliabilityPolicy.BEST_EFFORT else 'reliable'}"
            )
        if not params.use_camera_info:
            if self._info_sub is not None:
                self.destroy_subscription(self._info_sub)
                self._info_sub, self._info_sub_key, self._camera_info = None, None, None
            return
        info_profile = topic_input_qos(self, "camera_info", params.input_reliability)
        info_key = ("camera_info", info_profile.reliability)
        if info_key != self._info_sub_key:
            if self._info_sub is not None:
                self.destroy_subscription(self._info_sub)
            self._info_sub = self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, info_profile
            )
            self._info_sub_key = info_key

    def _on_image(self, msg: Any) -> None:
        """Latest frame wins: store it, count the one it replaces as dropped."""
        with self._pending_lock:
            self.stats.frame_received(replaced_waiting=self._pending is not None)
            self._pending = (msg, time.monotonic())
            self._pending_lock.notify()

    def _on_image_with_info(self, msg: Any, info: Any) -> None:
        """Also counts the frames the middleware replaced before this one (publisher's sequence)."""
        self.middleware_gaps.observe(
            info.get("publication_sequence_number"), self.count_publishers(self._image_topic_resolved)
        )
        self._on_image(msg)

    def _on_message_lost(self, info: Any) -> None:
        """Samples the rmw itself reports lost (not history-depth replacements: those it never reports)."""
        self.stats.messages_lost(int(info.total_count_change))

    def _on_camera_info(self, msg: Any) -> None:
        """A CameraInfo's problem is counted once: here if K is unusable, else by the first frame it
        does not fit (its size); ``CameraInfoInput`` remembers which."""
        self.stats.camera_info_seen()
        entry = CameraInfoInput(msg)
        try:
            camera_info_to_K(msg, prefer_P=self.params.prefer_rectified)
        except MessageConversionError as exc:
            entry.claim_count()
            self._reject_camera_info(exc.reason, str(exc))
        self._camera_info = entry

    def _warn_image_publishing(self, reason: str) -> None:
        """Once per reason: why the images go out through rclpy's ordinary publish."""
        if reason not in self._image_publishing_warned:
            self._image_publishing_warned.add(reason)
            self.get_logger().warning(f"serialized_image_publishing: {reason}; images go out through rclpy's publish")

    def _log_tracking(self, level: str, text: str) -> None:
        """Tracker resets and depth-decoder health changes (throttled by DistanceAndTracking)."""
        logger = self.get_logger()
        (logger.warning if level == "warning" else logger.info)(text)

    def _reject_frame(self, reason: str, text: str) -> None:
        """Count a rejected frame by reason and log it."""
        self.stats.frame_rejected(reason)
        self._log_rejection(reason, text)

    def _reject_camera_info(self, reason: str, text: str) -> None:
        """Count a CameraInfo message's problem (once per message) and log it."""
        self.stats.camera_info_problem(reason)
        self._log_rejection(reason, f"camera_info: {text}")

    def _log_rejection(self, reason: str, text: str) -> None:
        """At most once per throttle period per reason."""
        now = time.monotonic()
        if now - self._last_error_log.get(reason, -math.inf) >= self.params.error_log_throttle_s:
            self._last_error_log[reason] = now
            self.get_logger().error(f"rejected input ({reason}): {text}")

    # ------------------------------------------------------------------------------------ worker
    def _wanted_outputs(self) -> frozenset[str]:
        """Enabled outputs with at least one subscriber: nothing else is computed."""
        enabled = enabled_outputs(self.params)
        pubs = self._out_pubs
        return frozenset(n for n in enabled if n in pubs and pubs[n].get_subscription_count())

    def _worker_loop(self) -> None:
        while True:
            with self._pending_lock:
                while self._running and self._pending is None:
                    self._pending_lock.wait(timeout=0.5)
                if not self._running:
                    return
                msg, received_at = self._pending
                self._pending = None
            try:
                outcome = self._process(msg, received_at)
            except MessageConversionError as exc:
                self._reject_frame(exc.reason, str(exc))
            except ValueError as exc:
                self._reject_frame("invalid_input", f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # the node must keep running whatever one frame does
                self._reject_frame("processing_error", f"{type(exc).__name__}: {exc}")
            else:
                if outcome != "processed":  # processed frames were counted with their latencies
                    self.stats.frame_ended(outcome)

    def _process(self, msg: Any, received_at: float) -> str:
        """One frame; returns how it ended (``diagnostics.FRAME_OUTCOMES``)."""
        processor = self._processor
        if processor is None:
            return "discarded_inactive"
        wanted = self._wanted_outputs()
        if not wanted:
            return "skipped_no_subscribers"
        params = self.params
        info_entry = self._camera_info if params.use_camera_info else None
        camera_info = info_entry.msg if info_entry is not None else None
        if params.use_camera_info and camera_info is None and wanted & msgs.OUTPUTS_NEEDING_K:
            if not self._warned_no_camera_info:
                self._warned_no_camera_info = True
                self.get_logger().warning(
                    f"no CameraInfo on {self.resolve_topic_name('camera_info')} yet: 3D outputs "
                    "(detections_3d, markers, camera_info) are skipped until one arrives"
                )
        publish_s = 0.0
        stopped = False

        def publish(name: str, message: Any) -> None:
            """Each output leaves as soon as it is built (the images from the helper thread)."""
            nonlocal publish_s, stopped
            with self._publish_lock:
                t0 = time.perf_counter()
                if self._running:
                    self._out_pubs[name].publish(message)
                else:
                    stopped = True
                publish_s += time.perf_counter() - t0

        options = message_options(params, wanted)
        frame = processor.process(msg, camera_info, options, emit=publish, only_needed=True)
        # the entry this frame used, not the newest: a CameraInfo is counted once, not once per frame
        if frame.camera_info_error is not None and info_entry is not None and info_entry.claim_count():
            self._reject_camera_info(frame.camera_info_error.reason, str(frame.camera_info_error))
        if stopped or not self._running:
            return "discarded_inactive"  # deactivated meanwhile: not a processed frame
        timings = dict(frame.timings_ms)
        timings["publish"] = publish_s * 1e3  # included in "messages": they overlap
        timings["total"] = (time.monotonic() - received_at) * 1e3
        self.stats.frame_processed(timings)
        return "processed"

    def _publish_label_info(self) -> None:
        with self._publish_lock:
            if self._label_info_pub is None or not self.params.publish_label_info:
                return
            header = msgs.output_header(Image().header, self.params.frame_id)
            header.stamp = self.get_clock().now().to_msg()
            self._label_info_pub.publish(msgs.label_info(header, self.params.min_detection_score))

    # ------------------------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        params = self.params
        values = {
            "state": self._state_label,
            "backend": self._backend_label(getattr(self._processor, "predictor", None)),
            "device": params.device,
            "precision": params.precision,
            "input_topic": self.resolve_topic_name(self._image_topic()),
            "input_reliability": self._effective_reliability(),
            "image_publishing": self._image_publishing(),
            **artefact_values(getattr(self._processor, "predictor", None), params.image_transport, self._image_decoder),
            **counter_values(snap),
            **self.middleware_gaps.values(),
        }
        tracking = getattr(self._processor, "tracking", None)
        warnings = []
        if tracking is not None:
            values.update(tracking.values())
            warnings = tracking.warnings()
        status = node_status(
            f"{self.get_fully_qualified_name()}: panoptic_depthlab", params.device, self._state_label, snap, values,
            warnings,
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def _backend_label(self, predictor: Any) -> str:
        """The backend parameter and, for auto, the one it resolved to ("auto (onnxruntime)")."""
        requested = self.params.backend
        if predictor is None or requested != "auto":
            return requested
        return f"{requested} ({predictor.backend_cfg.name})"

    def _image_publishing(self) -> str:
        """How the output images leave: serialized with the GIL released, or rclpy's publish (why)."""
        image_pubs = [p for p in list(self._out_pubs.values()) if isinstance(p, ImagePublisher)]
        if not image_pubs:
            return "(no publishers)"
        fallback = next((p.unavailable_reason for p in image_pubs if not p.gil_free), None)
        return "serialized, GIL released" if fallback is None else f"rclpy publish ({fallback})"

    def _effective_reliability(self) -> str:
        if self._image_sub_key is None:
            return f"{self.params.input_reliability} (no subscription)"
        policy = "best_effort" if self._image_sub_key[1] == ReliabilityPolicy.BEST_EFFORT else "reliable"
        return f"{self.params.input_reliability} -> {policy}"


def main(args: list[str] | None = None) -> int:
    """Console script ``panoptic_depthlab_node``; accepts ``--ros-args`` (params file, remaps)."""
    rclpy.init(args=args if args is not None else sys.argv)
    executor = SingleThreadedExecutor()
    node = None
    try:
        node = PanopticDepthLabNode()
        executor.add_node(node)
        if node.params.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                if rclpy.ok():
                    node.trigger_activate()
            elif rclpy.ok():
                node.get_logger().error(
                    "autostart: configure failed; node stays unconfigured "
                    "(fix the parameters, then call change_state configure)"
                )
        if rclpy.ok():
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            try:
                node._stop_processing()
                node._free_model()
                node.destroy_node()
            except Exception:  # context already shut down by SIGINT: nothing left to release
                pass
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
