"""Every node parameter: one table with type, default, description and range, plus validation.

The table drives ``declare_parameter`` (each with a ParameterDescriptor, so ``ros2 param describe``
shows the type, the range and the allowed values), the YAML file and the docs table. Values are
checked twice: rclpy enforces type and numeric ranges from the descriptor; ``validate_value`` and
``validate_params`` check what a descriptor cannot say (choices, odd kernels, min < max), so a bad
value is refused with a reason instead of crashing the node.

Model parameters (config, weights, backend, device, precision, input size, warmup) are read on
``configure``; everything else applies to the next frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from panoptic_depthlab_core.ground_distance import CameraMount, CameraMountError

# name -> (default, description, range-or-choices). A range is (low, high) or (low, high, step);
# choices is a tuple of strings. Types come from the defaults (bool, int, float, str).
_SPECS: dict[str, tuple[Any, str, Any]] = {
    # --- model (read on configure)
    "model_config": ("", "Model YAML (config/models/*.yaml); empty = the shipped default model.", None),
    "weights": (
        "",
        "Weights (.safetensors); empty = the default model's weights, or random init when "
        "model_config is set (a warning is logged).",
        None,
    ),
    "backend": (
        "auto",
        "Inference backend; auto = onnxruntime for fp32 on a CPU (faster than torch there), else torch.",
        ("auto", "torch", "onnxruntime", "tensorrt"),
    ),
    "device": ("cpu", "Device: cpu, cuda or cuda:N.", None),
    "precision": (
        "fp32",
        "Numeric precision of the network. onnxruntime/tensorrt: the precision of the ONNX file or engine, "
        "checked against it (int8 needs an int8 ONNX: export onnx --precision int8); torch: fp32/fp16/bf16.",
        ("fp32", "fp16", "bf16", "int8"),
    ),
    "onnx_path": (
        "",
        "Prebuilt ONNX file (panoptic-depthlab export onnx --precision ...): onnxruntime runs it as it is, "
        "tensorrt builds its engine from it; backend auto then means onnxruntime. Empty = the model is "
        "exported (fp32) into the cache at configure.",
        None,
    ),
    "engine_path": (
        "",
        "Prebuilt TensorRT engine (export tensorrt --engine) with its .json sidecar: loaded with no rebuild "
        "when the sidecar matches this GPU, TensorRT, precision and input size; backend auto then means tensorrt.",
        None,
    ),
    "engine_cache_dir": (
        "",
        "Folder for engines built at configure, their timing caches and ONNX Runtime's TensorRT EP cache; "
        "empty = $PANOPTIC_DEPTHLAB_CACHE/engines (default ~/.cache/panoptic_depthlab/engines).",
        None,
    ),
    "allow_engine_rebuild": (
        True,
        "Build a missing TensorRT engine, or rebuild one made for another GPU/TensorRT, from onnx_path at "
        "configure (minutes); false = configure fails naming the file and the mismatch.",
        None,
    ),
    "onnxruntime_tensorrt": (
        False,
        "backend onnxruntime on CUDA: put ONNX Runtime's TensorRT execution provider first (it builds an "
        "engine when the session starts, cached in engine_cache_dir); false = CUDA provider only.",
        None,
    ),
    "input_height": (0, "Network input height in pixels (multiple of 32); 0 = model config.", (0, 8192, 32)),
    "input_width": (0, "Network input width in pixels (multiple of 32); 0 = model config.", (0, 8192, 32)),
    "warmup_iterations": (1, "Inference runs on a blank image during configure.", (0, 20)),
    "retain_freed_memory": (
        True,
        "Keep freed heap memory in the process (glibc mallopt; lasts for the process): a 1080p frame "
        "on CPU otherwise page-faults its big arrays in again; the process keeps "
        "its peak memory.",
        None,
    ),
    # --- post-processing (live)
    "center_threshold": (
        -1.0,
        "Instance center heatmap threshold; negative = the model config's value.",
        (-1.0, 1.0),
    ),
    "nms_kernel": (
        -1,
        "Odd max-pool window for center NMS (network pixels); -1 = the model config's value.",
        (-1, 99, 2),
    ),
    "top_k": (0, "Keep at most this many instance centers; 0 = the model config's value.", (0, 1000)),
    "stuff_area": (
        -1,
        "Stuff regions smaller than this (network pixels) become void; -1 = the model config's value.",
        (-1, 10_000_000),
    ),
    "thing_area": (
        -1,
        "Instances smaller than this (network pixels) become void; -1 = the model config's value.",
        (-1, 10_000_000),
    ),
    # --- distances (live)
    "distance_statistic": (
        "median",
        "Per-segment distance from its valid depth pixels.",
        ("median", "mean", "trimmed_mean", "p10"),
    ),
    "trim_fraction": (0.1, "Fraction cut from each end for trimmed_mean.", (0.0, 0.49)),
    "min_depth_m": (0.1, "Depth below this is invalid (m).", (0.0, 1000.0)),
    "max_depth_m": (80.0, "Depth above this is invalid (m).", (0.01, 1000.0)),
    "min_detection_score": (
        0.0,
        "Detections/markers below this score are dropped; LabelInfo threshold.",
        (0.0, 1.0),
    ),
    # --- distance source (live): depth decoder, ground plane or both (docs/tracking.md)
    "distance_source": (
        "auto",
        "Where thing distances come from. depth: the depth decoder; ground: flat-road geometry at each thing's "
        "ground contact (CameraInfo + camera_height_m/camera_pitch_rad); fused: both, inverse-variance weighted. "
        "auto: ground when the weights' depth decoder is untrained (converted detectron2 weights), fused when "
        "it is trained and camera_height_m is set, else depth. The log and /diagnostics say which and why.",
        ("auto", "depth", "ground", "fused"),
    ),
    "camera_height_m": (
        0.0,
        "Height of the camera's optical centre above the road (m; Cityscapes extrinsic.z, about 1.2 m on a car) "
        "for ground-plane distances; 0 = not set: distance_source ground or fused, or auto with an untrained "
        "depth decoder, then refuse to configure naming this parameter.",
        (0.0, 10.0),
    ),
    "camera_pitch_rad": (
        0.0,
        "Pitch of the camera (rad, > 0 looks down at the road; Cityscapes extrinsic.pitch); within +-45 deg.",
        (-0.785, 0.785),
    ),
    # --- tracking (live)
    "tracking": (
        True,
        "Track thing segments across frames: Detection2D/3D.id is the track id, ~/panoptic uses "
        "track-consistent instance numbers, ~/tracks carries velocity and time to collision. On by default: "
        "its cost per frame is small next to the network's (measured: docs/tracking.md); off: ids are per-frame "
        "panoptic ids and velocities are NaN.",
        None,
    ),
    "tracking_min_hits": (2, "Associated frames before a track is confirmed (births' hysteresis).", (1, 100)),
    # the tracking defaults are TrackerConfig's, chosen on synthetic tuning drives (docs/tracking.md)
    "tracking_max_misses": (3, "Missed frames a confirmed track coasts through before it is dropped.", (0, 1000)),
    "tracking_max_coast_s": (0.5, "Longest time a confirmed track coasts without an association (s).", (0.01, 60.0)),
    "tracking_reset_gap_s": (
        2.0,
        "A gap between input stamps longer than this resets the tracker (s); stamps going back and a new "
        "frame_id always do.",
        (0.01, 3600.0),
    ),
    "tracking_min_overlap": (
        0.2,
        "Box/mask IoU with a track's prediction from which a segment may continue it.",
        (0.0, 1.0),
    ),
    "tracking_gate_3d_sigmas": (
        3.5,
        "3D association gate: Mahalanobis distance (standard deviations) to a track's predicted position.",
        (0.1, 100.0),
    ),
    "tracking_match_across_classes": (False, "Let a segment continue a track of another class.", None),
    "tracking_corridor_half_width_m": (
        1.5,
        "Half width of the path ahead (m, along x): tracks inside get in_path and a time to collision.",
        (0.01, 50.0),
    ),
    "tracking_min_closing_speed_mps": (
        0.3,
        "Slower closing speeds count as not closing (time to collision +Inf) (m/s).",
        (0.0, 100.0),
    ),
    # --- input
    "image_transport": (
        "raw",
        "raw: subscribe 'image' (sensor_msgs/Image); compressed: 'image/compressed'.",
        ("raw", "compressed"),
    ),
    "input_reliability": (
        "auto",
        "Input QoS reliability; auto follows the publishers (history depth 1).",
        ("auto", "reliable", "best_effort"),
    ),
    "use_camera_info": (True, "Subscribe 'camera_info' for K (3D outputs need it).", None),
    "prefer_rectified": (True, "Use P (rectified) instead of K from CameraInfo when P is set.", None),
    "max_input_pixels": (8192 * 8192, "Images claiming more pixels are rejected.", (1, 2**31 - 1)),
    # --- outputs (live)
    "publish_panoptic": (True, "Publish ~/panoptic (16UC1 class*1000+instance, 65535 void).", None),
    "publish_semantic": (True, "Publish ~/semantic (mono8 train ids, 255 void).", None),
    "publish_depth": (True, "Publish ~/depth (32FC1 metres along z, NaN invalid).", None),
    "publish_visualization": (True, "Publish ~/visualization (bgr8 distance-coloured overlay).", None),
    "publish_detections": (True, "Publish ~/detections (vision_msgs/Detection2DArray).", None),
    "publish_detections_3d": (True, "Publish ~/detections_3d (vision_msgs/Detection3DArray; needs K).", None),
    "publish_markers": (True, "Publish ~/markers (visualization_msgs/MarkerArray; needs K).", None),
    "publish_label_info": (True, "Publish ~/label_info (vision_msgs/LabelInfo, transient_local).", None),
    "publish_camera_info": (True, "Publish ~/camera_info matching the output images.", None),
    "publish_tracks": (
        True,
        "Publish ~/tracks (panoptic_depthlab_msgs/TrackedSegmentArray; needs K): track id, velocity, time to "
        "collision and distance source of every ~/detections_3d entry, in its order.",
        None,
    ),
    "include_stuff_detections": (
        False,
        "Also emit detections/markers for stuff segments (off: stuff gets no depth statistics, most of their time).",
        None,
    ),
    "marker_boxes": (True, "Add a wire-frame box marker per detection.", None),
    "marker_text_size_m": (0.6, "Height of the text markers (m).", (0.01, 10.0)),
    "depth_sky_inf": (False, "Write +Inf for sky pixels in ~/depth (REP 117).", None),
    "viz_min_distance_m": (
        10.0,
        "Distance shown with the nearest colour in ~/visualization (m).",
        (0.0, 1000.0),
    ),
    "viz_max_distance_m": (
        60.0,
        "Distance shown with the farthest colour in ~/visualization (m).",
        (0.1, 1000.0),
    ),
    "frame_id": ("", "Override the output frame_id; empty = the input image's frame_id.", None),
    # --- node
    "autostart": (True, "Configure and activate on start (plain `ros2 run`).", None),
    "diagnostics_period_s": (1.0, "Period of /diagnostics (s).", (0.1, 60.0)),
    "graph_check_period_s": (
        0.5,
        "How often input publishers' QoS is checked in auto mode (s).",
        (0.05, 10.0),
    ),
    "error_log_throttle_s": (5.0, "Minimum seconds between error logs of the same reason.", (0.0, 3600.0)),
    "serialized_image_publishing": (
        True,
        "Publish the output images as CDR bytes through rcl with Python's GIL released, so the "
        "statistics keep running meanwhile; false = "
        "rclpy's publish. Falls back to it by itself (with a warning) where rcl's function cannot be "
        "found or the rmw serializes an Image differently.",
        None,
    ),
}

# Read only in on_configure: changing them later takes effect at the next configure.
CONFIGURE_TIME_PARAMETERS: frozenset[str] = frozenset(
    {
        "model_config",
        "weights",
        "backend",
        "device",
        "precision",
        "onnx_path",
        "engine_path",
        "engine_cache_dir",
        "allow_engine_rebuild",
        "onnxruntime_tensorrt",
        "input_height",
        "input_width",
        "warmup_iterations",
        "retain_freed_memory",
        "serialized_image_publishing",
    }
)

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass
class NodeParams:
    """All node parameters, typed; field names equal parameter names."""

    model_config: str = ""
    weights: str = ""
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    onnx_path: str = ""
    engine_path: str = ""
    engine_cache_dir: str = ""
    allow_engine_rebuild: bool = True
    onnxruntime_tensorrt: bool = False
    input_height: int = 0
    input_width: int = 0
    warmup_iterations: int = 1
    retain_freed_memory: bool = True
    center_threshold: float = -1.0
    nms_kernel: int = -1
    top_k: int = 0
    stuff_area: int = -1
    thing_area: int = -1
    distance_statistic: str = "median"
    trim_fraction: float = 0.1
    min_depth_m: float = 0.1
    max_depth_m: float = 80.0
    min_detection_score: float = 0.0
    distance_source: str = "auto"
    camera_height_m: float = 0.0
    camera_pitch_rad: float = 0.0
    tracking: bool = True
    tracking_min_hits: int = 2
    tracking_max_misses: int = 3
    tracking_max_coast_s: float = 0.5
    tracking_reset_gap_s: float = 2.0
    tracking_min_overlap: float = 0.2
    tracking_gate_3d_sigmas: float = 3.5
    tracking_match_across_classes: bool = False
    tracking_corridor_half_width_m: float = 1.5
    tracking_min_closing_speed_mps: float = 0.3
    image_transport: str = "raw"
    input_reliability: str = "auto"
    use_camera_info: bool = True
    prefer_rectified: bool = True
    max_input_pixels: int = 8192 * 8192
    publish_panoptic: bool = True
    publish_semantic: bool = True
    publish_depth: bool = True
    publish_visualization: bool = True
    publish_detections: bool = True
    publish_detections_3d: bool = True
    publish_markers: bool = True
    publish_label_info: bool = True
    publish_camera_info: bool = True
    publish_tracks: bool = True
    include_stuff_detections: bool = False
    marker_boxes: bool = True
    marker_text_size_m: float = 0.6
    depth_sky_inf: bool = False
    viz_min_distance_m: float = 10.0
    viz_max_distance_m: float = 60.0
    frame_id: str = ""
    autostart: bool = True
    diagnostics_period_s: float = 1.0
    graph_check_period_s: float = 0.5
    error_log_throttle_s: float = 5.0
    serialized_image_publishing: bool = True

    def postprocess_overrides(self) -> dict[str, Any]:
        """The post-processing values set here; the others keep the model config's (tuned per model)."""
        is_set = {
            "center_threshold": self.center_threshold >= 0,
            "nms_kernel": self.nms_kernel > 0,
            "top_k": self.top_k > 0,
            "stuff_area": self.stuff_area >= 0,
            "thing_area": self.thing_area >= 0,
        }
        return {name: getattr(self, name) for name in POSTPROCESS_PARAMETERS if is_set[name]}

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Predictor config overrides (sections input/postprocess/segments) from these values."""
        out: dict[str, dict[str, Any]] = {
            "postprocess": self.postprocess_overrides(),
            "segments": {
                "distance_statistic": self.distance_statistic,
                "trim_fraction": self.trim_fraction,
                "min_depth_m": self.min_depth_m,
                "max_depth_m": self.max_depth_m,
            },
        }
        if self.input_height and self.input_width:
            out["input"] = {"height": self.input_height, "width": self.input_width}
        return out


PARAMETER_NAMES: tuple[str, ...] = tuple(_SPECS)
# Post-processing parameters: each defaults to "the model config's value" (tuned per model).
POSTPROCESS_PARAMETERS: tuple[str, ...] = ("center_threshold", "nms_kernel", "top_k", "stuff_area", "thing_area")


def parameter_specs() -> dict[str, tuple[Any, str, Any]]:
    """name -> (default, description, range or choices); for docs and tests."""
    return dict(_SPECS)


def _check_table() -> None:
    names = {f.name for f in fields(NodeParams)}
    if names != set(_SPECS):
        raise RuntimeError(f"NodeParams and the parameter table differ: {sorted(names ^ set(_SPECS))}")
    for f in fields(NodeParams):
        if f.default != _SPECS[f.name][0]:
            raise RuntimeError(f"default of {f.name} differs between NodeParams and the table")


_check_table()


def validate_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``; None when it is."""
    if name not in _SPECS:
        return f"unknown parameter {name!r}"
    default, _, constraint = _SPECS[name]
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        return f"{name} must be a {expected.__name__}, got {type(value).__name__} {value!r}"
    if isinstance(constraint, tuple) and constraint and isinstance(constraint[0], str):
        if value not in constraint:
            return f"{name} must be one of {', '.join(constraint)}; got {value!r}"
    elif isinstance(constraint, tuple):
        low, high = constraint[0], constraint[1]
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be finite, got {value}"
        if not low <= value <= high:
            return f"{name} must be in [{low}, {high}], got {value}"
        if len(constraint) == 3 and (value - low) % constraint[2]:
            return f"{name} must be {low} + a multiple of {constraint[2]}, got {value}"
    if name == "device" and not _DEVICE_RE.match(value):
        return f"device must be cpu, cuda or cuda:N; got {value!r}"
    return None


