"""FrameResult -> every output message, as a pure function (no node, no publishers).

The live node and the offline bag tool call ``build_messages`` with the same inputs, so a recorded
bag carries exactly what the node would have published. Only the outputs named in
``MessageOptions.outputs`` are built: the node passes the ones somebody subscribes to.

Conventions: every message carries the input header (same stamp; frame_id unless overridden);
panoptic 16UC1 = train_id * 1000 + instance with 65535 void; semantic mono8 train ids with 255
void; depth 32FC1 metres along z (REP 118) with NaN invalid and optionally +Inf for sky (REP 117);
3D positions are in the camera optical frame (x right, y down, z forward).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panoptic_depthlab_core.metadata import CLASS_NAMES, PALETTE, SKY_TRAIN_ID
from panoptic_depthlab_core.results import FrameResult, Segment
from panoptic_depthlab_core.tracking import TrackState
from panoptic_depthlab_core.viz import VizConfig, overlay_distance
from panoptic_depthlab_ros.image_conversion import numpy_to_image_msg

PANOPTIC_VOID = 65535

# Output name -> topic relative to the node (private names).
OUTPUT_TOPICS: dict[str, str] = {
    "panoptic": "~/panoptic",
    "semantic": "~/semantic",
    "depth": "~/depth",
    "visualization": "~/visualization",
    "detections": "~/detections",
    "detections_3d": "~/detections_3d",
    "markers": "~/markers",
    "camera_info": "~/camera_info",
    "tracks": "~/tracks",
}
OUTPUT_NAMES: tuple[str, ...] = tuple(OUTPUT_TOPICS)
# Outputs that need intrinsics; without K they are not built.
OUTPUTS_NEEDING_K: frozenset[str] = frozenset({"detections_3d", "markers", "camera_info", "tracks"})
# TrackedSegment.distance_source per Segment.distance_source
DISTANCE_SOURCE_CODES = {"depth": 0, "ground": 1, "fused": 2}


@dataclass
class MessageOptions:
    """What to build and how; field names follow the node parameters."""

    outputs: frozenset[str] = frozenset(OUTPUT_NAMES)
    include_stuff_detections: bool = False
    min_detection_score: float = 0.0
    marker_boxes: bool = True
    marker_text_size_m: float = 0.6
    marker_namespace: str = "panoptic_depthlab"
    depth_sky_inf: bool = False
    viz_min_distance_m: float = 10.0
    viz_max_distance_m: float = 60.0
    frame_id: str = ""  # non-empty: replaces the input frame_id on every output
    class_names: tuple[str, ...] = field(default=CLASS_NAMES)

    def __post_init__(self) -> None:
        unknown = set(self.outputs) - set(OUTPUT_NAMES)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; known: {', '.join(OUTPUT_NAMES)}")
        self.outputs = frozenset(self.outputs)


def maps_needed(options: MessageOptions) -> frozenset[str]:
    """The dense maps (``Predictor.predict(maps=...)``) the wanted outputs read at the input
    resolution. The 16UC1 panoptic image and the overlay are made from the network's id map
    (``FrameResult.upsampling``) when the input was resized, so they need none; a planner that
    only takes detections then costs no full-resolution map at all."""
    outputs = options.outputs
    needed = set()
    if "semantic" in outputs or ("depth" in outputs and options.depth_sky_inf):
        needed.add("semantic")
    if "depth" in outputs:
        needed.add("depth")
    return frozenset(needed)


def stuff_segments_needed(options: MessageOptions) -> str:
    """How much of the stuff segments the wanted outputs read (``Predictor.predict(stuff_segments=...)``):
    "full" when stuff becomes detections and markers; "no_depth" for the overlay alone, which fills
    stuff by class and labels only things; else "none" (detections of things need no stuff at all,
    and stuff's depth statistics are most of the statistics' time)."""
    if options.include_stuff_detections and options.outputs & {"detections", "detections_3d", "markers"}:
        return "full"
    if "visualization" in options.outputs:
        return "no_depth"
    return "none"


def output_header(header: Any, frame_id: str = "") -> Any:
    """The header every output carries: the input's, with frame_id replaced when asked."""
    if not frame_id:
        return header
    out = copy.copy(header)
    out.frame_id = frame_id
    return out


# ---------------------------------------------------------------------------------------------- images


