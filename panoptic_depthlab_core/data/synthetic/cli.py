"""``panoptic-depthlab synth``: write a synthetic street data set in Cityscapes layout."""

from __future__ import annotations

import argparse
import sys
import time

from panoptic_depthlab_core.config import parse_size

from .writer import write_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="data set root (gets leftImg8bit/, gtFine/, ...)")
    parser.add_argument("--num", type=int, required=True, help="number of frames")
    parser.add_argument("--size", type=parse_size, default=(512, 1024), help="HxW, default 512x1024")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--sequence", action="store_true",
                        help="temporally coherent drives with motion ground truth (motion/*_motion.json)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of --sequence")
    parser.add_argument("--sequences", type=int, default=1,
                        help="--sequence: number of drives of --num frames each (drive s uses seed + s)")
    parser.add_argument("--city", default="synthville", help="city name in the file names")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering independent scenes")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 10 == 0):
            rate = done / (time.perf_counter() - start)
            print(
                f"\r{done}/{total} frames ({rate:.2f}/s)", end="\n" if done == total else "", file=sys.stderr
            )

    stems = write_dataset(
        args.out, args.num, args.size, args.seed, args.split, args.sequence, args.city, args.fps, progress,
        workers=args.workers, sequences=args.sequences,
    )
    if not args.quiet:
        print(f"wrote {len(stems)} frames to {args.out} (split {args.split})")
    return 0
