"""Training step time on the CPU: the trainer's CPU kernels (channels-last + space-to-batch dilated
depthwise convolutions) against plain eager PyTorch, for the default model's training config.

One step = forward, the panoptic + depth losses, backward, Adam. Random images and targets of the
configured crop size and batch (step time does not depend on their values). Writes JSON to
benchmarks/results/train_step_<config>.json.

    .venv/bin/python benchmarks/train_step.py --iterations 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "config" / "train" / "default_model.yaml"))
    p.add_argument("--iterations", type=int, default=6, help="measured steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the config's cpu_threads)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def random_batch(batch: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, 19, (batch, h, w), generator=g)
    return {
        "image": torch.randint(0, 256, (batch, 3, h, w), generator=g, dtype=torch.uint8),
        "sem_seg": sem,
        "sem_seg_weights": torch.ones(batch, h, w),
        "center": torch.rand(batch, 1, h, w, generator=g),
        "center_weights": torch.ones(batch, h, w),
        "offset": torch.randn(batch, 2, h, w, generator=g) * 10,
        "offset_weights": (sem >= 11).float(),
        "depth": torch.rand(batch, 1, h, w, generator=g) * 79 + 1,
        "depth_valid": torch.ones(batch, 1, h, w, dtype=torch.bool),
    }


def time_steps(cfg, fast: bool, iterations: int, warmup: int) -> list[float]:
    from panoptic_depthlab_core.model import build_model
    from panoptic_depthlab_core.train.cpu_speedups import use_space_to_batch_depthwise
    from panoptic_depthlab_core.train.losses import panoptic_depth_losses

    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    fmt = torch.channels_last if fast else torch.contiguous_format
    model.to(memory_format=fmt)
    if fast:
        use_space_to_batch_depthwise(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    h, w = cfg.data.crop_size
    batch = random_batch(cfg.solver.ims_per_batch, h, w)
    times = []
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        outputs = {k: v.float() for k, v in model(batch["image"].contiguous(memory_format=fmt)).items()}
        loss = sum(panoptic_depth_losses(outputs, batch, cfg.loss).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from panoptic_depthlab_core.train.config import load_train_config

    cfg = load_train_config(args.config)
    threads = args.threads or cfg.cpu_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    results = {}
    for name, fast in (("eager", False), ("trainer_cpu_kernels", True)):
        times = time_steps(cfg, fast, args.iterations, args.warmup)
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "samples_s": times}
        print(f"{name}: {statistics.median(times):.2f} s/step", file=sys.stderr)
    report = {
        "benchmark": "train_step",
        "config": str(Path(args.config).relative_to(REPO) if Path(args.config).is_relative_to(REPO) else args.config),
        "model": cfg.model.name,
        "batch": cfg.solver.ims_per_batch,
        "crop": list(cfg.data.crop_size),
        "threads": threads,
        "results": results,
        "speedup_median": results["eager"]["median_s"] / results["trainer_cpu_kernels"]["median_s"],
        "host": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
        },
    }
    out = args.out or REPO / "benchmarks" / "results" / f"train_step_{Path(args.config).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
