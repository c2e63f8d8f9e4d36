"""``panoptic-depthlab eval --config C --weights W --data DIR --split val --out DIR``.

Runs the Predictor (the same path the node uses: letterbox, post-processing, segment distances) over a
Cityscapes-layout split, compares with its GT and writes ``metrics.json`` + ``metrics.md`` to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from panoptic_depthlab_core.data.cityscapes import find_records, load_gt, read_image
from panoptic_depthlab_core.eval.evaluator import Evaluator, markdown_report, write_report
from panoptic_depthlab_core.eval.prediction_export import (
    DEPTH_FORMATS,
    PredictionExporter,
    resolve_depth_format,
)
from panoptic_depthlab_core.eval.sequence_eval import run_cli
from panoptic_depthlab_core.predictor import Predictor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="model YAML (default: the shipped default model)")
    parser.add_argument("--weights", default=None, help="safetensors weights (default: the shipped ones)")
    parser.add_argument("--data", required=True, help="data set root in Cityscapes layout")
    parser.add_argument("--split", default="val", help="split folder under leftImg8bit/ (default val)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and metrics.md")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0 = all)")
    parser.add_argument("--depth-cap", type=float, default=80.0, help="depth metrics use GT <= this (m)")
    parser.add_argument("--no-intrinsics", action="store_true", help="do not pass the camera K to the model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table on stdout")
    parser.add_argument(
        "--sequences",
        action="store_true",
        help="--data is a synth --sequence data set: tracking (HOTA, IDF1, MOTA), STQ, velocity/TTC and "
        "distance-band errors through the tracker (docs/tracking.md); --limit counts drives",
    )
    parser.add_argument("--tracker-config", default=None, help="--sequences: tracker YAML (TrackerConfig fields)")
    parser.add_argument(
        "--save-predictions",
        default=None,
        metavar="DIR",
        help="also write the predictions in the Cityscapes panoptic format (see docs/predictions.md)",
    )
    parser.add_argument(
        "--depth-format",
        default="auto",
        choices=DEPTH_FORMATS,
        help="depth in --save-predictions: disparity (16-bit PNG as Cityscapes, the default here), "
        "npy/tiff (float32 metres) or none",
    )


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"data directory not found: {data}")
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    if args.sequences:
        return run_cli(args)
    if args.weights is not None and not Path(args.weights).is_file():
        raise FileNotFoundError(f"weights file not found: {args.weights}")
    records = find_records(data, args.split, require_panoptic=True, require_depth=True)
    if args.limit:
        records = records[: args.limit]
    predictor = Predictor.from_config(args.config, args.weights, device=args.device)
    evaluator = Evaluator(segments=predictor.cfg.segments, depth_cap_m=args.depth_cap)
    exporter = None
    if args.save_predictions:  # every record has its camera json (baseline, fx): disparity by default
        exporter = PredictionExporter(
            args.save_predictions, args.split, resolve_depth_format(args.depth_format, baseline_known=True)
        )
    for rec in tqdm(records, desc=f"eval {args.split}", unit="img", disable=args.quiet, file=sys.stderr):
        gt = load_gt(rec)
        image = read_image(rec.image_path)
        K = None
        if gt.camera is not None and not args.no_intrinsics:
            c = gt.camera
            K = np.array([[c.fx, 0.0, c.u0], [0.0, c.fy, c.v0], [0.0, 0.0, 1.0]])
        result = predictor.predict(image, K)
        evaluator.add_frame(result, gt.panoptic, gt.semantic, gt.depth_m)
        if exporter is not None:
            cam = gt.camera
            exporter.add(
                rec.image_id,
                result,
                baseline_m=cam.baseline if cam else None,
                fx=cam.fx if cam else None,
                file_name=rec.image_path.name,
            )
    if exporter is not None:
        print(f"wrote predictions for {len(records)} image(s): {exporter.close()}")
    summary = evaluator.summary()
    summary["run"] = {
        "config": str(args.config or "default model"),
        "weights": str(args.weights or "default"),
        "data": str(data),
        "split": args.split,
        "images": len(records),
    }
    json_path, md_path = write_report(summary, args.out)
    if not args.quiet:
        print(markdown_report(summary))
    print(f"wrote {json_path} and {md_path}")
    return 0
