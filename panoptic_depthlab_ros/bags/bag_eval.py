"""``panoptic-depthlab bag-eval IN_BAG --out OUT_BAG``: the node's processing over a bag, offline.

Input messages are read from the bag as CDR bytes and deserialized with rclpy into the message
classes the node receives; each frame goes through the node's own ``FrameProcessor`` (decode, K,
Predictor, ``build_messages``); every output is serialized by rclpy and written, with the input's
bag time and header stamp, under the topic the live node publishes it on. So the output bag is what
``ros2 bag record`` of the node would hold, without dropped frames, as fast as the backend runs.

With ground-truth topics (depth 32FC1 metres or 16UC1 millimetres, panoptic 16UC1 in the node's
encoding) every frame is also scored by the evaluation module's ``Evaluator`` (the one ``panoptic-
depthlab eval`` uses): ``metrics.json`` + ``metrics.md`` (same format as eval) and ``per_frame.json``.

A read failure (corrupt or truncated bag) or Ctrl-C still leaves a closed, readable output bag and
the metrics of the frames done so far.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .common import STORAGES
from .drive_bag import CAMERA_INFO_TOPIC, GT_DEPTH_TOPIC, GT_PANOPTIC_TOPIC, IMAGE_TOPIC, panoptic_from_16u

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPES = ("sensor_msgs/msg/CameraInfo",)
GT_IMAGE_TYPES = ("sensor_msgs/msg/Image",)
DEFAULT_NODE_NAME = "panoptic_depthlab"
# An image waits for its GT (matched by header stamp) until this many newer images have arrived.
GT_LOOKAHEAD_FRAMES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_bag", type=Path, help="input rosbag2 bag (mcap or sqlite3; directory or file)")
    parser.add_argument("--out", type=Path, required=True, help="output bag directory to create")
    parser.add_argument(
        "--storage", choices=STORAGES, default="mcap", help="output bag storage (default mcap)"
    )
    parser.add_argument(
        "--image-topic", default=IMAGE_TOPIC, help=f"Image or CompressedImage ({IMAGE_TOPIC})"
    )
    parser.add_argument(
        "--camera-info-topic",
        default=None,
        help=f"CameraInfo topic (default {CAMERA_INFO_TOPIC} when present; '' = none)",
    )
    parser.add_argument(
        "--gt-depth-topic",
        default=None,
        help=f"GT depth, 32FC1 m or 16UC1 mm (default {GT_DEPTH_TOPIC} when present; '' = none)",
    )
    parser.add_argument(
        "--gt-panoptic-topic",
        default=None,
        help=f"GT panoptic 16UC1 (default {GT_PANOPTIC_TOPIC} when present; '' = none)",
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
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------ parameters


def load_params_file(path: Path) -> dict[str, Any]:
    """``ros__parameters`` of a node YAML (``/**:`` or the node's name as the key)."""
    import yaml

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
    from panoptic_depthlab_ros.params import NodeParams, validate_params

    from .drive_bag import parse_size

    values: dict[str, Any] = {}
    if args.params_file is not None:
        values.update(load_params_file(args.params_file))
    if args.config is not None:
        values["model_config"] = str(args.config)
    if args.weights is not None:
        values["weights"] = str(args.weights)
    if args.backend is not None:
        values["backend"] = args.backend
    if args.device is not None:
        values["device"] = args.device
    if args.input_size is not None:
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
    from panoptic_depthlab_ros.messages import OUTPUT_TOPICS

    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {name: f"{ns}/{node_name}/{rel[2:]}" for name, rel in OUTPUT_TOPICS.items()}
    topics["label_info"] = f"{ns}/{node_name}/label_info"
    return topics


# ------------------------------------------------------------------------------------------ GT decoding


def gt_image_to_array(msg: Any, what: str) -> np.ndarray:
    """32FC1 / 16UC1 / mono16 Image -> (H, W) array in native byte order (a copy); ValueError if malformed."""
    dtypes = {"32FC1": "f4", "16UC1": "u2", "mono16": "u2"}
    encoding = str(msg.encoding)
    if encoding not in dtypes:
        raise ValueError(f"{what}: encoding {encoding!r} not supported (expected one of {', '.join(dtypes)})")
    dtype = np.dtype((">" if msg.is_bigendian else "<") + dtypes[encoding])
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0 or step < width * dtype.itemsize:
        raise ValueError(f"{what}: bad geometry {width}x{height}, step {step}")
    buf = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if buf.size < step * height:
        raise ValueError(f"{what}: data has {buf.size} bytes, step*height = {step * height} needed")
    rows = buf[: step * height].reshape(height, step)[:, : width * dtype.itemsize]
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(dtype.newbyteorder("="))


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


# ------------------------------------------------------------------------------------------ the run


@dataclass
class PendingFrame:
    """An image waiting for its GT; GT and CameraInfo are matched by header stamp."""

    index: int
    log_time_ns: int
    stamp_ns: int
    raw: bytes
    camera_info: Any = None  # the latest CameraInfo when the image arrived


@dataclass
class BagEvalResult:
    frames: int = 0
    frames_with_gt: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    output_counts: dict[str, int] = field(default_factory=dict)
    summary: dict | None = None
    per_frame: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False


def _resolve_topic(
    reader: Any, requested: str | None, default: str, types: tuple[str, ...], option: str
) -> str:
    """'' = off; None = the default when the bag has it; anything else must exist with the right type."""
    from .common import find_topic

    if requested == "":
        return ""
    if requested is None:
        if default not in reader.topics:
            return ""
        requested = default
    find_topic(reader, requested, types, option)
    return requested


class BagEvaluator:
    """Runs one bag through FrameProcessor; call ``run()``. Inputs are rclpy messages throughout."""

    def __init__(self, args: argparse.Namespace, processor: Any = None, params: Any = None) -> None:
        self.args = args
        self.params = params if params is not None else node_params_from_args(args)
        self._processor = processor
        self.metrics_dir = Path(args.metrics_out) if args.metrics_out else Path(f"{args.out}_metrics")

    def _make_processor(self) -> Any:
        from panoptic_depthlab_ros.processing import FrameProcessor, load_predictor, message_options

        if self._processor is None:
            try:
                predictor = load_predictor(self.params)
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"{exc}; the shipped default model may be missing: pass --config and --weights"
                ) from exc
            self._processor = FrameProcessor(
                predictor,
                message_options(self.params),
                prefer_rectified=self.params.prefer_rectified,
                max_pixels=self.params.max_input_pixels,
            )
        return self._processor

    def run(self) -> BagEvalResult:
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from tqdm import tqdm

        from panoptic_depthlab_core.eval.evaluator import Evaluator
        from panoptic_depthlab_ros.image_publisher import serialize_image
        from panoptic_depthlab_ros.messages import label_info

        from .common import (
            BagReadError,
            BagWriter,
            find_topic,
            format_ns,
            iter_bag_messages,
            msgtype_of,
            open_bag,
            stamp_from_cdr,
        )

        args = self.args
        result = BagEvalResult()
        reader = open_bag(args.in_bag)
        writer = None
        bar = None
        t_start = time.perf_counter()
        try:
            find_topic(reader, args.image_topic, IMAGE_TYPES, "--image-topic")
            info_topic = (
                ""
                if not self.params.use_camera_info
                else _resolve_topic(
                    reader,
                    args.camera_info_topic,
                    CAMERA_INFO_TOPIC,
                    CAMERA_INFO_TYPES,
                    "--camera-info-topic",
                )
            )
            depth_topic = _resolve_topic(
                reader, args.gt_depth_topic, GT_DEPTH_TOPIC, GT_IMAGE_TYPES, "--gt-depth-topic"
            )
            pan_topic = _resolve_topic(
                reader, args.gt_panoptic_topic, GT_PANOPTIC_TOPIC, GT_IMAGE_TYPES, "--gt-panoptic-topic"
            )
            image_cls = (
                Image if reader.topics[args.image_topic].msgtype.endswith("/Image") else CompressedImage
            )
            gt_topics = [t for t in (depth_topic, pan_topic) if t]
            read_topics = {args.image_topic, info_topic, *gt_topics} - {""}
            connections = (
                [] if args.copy_inputs else [c for t in read_topics for c in reader.topics[t].connections]
            )
            processor = self._make_processor()
            # Distances are scored with the statistic and depth range the predictor itself used.
            segments_cfg = getattr(getattr(processor.predictor, "cfg", None), "segments", None)
            evaluator = Evaluator(segments=segments_cfg) if pan_topic else None
            out_topics = output_topic_names(args.node_name, args.namespace)
            writer = BagWriter(args.out, args.storage)
            total = reader.topics[args.image_topic].msgcount
            if args.max_frames is not None:
                total = min(total, args.max_frames)
            bar = tqdm(
                total=total, unit="frame", desc="bag-eval", disable=args.no_progress, dynamic_ncols=True
            )

            pending: deque[PendingFrame] = deque()
            gt: dict[str, OrderedDict[int, Any]] = {t: OrderedDict() for t in gt_topics}
            infos: OrderedDict[int, Any] = OrderedDict()
            latest_info: Any = None
            wrote_label_info = False
            source_connections = {c.topic: c for c in reader.connections}

            def remember(store: OrderedDict, stamp: int, value: Any) -> None:
                store[stamp] = value
                while len(store) > 4 * GT_LOOKAHEAD_FRAMES:
                    store.popitem(last=False)

            def decode(raw: bytes, cls: Any, topic: str, log_time_ns: int) -> Any:
                try:
                    return deserialize_message(raw, cls)
                except Exception as exc:  # rclpy raises several types for bad CDR
                    raise BagReadError(
                        f"bag {args.in_bag} is corrupt: the {topic} message at t={format_ns(log_time_ns)} "
                        f"cannot be deserialized as {cls.__name__}: {exc}"
                    ) from exc

            def finish(frame: PendingFrame) -> None:
                nonlocal wrote_label_info
                image_msg = decode(frame.raw, image_cls, args.image_topic, frame.log_time_ns)
                info_msg = infos.get(frame.stamp_ns, frame.camera_info)
                try:
                    processed = processor.process(image_msg, info_msg)
                except ValueError as exc:  # ImageConversionError: the node rejects the frame too
                    reason = getattr(exc, "reason", type(exc).__name__)
                    result.rejected[reason] = result.rejected.get(reason, 0) + 1
                    bar.write(f"bag-eval: frame {frame.index} (stamp {frame.stamp_ns}) rejected: {exc}")
                    bar.update(1)
                    return
                if self.params.publish_label_info and not wrote_label_info:
                    msg = label_info(image_msg.header, self.params.min_detection_score)
                    writer.add_topic(out_topics["label_info"], msgtype_of(msg), transient_local=True)
                    writer.write(
                        out_topics["label_info"], msgtype_of(msg), frame.log_time_ns, serialize_message(msg)
                    )
                    wrote_label_info = True
                for name, msg in processed.messages.items():
                    # images: one copy, zeroed padding (so the same input gives the same bag bytes)
                    raw = memoryview(serialize_image(msg)) if isinstance(msg, Image) else serialize_message(msg)
                    writer.write(out_topics[name], msgtype_of(msg), frame.log_time_ns, raw)
                row: dict[str, Any] = {
                    "index": frame.index,
                    "stamp_ns": frame.stamp_ns,
                    "segments": len(processed.result.segments),
                    "inference_ms": round(processed.timings_ms.get("inference", 0.0), 2),
                }
                if evaluator is not None and all(frame.stamp_ns in gt[t] for t in gt_topics):
                    gt_pan = gt_panoptic_ids(gt[pan_topic].pop(frame.stamp_ns))
                    gt_depth = gt_depth_m(gt[depth_topic].pop(frame.stamp_ns)) if depth_topic else None
                    if gt_pan.shape != processed.result.panoptic_ids.shape:
                        raise ValueError(
                            f"GT panoptic at stamp {frame.stamp_ns} is {gt_pan.shape[1]}x"
                            f"{gt_pan.shape[0]}, the image is {processed.result.width}x"
                            f"{processed.result.height}"
                        )
                    row.update(evaluator.add_frame(processed.result, gt_pan, gt_depth=gt_depth))
                    result.frames_with_gt += 1
                result.per_frame.append(row)
                result.frames += 1
                bar.update(1)

            def ready(frame: PendingFrame) -> bool:
                return all(frame.stamp_ns in gt[t] for t in gt_topics) or len(pending) > GT_LOOKAHEAD_FRAMES

            image_index = 0
            try:
                for message in iter_bag_messages(reader, connections):
                    if args.copy_inputs:
                        src = source_connections.get(message.topic)
                        writer.add_topic(
                            message.topic,
                            message.msgtype,
                            msgdef=src.msgdef.data if src else None,
                            rihs01=src.digest if src else None,
                        )
                        writer.write(message.topic, message.msgtype, message.log_time_ns, message.raw)
                    if message.topic == args.image_topic:
                        if args.max_frames is not None and image_index >= args.max_frames:
                            if not pending and not args.copy_inputs:
                                break
                            continue
                        pending.append(
                            PendingFrame(
                                image_index,
                                message.log_time_ns,
                                stamp_from_cdr(message.raw),
                                message.raw,
                                latest_info,
                            )
                        )
                        image_index += 1
                    elif message.topic == info_topic:
                        latest_info = decode(message.raw, CameraInfo, message.topic, message.log_time_ns)
                        remember(infos, stamp_from_cdr(message.raw), latest_info)
                    elif message.topic in gt:
                        gt_msg = decode(message.raw, Image, message.topic, message.log_time_ns)
                        remember(gt[message.topic], stamp_from_cdr(message.raw), gt_msg)
                    while pending and ready(pending[0]):
                        finish(pending.popleft())
                while pending:
                    finish(pending.popleft())
            except BagReadError as exc:
                while pending:  # images read before the damage are still processed
                    finish(pending.popleft())
                result.error = f"{exc}; output bag {args.out} holds the {result.frames} frame(s) before it"
            except KeyboardInterrupt:
                result.interrupted = True
            if evaluator is not None and evaluator.frames:
                result.summary = evaluator.summary()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
                result.output_counts = dict(writer.counts)
            reader.close()
        result.seconds = time.perf_counter() - t_start
        self.write_metrics(result)
        return result

    def write_metrics(self, result: BagEvalResult) -> None:
        from panoptic_depthlab_core.eval.evaluator import write_report

        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        if result.summary is not None:
            write_report(result.summary, self.metrics_dir)
        info = {
            "input_bag": str(self.args.in_bag),
            "output_bag": str(self.args.out),
            "frames": result.frames,
            "frames_with_gt": result.frames_with_gt,
            "rejected": result.rejected,
            "seconds": round(result.seconds, 3),
            "frames_per_second": round(result.frames / result.seconds, 3) if result.seconds > 0 else None,
            "complete": result.error is None and not result.interrupted,
            "error": result.error,
            "output_messages": result.output_counts,
            "per_frame": result.per_frame,
        }
        (self.metrics_dir / "per_frame.json").write_text(
            json.dumps(info, indent=2, default=_json_default) + "\n"
        )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def run(args: argparse.Namespace) -> int:
    from .transport import sigterm_as_interrupt

    with sigterm_as_interrupt():
        evaluator = BagEvaluator(args)
        result = evaluator.run()
    rate = result.frames / result.seconds if result.seconds > 0 else 0.0
    print(
        f"bag-eval: {result.frames} frame(s) in {result.seconds:.1f} s ({rate:.2f} frames/s); "
        f"output bag {args.out}; metrics in {evaluator.metrics_dir}"
    )
    if result.rejected:
        print(f"bag-eval: rejected frames: {result.rejected}")
    if result.summary is not None:
        from panoptic_depthlab_core.eval.evaluator import markdown_report

        print(markdown_report(result.summary))
    elif result.frames:
        print("bag-eval: no GT topics, so no metrics (only the output bag)")
    if result.interrupted:
        print(f"bag-eval: interrupted; output bag {args.out} closed and readable", file=sys.stderr)
        return 130
    if result.error is not None:
        print(f"bag-eval: error: {result.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from .common import cli_main

    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab bag-eval"))
