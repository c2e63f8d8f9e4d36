"""bag-eval-fleet throughput: frames/s over several bags with 1 and 2 local workers, written as JSON.

Usage: python benchmarks/fleet.py [--bags 4] [--frames 30] [--size 256x512] [--settings 1x2 1x1 2x1]
                                  [--backend auto] [--ray] [--out benchmarks/results/fleet_<machine>.json]

Synthetic drives (with GT, so every bag is scored too) go through ``bag-eval-fleet`` exactly as a user
runs it: spawned worker processes, the shipped default model. A setting WxT is W workers with T model
threads each (default: one worker with every core, one worker with one thread, one worker per core
with one thread). Per setting it reports the fleet's wall-clock rate (worker start and model load included),
the rate while bags run (frames over the busiest worker's summed bag time) and each bag's own rate.
``--ray`` adds 1 and W tasks at a time on a local Ray (loopback only, one CPU and thread per task).

The load average is recorded before and after every run: on a shared machine the numbers are bounded
by the cores other processes leave, which the load average shows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from panoptic_depthlab_core.bench import machine_info
from panoptic_depthlab_core.config import parse_size


def machine_tag() -> str:
    """cpu<cores>-<vendor>-<family>, e.g. cpu2-amd-epyc (the other result files' naming)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    words = re.findall(r"[a-z0-9]+", model.lower().replace("(r)", "").replace("(tm)", ""))
    words = [w for w in words if w not in ("processor", "cpu", "core")][:2]
    return f"cpu{cores}" + ("-" + "-".join(words) if words else "")


def run_setting(bags: Path, out_dir: Path, workers: int, threads: int, args: argparse.Namespace,
                ray_address: str | None) -> dict:
    from panoptic_depthlab_ros.bags import fleet

    parser = argparse.ArgumentParser()
    fleet.add_arguments(parser)
    argv = [str(bags), "--out-dir", str(out_dir), "--backend", args.backend, "--threads-per-worker", str(threads)]
    argv += ["--input-size", args.input_size] if args.input_size else []
    if ray_address:
        argv += ["--ray", ray_address, "--workers", str(workers), "--cpus-per-bag", "1"]
    else:
        argv += ["--workers", str(workers)]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    report = fleet.run_fleet(parser.parse_args(argv))
    wall = time.perf_counter() - t0
    rows = report["bags"]
    frames = sum(r["frames"] for r in rows)
    busy: dict[str, float] = {}
    for r in rows:
        busy[r["worker"]] = busy.get(r["worker"], 0.0) + r["seconds"]
    busiest = max(busy.values()) if busy else 0.0
    return {
        "executor": "ray" if ray_address else "local",
        "workers": workers,
        "threads_per_worker": threads,
        "bags": len(rows),
        "failed": report["overall"]["failed"],
        "frames": frames,
        "wall_s": round(wall, 2),
        # everything: worker start, imports, model load, every bag
        "frames_per_second_wall": round(frames / wall, 3),
        # while bags run: the busiest worker's summed bag time bounds the run
        "frames_per_second_running": round(frames / busiest, 3) if busiest else None,
        "worker_start_and_overhead_s": round(wall - busiest, 2),
        "per_bag_frames_per_second": [r["frames_per_second"] for r in rows],
        "worker_processes": len(busy),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--frames", type=int, default=30, help="frames per bag")
    parser.add_argument("--size", default="256x512", help="image HxW of the synthetic drives")
    parser.add_argument("--input-size", default=None, help="network input HxW (default: the model's)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[f"1x{cores}", "1x1", f"{cores}x1"],
        help="WORKERSxTHREADS per run (default: 1xCORES 1x1 CORESx1)",
    )
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray (127.0.0.1 only)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/fleet_<machine>.json)")
    args = parser.parse_args()

    from panoptic_depthlab_ros.bags.synth_bag import write_synth_bag

    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"fleet_{machine_tag()}.json"
    runs = []
    with tempfile.TemporaryDirectory(prefix="fleet_bench_") as tmp:
        bags = Path(tmp) / "bags"
        for i in range(args.bags):
            write_synth_bag(bags / f"drive{i}", frames=args.frames, size=parse_size(args.size), seed=i)
        settings = [tuple(int(x) for x in s.lower().split("x")) for s in args.settings]
        for workers, threads in settings:
            runs.append(run_setting(bags, Path(tmp) / f"local_{workers}x{threads}", workers, threads, args, None))
            print(json.dumps(runs[-1]), file=sys.stderr)
        if args.ray:
            os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback node address (see docs/fleet.md)
            import ray

            cpus = max(w for w, _ in settings)
            context = ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                               num_cpus=cpus, num_gpus=0, log_to_driver=False, configure_logging=False)  # fmt: skip
            try:
                for workers in sorted({1, cpus}):
                    runs.append(run_setting(bags, Path(tmp) / f"ray_{workers}", workers, 1, args,
                                            context.address_info["gcs_address"]))  # fmt: skip
                    print(json.dumps(runs[-1]), file=sys.stderr)
            finally:
                ray.shutdown()
    doc = {
        "benchmark": "bag-eval-fleet throughput",
        "machine": machine_info("cpu"),
        "shared_machine_note": "measured while other processes shared the CPU; see load_average_* per run",
        "bags": args.bags,
        "frames_per_bag": args.frames,
        "image_size": args.size,
        "model": "shipped default model",
        "backend": args.backend,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
