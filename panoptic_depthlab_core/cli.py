"""``panoptic-depthlab``: one command line with subcommands.

Each subcommand lives beside the code it drives, in a module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them, so importing the CLI stays cheap (torch is imported
by the subcommand that needs it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert-d2": ("panoptic_depthlab_core.weights", "convert a detectron2 Panoptic-DeepLab .pkl to safetensors"),
    "infer": ("panoptic_depthlab_core.infer_cli", "run the model on images, write overlays/depth/panoptic/JSON"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panoptic-depthlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
