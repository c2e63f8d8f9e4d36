"""Inference benchmark: every stage and end to end, per backend/precision/size/model.

Writes ``benchmarks/results/inference_<machine>.json`` (+ ``.md`` table). Examples:

    python benchmarks/inference.py                                   # CPU, full matrix (slow on a laptop)
    python benchmarks/inference.py --models small --sizes 512x1024 --iterations 5
    python benchmarks/inference.py --device cuda --models r52 --sizes 1024x2048 --backends torch,tensorrt
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_depthlab_core.bench import add_arguments, machine_info, machine_slug, run_bench, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(out="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = (
        args.out
        or REPO / "benchmarks" / "results" / f"inference_{machine_slug(machine_info(args.device))}.json"
    )
    try:  # message building is the ROS side's; without ROS 2 the column is skipped, not faked
        from panoptic_depthlab_ros.bench import message_builder
    except ImportError as exc:
        report = run_bench(args, message_reason=f"not measured: ROS 2 message packages not importable ({exc})")
    else:
        report = run_bench(args, message_builder())
    json_path, md_path = write_report(report, out, args.markdown)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
