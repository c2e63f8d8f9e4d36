"""``bag-eval --export-predictions DIR``: every processed frame's prediction in the Cityscapes format.

The files are those of ``panoptic_depthlab_core.eval.prediction_export`` (id-encoded panoptic PNGs +
COCO panoptic JSON with label-id categories, labelIds PNGs, depth). A frame's image id is
``{camera}_000000_{index:06d}``: the camera's output namespace (or its image topic) with every
character but letters, digits and '-' made '-', and the frame's index on that camera, so it has the
three parts of a Cityscapes id. Each annotation also names its ``image_topic``, header ``stamp_ns``
and bag time ``log_time_ns``, which the Cityscapes tools ignore.

Depth: float32 metres (TIFF) by default; 16-bit disparity as Cityscapes stores it when the stereo
baseline is given (``--stereo-baseline``), with fx from each frame's CameraInfo (a frame without a
usable CameraInfo then gets no depth file; counted and warned once).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panoptic_depthlab_core.eval.prediction_export import DEPTH_FORMATS, PredictionExporter, resolve_depth_format

SPLIT = "predictions"  # the JSON is cityscapes_panoptic_predictions.json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--export-predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each frame's prediction in the Cityscapes panoptic format (docs/predictions.md)",
    )
    parser.add_argument(
        "--export-depth-format",
        default="auto",
        choices=DEPTH_FORMATS,
        help="depth in --export-predictions: disparity (16-bit, needs --stereo-baseline; auto picks it "
        "then), tiff/npy (float32 metres; auto otherwise) or none",
    )
    parser.add_argument(
        "--stereo-baseline",
        type=float,
        default=None,
        metavar="M",
        help="stereo baseline in metres, for disparity export (disparity = baseline * fx / depth)",
    )


@dataclass(frozen=True)
class ExportSettings:
    """Where and how to export (plain data: travels to worker processes)."""

    out_dir: Path
    depth_format: str = "auto"
    stereo_baseline_m: float | None = None

    def __post_init__(self) -> None:
        depth_format = resolve_depth_format(self.depth_format, self.stereo_baseline_m is not None)
        if depth_format == "disparity" and not (self.stereo_baseline_m or 0) > 0:
            raise ValueError("disparity export needs --stereo-baseline (metres, > 0)")
        object.__setattr__(self, "depth_format", depth_format)


def settings_from_args(args: argparse.Namespace, out_dir: Path | None = None) -> ExportSettings | None:
    """ExportSettings from the command line; None without --export-predictions (and no ``out_dir``)."""
    target = out_dir if out_dir is not None else getattr(args, "export_predictions", None)
    if target is None:
        return None
    return ExportSettings(
        Path(target), getattr(args, "export_depth_format", "auto"), getattr(args, "stereo_baseline", None)
    )


def camera_image_prefix(camera: Any) -> str:
    """A Cityscapes 'city' for the camera: its namespace or topic, only letters, digits and '-'."""
    name = str(getattr(camera, "output_namespace", "") or "").strip("/") or str(camera.image_topic).strip("/")
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "camera"


class BagPredictionExport:
    """``on_frame`` for ``BagEvaluator.run`` / ``evaluate_bag``; ``close()`` writes the JSON."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        self.exporter = PredictionExporter(settings.out_dir, SPLIT, settings.depth_format)
        self.frames = 0
        self.frames_without_depth = 0

    def on_frame(self, camera: Any, frame: Any, processed: Any) -> None:
        result = processed.result
        fx = float(result.K[0, 0]) if getattr(result, "K", None) is not None else None
        skip_depth = self.settings.depth_format == "disparity" and fx is None
        if skip_depth:
            if not self.frames_without_depth:
                print(
                    f"bag-eval: warning: {camera.image_topic} frame {frame.index}: no usable CameraInfo (fx), "
                    "so no disparity file for it (further such frames are counted in the export JSON)",
                    file=sys.stderr,
                )
            self.frames_without_depth += 1
        self.exporter.add(
            f"{camera_image_prefix(camera)}_000000_{frame.index:06d}",
            result,
            baseline_m=self.settings.stereo_baseline_m,
            fx=fx,
            extra={
                "image_topic": camera.image_topic,
                "stamp_ns": int(frame.stamp_ns),
                "log_time_ns": int(frame.log_time_ns),
            },
            skip_depth=skip_depth,
        )
        self.frames += 1

    def close(self) -> Path:
        self.exporter.info["frames_without_depth"] = self.frames_without_depth
        return self.exporter.close()