def panoptic_to_uint16(panoptic_ids: np.ndarray) -> np.ndarray:
    """int32 ids (−1 void) -> uint16 with 65535 void; ValueError if an id does not fit."""
    if panoptic_ids.size and int(panoptic_ids.max()) >= PANOPTIC_VOID:
        raise ValueError(
            f"panoptic id {int(panoptic_ids.max())} does not fit 16UC1 (max {PANOPTIC_VOID - 1})"
        )
    out = panoptic_ids.astype(np.uint16)  # -1 wraps to 65535
    out[panoptic_ids < 0] = PANOPTIC_VOID  # any other negative void value too
    return out


def panoptic_image(result: FrameResult) -> np.ndarray:
    """The 16UC1 panoptic image; converted on the network's map when the ids were upsampled from it
    (``result.upsampling``): ~4x fewer pixels at 1080p, the same image."""
    if result.upsampling is None:
        return panoptic_to_uint16(result.panoptic_ids)
    return result.upsampling.upsample(panoptic_to_uint16(result.upsampling.panoptic_ids))


def depth_for_output(result: FrameResult, sky_inf: bool) -> np.ndarray:
    """float32 metres, NaN invalid; +Inf on sky pixels when ``sky_inf``."""
    depth = np.asarray(result.depth_m, dtype=np.float32)
    if sky_inf:
        depth = depth.copy()
        depth[result.semantic == SKY_TRAIN_ID] = np.inf
    return depth


def viz_config(options: MessageOptions) -> Any:
    """The overlay's colour range from the options (viz.VizConfig)."""
    return VizConfig(near_m=options.viz_min_distance_m, far_m=options.viz_max_distance_m)


# ---------------------------------------------------------------------------------------------- detections


def detection_segments(result: FrameResult, options: MessageOptions) -> list[Segment]:
    """Segments that become detections/markers: things (stuff on request) above the score floor."""
    return [seg for seg, _ in detection_items(result, options)]


def detection_items(
    result: FrameResult, options: MessageOptions, tracks: list[TrackState | None] | None = None
) -> list[tuple[Segment, TrackState | None]]:
    """The segments that become detections/markers (things, stuff on request, above the score floor)
    with each segment's track (``tracks`` aligned with ``result.segments``; None = tracking off)."""
    aligned = tracks if tracks is not None else [None] * len(result.segments)
    if len(aligned) != len(result.segments):
        raise ValueError(f"tracks must align with the segments: {len(aligned)} vs {len(result.segments)}")
    chosen = []
    for seg, track in zip(result.segments, aligned, strict=True):
        if not seg.is_thing and not options.include_stuff_detections:
            continue
        if options.min_detection_score > 0 and not (seg.score >= options.min_detection_score):
            continue
        chosen.append((seg, track))
    return chosen


def detection_id(seg: Segment, track: TrackState | None, tracking: bool) -> str:
    """Detection2D/3D.id: the track id with tracking on (empty for a segment without a track: stuff,
    crowd regions), else the frame's panoptic id."""
    if track is not None:
        return str(track.track_id)
    return "" if tracking else str(seg.id)


def _score(seg: Segment) -> float:
    return float(seg.score) if math.isfinite(seg.score) else 0.0


def _hypothesis(seg: Segment, with_position: bool) -> Any:
    from vision_msgs.msg import ObjectHypothesisWithPose

    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = seg.class_name
    hyp.hypothesis.score = _score(seg)
    if with_position and seg.position_xyz_m is not None:
        x, y, z = seg.position_xyz_m
        hyp.pose.pose.position.x, hyp.pose.pose.position.y, hyp.pose.pose.position.z = x, y, z
        hyp.pose.pose.orientation.w = 1.0
    return hyp


def detection2d_array(segments: Iterable[Segment], header: Any, ids: Iterable[str] | None = None) -> Any:
    """One Detection2D per segment: bbox in pixels, class name + score, id = ``ids`` (default: the
    panoptic id), pose position = 3D position when known."""
    from vision_msgs.msg import Detection2D, Detection2DArray

    msg = Detection2DArray()
    msg.header = header
    segments = list(segments)
    ids = [str(s.id) for s in segments] if ids is None else list(ids)
    for seg, det_id in zip(segments, ids, strict=True):
        det = Detection2D()
        det.header = header
        det.id = det_id
        det.results.append(_hypothesis(seg, with_position=True))
        x, y, w, h = seg.bbox_xywh
        det.bbox.center.position.x = float(x + w / 2.0)
        det.bbox.center.position.y = float(y + h / 2.0)
        det.bbox.size_x = float(w)
        det.bbox.size_y = float(h)
        msg.detections.append(det)
    return msg


