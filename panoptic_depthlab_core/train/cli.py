"""``panoptic-depthlab train --config C [--resume] [--opts k=v ...]`` (also under torchrun)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch.distributed as dist

from panoptic_depthlab_core.train.config import load_train_config
from panoptic_depthlab_core.train.trainer import NonFiniteLossError, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (see config/train/)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in output_dir (exactly where it stopped)",
    )
    parser.add_argument(
        "--opts",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. solver.max_iter=2000 output_dir=out/run1",
    )


def run(args: argparse.Namespace) -> int:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(message)s",
        datefmt="%H:%M:%S",
    )
    cfg = load_train_config(args.config, args.opts)
    try:
        result = train(cfg, resume=args.resume)
    except NonFiniteLossError as exc:
        print(f"panoptic-depthlab train: stopped: {exc}", file=sys.stderr)
        return 3
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"trained {result.iterations} iterations; final weights: {result.final_weights}")
    return 0
