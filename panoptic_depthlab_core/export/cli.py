"""``panoptic-depthlab export onnx|tensorrt``: export the network, pre-build TensorRT engines.

``export tensorrt`` is the build-only mode of the engine cache: it builds (or validates) the engine
the tensorrt backend will load, so a robot never spends its first minutes building one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = sub.add_parser("onnx", help="export the model to ONNX (opset >= 17, named I/O, parity-checked)")
    p.add_argument("--config", required=True, help="model YAML (config/models/*.yaml)")
    p.add_argument("--weights", default=None, help="safetensors weights (omit only for speed tests)")
    p.add_argument("--height", type=int, default=None, help="network input height (default: config input)")
    p.add_argument("--width", type=int, default=None, help="network input width (default: config input)")
    p.add_argument("--dynamic", action="store_true", help="symbolic batch/height/width")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch parity check")
    p.add_argument("out", help="output .onnx path")

    t = sub.add_parser("tensorrt", help="build (or validate) the cached TensorRT engine for an ONNX model")
    t.add_argument("--onnx", required=True, help="exported .onnx model")
    t.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp16")
    t.add_argument("--calib-data", default=None, help="int8: directory of calibration images")
    t.add_argument("--calib-images", type=int, default=500, help="int8: number of calibration images")
    t.add_argument("--calibrator", choices=["minmax", "entropy"], default="minmax")
    t.add_argument("--calib-cache", default=None, help="int8 calibration cache (default: beside the engine)")
    t.add_argument("--workspace-mb", type=int, default=4096)
    t.add_argument("--engine-cache-dir", default=None, help="default: ~/.cache/panoptic_depthlab/engines")
    t.add_argument("--height", type=int, default=None, help="for --dynamic ONNX files: the engine's input")
    t.add_argument("--width", type=int, default=None)
    t.add_argument("--device", default="cuda:0")
    t.add_argument("--no-rebuild", action="store_true", help="only validate; fail if the engine is stale")


def _export_onnx(args: argparse.Namespace) -> int:
    import torch

    from ..model import build_model
    from ..predictor import load_pipeline_config
    from ..weights import load_model_weights
    from .onnx_export import check_parity, export_onnx, onnx_input_shape, realistic_test_image

    cfg = load_pipeline_config(args.config)
    height = args.height or cfg.input.height
    width = args.width or cfg.input.width
    model = build_model(cfg.model).eval()
    if args.weights:
        load_model_weights(model, args.weights)
    else:
        logging.warning("no --weights: exporting freshly initialised weights")
    path = export_onnx(model, args.out, height, width, dynamic=args.dynamic, opset=args.opset)
    from .onnx_export import check_onnx_file

    report = {"onnx": str(path), "input_shape": onnx_input_shape(check_onnx_file(path)), "opset": args.opset}
    if not args.no_verify:
        image = torch.from_numpy(realistic_test_image(height, width)).permute(2, 0, 1)[None].float()
        report["max_abs_diff_vs_torch"] = check_parity(model, path, image)
    print(json.dumps(report, indent=2))
    return 0


def _export_tensorrt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..runtime.backend import BackendConfig
    from ..runtime.tensorrt_backend import TensorRTNotAvailable, engine_cache_dir, prepare_engine
    from .onnx_export import check_onnx_file, onnx_input_shape

    dims = onnx_input_shape(check_onnx_file(args.onnx))
    if all(isinstance(d, int) and d > 0 for d in dims):
        input_hw = (dims[2], dims[3])
        if (args.height and args.height != dims[2]) or (args.width and args.width != dims[3]):
            raise ValueError(f"{args.onnx} has fixed input {dims}; --height/--width must match or be omitted")
    else:
        if not (args.height and args.width):
            raise ValueError(
                f"{args.onnx} has dynamic input {dims}: pass --height and --width for the engine"
            )
        input_hw = (args.height, args.width)
    cfg = BackendConfig(
        name="tensorrt",
        device=args.device,
        precision=args.precision,
        onnx_path=args.onnx,
        engine_cache_dir=args.engine_cache_dir or "",
        allow_engine_rebuild=not args.no_rebuild,
    )
    batches, calib_cache = None, ""
    if args.precision == "int8":
        calib_cache = args.calib_cache or str(engine_cache_dir(cfg) / f"{Path(args.onnx).stem}.calib")
        if args.calib_data:
            from .calibration import CalibrationDataReader

            batches = CalibrationDataReader(args.calib_data, input_hw, max_images=args.calib_images)
        elif not Path(calib_cache).is_file():
            raise ValueError("--precision int8 needs --calib-data DIR (or an existing --calib-cache)")
    try:
        entry = prepare_engine(
            None,
            cfg,
            input_hw,
            workspace_mb=args.workspace_mb,
            calibration_batches=batches,
            calibration_cache_path=calib_cache,
            calibrator=args.calibrator,
        )
    except TensorRTNotAvailable as exc:
        print(f"panoptic-depthlab export tensorrt: error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "engine": str(entry.engine_path),
                "sidecar": str(entry.sidecar_path),
                "built": entry.built,
                "rebuild_reasons": entry.rebuild_reasons,
                "key": entry.key.to_dict(),
            },
            indent=2,
        )
    )
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.format == "onnx":
        return _export_onnx(args)
    return _export_tensorrt(args)