def detection3d_array(segments: Iterable[Segment], header: Any, ids: Iterable[str] | None = None) -> Any:
    """One Detection3D per segment with a 3D position: center = position, size = extent; id as
    ``detection2d_array``."""
    from vision_msgs.msg import Detection3D, Detection3DArray

    msg = Detection3DArray()
    msg.header = header
    segments = list(segments)
    ids = [str(s.id) for s in segments] if ids is None else list(ids)
    for seg, det_id in zip(segments, ids, strict=True):
        if seg.position_xyz_m is None:
            continue
        det = Detection3D()
        det.header = header
        det.id = det_id
        det.results.append(_hypothesis(seg, with_position=True))
        x, y, z = seg.position_xyz_m
        det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z = x, y, z
        det.bbox.center.orientation.w = 1.0
        ex, ey, ez = seg.extent_xyz_m or (0.0, 0.0, 0.0)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = float(ex), float(ey), float(ez)
        msg.detections.append(det)
    return msg


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def tracked_segment_array(
    segments: Iterable[Segment], tracks: Iterable[TrackState | None], header: Any, ids: Iterable[str]
) -> Any:
    """panoptic_depthlab_msgs/TrackedSegmentArray: one entry per segment with a 3D position, in
    ``detection3d_array``'s order and with its ids; velocity NaN until the track has one, time to
    collision NaN outside the path (+Inf in it when not closing)."""
    from panoptic_depthlab_msgs.msg import TrackedSegment, TrackedSegmentArray

    msg = TrackedSegmentArray()
    msg.header = header
    nan = math.nan
    for seg, track, det_id in zip(segments, tracks, ids, strict=True):
        if seg.position_xyz_m is None:
            continue
        entry = TrackedSegment()
        entry.id = det_id
        entry.panoptic_id = int(seg.id) if 0 <= seg.id < PANOPTIC_VOID else PANOPTIC_VOID
        entry.distance = float(seg.distance_m) if _finite(seg.distance_m) else nan
        entry.distance_source = DISTANCE_SOURCE_CODES.get(seg.distance_source, 0)
        velocity = track.velocity_xyz_mps if track is not None else None
        entry.velocity.x, entry.velocity.y, entry.velocity.z = velocity if velocity is not None else (nan, nan, nan)
        entry.in_path = bool(track is not None and track.in_path)
        entry.time_to_collision = float(track.ttc_s) if track is not None and track.ttc_s is not None else nan
        entry.age = float(track.age_s) if track is not None else 0.0
        msg.segments.append(entry)
    return msg


def _marker_text(seg: Segment, track: TrackState | None, det_id: str) -> str:
    """Marker text: car 12.3 m; with a track, car #12 TTC 2.5 s above ground 12.3 m (source unless depth)."""
    distance = f"{seg.distance_m:.1f} m"
    if seg.distance_source != "depth":
        distance = f"{seg.distance_source} {distance}"
    if track is None:
        return f"{seg.class_name} {distance}"
    head = f"{seg.class_name} #{det_id}"
    if track.ttc_s is not None and math.isfinite(track.ttc_s):
        head += f" TTC {track.ttc_s:.1f} s"
    return f"{head}\n{distance}"


