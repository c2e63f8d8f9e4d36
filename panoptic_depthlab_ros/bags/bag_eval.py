"""``panoptic-depthlab bag-eval IN_BAG --out OUT_BAG``: the node's processing over a bag, offline.

Input messages are read from the bag as CDR bytes and deserialized with rclpy into the message
classes the node receives; each frame goes through the node's own ``FrameProcessor`` (decode, K,
Predictor, ``build_messages``); every output is written, with the input's bag time and header stamp,
under the topic the live node publishes it on. So the output bag is what ``ros2 bag record`` of the
node would hold, without dropped frames, as fast as the backend runs.

Pairing: CameraInfo and GT messages are matched to their image by header stamp, and they may come
before or after the image in the bag (``ros2 bag record`` stores a CameraInfo just after its image,
because image_transport publishes the image first). An image waits until its partners have arrived
or the bag time has moved ``pairing_window_s`` past it; a frame whose own CameraInfo never comes uses
the latest earlier one, with a counted warning.

Several cameras (``--image-topic`` repeated) run in one pass: each has its own CameraInfo (found
beside the image topic, as image_transport names it), outputs under its own namespace, metrics of
its own.

Determinism: outputs are serialised with zeroed CDR padding (``common.CdrSerializer``) and written in
a fixed order, so the same bag and model give byte-identical output bags (see docs/bags.md for what
"byte-identical" covers).

With ground-truth topics (depth 32FC1 metres or 16UC1 millimetres, panoptic 16UC1 in the node's
encoding) every frame is also scored by the evaluation module's ``Evaluator`` (the one ``panoptic-
depthlab eval`` uses): ``metrics.json`` + ``metrics.md`` (same format as eval) and ``per_frame.json``.

A read failure (corrupt or truncated bag) or Ctrl-C still leaves a closed, readable output bag and
the metrics of the frames done so far.

Library use (one bag per call; a fleet runner calls it per bag, reusing one processor):

    report = evaluate_bag("drive", "drive_out", BagEvalOptions(image_topics=("/front/image_raw",)))
    report.exit_code, report.frames, report.cameras["/front/image_raw"].summary
"""

from __future__ import annotations

import argparse
import bisect
import json
import posixpath
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from panoptic_depthlab_core.config import parse_size
from panoptic_depthlab_core.eval.evaluator import Evaluator, markdown_report, write_report
from panoptic_depthlab_core.eval.sequence_eval import sequence_markdown
from panoptic_depthlab_core.image_messages import image_msg_to_array
from panoptic_depthlab_ros.distance_tracking import SequenceScorer, motion_from_gt_tracks
from panoptic_depthlab_ros.messages import OUTPUT_NAMES, OUTPUT_TOPICS, label_info
from panoptic_depthlab_ros.params import NodeParams, validate_params
from panoptic_depthlab_ros.processing import FrameProcessor, load_predictor, make_distance_tracking, message_options

from . import prediction_export
from .common import (
    STORAGES,
    BagReadError,
    BagWriter,
    CdrSerializer,
    base_image_topic,
    camera_info_topic_beside,
    cli_main,
    find_topic,
    format_ns,
    iter_bag_messages,
    msgtype_of,
    open_bag,
    stamp_from_cdr,
)
from .drive_bag import (
    GT_DEPTH_TOPIC,
    GT_PANOPTIC_TOPIC,
    GT_TRACKS_TOPIC,
    GT_TRACKS_TYPE,
    IMAGE_TOPIC,
    panoptic_from_16u,
)
from .transport import sigterm_as_interrupt

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPES = ("sensor_msgs/msg/CameraInfo",)
GT_IMAGE_TYPES = ("sensor_msgs/msg/Image",)
DEFAULT_NODE_NAME = "panoptic_depthlab"
# An image waits this long in bag time for its CameraInfo/GT: they are published within
# milliseconds of it, and at 30 frames/s 0.5 s of raw 1080p images is ~90 MB held per camera.
DEFAULT_PAIRING_WINDOW_S = 0.5
# CameraInfo / GT messages kept per topic for pairing (older ones are dropped first).
PAIRING_STORE_SIZE = 256
# Exit codes of the CLI (and BagReport.exit_code): 1 = the bag broke off (frames before it kept).
EXIT_OK, EXIT_DAMAGED, EXIT_INTERRUPTED = 0, 1, 130


