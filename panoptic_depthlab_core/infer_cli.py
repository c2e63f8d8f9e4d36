"""``panoptic-depthlab infer``: run the model on images and write what a person or a script needs.

Per image: ``<name>_overlay.png`` (distance-coloured overlay), ``<name>_depth.png`` (uint16
millimetres, 0 = invalid, the REP 118 driver convention), ``<name>_depth_color.png``,
``<name>_panoptic.png`` (colour) and ``<name>_segments.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .data.cityscapes import read_image
from .eval.prediction_export import DEPTH_FORMATS, PredictionExporter, image_id_from_filename, resolve_depth_format
from .predictor import Predictor
from .viz import VizConfig, colorize_depth, colorize_panoptic, overlay_distance

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files or directories of images")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--config", default=None, help="model YAML (default: the shipped default model)")
    parser.add_argument("--weights", default=None, help="safetensors weights (default: the shipped ones)")
    parser.add_argument(
        "--backend",
        default="torch",
        choices=["auto", "torch", "onnxruntime", "tensorrt"],
        help="auto: onnxruntime for fp32 on a CPU (its export is cached), else torch",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    for name in ("fx", "fy", "cx", "cy"):
        parser.add_argument(f"--{name}", type=float, default=None, help="camera intrinsics (pixels)")
    parser.add_argument("--near", type=float, default=10.0, help="overlay colour scale: red at this distance (m)")
    parser.add_argument("--far", type=float, default=60.0, help="overlay colour scale: blue at this distance (m)")
    parser.add_argument(
        "--export-predictions",
        default=None,
        metavar="DIR",
        help="also write the Cityscapes panoptic format: id-encoded PNGs + JSON, labelIds, depth "
        "(docs/predictions.md); image ids are the file names without _leftImg8bit",
    )
    parser.add_argument(
        "--depth-format",
        default="auto",
        choices=DEPTH_FORMATS,
        help="depth in --export-predictions: disparity (needs --baseline and --fx; auto picks it then), "
        "else tiff/npy (float32 metres) or none",
    )
    parser.add_argument("--baseline", type=float, default=None, help="stereo baseline (m) for disparity export")


def collect_images(inputs: list[str]) -> list[Path]:
    images: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if not images:
        raise ValueError(f"no images found in {inputs}")
    return images


def intrinsics_from_args(args: argparse.Namespace):
    given = [getattr(args, n) is not None for n in ("fx", "fy", "cx", "cy")]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--fx, --fy, --cx and --cy must be given together")
    return np.array([[args.fx, 0.0, args.cx], [0.0, args.fy, args.cy], [0.0, 0.0, 1.0]])


def run(args: argparse.Namespace) -> int:
    images = collect_images(args.inputs)
    K = intrinsics_from_args(args)
    predictor = Predictor.from_config(args.config, args.weights, backend=args.backend, device=args.device,
                                      precision=args.precision)
    viz = VizConfig(near_m=args.near, far_m=args.far)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exporter = None
    if args.export_predictions:
        baseline_known = args.baseline is not None and K is not None
        depth_format = resolve_depth_format(args.depth_format, baseline_known)
        if depth_format == "disparity" and not baseline_known:
            raise ValueError("--depth-format disparity needs --baseline and the intrinsics (--fx ...)")
        exporter = PredictionExporter(args.export_predictions, "predictions", depth_format)
    for path in tqdm(images, desc="infer", unit="img", disable=len(images) < 2):
        rgb = read_image(path)
        result = predictor.predict(rgb, K)
        stem = path.stem
        overlay_bgr = overlay_distance(
            rgb, result.panoptic_ids, result.segments, viz, bgr=True, upsampling=result.upsampling
        )
        cv2.imwrite(str(out / f"{stem}_overlay.png"), overlay_bgr)
        depth_mm = np.where(np.isfinite(result.depth_m), np.clip(result.depth_m * 1000.0, 0, 65535), 0)
        cv2.imwrite(str(out / f"{stem}_depth.png"), depth_mm.round().astype(np.uint16))
        cv2.imwrite(str(out / f"{stem}_depth_color.png"),
                    cv2.cvtColor(colorize_depth(result.depth_m), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"{stem}_panoptic.png"),
                    cv2.cvtColor(colorize_panoptic(result.panoptic_ids), cv2.COLOR_RGB2BGR))
        doc = {
            "image": str(path),
            "height": result.height,
            "width": result.width,
            "K": None if K is None else K.tolist(),
            "timings_ms": result.timings_ms,
            "segments": [s.to_dict() for s in result.segments],
        }
        (out / f"{stem}_segments.json").write_text(json.dumps(doc, indent=2) + "\n")
        if exporter is not None:
            exporter.add(
                image_id_from_filename(path.name),
                result,
                baseline_m=args.baseline,
                fx=None if K is None else float(K[0, 0]),
                file_name=path.name,
            )
    if exporter is not None:
        print(f"wrote Cityscapes-format predictions: {exporter.close()}")
    print(f"wrote results for {len(images)} image(s) to {out}")
    return 0
