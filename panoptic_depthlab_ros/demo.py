"""``panoptic-depthlab demo --out demo_out`` (``make demo``): the whole system on a synthetic drive.

1. synthesise a drive as a rosbag2 bag (``synth-bag``: image, camera_info, GT depth and panoptic);
2. ``bag-eval`` it offline: metrics against the GT, and the offline output bag;
3. start the real node process (default model, CPU), play the bag into it over ROS 2 on loopback
   and record everything it publishes to ``demo_out/outputs.mcap``;
4. write ``demo_out/report.md`` with the metrics (tracking included), live statistics, overlay PNGs,
   a depth PNG, an animated overlay (GIF + MP4) and each track's distance and velocity over time.

The node and bag-eval get the drive camera's height and pitch (``camera_height_m``/``camera_pitch_rad``),
so distances are fused with the ground plane and the depth decoder's health is watched.

Every ROS step runs in a child process (``python -m panoptic_depthlab_ros...``), so that the node,
the player and the recorder each have their own rclpy context and their own threads; the bag files
are read back here with rosbags (pure Python).
Without the shipped default model the demo still runs, on seeded untrained weights, and the report
says so in its first lines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from PIL import Image as PILImage

from panoptic_depthlab_core.config import ConfigError
from panoptic_depthlab_core.data.synthetic.drive import SyntheticDrive
from panoptic_depthlab_core.image_messages import image_msg_to_array
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.predictor import DEFAULT_CONFIG, DEFAULT_WEIGHTS, load_pipeline_config
from panoptic_depthlab_core.viz import colorize_depth
from panoptic_depthlab_core.weights import save_safetensors
from panoptic_depthlab_ros.bag_types import make_typestore
from panoptic_depthlab_ros.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config_dir() -> Path:
    """config/ of this checkout, or the one ``colcon build`` installed into share/panoptic_depthlab."""
    checkout = REPO_ROOT / "config"
    if checkout.is_dir():
        return checkout
    try:
        return Path(get_package_share_directory("panoptic_depthlab")) / "config"
    except PackageNotFoundError:
        return checkout


CONFIG_DIR = _config_dir()
FALLBACK_CONFIG = CONFIG_DIR / "models" / "panoptic_depthlab_small.yaml"
SHM_PROFILE = CONFIG_DIR / "fastdds_shm.xml"
MARKER = ".panoptic_depthlab_demo"
NODE_NAME = "panoptic_depthlab"
OUTPUT_NAMES = (
    "panoptic",
    "semantic",
    "depth",
    "visualization",
    "detections",
    "detections_3d",
    "markers",
    "camera_info",
    "label_info",
    "tracks",
)
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)"
    )
    parser.add_argument("--frames", type=int, default=60, help="frames in the synthetic drive (default 60)")
    parser.add_argument("--size", default="256x512", help="image HxW (default 256x512)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="playback speed factor (default: what the node keeps up with, from bag-eval)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process (default: half the CPU cores, at least 1)",
    )
    parser.add_argument(
        "--node-timeout",
        type=float,
        default=240.0,
        help="seconds the node may take to load the model and subscribe (default 240)",
    )
    parser.add_argument(
        "--docs-picture",
        type=Path,
        default=None,
        help="also save the input | overlay | depth panel here (for the README)",
    )


# ----------------------------------------------------------------------------------------- helpers


@dataclass
class Step:
    name: str
    seconds: float = 0.0


@dataclass
class DemoState:
    out: Path
    env: dict[str, str]
    trained: bool
    model_args: list[str]  # bag-eval options selecting the model
    node_params: list[str]  # node -p name:=value pairs selecting the model
    model_note: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _shown(path: Path) -> Path:
    """A path as the report shows it: relative to the checkout where it lies inside it."""
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def _log(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def ros_environment(threads: int | None) -> dict[str, str]:
    """The environment for every child: loopback-only ROS 2 discovery on a domain id of this run.

    Values the caller already set (``make demo`` sets both) are kept. One torch/OpenMP thread pool per
    child sized to half the cores: the node and bag-eval never run at the same time, and more threads
    than free cores make OpenMP spin (a 64x128 forward pass took 25x longer that way on 2 busy cores).
    """
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not env.get("ROS_DOMAIN_ID", "").isdigit():
        env["ROS_DOMAIN_ID"] = str(os.getpid() % 90 + 10)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the discovery range
    if threads is None:
        threads = max(1, (os.cpu_count() or 2) // 2)
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["PYTHONUNBUFFERED"] = "1"
    # Shared memory (64 MB segment) + UDPv4 for Fast DDS: the node publishes ~1.3 MB per frame in a
    # burst; over UDP alone, reliable keep-last-1 outputs lost ~10 % of the panoptic/semantic frames
    # to the recorder on a busy machine. Humble reads the older variable name.
    if SHM_PROFILE.exists() and not (
        env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    ):
        humble = env.get("ROS_DISTRO", "") == "humble"  # Fast DDS 2.6 reads only the old name
        variable = "FASTRTPS_DEFAULT_PROFILES_FILE" if humble else "FASTDDS_DEFAULT_PROFILES_FILE"
        env[variable] = str(SHM_PROFILE)
    return env


def prepare_out_dir(out: Path) -> None:
    """Create ``out``; a previous demo output (marker file) is replaced, anything else is refused."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ValueError(
                f"--out {out} exists and is not a previous demo output; choose another directory"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by panoptic-depthlab demo; the whole directory is replaced on rerun\n")


