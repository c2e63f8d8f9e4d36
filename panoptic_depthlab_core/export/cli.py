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
    p.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default="fp32",
        help="precision of the file (recorded in its metadata): fp16 mixed, int8 static Q/DQ; I/O stays float32",
    )  # fmt: skip
    p.add_argument(
        "--calib-data", default=None,
        help="int8: synthetic[:SEED], a Cityscapes-layout folder, a folder of images or a rosbag2 bag",
    )  # fmt: skip
    p.add_argument("--calib-images", type=int, default=32, help="int8: number of calibration images")
    p.add_argument("--calib-split", default="train", help="int8, Cityscapes-layout folder: the split")
    p.add_argument("--calib-topic", action="append", default=None, help="int8, bag: image topic (repeatable)")
    p.add_argument(
        "--calib-method", choices=["minmax", "entropy", "percentile"], default="percentile",
        help="int8 activation ranges (percentile: 99.99 %% of each histogram; docs/precision.md)",
    )  # fmt: skip
    p.add_argument(
        "--int8-uint8-activations", action="store_true",
        help="int8: asymmetric uint8 activations (ONNX Runtime CPU only; TensorRT needs symmetric int8)",
    )  # fmt: skip
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
    calibration, int8_options = None, None
    if args.precision == "int8":
        from .calibration import CalibrationDataReader

        if not args.calib_data:
            raise ValueError("--precision int8 needs --calib-data (synthetic[:SEED], an image folder or a bag)")
        calibration = CalibrationDataReader(
            args.calib_data, (height, width), max_images=args.calib_images, split=args.calib_split,
            topics=args.calib_topic, synthetic_size=(height, width),
        )  # fmt: skip
        int8_options = {"method": args.calib_method, "symmetric_activations": not args.int8_uint8_activations}
    path = export_onnx(
        model, args.out, height, width, dynamic=args.dynamic, opset=args.opset, precision=args.precision,
        calibration=calibration, int8_options=int8_options,
    )  # fmt: skip
    from .onnx_export import check_onnx_file
    from .precision import check_precision_parity, onnx_metadata

    report = {"onnx": str(path), "input_shape": onnx_input_shape(check_onnx_file(path)), "opset": args.opset}
    report["metadata"] = {k: v for k, v in onnx_metadata(path).items() if "names" not in k}
    if not args.no_verify:
        image = torch.from_numpy(realistic_test_image(height, width)).permute(2, 0, 1)[None].float()
        if args.precision == "fp32":
            report["max_abs_diff_vs_torch"] = check_parity(model, path, image)
        else:
            report["agreement_with_torch_fp32"] = check_precision_parity(model, path, image, args.precision)
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
