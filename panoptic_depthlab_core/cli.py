"""``panoptic-depthlab``: one command line with subcommands.

Each subcommand lives beside the code it drives, in a module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them, so importing the CLI stays cheap (torch is imported
by the subcommand that needs it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert-d2": ("panoptic_depthlab_core.weights", "convert a detectron2 Panoptic-DeepLab .pkl to safetensors"),
    "infer": ("panoptic_depthlab_core.infer_cli", "run the model on images, write overlays/depth/panoptic/JSON"),
    "synth": ("panoptic_depthlab_core.data.synthetic.cli", "write a synthetic street data set (Cityscapes)"),
    "train": ("panoptic_depthlab_core.train.cli", "train the model (single process or torchrun)"),
    "recalibrate-bn": (
        "panoptic_depthlab_core.train.bn_recalibration",
        "re-estimate BatchNorm statistics of trained weights over training batches",
    ),
    "eval": ("panoptic_depthlab_core.eval.cli", "evaluate: PQ, mIoU, depth, DPQ, per-segment distance"),
    "synth-bag": (
        "panoptic_depthlab_ros.bags.synth_bag",
        "write a synthetic drive with GT depth/panoptic as a rosbag2 bag",
    ),
    "cityscapes-bag": (
        "panoptic_depthlab_ros.bags.cityscapes_bag",
        "write Cityscapes frames (+ camera_info, GT) as a bag",
    ),
    "bag-eval": (
        "panoptic_depthlab_ros.bags.bag_eval",
        "run the node's processing over a bag; output bag + metrics",
    ),
    "play": (
        "panoptic_depthlab_ros.bags.play",
        "publish a bag over rclpy at its recorded rate (like ros2 bag play)",
    ),
    "record": (
        "panoptic_depthlab_ros.bags.record",
        "record topics over rclpy into a bag (like ros2 bag record)",
    ),
    "export": ("panoptic_depthlab_core.export.cli", "export ONNX; build/validate cached TensorRT engines"),
    "bench": ("panoptic_depthlab_core.bench", "benchmark stages + end to end per backend/precision/size"),
    "demo": (
        "panoptic_depthlab_core.demo",
        "synthetic drive -> live node -> recorded outputs + metrics report",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands are listed; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="panoptic-depthlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if os.environ.get("PANOPTIC_DEPTHLAB_RETAIN_FREED_MEMORY", "1") != "0":
        from .memory import retain_freed_memory

        retain_freed_memory()  # per-frame arrays reuse mapped pages (see memory.py); opt out with =0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"panoptic-depthlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