def choose_model(out: Path, net_hw: tuple[int, int]) -> tuple[bool, list[str], list[str], str]:
    """The shipped default model when it exists; else seeded untrained small weights (and say so)."""
    size_args = ["--input-size", f"{net_hw[0]}x{net_hw[1]}"]
    size_params = [f"input_height:={net_hw[0]}", f"input_width:={net_hw[1]}"]
    if DEFAULT_CONFIG.exists() and DEFAULT_WEIGHTS.exists():
        note = f"the shipped default model ({_shown(DEFAULT_WEIGHTS)})"
        return True, size_args, size_params, note
    if not FALLBACK_CONFIG.exists():
        raise FileNotFoundError(f"neither the default model {DEFAULT_WEIGHTS} nor {FALLBACK_CONFIG} exists")
    torch.manual_seed(0)
    weights = out / "untrained_small.safetensors"
    save_safetensors(build_model(load_pipeline_config(FALLBACK_CONFIG).model).state_dict(), weights)
    note = (
        f"UNTRAINED weights: the shipped default model ({_shown(DEFAULT_WEIGHTS)}) is not "
        f"there, so {_shown(FALLBACK_CONFIG)} with seeded random weights is used. The "
        "plumbing is real; the predictions and metrics are meaningless until the default model ships."
    )
    model_args = ["--config", str(FALLBACK_CONFIG), "--weights", str(weights), *size_args]
    node_params = [f"model_config:={FALLBACK_CONFIG}", f"weights:={weights}", *size_params]
    return False, model_args, node_params, note