def validate_params(params: NodeParams) -> list[str]:
    """Every problem with a complete parameter set (each value and the cross-parameter rules)."""
    problems = [p for f in fields(NodeParams) if (p := validate_value(f.name, getattr(params, f.name)))]
    if params.min_depth_m >= params.max_depth_m:
        problems.append(f"min_depth_m ({params.min_depth_m}) must be < max_depth_m ({params.max_depth_m})")
    if params.viz_min_distance_m >= params.viz_max_distance_m:
        problems.append(
            f"viz_min_distance_m ({params.viz_min_distance_m}) must be < viz_max_distance_m "
            f"({params.viz_max_distance_m})"
        )
    if params.distance_source in ("ground", "fused") and params.camera_height_m <= 0:
        problems.append(
            f"distance_source {params.distance_source} needs camera_height_m (the camera's height above the "
            "road, m) > 0; it is not set"
        )
    if params.camera_height_m > 0:
        try:
            CameraMount(params.camera_height_m, params.camera_pitch_rad)
        except CameraMountError as exc:
            problems.append(f"camera_height_m/camera_pitch_rad: {exc}")
    if (params.input_height == 0) != (params.input_width == 0):
        problems.append(
            "input_height and input_width must both be 0 (model config) or both be set, got "
            f"{params.input_height}x{params.input_width}"
        )
    return problems


