"""Synthetic-world speed: frames/s at 512x1024 on one CPU core (target >= 2), written as JSON.

Usage: python benchmarks/synth.py [--frames 20] [--size 512x1024] [--out benchmarks/results/synth.json]

Pins the process to one core (where the OS allows; --no-pin to skip) and OpenCV to one thread.
Reports rendering alone and rendering plus writing the Cityscapes files (PNG encoding included),
wall and CPU time; on a shared, loaded machine the CPU-time rate is the fairer single-core figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from panoptic_depthlab_core.config import parse_size  # noqa: E402
from panoptic_depthlab_core.data.synthetic import render_frame, write_frame  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=parse_size, default=(512, 1024))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "synth.json"))
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    pinned = None
    if hasattr(os, "sched_setaffinity") and not args.no_pin:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        pinned = core
    render_frame(args.seed, 10_000, args.size)  # warm-up (imports, caches)

    wall, cpu = [], []
    for i in range(args.frames):
        t0, c0 = time.perf_counter(), time.process_time()
        render_frame(args.seed, i, args.size)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i in range(args.frames):
            write_frame(tmp, "train", "bench", i, 19, render_frame(args.seed, i, args.size))
        with_write = time.perf_counter() - t0

    result = {
        "benchmark": "synthetic world render",
        "size_hw": list(args.size),
        "frames": args.frames,
        "pinned_core": pinned,
        "render_fps_wall": round(args.frames / sum(wall), 3),
        "render_fps_cpu": round(args.frames / sum(cpu), 3),
        "render_ms_median_wall": round(1000 * float(np.median(wall)), 1),
        "render_ms_p90_wall": round(1000 * float(np.percentile(wall, 90)), 1),
        "render_and_write_fps_wall": round(args.frames / with_write, 3),
        "target_fps": 2.0,
        "meets_target_wall": args.frames / sum(wall) >= 2.0,
        "meets_target_cpu": args.frames / sum(cpu) >= 2.0,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