def run_child(state: DemoState, name: str, cmd: list[str], timeout_s: float) -> None:
    """A child process with our environment; its progress bars show on our terminal."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=state.env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{name} took longer than {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed with exit code {proc.returncode}: {' '.join(cmd)}")
    state.steps.append(Step(name, time.monotonic() - t0))


def _py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ------------------------------------------------------------------------------------------- steps


def live_replay(
    state: DemoState, bag: Path, rate: float, node_timeout_s: float, frames: int
) -> dict[str, Any]:
    """Node process + live replay (play + record) child; returns the replay summary."""
    out = state.out
    node_log_path = out / "node.log"
    node_cmd = _py(
        "panoptic_depthlab_ros.node",
        "--ros-args",
        *sum((["-p", p] for p in state.node_params), []),
        "-r",
        f"image:={IMAGE_TOPIC}",
        "-r",
        f"camera_info:={CAMERA_INFO_TOPIC}",
    )
    record_topics = [f"/{NODE_NAME}/{name}" for name in OUTPUT_NAMES] + ["/diagnostics"]
    recording = out / ".recording"
    summary_path = out / "live_summary.json"
    replay_cmd = _py(
        "panoptic_depthlab_ros.bags.live_replay",
        str(bag),
        "--record",
        str(recording),
        "--record-topics",
        *record_topics,
        "--topics",
        IMAGE_TOPIC,
        CAMERA_INFO_TOPIC,
        "--rate",
        f"{rate:.4f}",
        "--wait-for",
        IMAGE_TOPIC,
        "--wait-timeout",
        f"{node_timeout_s:.0f}",
        "--summary",
        str(summary_path),
    )
    t0 = time.monotonic()
    with node_log_path.open("w") as node_log:
        node = subprocess.Popen(node_cmd, env=state.env, stdout=node_log, stderr=subprocess.STDOUT)
        try:
            play_s = frames / 10.0 / rate
            proc = subprocess.run(
                replay_cmd, env=state.env, timeout=node_timeout_s + play_s + 180, check=False
            )
            if proc.returncode != 0:
                tail = node_log_path.read_text()[-2000:]
                raise RuntimeError(f"live replay failed (exit {proc.returncode}); node log tail:\n{tail}")
        finally:
            if node.poll() is None:
                node.send_signal(signal.SIGINT)
                try:
                    node.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
    state.steps.append(Step("live: node + play + record", time.monotonic() - t0))
    summary = json.loads(summary_path.read_text())
    (mcap_file,) = recording.glob("*.mcap")
    shutil.move(str(mcap_file), out / "outputs.mcap")
    shutil.rmtree(recording)
    return summary


def read_bag(path: Path, topics: set[str]) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(log time, message)] deserialized with rosbags (no ROS needed)."""
    from rosbags.rosbag2 import Reader  # optional dependency: only the demo and the bag tools need it

    store = make_typestore()
    out: dict[str, list] = {t: [] for t in topics}
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        for connection, log_time, raw in reader.messages(connections=connections):
            out[connection.topic].append((log_time, store.deserialize_cdr(raw, connection.msgtype)))
    return out


