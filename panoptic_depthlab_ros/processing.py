"""One frame: input message (+ CameraInfo) -> RGB and K -> Predictor -> output messages.

No node here, so the live node and the offline bag tool share the exact data path. Errors in the
input are ``MessageConversionError`` subclasses (ValueError) whose ``reason`` is a short tag the
node counts in /diagnostics; a bad CameraInfo never rejects the frame, it only drops the 3D outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panoptic_depthlab_core.config import from_dict
from panoptic_depthlab_core.image_messages import DEFAULT_MAX_PIXELS, ImageConversionError, image_message_to_rgb
from panoptic_depthlab_core.predictor import DEFAULT_CONFIG, DEFAULT_WEIGHTS, Predictor, load_pipeline_config
from panoptic_depthlab_core.results import FrameResult
from panoptic_depthlab_core.tracking import TrackState
from panoptic_depthlab_ros.distance_tracking import DistanceAndTracking, TrackedFrame, weights_depth_trained
from panoptic_depthlab_ros.image_conversion import CameraInfoError, camera_info_to_K, check_camera_info_matches
from panoptic_depthlab_ros.messages import (
    OUTPUT_NAMES,
    FrameMessages,
    MessageOptions,
    maps_needed,
    stuff_segments_needed,
)
from panoptic_depthlab_ros.params import NodeParams


@dataclass
class ProcessedFrame:
    """What one frame produced; ``messages`` maps output names to ready-to-publish messages."""

    result: FrameResult | None
    messages: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    camera_info_error: CameraInfoError | None = None  # why K was not used (3D outputs skipped)
    tracks: list[TrackState | None] | None = None  # per result.segments; None: tracking off
    tracked: TrackedFrame | None = None  # the distance/tracking step's details (evaluations read them)


def intrinsics_for(camera_info: Any, width: int, height: int, prefer_rectified: bool = True) -> np.ndarray:
    """K for a width x height image from CameraInfo; CameraInfoError when unusable or mismatched."""
    check_camera_info_matches(camera_info, width, height)
    return camera_info_to_K(camera_info, prefer_P=prefer_rectified)


def message_options(params: NodeParams, outputs: frozenset[str] | None = None) -> MessageOptions:
    """MessageOptions from node parameters; ``outputs`` None = every output whose toggle is on."""
    if outputs is None:
        outputs = enabled_outputs(params)
    return MessageOptions(
        outputs=outputs,
        include_stuff_detections=params.include_stuff_detections,
        min_detection_score=params.min_detection_score,
        marker_boxes=params.marker_boxes,
        marker_text_size_m=params.marker_text_size_m,
        depth_sky_inf=params.depth_sky_inf,
        viz_min_distance_m=params.viz_min_distance_m,
        viz_max_distance_m=params.viz_max_distance_m,
        frame_id=params.frame_id,
    )


def enabled_outputs(params: NodeParams) -> frozenset[str]:
    """Output names whose ``publish_<name>`` parameter is true (label_info is separate: latched)."""
    return frozenset(name for name in OUTPUT_NAMES if getattr(params, f"publish_{name}"))


def artefact_backend(params: NodeParams) -> str:
    """The backend that runs the configured artefacts: ``auto`` with an engine means tensorrt, with an
    ONNX file onnxruntime (never a silent fall back to torch that would ignore the given file)."""
    if params.backend != "auto":
        return params.backend
    if params.engine_path:
        return "tensorrt"
    if params.onnx_path:
        return "onnxruntime"
    return "auto"


def artefact_problems(params: NodeParams) -> list[str]:
    """Why the artefact parameters cannot work together (checked at configure, so they can be set one
    at a time beforehand); empty when they can."""
    backend = artefact_backend(params)
    problems = []
    if params.engine_path and backend != "tensorrt":
        problems.append(f"engine_path {params.engine_path} is a TensorRT engine; backend {backend} cannot run it")
    if params.onnx_path and backend == "torch":
        problems.append(f"onnx_path {params.onnx_path} is not used by backend torch; use onnxruntime or tensorrt")
    if params.precision == "int8" and not (params.onnx_path or params.engine_path):
        problems.append(
            "precision int8 runs an int8 ONNX file or engine: set onnx_path (panoptic-depthlab export onnx "
            "--precision int8 ...) or engine_path"
        )
    if params.precision == "int8" and backend == "torch":
        problems.append("precision int8 needs backend onnxruntime or tensorrt (torch runs fp32, fp16, bf16)")
    return problems


def load_predictor(params: NodeParams) -> Any:
    """Build the Predictor the parameters describe (model config, weights, backend, artefacts, input size...)."""
    problems = artefact_problems(params)
    if problems:
        raise ValueError("; ".join(problems))
    return Predictor.from_config(
        config=params.model_config or None,
        weights=params.weights or None,
        backend=artefact_backend(params),
        device=params.device,
        precision=params.precision,
        overrides=params.overrides(),
        onnx_path=params.onnx_path,
        engine_path=params.engine_path,
        engine_cache_dir=params.engine_cache_dir,
        allow_engine_rebuild=params.allow_engine_rebuild,
        onnxruntime_tensorrt=params.onnxruntime_tensorrt,
    )


def model_postprocess(params: NodeParams) -> Any:
    """The post-processing settings of the model config itself (before the node's overrides)."""
    return load_pipeline_config(params.model_config or DEFAULT_CONFIG).postprocess


def apply_live_params(predictor: Any, params: NodeParams, model_pp: Any) -> None:
    """Post-processing and distance settings take effect on the next frame without a reload.

    ``model_pp``: the loaded model config's post-processing (``model_postprocess``), which a
    parameter set back to its "model config" value returns to.
    """
    cfg = predictor.cfg
    overrides = params.overrides()
    for section, base in (("postprocess", model_pp), ("segments", cfg.segments)):
        values = {**{k: getattr(base, k) for k in base.__dataclass_fields__}, **overrides[section]}
        setattr(cfg, section, from_dict(type(base), values))


def make_distance_tracking(params: NodeParams, log: Callable[[str, str], None] | None = None) -> DistanceAndTracking:
    """The distance source and tracker the parameters describe, for the weights they load (whose
    sidecar says whether the depth decoder was trained); ValueError naming the parameter when the
    distance source needs a camera mount that is missing or absurd."""
    weights = params.weights or (None if params.model_config else DEFAULT_WEIGHTS)
    trained, note = weights_depth_trained(weights)
    return DistanceAndTracking(params, depth_trained=trained, weights_note=note, log=log)


class FrameProcessor:
    """Predictor + options; ``process(image_msg, camera_info)`` gives the outputs of one frame.

    ``tracking``: the distance source and tracker (``make_distance_tracking``) applied after the
    network; None = the network's distances and per-frame ids (the processor of older callers)."""

    def __init__(
        self,
        predictor: Any,
        options: MessageOptions | None = None,
        prefer_rectified: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tracking: DistanceAndTracking | None = None,
    ) -> None:
        self.predictor = predictor
        self.options = options or MessageOptions()
        self.prefer_rectified = prefer_rectified
        self.max_pixels = max_pixels
        self.tracking = tracking
        # one helper thread builds and publishes the image messages while the caller computes the
        # segment statistics and the other messages
        self._maps_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maps")

    def close(self) -> None:
        """Stop the helper thread (the processor is not used afterwards)."""
        self._maps_pool.shutdown(wait=True)

    def process(
        self,
        image_msg: Any,
        camera_info: Any = None,
        options: MessageOptions | None = None,
        emit: Callable[[str, Any], None] | None = None,
        only_needed: bool = False,
        stream: str = "",
    ) -> ProcessedFrame:
        """Decode, infer, build messages. Raises ImageConversionError for a bad image; any
        CameraInfo problem is returned in ``camera_info_error`` and only the 3D outputs are skipped.
        ``emit(name, message)`` is called as each message is ready (see ``FrameMessages``).
        ``only_needed``: the result keeps only the full-resolution maps and the stuff segments the
        messages read (``maps_needed``, ``stuff_segments_needed``; the live node), not all of them
        (an evaluation reads them all). ``stream``: which tracker (one per camera; the node has one)."""
        options = options or self.options
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        device = getattr(self.predictor, "device", None)
        rgb = image_message_to_rgb(image_msg, max_pixels=self.max_pixels, device=device)
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        K = None
        info_error = None
        if camera_info is not None:
            try:
                K = intrinsics_for(camera_info, width, height, self.prefer_rectified)
            except CameraInfoError as exc:
                info_error = exc
        t1 = time.perf_counter()
        timings["decode"] = (t1 - t0) * 1e3
        overlay_rgb = None
        if "visualization" in options.outputs:  # drawn on the host, also when decoded on the GPU
            overlay_rgb = rgb if isinstance(rgb, np.ndarray) else rgb.cpu().numpy()
        info_for_output = camera_info if K is not None else None
        # the images leave from the helper thread while the per-segment statistics are computed
        tracking = self.tracking
        tracked = tracking is not None and tracking.tracking
        builder = FrameMessages(image_msg.header, info_for_output, options, overlay_rgb, self._maps_pool, emit,
                                defer_panoptic=tracked)
        maps = maps_needed(options) if only_needed else None
        stuff = stuff_segments_needed(options) if only_needed else "full"
        result = self.predictor.predict(rgb, K, on_maps=builder.add_maps, maps=maps, stuff_segments=stuff)
        t2 = time.perf_counter()
        for stage, value in result.timings_ms.items():
            if stage != "total":
                timings[stage] = value
        timings["inference"] = (t2 - t1) * 1e3
        tracks = frame = None
        if tracking is not None:
            frame = tracking.process(result, image_msg.header, stream)
            result, tracks = frame.result, frame.tracks
            t3 = time.perf_counter()
            timings["tracking"] = (t3 - t2) * 1e3
            t2 = t3
        messages = builder.add_segments(result, tracks)
        timings["messages"] = (time.perf_counter() - t2) * 1e3
        return ProcessedFrame(
            result=result, messages=messages, timings_ms=timings, camera_info_error=info_error, tracks=tracks,
            tracked=frame,
        )


__all__ = [
    "CameraInfoError",
    "artefact_backend",
    "artefact_problems",
    "FrameProcessor",
    "ImageConversionError",
    "ProcessedFrame",
    "apply_live_params",
    "enabled_outputs",
    "intrinsics_for",
    "load_predictor",
    "make_distance_tracking",
    "message_options",
    "model_postprocess",
]
