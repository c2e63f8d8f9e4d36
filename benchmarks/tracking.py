"""Cost of tracking per frame at 1080p on this CPU (the issue's bar for "on by default": < 2 ms).

Frames: a synthetic drive rendered at 540x960 and upscaled to 1920x1080 (K scaled), run through the
default model's Predictor once, the way the node calls it for its planner outputs (no full-resolution
maps: the segments and the network's id map). Then, per frame and repeated, the timed steps:

- ``tracker``: ``Tracker.update`` (association on boxes + strided network-map overlaps + 3D gate,
  Hungarian, Kalman filters, births/deaths) — the tracking cost proper;
- ``remap``: ``TrackingResult.apply`` (track-consistent ids in the segments and the network's id map,
  which the 16UC1 image is converted from);
- ``ground``: ``apply_ground_distance`` (contacts on the network map, fusion), reported beside it.

Writes ``benchmarks/results/tracking_<machine>.json`` with the load average (the CPU may be shared).

    .venv/bin/python benchmarks/tracking.py [--frames 12] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from panoptic_depthlab_core.bench import machine_info, machine_slug
from panoptic_depthlab_core.data.synthetic import SyntheticDrive
from panoptic_depthlab_core.ground_distance import CameraMount, apply_ground_distance
from panoptic_depthlab_core.predictor import Predictor
from panoptic_depthlab_core.tracking import Tracker, TrackerConfig

RESULTS = Path(__file__).resolve().parent / "results"


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "max_ms": float(a.max()),
            "n": int(a.size)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12, help="drive frames (10 fps)")
    parser.add_argument("--repeats", type=int, default=20, help="times the whole drive is tracked")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the Predictor pass")
    parser.add_argument("--out", default="", help="JSON path (default results/tracking_<machine>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    machine = machine_info("cpu")

    drive = SyntheticDrive(args.seed, args.frames, (540, 960), fps=10.0)
    mount = CameraMount(drive.camera.height_m, drive.camera.pitch)
    scale = np.diag([2.0, 2.0, 1.0])
    predictor = Predictor.from_config(backend="torch")
    frames = []
    for frame in drive.frames():
        rgb = cv2.resize(frame.rgb, (1920, 1080), interpolation=cv2.INTER_LINEAR)
        K = scale @ frame.K
        result = predictor.predict(rgb, K=K, maps=(), stuff_segments="none")  # the node's planner outputs
        frames.append((frame.time_s, result))
    things = [sum(s.is_thing for s in r.segments) for _, r in frames]

    tracker_ms, remap_ms, ground_ms = [], [], []
    confirmed = 0
    for _ in range(args.repeats):
        tracker = Tracker(TrackerConfig())
        for stamp, base in frames:
            result = type(base)(**{**base.__dict__, "segments": list(base.segments)})
            t0 = time.perf_counter()
            apply_ground_distance(result, mount, depth_trained=True)
            t1 = time.perf_counter()
            tracking = tracker.update(result, stamp, "camera")
            t2 = time.perf_counter()
            tracking.apply(result)
            t3 = time.perf_counter()
            ground_ms.append((t1 - t0) * 1e3)
            tracker_ms.append((t2 - t1) * 1e3)
            remap_ms.append((t3 - t2) * 1e3)
        confirmed = sum(1 for t in tracking.tracks if t is not None and t.confirmed)
    up = frames[0][1].upsampling
    report = {
        "benchmark": "tracking per frame at 1920x1080 (network map "
                     f"{up.panoptic_ids.shape[1]}x{up.panoptic_ids.shape[0]})" if up is not None else "tracking",
        "machine": {**machine, "numpy": np.__version__},
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "frames": args.frames,
        "repeats": args.repeats,
        "things_per_frame": {"median": float(np.median(things)), "max": int(max(things))},
        "confirmed_tracks_last_frame": confirmed,
        "tracker": stats(tracker_ms),
        "remap": stats(remap_ms),
        "tracker_plus_remap_median_ms": float(np.median(np.add(tracker_ms, remap_ms))),
        "ground_distance": stats(ground_ms),
        "target": "tracking < 2 ms per frame at 1080p (issue 21): tracker + remap median",
    }
    report["target_met"] = report["tracker_plus_remap_median_ms"] < 2.0
    out = Path(args.out) if args.out else RESULTS / f"tracking_{machine_slug(machine)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("tracker", "remap", "ground_distance", "things_per_frame",
                                             "load_average_at_start", "target_met")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