def image_to_array(msg: Any) -> np.ndarray:
    """rosbags sensor_msgs/Image -> contiguous numpy copy (colour HxWxC, single-channel HxW) for OpenCV."""
    pixels = image_msg_to_array(msg)
    return np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def stamp_of(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def write_pictures(state: DemoState, drive_bag: Path, docs_picture: Path | None) -> dict[str, Any]:
    """Overlay PNGs, a depth PNG, the overlay animation (GIF + MP4) and the input|overlay|depth panel."""
    out = state.out
    viz_topic, depth_topic = f"/{NODE_NAME}/visualization", f"/{NODE_NAME}/depth"
    live = read_bag(out / "outputs.mcap", {viz_topic, depth_topic})
    overlays = [(stamp_of(m), image_to_array(m)) for _, m in live[viz_topic]]  # bgr8
    depths = {stamp_of(m): image_to_array(m) for _, m in live[depth_topic]}
    files: dict[str, Any] = {"overlays": []}
    if not overlays:
        state.notes.append("the node published no visualization frames, so there are no pictures")
        return files
    picks = sorted({round(i * (len(overlays) - 1) / 3) for i in range(4)})
    for n, index in enumerate(picks):
        name = f"overlay_{n + 1}.png"
        cv2.imwrite(str(out / name), overlays[index][1])
        files["overlays"].append(name)
    middle_stamp, middle_overlay = overlays[picks[len(picks) // 2]]
    depth = depths.get(middle_stamp)
    if depth is not None:
        depth_rgb = colorize_depth(depth.astype(np.float32))
        cv2.imwrite(str(out / "depth.png"), cv2.cvtColor(depth_rgb, cv2.COLOR_RGB2BGR))
        files["depth"] = "depth.png"
    # Animation: every processed frame in order, at the drive's 10 frames/s.
    frames_rgb = [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for _, bgr in overlays]
    gif = [
        PILImage.fromarray(f).convert("P", palette=PILImage.Palette.ADAPTIVE, colors=128) for f in frames_rgb
    ]
    gif[0].save(
        out / "overlay.gif", save_all=True, append_images=gif[1:], duration=100, loop=0, optimize=True
    )
    files["gif"] = "overlay.gif"
    height, width = overlays[0][1].shape[:2]
    writer = cv2.VideoWriter(str(out / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    if writer.isOpened():
        for _, bgr in overlays:
            writer.write(bgr)
        writer.release()
        files["mp4"] = "overlay.mp4"
    else:
        state.notes.append("OpenCV could not open an mp4v video writer here; only the GIF was written")
    # The panel: the camera image, the node's overlay, its depth, for the same frame.
    drive = read_bag(drive_bag, {IMAGE_TOPIC})
    inputs = {stamp_of(m): image_to_array(m) for _, m in drive[IMAGE_TOPIC]}
    if middle_stamp in inputs and depth is not None:
        panel = np.concatenate(
            [
                cv2.cvtColor(inputs[middle_stamp], cv2.COLOR_RGB2BGR),
                middle_overlay,
                cv2.cvtColor(depth_rgb, cv2.COLOR_RGB2BGR),
            ],
            axis=1,
        )
        cv2.imwrite(str(out / "panel.png"), panel)
        files["panel"] = "panel.png"
        if docs_picture is not None:
            docs_picture.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "panel.png", docs_picture)
    return files


PLOT_COLOURS_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
                    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


def track_series(bag: Path, topic: str = f"/{NODE_NAME}/tracks") -> dict[str, list[tuple[float, float, float]]]:
    """track id -> [(stamp s, distance m, closing speed m/s (NaN until estimated))] from ~/tracks."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for _, msg in read_bag(bag, {topic})[topic]:
        t = stamp_of(msg) / 1e9
        for seg in msg.segments:
            if seg.id:
                series.setdefault(seg.id, []).append((t, float(seg.distance), -float(seg.velocity.z)))
    return series


def draw_track_plot(series: dict[str, list[tuple[float, float, float]]], max_tracks: int = 8,
                    size: tuple[int, int] = (360, 900)) -> np.ndarray:
    """Two panels drawn with OpenCV (no plotting library needed): distance over time and closing
    speed over time of the ``max_tracks`` longest tracks; BGR uint8."""
    height, width = size
    chosen = sorted(series, key=lambda k: (-len(series[k]), int(k) if k.isdigit() else 0))[:max_tracks]
    image = np.full((2 * height, width, 3), 255, np.uint8)
    points = [p for k in chosen for p in series[k]]
    if not points:
        cv2.putText(image, "no tracks", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
        return image
    t0 = min(p[0] for p in points)
    t1 = max(max(p[0] for p in points), t0 + 1e-3)
    left, right, top, bottom = 70, width - 150, 30, height - 40
    for panel, (label, column) in enumerate((("distance (m)", 1), ("closing speed (m/s)", 2))):
        oy = panel * height
        values = [p[column] for p in points if np.isfinite(p[column])]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if column == 1:
            lo = 0.0
        if hi - lo < 1e-6:
            hi = lo + 1.0
        pad = 0.05 * (hi - lo)
        lo, hi = lo - (pad if column == 2 else 0.0), hi + pad

        def xy(t: float, v: float, lo: float = lo, hi: float = hi, oy: int = oy) -> tuple[int, int]:
            x = left + (t - t0) / (t1 - t0) * (right - left)
            y = oy + bottom - (v - lo) / (hi - lo) * (bottom - top)
            return int(round(x)), int(round(y))

        cv2.rectangle(image, (left, oy + top), (right, oy + bottom), (0, 0, 0), 1)
        for k in range(5):  # value grid and labels
            v = lo + k * (hi - lo) / 4
            _, y = xy(t0, v)
            cv2.line(image, (left, y), (right, y), (225, 225, 225), 1)
            cv2.putText(image, f"{v:.1f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        if column == 2 and lo < 0 < hi:
            _, y = xy(t0, 0.0)
            cv2.line(image, (left, y), (right, y), (120, 120, 120), 1)
        cv2.putText(image, label, (left, oy + top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
        cv2.putText(image, f"{t1 - t0:.1f} s", (right - 40, oy + bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1)
        cv2.putText(image, "0 s", (left, oy + bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for n, track_id in enumerate(chosen):
            colour = PLOT_COLOURS_BGR[n % len(PLOT_COLOURS_BGR)]
            run: list[tuple[int, int]] = []
            for t, *vals in series[track_id] + [(math.nan, math.nan, math.nan)]:
                v = vals[column - 1]
                if np.isfinite(v) and np.isfinite(t):
                    run.append(xy(t, v))
                    continue
                if len(run) > 1:  # a gap (not yet estimated, or the track's end) breaks the line
                    cv2.polylines(image, [np.array(run, np.int32)], False, colour, 2, cv2.LINE_AA)
                for point in run:
                    cv2.circle(image, point, 2, colour, -1)
                run = []
            if panel == 0:
                ly = top + 20 + 22 * n
                cv2.line(image, (right + 15, ly), (right + 40, ly), colour, 3)
                cv2.putText(image, f"track {track_id}", (right + 45, ly + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                            (0, 0, 0), 1)
    return image


def write_track_plot(state: DemoState, bag: Path) -> dict[str, Any]:
    """tracks.png: per-track distance and closing speed over time (bag-eval's ~/tracks, every frame)."""
    series = track_series(bag)
    if not series:
        state.notes.append("no ~/tracks messages with tracks were written, so there is no track plot")
        return {}
    cv2.imwrite(str(state.out / "tracks.png"), draw_track_plot(series))
    lengths = sorted((len(v) for v in series.values()), reverse=True)
    return {"tracks_plot": "tracks.png", "tracks": len(series), "longest_track_frames": lengths[0]}


def camera_mount_params(frames: int, size: tuple[int, int], seed: int) -> dict[str, float]:
    """The synthetic drive camera's height and pitch above the road (what a user measures on a car)."""
    camera = SyntheticDrive(seed=seed, num_frames=frames, size=size).camera
    return {"camera_height_m": float(camera.height_m), "camera_pitch_rad": float(camera.pitch)}


def diagnostics_table(out: Path) -> list[str]:
    """The node's last /diagnostics status as a markdown table (rates, latency, drops)."""
    data = read_bag(out / "outputs.mcap", {"/diagnostics"})["/diagnostics"]
    if not data:
        return ["(no /diagnostics message was recorded)"]
    status = [s for s in data[-1][1].status if s.values]
    if not status:
        return ["(the last /diagnostics message had no values)"]
    lines = [f"Node status: {status[0].message}", "", "| key | value |", "|---|---|"]
    lines += [f"| {kv.key} | {kv.value} |" for kv in status[0].values]
    return lines


def write_report(
    state: DemoState, args: argparse.Namespace, eval_info: dict, live: dict, files: dict
) -> Path:
    out = state.out
    metrics_md = out / "metrics" / "metrics.md"
    played = live.get("sent", {}).get(IMAGE_TOPIC, 0)
    per_frame_topics = [f"/{NODE_NAME}/{n}" for n in OUTPUT_NAMES if n != "label_info"]
    processed = max((live.get("recorded", {}).get(t, 0) for t in per_frame_topics), default=0)
    lines = ["# Panoptic-DepthLab demo", ""]
    if not state.trained:
        lines += [f"> **{state.model_note}**", ""]
    else:
        lines += [f"Model: {state.model_note}.", ""]
    lines += [
        f"A synthetic drive of {args.frames} frames ({args.size}, seed {args.seed}, 10 frames/s) was written "
        "as a rosbag2 bag (`drive/`), evaluated offline with `bag-eval`, and played over ROS 2 (loopback, "
        f"domain {state.env['ROS_DOMAIN_ID']}) into the real node process, whose outputs were recorded to "
        "`outputs.mcap`.",
        "",
        "## What the node published",
        "",
    ]
    if files.get("panel"):
        lines += [
            "Camera image | `~/visualization` overlay (class, distance-coloured, metres) | `~/depth`:",
            "",
            f"![panel]({files['panel']})",
            "",
        ]
    if files.get("gif"):
        lines += [
            f"The overlay sequence: ![overlay animation]({files['gif']})"
            + (f" (also [{files['mp4']}]({files['mp4']}))" if files.get("mp4") else ""),
            "",
        ]
    for name in files.get("overlays", []):
        lines.append(f"![{name}]({name})")
    if files.get("depth"):
        lines += ["", f"Depth of the middle frame: ![depth]({files['depth']})"]
    if files.get("tracks_plot"):
        lines += [
            "",
            "## Tracks over time",
            "",
            f"Distance and closing speed (-velocity z, m/s; > 0: coming closer) of the "
            f"{min(8, files['tracks'])} longest of {files['tracks']} tracks (`~/tracks` of bag-eval's output, "
            f"every frame; the longest lasted {files['longest_track_frames']} frames). A line starts where the "
            "track's velocity is first estimated and breaks where the track is not seen:",
            "",
            f"![tracks]({files['tracks_plot']})",
        ]
    lines += [
        "",
        "## Live replay (node process)",
        "",
        f"- frames played: {played} at rate {live.get('rate', 0):.3f}x "
        f"({live.get('play_s', 0):.1f} s); frames the node published outputs for: {processed} "
        f"(latest-frame-wins drops the rest: {max(0, played - processed)})",
        "- messages recorded per topic: "
        + ", ".join(f"`{t}` {n}" for t, n in sorted(live.get("recorded", {}).items())),
        "",
    ]
    lines += diagnostics_table(out)
    lines += [
        "",
        "## Offline evaluation (`bag-eval`, every frame, against the synthetic GT)",
        "",
        f"{eval_info.get('frames', 0)} frames at {eval_info.get('frames_per_second') or 0:.2f} frames/s; "
        "the same metrics `panoptic-depthlab eval` computes (PQ/SQ/RQ in %, depth errors as fractions).",
        "",
    ]
    if metrics_md.exists():
        lines += [metrics_md.read_text()]
    else:
        lines += ["(no metrics: the bag had no GT topics)"]
    lines += [
        "",
        "## Files",
        "",
        "- `outputs.mcap`: everything the node published (open in Foxglove, or `ros2 bag play "
        "demo_out/outputs.mcap` and RViz2 with `config/panoptic_depthlab.rviz`)",
        "- `drive/`: the input bag; `offline/`: bag-eval's output bag (every frame)",
        "- `metrics/`: metrics.json, metrics.md (tracking included), per_frame.json; `node.log`: the node's log",
        "- `tracks.png`: per-track distance and closing speed over time; `camera_mount.yaml`: the drive camera's "
        "height and pitch given to bag-eval and the node",
        "",
        "## Timings",
        "",
    ]
    lines += [f"- {s.name}: {s.seconds:.1f} s" for s in state.steps]
    lines += [f"- total: {sum(s.seconds for s in state.steps):.1f} s", ""]
    if state.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in state.notes] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


# --------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except RuntimeError as exc:  # a step failed; its own output says why
        print(f"panoptic-depthlab demo: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"--size must look like HEIGHTxWIDTH, got {args.size!r}") from exc
    if height < 32 or width < 32 or args.frames < 1:
        raise ValueError(f"need --size of at least 32x32 and --frames >= 1, got {args.size}, {args.frames}")
    if args.rate is not None and not args.rate > 0:
        raise ValueError(f"--rate must be > 0, got {args.rate}")
    net_hw = (-(-height // 32) * 32, -(-width // 32) * 32)  # the network wants multiples of 32
    out = args.out.resolve()
    t_start = time.monotonic()
    prepare_out_dir(out)
    env = ros_environment(args.threads)
    _log(
        f"output in {out}; ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
        f"(discovery: {env['ROS_AUTOMATIC_DISCOVERY_RANGE']}), "
        f"{env['OMP_NUM_THREADS']} thread(s) per process"
    )
    try:
        trained, model_args, node_params, note = choose_model(out, net_hw)
    except ConfigError as exc:
        raise ValueError(f"model config: {exc}") from exc
    mount = camera_mount_params(args.frames, (height, width), args.seed)
    mount_file = out / "camera_mount.yaml"
    mount_file.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {k}: {v!r}\n" for k, v in mount.items()))
    model_args = [*model_args, "--params-file", str(mount_file)]
    node_params = [*node_params, *(f"{k}:={v!r}" for k, v in mount.items())]
    state = DemoState(out, env, trained, model_args, node_params, note)
    if not trained:
        _log("WARNING: " + note)

    drive = out / "drive"
    _log(f"1/4 synthesising a {args.frames}-frame drive ({args.size}) -> {drive}")
    run_child(
        state,
        "synth-bag",
        _py(
            "panoptic_depthlab_ros.bags.synth_bag",
            "--out",
            str(drive),
            "--frames",
            str(args.frames),
            "--size",
            f"{height}x{width}",
            "--seed",
            str(args.seed),
        ),
        timeout_s=600,
    )

    _log("2/4 bag-eval: the node's processing on every frame, offline, with metrics")
    run_child(
        state,
        "bag-eval",
        _py(
            "panoptic_depthlab_ros.bags.bag_eval",
            str(drive),
            "--out",
            str(out / "offline"),
            "--metrics-out",
            str(out / "metrics"),
            *model_args,
        ),
        timeout_s=900,
    )
    eval_info = json.loads((out / "metrics" / "per_frame.json").read_text())
    inference_s = float(np.median([r["inference_ms"] for r in eval_info["per_frame"]] or [100.0])) / 1000.0
    # Play at about the node's own speed (bag time is 10 frames/s): latest-frame-wins drops few frames.
    rate = args.rate or min(1.0, 1.0 / max(inference_s * 1.1, 1e-3) / 10.0)

    _log(f"3/4 live: node process <- play (rate {rate:.3f}x) ; record -> {out / 'outputs.mcap'}")
    live = live_replay(state, drive, rate, args.node_timeout, args.frames)
    live["rate"] = rate
    if not any(
        live.get("recorded", {}).get(f"/{NODE_NAME}/{n}") for n in ("panoptic", "depth", "visualization")
    ):
        raise RuntimeError(f"the node published nothing during the replay; see {out / 'node.log'}")

    _log("4/4 report: pictures, animation, metrics")
    t0 = time.monotonic()
    files = write_pictures(state, drive, args.docs_picture)
    files.update(write_track_plot(state, out / "offline"))
    state.steps.append(Step("report pictures", time.monotonic() - t0))
    report = write_report(state, args, eval_info, live, files)
    _log(f"done in {time.monotonic() - t_start:.0f} s: {report}")
    if not trained:
        _log("WARNING: untrained weights were used (see the top of the report)")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(["demo", *sys.argv[1:]]))