def marker_array(
    segments: Iterable[Segment],
    header: Any,
    options: MessageOptions,
    tracks: Iterable[TrackState | None] | None = None,
    ids: Iterable[str] | None = None,
) -> Any:
    """DELETEALL first (so markers of the previous frame disappear), then text "car 12.3 m" at each
    segment's 3D position (with a track: its id, the distance source, the time to collision),
    optionally a translucent box of its extent, and for a track with a velocity an arrow from its
    position to where it will be in one second (camera frame)."""
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    segments = list(segments)
    tracks = [None] * len(segments) if tracks is None else list(tracks)
    ids = [str(s.id) for s in segments] if ids is None else list(ids)

    msg = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.ns = options.marker_namespace
    clear.action = Marker.DELETEALL
    msg.markers.append(clear)
    marker_ids = itertools.count()

    def new_marker(marker_type: int) -> Any:
        """An ADD marker of this frame: header, namespace, the next id, identity orientation."""
        marker = Marker()
        marker.header = header
        marker.ns = options.marker_namespace
        marker.id = next(marker_ids)
        marker.type = marker_type
        marker.action = Marker.ADD
        marker.pose.orientation.w = 1.0
        return marker

    for seg, track, det_id in zip(segments, tracks, ids, strict=True):
        if seg.position_xyz_m is None or not math.isfinite(seg.distance_m):
            continue
        x, y, z = seg.position_xyz_m
        ex, ey, ez = seg.extent_xyz_m or (0.0, 0.0, 0.0)
        colour = PALETTE[seg.class_id] / 255.0 if 0 <= seg.class_id < len(PALETTE) else (1.0, 1.0, 1.0)

        text = new_marker(Marker.TEXT_VIEW_FACING)
        text.pose.position.x, text.pose.position.y = x, y - ey / 2.0 - options.marker_text_size_m  # y is down
        text.pose.position.z = z
        text.scale.z = options.marker_text_size_m
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = _marker_text(seg, track, det_id)
        msg.markers.append(text)

        velocity = track.velocity_xyz_mps if track is not None else None
        if velocity is not None:
            arrow = new_marker(Marker.ARROW)
            arrow.points = [Point(x=float(x), y=float(y), z=float(z)),
                            Point(x=float(x + velocity[0]), y=float(y + velocity[1]), z=float(z + velocity[2]))]
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.15, 0.35, 0.35  # shaft, head diameter, head length
            arrow.color.r, arrow.color.g, arrow.color.b, arrow.color.a = 1.0, 0.85, 0.0, 1.0
            if track.in_path and track.ttc_s is not None and math.isfinite(track.ttc_s):
                arrow.color.g = 0.1  # closing in, in the path: red
            msg.markers.append(arrow)

        if options.marker_boxes:
            box = new_marker(Marker.CUBE)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = x, y, z
            box.scale.x, box.scale.y, box.scale.z = (max(float(v), 0.05) for v in (ex, ey, ez))
            box.color.r, box.color.g, box.color.b = (float(c) for c in colour)
            box.color.a = 0.35
            msg.markers.append(box)
    return msg


def label_info(header: Any, threshold: float = 0.0, class_names: Iterable[str] = CLASS_NAMES) -> Any:
    """vision_msgs/LabelInfo: train id -> class name, and the detection score threshold."""
    from vision_msgs.msg import LabelInfo, VisionClass

    msg = LabelInfo()
    msg.header = header
    msg.threshold = float(threshold)
    for class_id, name in enumerate(class_names):
        msg.class_map.append(VisionClass(class_id=class_id, class_name=name))
    return msg


def camera_info_for_output(camera_info: Any, header: Any, width: int, height: int) -> Any:
    """The input CameraInfo restamped with the output header; outputs are at the input resolution,
    so the intrinsics stay as they are. ValueError if it describes another image size."""
    if int(camera_info.width) != width or int(camera_info.height) != height:
        raise ValueError(
            f"CameraInfo is {camera_info.width}x{camera_info.height}, outputs are {width}x{height}"
        )
    out = copy.copy(camera_info)
    out.header = header
    return out


# ---------------------------------------------------------------------------------------------- all


