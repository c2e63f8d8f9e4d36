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

    t = sub.add_parser(
        "tensorrt",
        help="build (or validate) the TensorRT engine for an ONNX model (strongly typed: the precision is the ONNX's)",
    )
    t.add_argument("--onnx", required=True, help="exported .onnx model (export onnx --precision fp32|fp16|int8)")
    t.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default=None,
        help="expected precision of the ONNX file (checked; default: whatever the file is)",
    )  # fmt: skip
    t.add_argument("--engine", default=None, help="also write the engine (+ .json sidecar) here, for shipping")
    t.add_argument("--workspace-mb", type=int, default=4096)
    t.add_argument("--optimization-level", type=int, default=3, help="builder optimisation level 0..5")
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
    import shutil
    from pathlib import Path

    from ..runtime.backend import BackendConfig
    from ..runtime.tensorrt_backend import TensorRTNotAvailable, cuda_device, prepare_engine
    from .artefacts import onnx_precision
    from .engine_cache import sidecar_path_for
    from .onnx_export import check_onnx_file, onnx_input_shape

    proto = check_onnx_file(args.onnx)
    dims = onnx_input_shape(proto)
    precision = args.precision or onnx_precision(proto, args.onnx).precision  # checked again when building
    del proto
    if all(isinstance(d, int) and d > 0 for d in dims):
        input_hw = (dims[2], dims[3])
        if (args.height and args.height != dims[2]) or (args.width and args.width != dims[3]):
            raise ValueError(f"{args.onnx} has fixed input {dims}; --height/--width must match or be omitted")
    else:
        if not (args.height and args.width):
            raise ValueError(f"{args.onnx} has dynamic input {dims}: pass --height and --width for the engine")
        input_hw = (args.height, args.width)
    cfg = BackendConfig(
        name="tensorrt",
        device=args.device,
        precision=precision,
        onnx_path=args.onnx,
        engine_cache_dir=args.engine_cache_dir or "",
        allow_engine_rebuild=not args.no_rebuild,
        workspace_mb=args.workspace_mb,
        builder_optimization_level=args.optimization_level,
    )
    try:
        import torch

        with torch.cuda.device(cuda_device(args.device)) if torch.cuda.is_available() else _no_context():
            prepared = prepare_engine(cfg, input_hw)
    except TensorRTNotAvailable as exc:
        print(f"panoptic-depthlab export tensorrt: error: {exc}", file=sys.stderr)
        return 2
    engine = prepared.engine_path
    if args.engine:
        engine = Path(args.engine)
        engine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(prepared.engine_path, engine)
        shutil.copyfile(prepared.sidecar_path, sidecar_path_for(engine))
    report = {
        "engine": str(engine),
        "sidecar": str(sidecar_path_for(engine)),
        "artefact": prepared.artefact.summary(),
        "rebuild_reasons": prepared.rebuild_reasons,
        "key": prepared.key,
    }
    print(json.dumps(report, indent=2))
    return 0


def _no_context():
    import contextlib

    return contextlib.nullcontext()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.format == "onnx":
        return _export_onnx(args)
    return _export_tensorrt(args)