class NoImageMessages(ValueError):
    """The image topic(s) exist but hold no messages: nothing to evaluate."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_bag", type=Path, help="input rosbag2 bag (mcap or sqlite3; directory or file)")
    parser.add_argument("--out", type=Path, required=True, help="output bag directory to create")
    parser.add_argument(
        "--storage", choices=STORAGES, default="mcap", help="output bag storage (default mcap)"
    )
    parser.add_argument(
        "--image-topic",
        action="append",
        default=None,
        help=f"Image or CompressedImage topic; repeat for several cameras (default {IMAGE_TOPIC})",
    )
    parser.add_argument(
        "--camera-info-topic",
        action="append",
        default=None,
        help="CameraInfo topic, one per --image-topic in the same order (default: camera_info beside "
        "each image topic, e.g. /front/image_raw[/compressed] -> /front/camera_info; '' = none)",
    )
    parser.add_argument(
        "--gt-depth-topic",
        action="append",
        default=None,
        help=f"GT depth, 32FC1 m or 16UC1 mm, one per --image-topic (default {GT_DEPTH_TOPIC} "
        "when present and there is one camera; '' = none)",
    )
    parser.add_argument(
        "--gt-panoptic-topic",
        action="append",
        default=None,
        help=f"GT panoptic 16UC1, one per --image-topic (default {GT_PANOPTIC_TOPIC} when present "
        "and there is one camera; '' = none)",
    )
    parser.add_argument(
        "--pairing-window",
        type=float,
        default=DEFAULT_PAIRING_WINDOW_S,
        metavar="S",
        help="bag seconds an image waits for its CameraInfo/GT (matched by header stamp; default "
        f"{DEFAULT_PAIRING_WINDOW_S})",
    )
    parser.add_argument(
        "--metrics-out",
        type=Path,
        default=None,
        help="directory for metrics.json/metrics.md/per_frame.json (default OUT_metrics)",
    )
    parser.add_argument(
        "--copy-inputs", action="store_true", help="copy every input topic into the output bag"
    )
    parser.add_argument(
        "--node-name",
        default=DEFAULT_NODE_NAME,
        help="node name whose private topics (~/panoptic ...) the outputs are written under",
    )
    parser.add_argument("--namespace", default="", help="node namespace for the output topics")
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="node parameter YAML (config/panoptic_depthlab.yaml format)",
    )
    parser.add_argument("--config", default=None, help="model YAML (default: the shipped default model)")
    parser.add_argument("--weights", default=None, help="weights .safetensors")
    parser.add_argument("--backend", default=None, help="torch | onnxruntime | tensorrt")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N")
    parser.add_argument("--input-size", default=None, help="network input HxW, e.g. 512x1024")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames per camera")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    prediction_export.add_arguments(parser)  # --export-predictions DIR (Cityscapes panoptic format)


# ------------------------------------------------------------------------------------------ parameters


def load_params_file(path: Path) -> dict[str, Any]:
    """``ros__parameters`` of a node YAML (``/**:`` or the node's name as the key)."""
    if not path.exists():
        raise FileNotFoundError(f"parameter file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key, section in data.items():
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return dict(section["ros__parameters"])
        raise ValueError(f"{path}: section {key!r} has no ros__parameters mapping")
    return {}


def node_params_from_args(args: argparse.Namespace) -> Any:
    """NodeParams from defaults, the params file and the explicit options (in that order)."""
    values: dict[str, Any] = {}
    if getattr(args, "params_file", None) is not None:
        values.update(load_params_file(args.params_file))
    if getattr(args, "config", None) is not None:
        values["model_config"] = str(args.config)
    if getattr(args, "weights", None) is not None:
        values["weights"] = str(args.weights)
    if getattr(args, "backend", None) is not None:
        values["backend"] = args.backend
    if getattr(args, "device", None) is not None:
        values["device"] = args.device
    if getattr(args, "input_size", None) is not None:
        values["input_height"], values["input_width"] = parse_size(args.input_size)
    known = NodeParams.__dataclass_fields__
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown node parameter(s) {', '.join(unknown)}")
    params = replace(NodeParams(), **values)
    problems = validate_params(params)
    if problems:
        raise ValueError("invalid parameters: " + "; ".join(problems))
    return params


def output_topic_names(node_name: str, namespace: str = "") -> dict[str, str]:
    """Output name -> absolute topic, as the node's private names (``~/x``) resolve."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {name: f"{ns}/{node_name}/{rel[2:]}" for name, rel in OUTPUT_TOPICS.items()}
    topics["label_info"] = f"{ns}/{node_name}/label_info"
    return topics


def camera_namespaces(image_topics: Sequence[str]) -> list[str]:
    """Output namespace of each camera: '' for a single camera (outputs ``/panoptic_depthlab/...``
    as before); with several, the image topic's parent (``/front/image_raw[/compressed]`` ->
    ``front``), as if one node ran per camera namespace. Where parents are empty or shared, the
    base image topic itself (``/left_image`` -> ``left_image``)."""
    if len(image_topics) == 1:
        return [""]
    bases = [base_image_topic(t) for t in image_topics]
    parents = [posixpath.dirname(b).strip("/") for b in bases]
    if all(parents) and len(set(parents)) == len(parents):
        return parents
    return [b.strip("/") for b in bases]


# ------------------------------------------------------------------------------------------ options


@dataclass
class BagEvalOptions:
    """Everything ``evaluate_bag`` needs besides the paths (plain data: picklable for worker processes).

    Per-camera topic lists (``camera_info_topics``, ``gt_*_topics``) have one entry per image topic,
    in the same order; '' = none for that camera; None = found automatically (see add_arguments).
    """

    image_topics: tuple[str, ...] = (IMAGE_TOPIC,)
    camera_info_topics: tuple[str, ...] | None = None
    gt_depth_topics: tuple[str, ...] | None = None
    gt_panoptic_topics: tuple[str, ...] | None = None
    storage: str = "mcap"
    metrics_out: Path | None = None  # None: OUT_BAG + "_metrics"
    copy_inputs: bool = False
    node_name: str = DEFAULT_NODE_NAME
    namespace: str = ""
    params: Any = None  # panoptic_depthlab_ros.params.NodeParams; None = the node's defaults
    max_frames: int | None = None  # per camera
    pairing_window_s: float = DEFAULT_PAIRING_WINDOW_S
    progress: bool = True

    def __post_init__(self) -> None:
        self.image_topics = tuple(self.image_topics)
        if not self.image_topics:
            raise ValueError("at least one image topic is needed")
        if len(set(self.image_topics)) != len(self.image_topics):
            raise ValueError(f"an image topic is given twice: {', '.join(self.image_topics)}")
        if self.storage not in STORAGES:
            raise ValueError(f"unknown output storage {self.storage!r}; choose one of {', '.join(STORAGES)}")
        if not self.pairing_window_s >= 0:
            raise ValueError(f"--pairing-window must be >= 0 s, got {self.pairing_window_s}")
        if self.max_frames is not None and self.max_frames < 0:
            raise ValueError(f"--max-frames must be >= 0, got {self.max_frames}")
        for name in ("camera_info_topics", "gt_depth_topics", "gt_panoptic_topics"):
            values = getattr(self, name)
            if values is None:
                continue
            values = tuple(values)
            if len(values) == 1 and values[0] == "":
                values = ("",) * len(self.image_topics)  # a single '' turns it off for every camera
            if len(values) != len(self.image_topics):
                option = "--" + name[:-1].replace("_", "-")
                raise ValueError(
                    f"{option} is given {len(values)} time(s) for {len(self.image_topics)} image topic(s); "
                    "give it once per --image-topic, in the same order ('' = none)"
                )
            setattr(self, name, values)


def options_from_args(args: argparse.Namespace) -> BagEvalOptions:
    """BagEvalOptions from the parsed command line (node parameters resolved here)."""

    def topics(value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        return (value,) if isinstance(value, str) else tuple(value)

    return BagEvalOptions(
        image_topics=topics(args.image_topic) or (IMAGE_TOPIC,),
        camera_info_topics=topics(args.camera_info_topic),
        gt_depth_topics=topics(args.gt_depth_topic),
        gt_panoptic_topics=topics(args.gt_panoptic_topic),
        storage=args.storage,
        metrics_out=args.metrics_out,
        copy_inputs=args.copy_inputs,
        node_name=args.node_name,
        namespace=args.namespace,
        params=node_params_from_args(args),
        max_frames=args.max_frames,
        pairing_window_s=getattr(args, "pairing_window", DEFAULT_PAIRING_WINDOW_S),
        progress=not args.no_progress,
    )


# ------------------------------------------------------------------------------------------ GT decoding


GT_IMAGE_ENCODINGS = ("32FC1", "16UC1", "mono16")


def gt_image_to_array(msg: Any, what: str) -> np.ndarray:
    """32FC1 / 16UC1 / mono16 Image -> (H, W) array in native byte order (a copy); ValueError if malformed.

    The core's one Image reader does the geometry/byte-order work; this only restricts the
    encodings a GT map may have and names the map in the error.
    """
    encoding = str(msg.encoding)
    if encoding not in GT_IMAGE_ENCODINGS:
        raise ValueError(
            f"{what}: encoding {encoding!r} not supported (expected one of {', '.join(GT_IMAGE_ENCODINGS)})"
        )
    try:
        return np.array(image_msg_to_array(msg)[:, :, 0])
    except ValueError as exc:  # ImageConversionError: step, data length, size
        raise ValueError(f"{what}: {exc}") from exc


def gt_depth_m(msg: Any) -> np.ndarray:
    """GT depth in metres, NaN where invalid (32FC1: non-finite or <= 0; 16UC1: 0)."""
    arr = gt_image_to_array(msg, "GT depth")
    if arr.dtype.kind == "u":
        depth = arr.astype(np.float32) / 1000.0
        depth[arr == 0] = np.nan
    else:
        depth = arr.astype(np.float32)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def gt_panoptic_ids(msg: Any) -> np.ndarray:
    """GT panoptic 16UC1 (65535 void) -> int32 ids with -1 void."""
    if str(msg.encoding) != "16UC1":
        raise ValueError(
            f"GT panoptic must be 16UC1 (train_id*1000+instance, 65535 void), got {msg.encoding!r}"
        )
    return panoptic_from_16u(gt_image_to_array(msg, "GT panoptic"))


# ------------------------------------------------------------------------------------------ reports


@dataclass
class CameraReport:
    """One camera of a run: its topics, frames, how they were paired, its metrics."""

    image_topic: str
    camera_info_topic: str  # '' = none
    gt_depth_topic: str
    gt_panoptic_topic: str
    output_namespace: str  # the outputs are under /<namespace>/<node name>/...
    frames: int = 0  # processed (outputs written)
    frames_with_gt: int = 0
    # CameraInfo pairing of the processed frames: its own (same stamp), the latest earlier one, none
    camera_info_exact: int = 0
    camera_info_fallback: int = 0
    camera_info_none: int = 0
    camera_info_unusable: dict[str, int] = field(default_factory=dict)  # K not used: why -> frames
    gt_missing: int = 0  # frames whose GT did not arrive within the window (GT topics configured)
    gt_rejected: dict[str, int] = field(default_factory=dict)  # GT present but unusable: why -> frames
    rejected: dict[str, int] = field(default_factory=dict)  # images the node rejects: reason -> frames
    summary: dict | None = None  # Evaluator.summary() when the camera has GT (+ "tracking" with tracking on)
    gt_tracks_topic: str = ""  # exact motion (a drive bag's /gt/tracks): velocity and TTC errors


@dataclass
class BagReport:
    """What ``evaluate_bag`` did: per camera and in total. ``exit_code``: what the CLI exits with."""

    input_bag: str
    output_bag: str
    metrics_dir: str
    cameras: dict[str, CameraReport] = field(default_factory=dict)  # by image topic, in option order
    output_counts: dict[str, int] = field(default_factory=dict)  # messages written per output topic
    per_frame: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the bag broke off: where, and what was kept
    interrupted: bool = False

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.cameras.values())

    @property
    def frames_with_gt(self) -> int:
        return sum(c.frames_with_gt for c in self.cameras.values())

    @property
    def rejected(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for camera in self.cameras.values():
            for reason, n in camera.rejected.items():
                total[reason] = total.get(reason, 0) + n
        return total

    @property
    def summary(self) -> dict | None:
        """The metrics of a single-camera run (several cameras: see ``cameras[topic].summary``)."""
        if len(self.cameras) != 1:
            return None
        return next(iter(self.cameras.values())).summary

    @property
    def complete(self) -> bool:
        return self.error is None and not self.interrupted

    @property
    def frames_per_second(self) -> float | None:
        return self.frames / self.seconds if self.seconds > 0 else None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_DAMAGED if self.error is not None else EXIT_OK

    def to_dict(self, per_frame: bool = True) -> dict[str, Any]:
        """JSON-ready: what per_frame.json holds (the metrics summaries are in metrics.json)."""
        out = {
            "input_bag": self.input_bag,
            "output_bag": self.output_bag,
            "metrics_dir": self.metrics_dir,
            "frames": self.frames,
            "frames_with_gt": self.frames_with_gt,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "frames_per_second": round(self.frames_per_second, 3) if self.frames_per_second else None,
            "complete": self.complete,
            "error": self.error,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "cameras": {
                topic: {k: v for k, v in asdict(camera).items() if k != "summary"}
                for topic, camera in self.cameras.items()
            },
            "warnings": list(self.warnings),
            "output_messages": dict(self.output_counts),
        }
        if per_frame:
            out["per_frame"] = list(self.per_frame)
        return out


BagEvalResult = BagReport  # the earlier name


# ------------------------------------------------------------------------------------------ the run


@dataclass
class PendingFrame:
    """An image waiting for its CameraInfo and GT (matched by header stamp) or for the window to pass."""

    camera: _Camera
    index: int  # per camera
    log_time_ns: int
    stamp_ns: int
    raw: bytes


class StampStore:
    """CameraInfo/GT messages (raw CDR + bag time) by header stamp; keeps the newest ``size`` stamps."""

    def __init__(self, size: int = PAIRING_STORE_SIZE) -> None:
        self.size = size
        self._items: dict[int, tuple[bytes, int]] = {}
        self._stamps: list[int] = []  # sorted

    def __contains__(self, stamp: int) -> bool:
        return stamp in self._items

    def put(self, stamp: int, raw: bytes, log_time_ns: int) -> None:
        if stamp not in self._items:
            bisect.insort(self._stamps, stamp)
        self._items[stamp] = (raw, log_time_ns)
        while len(self._stamps) > self.size:
            del self._items[self._stamps.pop(0)]

    def get(self, stamp: int) -> tuple[bytes, int] | None:
        return self._items.get(stamp)

    def pop(self, stamp: int) -> tuple[bytes, int] | None:
        item = self._items.pop(stamp, None)
        if item is not None:
            self._stamps.remove(stamp)
        return item

    def drop_older_than(self, log_time_ns: int) -> None:
        """Forget messages recorded before ``log_time_ns`` (bag time): no image can claim them now."""
        old = [stamp for stamp, (_, log_time) in self._items.items() if log_time < log_time_ns]
        for stamp in old:
            self.pop(stamp)

    def latest_before(self, stamp: int) -> tuple[int, bytes, int] | None:
        """(stamp, raw, bag time) of the newest message stamped before ``stamp``."""
        i = bisect.bisect_left(self._stamps, stamp)
        if i == 0:
            return None
        found = self._stamps[i - 1]
        raw, log_time = self._items[found]
        return found, raw, log_time


@dataclass
class _Camera:
    report: CameraReport
    image_cls: Any
    out_topics: dict[str, str]
    evaluator: Any = None
    sequence: Any = None  # distance_tracking.SequenceScorer: tracking metrics against the GT ids
    infos: StampStore = field(default_factory=StampStore)
    gt: dict[str, StampStore] = field(default_factory=dict)  # GT topic -> its messages
    frames_read: int = 0
    wrote_label_info: bool = False
    warned: set[str] = field(default_factory=set)


def make_processor(params: Any) -> Any:
    """The node's FrameProcessor for ``params`` (NodeParams); reuse it across bags (model loaded once).
    With the node's distance source and tracker (one tracker per camera, reset at each bag's start)."""
    tracking = make_distance_tracking(params)  # before the model: a missing camera mount fails at once

    try:
        predictor = load_predictor(params)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}; the shipped default model may be missing: pass --config and --weights"
        ) from exc
    return FrameProcessor(
        predictor,
        message_options(params),
        prefer_rectified=params.prefer_rectified,
        max_pixels=params.max_input_pixels,
        tracking=tracking,
    )


def _resolve_topic(reader: Any, requested: str | None, default: str, types: tuple[str, ...], option: str) -> str:
    """'' = off; None = the default when the bag has it; anything else must exist with the right type."""
    if requested == "":
        return ""
    if requested is None:
        info = reader.topics.get(default) if default else None
        if info is None or info.msgtype not in types:
            return ""
        requested = default
    find_topic(reader, requested, types, option)
    return requested


class BagEvaluator:
    """Runs one bag through FrameProcessor; call ``run()``. Inputs are rclpy messages throughout.

    ``BagEvaluator(IN, OUT, options)`` or ``BagEvaluator(args)`` (a parsed command line).
    ``processor``: a FrameProcessor to reuse (else one is built from ``options.params``).
    """

    def __init__(
        self,
        in_bag: argparse.Namespace | str | Path,
        out_bag: str | Path | None = None,
        options: BagEvalOptions | None = None,
        processor: Any = None,
    ) -> None:
        if isinstance(in_bag, argparse.Namespace):
            args = in_bag
            in_bag, out_bag, options = args.in_bag, args.out, options_from_args(args)
        if out_bag is None:
            raise ValueError("an output bag path is needed")
        self.in_bag = Path(in_bag)
        self.out_bag = Path(out_bag)
        self.options = options if options is not None else BagEvalOptions()
        if self.options.params is None:
            self.options = replace(self.options, params=NodeParams())
        self.params = self.options.params
        self._processor = processor
        self.metrics_dir = (
            Path(self.options.metrics_out)
            if self.options.metrics_out
            else self.out_bag.with_name(self.out_bag.name + "_metrics")
        )

    def _cameras(self, reader: Any, report: BagReport) -> list[_Camera]:
        """Resolve every camera's topics against the bag (errors list the bag's topics)."""
        from sensor_msgs.msg import CompressedImage, Image

        opts = self.options
        n = len(opts.image_topics)
        namespaces = camera_namespaces(opts.image_topics)
        cameras = []
        for i, image_topic in enumerate(opts.image_topics):
            find_topic(reader, image_topic, IMAGE_TYPES, "--image-topic")
            info_topic = ""
            if self.params.use_camera_info:
                requested = None if opts.camera_info_topics is None else opts.camera_info_topics[i]
                beside = camera_info_topic_beside(image_topic)
                info_topic = _resolve_topic(reader, requested, beside, CAMERA_INFO_TYPES, "--camera-info-topic")
                if requested is None and not info_topic:
                    self._warn(
                        report,
                        f"no CameraInfo topic beside {image_topic} (looked for {beside}): its frames get no "
                        "detections_3d/markers/camera_info; name one with --camera-info-topic",
                    )
            gt_topics = []
            for option, given, default in (
                ("--gt-depth-topic", opts.gt_depth_topics, GT_DEPTH_TOPIC),
                ("--gt-panoptic-topic", opts.gt_panoptic_topics, GT_PANOPTIC_TOPIC),
            ):
                requested = None if given is None else given[i]
                gt_topics.append(
                    _resolve_topic(reader, requested, default if n == 1 else "", GT_IMAGE_TYPES, option)
                )
            depth_topic, pan_topic = gt_topics
            # exact motion: a single camera with GT ids and the drive bag's /gt/tracks (velocity, TTC)
            motion_topic = ""
            if pan_topic and n == 1 and self.params.tracking:
                motion_topic = _resolve_topic(reader, None, GT_TRACKS_TOPIC, (GT_TRACKS_TYPE,), "--gt-tracks-topic")
                if motion_topic:
                    gt_topics.append(motion_topic)
            namespace = "/".join(p for p in (opts.namespace.strip("/"), namespaces[i]) if p)
            msgtype = reader.topics[image_topic].msgtype
            camera = _Camera(
                report=CameraReport(image_topic, info_topic, depth_topic, pan_topic, namespace,
                                    gt_tracks_topic=motion_topic),
                image_cls=Image if msgtype.endswith("/Image") else CompressedImage,
                out_topics=output_topic_names(opts.node_name, namespace),
                gt={t: StampStore() for t in gt_topics if t},
            )
            cameras.append(camera)
        # An empty image topic is worth a line; all of them empty is nothing to evaluate.
        counts = {c.report.image_topic: reader.topics[c.report.image_topic].msgcount for c in cameras}
        if not any(counts.values()):
            salvaged = getattr(reader, "reason", None)
            raise NoImageMessages(
                f"no image messages on {', '.join(counts)} in bag {self.in_bag}"
                + (f" before the damage ({salvaged})" if salvaged else "")
                + "; nothing to evaluate"
            )
        for topic, count in counts.items():
            if not count:
                self._warn(report, f"{topic} holds no messages in bag {self.in_bag}")
        return cameras

    def _make_processor(self) -> Any:
        if self._processor is None:
            self._processor = make_processor(self.params)
            self._owns_processor = True
        return self._processor

    def _warn(self, report: BagReport, text: str, bar: Any = None) -> None:
        report.warnings.append(text)
        line = f"bag-eval: warning: {text}"
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def run(
        self, on_frame: Callable[[CameraReport, PendingFrame, Any], None] | None = None
    ) -> BagReport:
        """Evaluate the bag; ``on_frame(camera, frame, processed)`` is called after each frame's
        outputs are written (``processed``: the ProcessedFrame, with ``result`` the FrameResult)."""
        from panoptic_depthlab_msgs.msg import TrackedSegmentArray
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CameraInfo, Image

        opts = self.options
        report = BagReport(str(self.in_bag), str(self.out_bag), str(self.metrics_dir))
        self._owns_processor = False
        if self.out_bag.exists():  # before the model is loaded
            raise ValueError(f"output bag {self.out_bag} already exists; remove it or choose another path")
        reader = open_bag(self.in_bag)
        writer = None
        bar = None
        t_start = time.perf_counter()
        window_ns = int(round(opts.pairing_window_s * 1e9))
        try:
            cameras = self._cameras(reader, report)
            report.cameras = {c.report.image_topic: c.report for c in cameras}
            processor = self._make_processor()
            # Distances are scored with the statistic and depth range the predictor itself used.
            segments_cfg = getattr(getattr(processor.predictor, "cfg", None), "segments", None)
            tracking = getattr(processor, "tracking", None)
            if tracking is not None:
                tracking.reset()  # a new bag: no track continues from the previous one
            for camera in cameras:
                if camera.report.gt_panoptic_topic:
                    camera.evaluator = Evaluator(segments=segments_cfg)
                    if tracking is not None and tracking.tracking:
                        camera.sequence = SequenceScorer(camera.report.image_topic,
                                                         self.params.tracking_corridor_half_width_m)
            # topic -> [(camera, role)]: role 'image', 'info' or a GT topic
            routes: dict[str, list[tuple[_Camera, str]]] = {}
            for camera in cameras:
                routes.setdefault(camera.report.image_topic, []).append((camera, "image"))
                if camera.report.camera_info_topic:
                    routes.setdefault(camera.report.camera_info_topic, []).append((camera, "info"))
                for topic in camera.gt:
                    routes.setdefault(topic, []).append((camera, topic))
            connections = [] if opts.copy_inputs else [c for t in routes for c in reader.topics[t].connections]
            writer = BagWriter(self.out_bag, opts.storage)
            serialize = CdrSerializer(writer.typestore)
            total = 0
            for camera in cameras:
                count = reader.topics[camera.report.image_topic].msgcount
                total += count if opts.max_frames is None else min(count, opts.max_frames)
            bar = tqdm(total=total, unit="frame", desc="bag-eval", disable=not opts.progress, dynamic_ncols=True)
            source_connections = {c.topic: c for c in reader.connections}
            uncopyable: set[str] = set()
            gt_topics = {topic for camera in cameras for topic in camera.gt}
            pending: deque[PendingFrame] = deque()  # every camera's images, in bag order
            latest_log_ns = -(2**63)

            def decode(raw: bytes, cls: Any, topic: str, log_time_ns: int) -> Any:
                try:
                    return deserialize_message(raw, cls)
                except Exception as exc:  # rclpy raises several types for bad CDR
                    raise BagReadError(
                        f"bag {self.in_bag} is corrupt: the {topic} message at t={format_ns(log_time_ns)} "
                        f"cannot be deserialized as {cls.__name__}: {exc}"
                    ) from exc

            def warn_once(camera: _Camera, key: str, text: str) -> None:
                if key not in camera.warned:
                    camera.warned.add(key)
                    self._warn(report, text, bar)

            def camera_info_for(camera: _Camera, frame: PendingFrame) -> tuple[Any, str]:
                topic = camera.report.camera_info_topic
                if not topic:
                    return None, "none"
                exact = camera.infos.get(frame.stamp_ns)
                if exact is not None:
                    return decode(exact[0], CameraInfo, topic, exact[1]), "exact"
                earlier = camera.infos.latest_before(frame.stamp_ns)
                where = f"{camera.report.image_topic} frame {frame.index} (stamp {format_ns(frame.stamp_ns)})"
                if earlier is None:
                    warn_once(
                        camera,
                        "none",
                        f"{where}: no CameraInfo on {topic} with its stamp within {opts.pairing_window_s} s "
                        "of bag time and none before it: no 3D outputs for it (further such frames are "
                        "counted in per_frame.json, cameras.camera_info_none)",
                    )
                    return None, "none"
                stamp, raw, log_time = earlier
                warn_once(
                    camera,
                    "fallback",
                    f"{where}: no CameraInfo on {topic} with its stamp within {opts.pairing_window_s} s of "
                    f"bag time; using the latest earlier one (stamp {format_ns(stamp)}); further such frames "
                    "are counted in per_frame.json, cameras.camera_info_fallback",
                )
                return decode(raw, CameraInfo, topic, log_time), "fallback"

            def score(camera: _Camera, frame: PendingFrame, result: Any, row: dict[str, Any],
                      processed: Any = None) -> None:
                cam = camera.report
                found = {t: store.pop(frame.stamp_ns) for t, store in camera.gt.items()}
                if any(v is None for v in found.values()):
                    cam.gt_missing += 1
                    row["gt"] = "missing"
                    return
                reason, problem = "", ""
                pan_raw, pan_log = found[cam.gt_panoptic_topic]
                gt_depth = None
                try:
                    reason = "gt_panoptic_unreadable"
                    gt_pan = gt_panoptic_ids(decode(pan_raw, Image, cam.gt_panoptic_topic, pan_log))
                    if cam.gt_depth_topic:
                        reason = "gt_depth_unreadable"
                        depth_raw, depth_log = found[cam.gt_depth_topic]
                        gt_depth = gt_depth_m(decode(depth_raw, Image, cam.gt_depth_topic, depth_log))
                    reason = "gt_size_mismatch"
                    sizes = {"the image": (result.height, result.width), "GT panoptic": gt_pan.shape}
                    if gt_depth is not None:
                        sizes["GT depth"] = gt_depth.shape
                    if len(set(sizes.values())) > 1:
                        problem = ", ".join(f"{k} {w}x{h}" for k, (h, w) in sizes.items())
                except BagReadError:
                    raise
                except ValueError as exc:
                    problem = str(exc)
                if problem:
                    cam.gt_rejected[reason] = cam.gt_rejected.get(reason, 0) + 1
                    row["gt"] = "rejected"
                    warn_once(
                        camera,
                        reason,
                        f"{cam.image_topic} frame {frame.index} (stamp {format_ns(frame.stamp_ns)}): GT not "
                        f"used: {problem} (further such frames are counted in per_frame.json, "
                        f"cameras.gt_rejected.{reason})",
                    )
                    return
                row.update(camera.evaluator.add_frame(result, gt_pan, gt_depth=gt_depth))
                if camera.sequence is not None and processed is not None and processed.tracked is not None:
                    motion = None
                    if cam.gt_tracks_topic:
                        raw, log_time = found[cam.gt_tracks_topic]
                        motion = motion_from_gt_tracks(
                            decode(raw, TrackedSegmentArray, cam.gt_tracks_topic, log_time), frame.index)
                    camera.sequence.add(processed.tracked, gt_pan, gt_depth, frame.stamp_ns, motion)
                row["gt"] = "paired"
                cam.frames_with_gt += 1

            def finish(frame: PendingFrame) -> None:
                camera = frame.camera
                cam = camera.report
                image_msg = decode(frame.raw, camera.image_cls, cam.image_topic, frame.log_time_ns)
                info_msg, pairing = camera_info_for(camera, frame)
                try:
                    processed = processor.process(image_msg, info_msg, stream=cam.image_topic)
                except ValueError as exc:  # ImageConversionError: the node rejects the frame too
                    reason = getattr(exc, "reason", type(exc).__name__)
                    cam.rejected[reason] = cam.rejected.get(reason, 0) + 1
                    bar.write(
                        f"bag-eval: {cam.image_topic} frame {frame.index} (stamp {frame.stamp_ns}) rejected: {exc}",
                        file=sys.stderr,
                    )
                    bar.update(1)
                    return
                setattr(cam, f"camera_info_{pairing}", getattr(cam, f"camera_info_{pairing}") + 1)
                if processed.camera_info_error is not None:
                    why = getattr(processed.camera_info_error, "reason", type(processed.camera_info_error).__name__)
                    cam.camera_info_unusable[why] = cam.camera_info_unusable.get(why, 0) + 1
                    warn_once(
                        camera,
                        "unusable:" + why,
                        f"{cam.image_topic} frame {frame.index}: CameraInfo not used: "
                        f"{processed.camera_info_error} (counted in cameras.camera_info_unusable)",
                    )
                if self.params.publish_label_info and not camera.wrote_label_info:
                    msg = label_info(image_msg.header, self.params.min_detection_score)
                    topic = camera.out_topics["label_info"]
                    writer.add_topic(topic, msgtype_of(msg), transient_local=True)
                    writer.write(topic, msgtype_of(msg), frame.log_time_ns, serialize(msg))
                    camera.wrote_label_info = True
                # A fixed order: the processor fills its dict from two threads.
                names = [n for n in OUTPUT_NAMES if n in processed.messages]
                names += sorted(set(processed.messages) - set(names))
                for name in names:
                    msg = processed.messages[name]
                    writer.write(camera.out_topics[name], msgtype_of(msg), frame.log_time_ns, serialize(msg))
                row: dict[str, Any] = {
                    "camera": cam.image_topic,
                    "index": frame.index,
                    "stamp_ns": frame.stamp_ns,
                    "log_time_ns": frame.log_time_ns,
                    "camera_info": pairing,
                    "segments": len(processed.result.segments),
                    "inference_ms": round(processed.timings_ms.get("inference", 0.0), 2),
                }
                if processed.tracks is not None:
                    row["tracks"] = sum(t is not None for t in processed.tracks)
                if camera.evaluator is not None:
                    score(camera, frame, processed.result, row, processed)
                report.per_frame.append(row)
                cam.frames += 1
                if on_frame is not None:
                    on_frame(cam, frame, processed)
                bar.update(1)

            def ready(frame: PendingFrame) -> bool:
                camera = frame.camera
                if latest_log_ns - frame.log_time_ns > window_ns:
                    return True
                if camera.report.camera_info_topic and frame.stamp_ns not in camera.infos:
                    return False
                return all(frame.stamp_ns in store for store in camera.gt.values())

            def done_reading() -> bool:
                return (
                    opts.max_frames is not None
                    and not opts.copy_inputs
                    and not pending
                    and all(c.frames_read >= opts.max_frames for c in cameras)
                )

            try:
                if not done_reading():
                    for message in iter_bag_messages(reader, connections):
                        if opts.copy_inputs and message.topic not in uncopyable:
                            src = source_connections.get(message.topic)
                            try:
                                writer.add_topic(
                                    message.topic,
                                    message.msgtype,
                                    msgdef=src.msgdef.data if src else None,
                                    rihs01=src.digest if src else None,
                                )
                                writer.write(message.topic, message.msgtype, message.log_time_ns, message.raw)
                            except ValueError as exc:
                                uncopyable.add(message.topic)
                                self._warn(report, f"--copy-inputs: {message.topic} not copied: {exc}", bar)
                        if message.topic in routes:  # (so --copy-inputs pairs exactly as without)
                            latest_log_ns = max(latest_log_ns, message.log_time_ns)
                        for camera, role in routes.get(message.topic, ()):
                            try:
                                stamp = stamp_from_cdr(message.raw)
                            except ValueError as exc:
                                raise BagReadError(
                                    f"bag {self.in_bag} is corrupt: the {message.topic} message #{message.index} "
                                    f"at t={format_ns(message.log_time_ns)}: {exc}"
                                ) from exc
                            if role == "image":
                                if opts.max_frames is not None and camera.frames_read >= opts.max_frames:
                                    continue
                                pending.append(
                                    PendingFrame(camera, camera.frames_read, message.log_time_ns, stamp, message.raw)
                                )
                                camera.frames_read += 1
                            elif role == "info":
                                camera.infos.put(stamp, message.raw, message.log_time_ns)
                            else:
                                camera.gt[role].put(stamp, message.raw, message.log_time_ns)
                        while pending and ready(pending[0]):
                            finish(pending.popleft())
                        if message.topic in gt_topics:
                            # GT pairs within the window on either side of its image: what is older
                            # than that for the oldest image still to come or waiting is dropped (GT
                            # maps are large, and GT of frames without an image would pile up).
                            oldest = pending[0].log_time_ns if pending else latest_log_ns
                            for camera in cameras:
                                for store in camera.gt.values():
                                    store.drop_older_than(oldest - window_ns)
                        if done_reading():
                            break
                while pending:
                    finish(pending.popleft())
            except BagReadError as exc:
                try:
                    while pending:  # images read before the damage are still processed
                        frame = pending.popleft()
                        try:
                            finish(frame)
                        except BagReadError as unreadable:  # that image is damaged too: skipped
                            self._warn(report, str(unreadable), bar)
                except KeyboardInterrupt:
                    report.interrupted = True
                report.error = f"{exc}; output bag {self.out_bag} holds the {report.frames} frame(s) before it"
            except KeyboardInterrupt:
                report.interrupted = True
            for camera in cameras:
                if camera.evaluator is not None and camera.evaluator.frames:
                    camera.report.summary = camera.evaluator.summary()
                    if camera.sequence is not None and camera.sequence.frames:
                        camera.report.summary["tracking"] = camera.sequence.result()
                cam = camera.report
                if cam.camera_info_fallback or (cam.camera_info_topic and cam.camera_info_none):
                    self._warn(
                        report,
                        f"{cam.image_topic}: CameraInfo paired by stamp for {cam.camera_info_exact} frame(s), "
                        f"the latest earlier one used for {cam.camera_info_fallback}, none for "
                        f"{cam.camera_info_none}",
                        bar,
                    )
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
                report.output_counts = dict(writer.counts)
            reader.close()
            if self._owns_processor:
                self._processor.close()
                self._processor = None
        report.seconds = time.perf_counter() - t_start
        self.write_metrics(report)
        return report

    def write_metrics(self, report: BagReport) -> None:
        """metrics.json/.md (one camera: in the metrics directory; several: a subdirectory each,
        named like the camera's output namespace) and per_frame.json (everything, per camera)."""
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        for camera in report.cameras.values():
            if camera.summary is not None:
                out_dir = self.metrics_dir if len(report.cameras) == 1 else self.metrics_dir / camera_dir_name(camera)
                _, md_path = write_report(camera.summary, out_dir)
                if "tracking" in camera.summary:  # tracking, video panoptic, motion and distance bands
                    with md_path.open("a") as md:
                        md.write("\n## Tracking (track ids over time)\n\n"
                                 + sequence_markdown(camera.summary["tracking"]))
        info = {**report.to_dict(), "pairing_window_s": self.options.pairing_window_s}
        (self.metrics_dir / "per_frame.json").write_text(
            json.dumps(info, indent=2, default=_json_default) + "\n"
        )


def camera_dir_name(camera: CameraReport) -> str:
    """Metrics subdirectory of a camera in a several-camera run: its output namespace, '/' -> '_'."""
    return camera.output_namespace.strip("/").replace("/", "_") or "camera"


def evaluate_bag(
    input_path: str | Path,
    output_path: str | Path,
    options: BagEvalOptions | None = None,
    *,
    processor: Any = None,
    on_frame: Callable[[CameraReport, PendingFrame, Any], None] | None = None,
) -> BagReport:
    """Evaluate one bag: output bag at ``output_path``, metrics in ``options.metrics_out`` (default
    ``<output_path>_metrics``). The function behind ``bag-eval``, for library and fleet use.

    Returns the BagReport also when the bag breaks off (``report.error`` says where; the frames before
    it are in the output bag and the metrics; ``report.exit_code`` 1) or on Ctrl-C (``interrupted``).
    Raises, before writing anything, ``FileNotFoundError`` (no such bag / model), ``BagReadError``
    (a ValueError: not a bag, or nothing readable), ``NoImageMessages`` (a ValueError: the image
    topics hold no messages) and ``ValueError`` for options the bag does not fit (a topic it lacks;
    the message lists the bag's topics). The output bag must not exist yet.
    ``processor``: a FrameProcessor (``make_processor(params)``) reused across calls; by default one
    is built from ``options.params`` and closed afterwards.
    """
    return BagEvaluator(input_path, output_path, options, processor=processor).run(on_frame=on_frame)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def print_report(report: BagReport) -> None:
    """The terminal summary of a run."""
    rate = report.frames_per_second or 0.0
    print(
        f"bag-eval: {report.frames} frame(s) in {report.seconds:.1f} s ({rate:.2f} frames/s); "
        f"output bag {report.output_bag}; metrics in {report.metrics_dir}"
    )
    for topic, camera in report.cameras.items():
        if len(report.cameras) > 1 or camera.camera_info_fallback or camera.camera_info_none:
            print(
                f"bag-eval: {topic}: {camera.frames} frame(s), CameraInfo exact {camera.camera_info_exact} / "
                f"fallback {camera.camera_info_fallback} / none {camera.camera_info_none}, "
                f"with GT {camera.frames_with_gt}, outputs under /{camera.output_namespace}"
            )
    if report.rejected:
        print(f"bag-eval: rejected frames: {report.rejected}")

    summaries = {t: c.summary for t, c in report.cameras.items() if c.summary is not None}
    for topic, summary in summaries.items():
        if len(report.cameras) > 1:
            print(f"\n{topic}:")
        print(markdown_report(summary))
    if not summaries and report.frames:
        print("bag-eval: no GT topics, so no metrics (only the output bag)")


def run(args: argparse.Namespace) -> int:
    with sigterm_as_interrupt():
        evaluator = BagEvaluator(args)
        export_settings = prediction_export.settings_from_args(args)
        export = prediction_export.BagPredictionExport(export_settings) if export_settings else None
        try:
            report = evaluator.run(on_frame=export.on_frame if export else None)
        finally:
            if export is not None:
                print(f"bag-eval: predictions of {export.frames} frame(s) in {export.close()}")
    print_report(report)
    if report.interrupted:
        print(f"bag-eval: interrupted; output bag {report.output_bag} closed and readable", file=sys.stderr)
    elif report.error is not None:
        print(f"bag-eval: error: {report.error}", file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab bag-eval"))