class FrameMessages:
    """One frame's output messages, built in two steps around the per-segment statistics.

    ``add_maps(maps)`` as soon as the dense maps exist (the Predictor's ``on_maps``): camera_info,
    panoptic, semantic and depth are built and emitted — with an ``executor``, there, while the
    caller computes the statistics. ``add_segments(result)`` then builds detections,
    detections_3d and markers and, last, draws the overlay: it needs the distances, and it is for
    people, so it never delays what a planner reads (drawing it meanwhile, on a small CPU, took the
    cores from the detections; measured in docs/performance.md). ``emit(name, message)`` is
    called as each message is ready, possibly from the executor's thread.
    """

    def __init__(
        self,
        header: Any,
        camera_info: Any = None,
        options: MessageOptions | None = None,
        rgb: np.ndarray | None = None,
        executor: Executor | None = None,
        emit: Callable[[str, Any], None] | None = None,
        defer_panoptic: bool = False,
    ) -> None:
        self.options = options or MessageOptions()
        # tracking renumbers the instances after the segments exist: the 16UC1 image waits for them
        self.defer_panoptic = defer_panoptic
        self.header = output_header(header, self.options.frame_id)
        self.camera_info = camera_info
        self.rgb = rgb
        self.executor = executor
        self.emit = emit
        self.messages: dict[str, Any] = {}
        self._maps_added = False
        self._maps_step: Future | None = None

    def _put(self, name: str, message: Any) -> None:
        self.messages[name] = message
        if self.emit is not None:
            self.emit(name, message)

    def add_maps(self, maps: FrameResult) -> None:
        """The dense maps are ready (``maps.segments`` is not used)."""
        self._maps_added = True
        if self.executor is not None:
            self._maps_step = self.executor.submit(self._build_maps, maps)
        else:
            self._build_maps(maps)

    def _build_maps(self, maps: FrameResult) -> None:
        wanted, header = self.options.outputs, self.header
        if "camera_info" in wanted and self.camera_info is not None:
            self._put("camera_info", camera_info_for_output(self.camera_info, header, maps.width, maps.height))
        if "panoptic" in wanted and not self.defer_panoptic:
            self._put("panoptic", numpy_to_image_msg(panoptic_image(maps), "16UC1", header))
        if "semantic" in wanted:
            self._put("semantic", numpy_to_image_msg(np.asarray(maps.semantic, dtype=np.uint8), "mono8", header))
        if "depth" in wanted:
            self._put("depth", numpy_to_image_msg(depth_for_output(maps, self.options.depth_sky_inf), "32FC1", header))

    def add_segments(self, result: FrameResult, tracks: list[TrackState | None] | None = None) -> dict[str, Any]:
        """The segments are ready: the remaining messages; returns every message of the frame.
        ``tracks``: each segment's track (aligned with ``result.segments``; None = tracking off),
        whose ids the detections, tracks and markers carry."""
        wanted, header, options = self.options.outputs, self.header, self.options
        if not self._maps_added:
            self.add_maps(result)  # one step: the maps come with the segments
        has_k = result.K is not None
        if wanted & {"detections", "detections_3d", "markers", "tracks"}:
            items = detection_items(result, options, tracks)
            segments = [seg for seg, _ in items]
            seg_tracks = [track for _, track in items]
            ids = [detection_id(seg, track, tracks is not None) for seg, track in items]
            if "detections" in wanted:
                self._put("detections", detection2d_array(segments, header, ids))
            if "detections_3d" in wanted and has_k:
                self._put("detections_3d", detection3d_array(segments, header, ids))
            if "tracks" in wanted and has_k:
                self._put("tracks", tracked_segment_array(segments, seg_tracks, header, ids))
            if "markers" in wanted and has_k:
                self._put("markers", marker_array(segments, header, options, seg_tracks, ids))
        if "panoptic" in wanted and self.defer_panoptic:
            self._put("panoptic", numpy_to_image_msg(panoptic_image(result), "16UC1", header))
        overlay = None
        if "visualization" in wanted and self.rgb is not None:
            cfg = viz_config(options)
            overlay_bgr = overlay_distance(
                self.rgb, result.panoptic_ids, result.segments, cfg, bgr=True, upsampling=result.upsampling
            )
            overlay = numpy_to_image_msg(overlay_bgr, "bgr8", header)
        if self._maps_step is not None:
            self._maps_step.result()  # re-raises what went wrong there, before the overlay leaves
        if overlay is not None:
            self._put("visualization", overlay)  # always the frame's last message
        return self.messages


def build_messages(
    result: FrameResult,
    header: Any,
    camera_info: Any = None,
    options: MessageOptions | None = None,
    rgb: np.ndarray | None = None,
    executor: Executor | None = None,
    emit: Callable[[str, Any], None] | None = None,
    tracks: list[TrackState | None] | None = None,
) -> dict[str, Any]:
    """Output name -> message for every output in ``options.outputs`` that can be built.

    3D outputs (detections_3d, tracks, markers) need ``result.K`` and ~/camera_info needs
    ``camera_info``; visualization needs ``rgb`` (the input image, RGB uint8).
    Missing inputs skip those outputs; the caller decides whether to warn. ``executor`` and
    ``emit`` as in :class:`FrameMessages`; the overlay always comes last. ``tracks`` as in
    ``FrameMessages.add_segments`` (``result`` already carries the track-consistent ids).
    """
    builder = FrameMessages(header, camera_info, options, rgb, executor, emit)
    builder.add_maps(result)
    return builder.add_segments(result, tracks)