def descriptor(name: str) -> Any:
    """rcl_interfaces ParameterDescriptor for ``name`` (type, description, range, choices)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    default, description, constraint = _SPECS[name]
    type_ids = {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }
    desc = ParameterDescriptor(name=name, type=type_ids[type(default)], description=description)
    if isinstance(constraint, tuple) and constraint and isinstance(constraint[0], str):
        desc.additional_constraints = "one of: " + ", ".join(constraint)
    elif isinstance(constraint, tuple) and isinstance(default, float):
        desc.floating_point_range = [
            FloatingPointRange(from_value=float(constraint[0]), to_value=float(constraint[1]), step=0.0)
        ]
    elif isinstance(constraint, tuple):
        step = constraint[2] if len(constraint) == 3 else 1
        desc.integer_range = [IntegerRange(from_value=constraint[0], to_value=constraint[1], step=step)]
    if name in CONFIGURE_TIME_PARAMETERS:
        desc.additional_constraints = (
            desc.additional_constraints + "; " if desc.additional_constraints else ""
        ) + "applied on the next configure"
    return desc


def declare_all(node: Any) -> list[str]:
    """Declare every parameter on ``node``; a refused override falls back to the default.

    Returns the error messages for refused overrides (from --params-file or -p), so the node can
    log them and keep running instead of dying in its constructor.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    errors = []
    for name, (default, _, _) in _SPECS.items():
        try:
            node.declare_parameter(name, default, descriptor(name))
            problem = validate_value(name, node.get_parameter(name).value)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            problem = str(exc)
            if node.has_parameter(name):
                node.undeclare_parameter(name)
            node.declare_parameter(name, default, descriptor(name), ignore_override=True)
        if problem:
            errors.append(f"parameter {name}: {problem}; using the default {default!r}")
            from rclpy.parameter import Parameter

            node.set_parameters([Parameter(name, value=default)])
    return errors


def read_params(node: Any) -> NodeParams:
    """The node's current parameter values as a NodeParams."""
    return NodeParams(**{name: node.get_parameter(name).value for name in _SPECS})


def with_changes(params: NodeParams, changes: dict[str, Any]) -> NodeParams:
    """A copy of ``params`` with ``changes`` applied (ints widened to floats where floats are expected)."""
    values = {f.name: getattr(params, f.name) for f in fields(NodeParams)}
    for name, value in changes.items():
        wants_float = isinstance(_SPECS.get(name, (None,))[0], float)
        if wants_float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[name] = value
    return NodeParams(**values)
