"""``panoptic-depthlab``: one command line with subcommands (the core's, usable without ROS 2).

Each subcommand lives beside the code it drives, in a module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them, so importing the CLI stays cheap (torch is imported
by the subcommand that needs it). ``panoptic_depthlab_ros.cli`` adds the ROS subcommands (bags, play,
record, demo, bench with message building) to this table and runs them through :func:`main`, so the
installed ``panoptic-depthlab`` command is that one; ``python -m panoptic_depthlab_core.cli`` is the
core alone. Errors are reported here, once, for both.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping

from .memory import retain_freed_memory

DESCRIPTION = "Panoptic segmentation, metric depth and per-segment distance from one camera."
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
    "export": ("panoptic_depthlab_core.export.cli", "export ONNX; build/validate cached TensorRT engines"),
    "bench": (
        "panoptic_depthlab_core.bench",
        "benchmark stages + end to end per backend/precision/size (no message building)",
    ),
}

# Modules only a ROS 2 installation provides (besides every *_msgs package): a subcommand missing one
# is told to source ROS 2 instead of showing a traceback. Names only; the core imports none of them.
ROS_MODULES = frozenset({"rclpy", "rcl_interfaces", "builtin_interfaces", "ament_index_python"})


def missing_dependency_message(prog: str, exc: ModuleNotFoundError) -> str:
    """One line naming the module a subcommand needs and where it comes from."""
    missing = (exc.name or str(exc)).split(".")[0]
    if missing in ROS_MODULES or missing.endswith("_msgs"):
        hint = "a ROS 2 package: source your ROS 2 setup.bash (or pip install -r requirements/ros.txt)"
    else:
        hint = "install it (see docs/install.md)"
    return f"{prog}: error: needs the Python module {missing!r}, {hint}"


def run_command(prog: str, run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """``run(args)`` as a command: the one place where errors become one line on stderr and an exit code.

    Bad input (ValueError, FileNotFoundError) and a missing optional dependency exit 2, an interrupt 130.
    ``main`` and the single-subcommand entry points (``python -m panoptic_depthlab_ros.bags.X``) use it.
    """
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # an optional dependency, imported when the run needs it
        print(missing_dependency_message(prog, exc), file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def build_parser(
    command: str | None = None,
    subcommands: Mapping[str, tuple[str, str]] = SUBCOMMANDS,
) -> argparse.ArgumentParser:
    """All subcommands are listed; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="panoptic-depthlab", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in subcommands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None, subcommands: Mapping[str, tuple[str, str]] = SUBCOMMANDS) -> int:
    """Parse the command line and run the subcommand (through :func:`run_command`)."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command, subcommands).parse_args(argv)
        module = importlib.import_module(args._module)
    except ModuleNotFoundError as exc:  # the subcommand's module needs a package that is not installed
        print(missing_dependency_message(f"panoptic-depthlab {command}", exc), file=sys.stderr)
        return 2
    if os.environ.get("PANOPTIC_DEPTHLAB_RETAIN_FREED_MEMORY", "1") != "0":
        retain_freed_memory()  # per-frame arrays reuse mapped pages (see memory.py); opt out with =0
    return run_command(f"panoptic-depthlab {args.command}", module.run, args)


if __name__ == "__main__":
    sys.exit(main())
