"""Re-estimate BatchNorm running statistics for the final weights.

Short CPU runs end with running statistics that lag the weights (torchvision's MobileNetV3 uses BN
momentum 0.01, i.e. an average over the last few hundred iterations, while the weights were still
moving fast), so eval mode can be far worse than train mode. Recalibration runs the finished
network in train mode over training batches without gradients and replaces every running mean and
variance by the plain average over those batches; weights are untouched.
``panoptic-depthlab recalibrate-bn --config TRAIN_YAML --weights W --out W2 [--batches N]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from panoptic_depthlab_core.data.loader import build_dataloader
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.train.config import load_train_config
from panoptic_depthlab_core.weights import load_model_weights, save_safetensors


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches, max_batches: int, keep: list[nn.Module] | tuple[nn.Module, ...] = ()
) -> int:
    """Set BN running stats to the cumulative average over ``max_batches`` batches; returns the count.

    BatchNorms inside a module of ``keep`` (frozen parts, e.g. a frozen backbone) keep their stats."""
    kept = {id(m) for k in keep for m in k.modules()}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    modes = [(m, m.training) for m in model.modules()]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    for k in keep:
        k.eval()
    seen = 0
    for batch in batches:
        if seen >= max_batches:
            break
        images = batch["image"] if isinstance(batch, dict) else batch
        model(images.float())
        seen += 1
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    for m, training in modes:  # frozen parts stay in eval mode, as the trainer keeps them
        m.training = training
    if seen == 0:
        raise ValueError("no batches were given for BatchNorm recalibration")
    return seen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (model + data sections are used)")
    parser.add_argument("--weights", required=True, help="trained weights (safetensors)")
    parser.add_argument("--out", required=True, help="output safetensors with recalibrated BN statistics")
    parser.add_argument("--batches", type=int, default=50, help="training batches to average over")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opts", nargs="+", action="extend", default=[], metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    if args.batches <= 0:
        raise ValueError(f"--batches must be positive, got {args.batches}")
    cfg = load_train_config(args.config, args.opts)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    model = build_model(cfg.model)
    load_model_weights(model, args.weights)
    loader = build_dataloader(cfg.data, args.batch_size, train=True, seed=args.seed)
    seen = recalibrate_batchnorm(model, tqdm(loader, total=args.batches, desc="bn-recalibrate"), args.batches)
    save_safetensors(model.state_dict(), args.out, metadata={"bn_recalibrated_batches": str(seen)})
    info = {"weights": str(args.weights), "out": str(args.out), "batches": seen, "batch_size": args.batch_size}
    Path(str(args.out) + ".json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))
    return 0
