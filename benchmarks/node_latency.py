"""Node latency vs the bare Predictor: what does the ROS node add on top of inference?

Starts ``panoptic_depthlab_node`` in its own process, publishes the same frames one at a time
(waiting for the outputs, so nothing is dropped) and measures publish -> last subscribed output
received; after each frame the bare ``Predictor.predict`` runs on the same frame in this process
(on a worker thread, as in the node), making the same full-resolution maps and stuff segments as
the node does for the subscribed outputs (and once more with all of them, for reference). The node
overhead is the difference of the medians; the target is <= 5 % of inference time at 1080p with
the shared-memory Fast DDS profile (``--shm``, used by both processes).

After each frame the same image also goes to ``image_echo.py``, a third process that takes it as
the node does and answers with its header at once: the transport floor (camera publish, transfer,
take, one small message back) that any node in another process pays, so the JSON also says how
much of the overhead is the node's own work.

    .venv/bin/python benchmarks/node_latency.py --shm --frames 20 --device cuda

Writes JSON to benchmarks/results/. Uses ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a domain id
from this process id unless they are already set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from panoptic_depthlab_core.bench import machine_info
from panoptic_depthlab_core.memory import retain_freed_memory
from panoptic_depthlab_ros.messages import OUTPUT_NAMES

REPO = Path(__file__).resolve().parents[1]
SHM_PROFILE = REPO / "config" / "fastdds_shm.xml"
ALL_OUTPUTS = OUTPUT_NAMES  # every output the node publishes per frame


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--frames", type=int, default=20, help="measured frames (after 3 warm-up frames)")
    p.add_argument("--model-config", default="", help="model YAML; empty = shipped default model")
    p.add_argument("--weights", default="", help="weights .safetensors; empty = default / random init")
    p.add_argument("--input-height", type=int, default=0, help="network input height (0 = model config)")
    p.add_argument("--input-width", type=int, default=0, help="network input width (0 = model config)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", help="the node parameter (auto: onnxruntime on a CPU, as the node)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--outputs", default=",".join(ALL_OUTPUTS), help="outputs to subscribe (comma-separated)")
    p.add_argument(
        "--include-stuff-detections",
        action="store_true",
        help="the node parameter: stuff segments become detections/markers too (default off, as the node)",
    )
    p.add_argument("--shm", action="store_true", help="use config/fastdds_shm.xml in both processes")
    p.add_argument(
        "--subscriber",
        choices=("raw", "python"),
        default="raw",
        help="raw: take the serialized messages (as a C++ subscriber's cost: no Python conversion of "
        "~20 MB of images per frame on the same CPU); python: deserialize them into rclpy messages",
    )
    p.add_argument(
        "--skip-all-maps-reference",
        action="store_true",
        help="skip the reference predict() with every map (a third inference per frame: slow models)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    return p.parse_args(argv)


def _prepare_env(shm: bool) -> dict[str, str]:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    if shm:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
        if os.environ.get("ROS_DISTRO") == "humble":  # Fast DDS 2.6 reads the old name (newer ones warn)
            os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    return dict(os.environ)


def _params_yaml(args: argparse.Namespace, path: Path) -> None:
    values = {
        "model_config": args.model_config,
        "weights": args.weights,
        "device": args.device,
        "backend": args.backend,
        "precision": args.precision,
        "input_height": args.input_height,
        "input_width": args.input_width,
        "warmup_iterations": 2,
        "include_stuff_detections": args.include_stuff_detections,
    }
    lines = ["/**:", "  ros__parameters:"]
    for key, value in values.items():
        lines.append(f"    {key}: {json.dumps(value) if isinstance(value, str) else value}")
    path.write_text("\n".join(lines) + "\n")


def _timed_predict(
    predictor, rgb: np.ndarray, K: np.ndarray, maps=None, stuff_segments: str = "full"
) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    result = predictor.predict(rgb, K, maps=maps, stuff_segments=stuff_segments)
    return (time.perf_counter() - t0) * 1e3, dict(result.timings_ms)


def _stamp_sec(msg, name: str) -> int:
    header = msg.markers[0].header if name == "markers" else msg.header
    return int(header.stamp.sec)


def _raw_stamp_sec(data: bytes, name: str) -> int:
    """header.stamp.sec from a serialized (CDR) message: every output starts with its Header, except
    MarkerArray, whose first Marker's Header follows the sequence length."""
    order = "little" if data[1] & 1 else "big"  # encapsulation id: CDR_LE = 0x0001
    offset = 8 if name == "markers" else 4
    return int.from_bytes(data[offset : offset + 4], order, signed=True)


PLANNER_OUTPUTS = ("detections", "detections_3d", "markers", "camera_info")
ECHO_IMAGE, ECHO_REPLY = "/bench_echo/image", "/bench_echo/header"


def _outputs_suffix(outputs: tuple[str, ...]) -> str:
    """File-name part for a subset of outputs, so runs with different outputs keep their own JSON."""
    if set(outputs) == set(ALL_OUTPUTS):
        return ""
    if set(outputs) == set(PLANNER_OUTPUTS):
        return "_planner_outputs"
    return "_" + "-".join(sorted(outputs))


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "median_ms": float(np.median(arr)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
        "min_ms": float(arr.min()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outputs = tuple(o for o in args.outputs.split(",") if o)
    unknown = set(outputs) - set(ALL_OUTPUTS)
    if unknown:
        raise SystemExit(f"unknown outputs {sorted(unknown)}; known: {', '.join(ALL_OUTPUTS)}")
    env = _prepare_env(args.shm)
    env["PYTHONUNBUFFERED"] = "1"

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from panoptic_depthlab_ros.node import OUTPUT_TYPES as types

    tmp = Path(tempfile.mkdtemp(prefix="pdl_bench_"))
    params = tmp / "params.yaml"
    _params_yaml(args, params)
    log = open(tmp / "node.log", "w")  # noqa: SIM115 - closed below
    node_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "panoptic_depthlab_ros.node",
            "--ros-args",
            "--params-file",
            str(params),
            "-r",
            "__node:=bench_node",
            "-r",
            "image:=/bench/image",
            "-r",
            "camera_info:=/bench/camera_info",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(REPO),
    )
    echo_log = open(tmp / "echo.log", "w")  # noqa: SIM115 - closed below
    echo_proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "image_echo.py")]
        + ["--image-topic", ECHO_IMAGE, "--reply-topic", ECHO_REPLY],
        env=env,
        stdout=echo_log,
        stderr=subprocess.STDOUT,
        cwd=str(REPO),
    )
    rclpy.init()
    client = rclpy.create_node("bench_client")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    arrivals: dict[tuple[str, int], float] = {}
    lock = threading.Lock()
    arrived = threading.Condition(lock)  # notified on every output: the main thread sleeps, not polls

    raw = args.subscriber == "raw"

    def make_cb(name: str):
        def cb(msg) -> None:
            now = time.perf_counter()
            stamp_sec = _raw_stamp_sec(msg, name) if raw else _stamp_sec(msg, name)
            with arrived:
                arrivals[(name, stamp_sec)] = now
                arrived.notify_all()

        return cb

    for name in outputs:
        client.create_subscription(
            types[name], f"/bench_node/{name}", make_cb(name), QoSProfile(depth=5), raw=raw
        )
    from diagnostic_msgs.msg import DiagnosticArray

    node_stages: dict[str, float] = {}  # the node's own per-stage p50 from its latest /diagnostics

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if "bench_node" not in status.name:
                continue
            for kv in status.values:
                if kv.key.startswith("latency_") and kv.key.endswith("_p50_ms"):
                    with lock:
                        node_stages[kv.key[len("latency_") : -len("_p50_ms")]] = float(kv.value)

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, QoSProfile(depth=5))

    def on_echo(msg) -> None:
        now = time.perf_counter()
        stamp_sec = _raw_stamp_sec(msg, "header") if raw else int(msg.stamp.sec)
        with arrived:
            arrivals[("echo", stamp_sec)] = now
            arrived.notify_all()

    client.create_subscription(Header, ECHO_REPLY, on_echo, QoSProfile(depth=5), raw=raw)
    echo_pub = client.create_publisher(Image, ECHO_IMAGE, QoSProfile(depth=1))
    image_pub = client.create_publisher(Image, "/bench/image", QoSProfile(depth=1))
    info_pub = client.create_publisher(CameraInfo, "/bench/camera_info", QoSProfile(depth=1))
    stop = False

    def spin() -> None:
        while not stop:
            executor.spin_once(timeout_sec=0.02)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    # synthetic street scenes (the shipped model's domain: cars, people, road, sky), ~2 s each to render
    from panoptic_depthlab_core.data.synthetic.render import render_frame

    frames = [np.ascontiguousarray(render_frame(seed, 0, (args.height, args.width)).rgb) for seed in range(4)]
    f = 0.8 * args.width
    info = CameraInfo(width=args.width, height=args.height)
    info.k = [f, 0.0, args.width / 2, 0.0, f, args.height / 2, 0.0, 0.0, 1.0]
    info.header.frame_id = "camera_optical"
    # The bare Predictor, same parameters, measured on the same frames interleaved with the node's
    # (the node is idle meanwhile), so both see the same machine load.
    from panoptic_depthlab_ros.messages import maps_needed, stuff_segments_needed
    from panoptic_depthlab_ros.params import NodeParams
    from panoptic_depthlab_ros.processing import load_predictor, message_options

    retention = retain_freed_memory()  # what the node does on configure (retain_freed_memory: true)

    # One persistent worker thread does every torch call (load, warm-up, predict), as in the node:
    # a second thread running torch ops makes two OpenMP teams compete (network 104 vs 61 ms here).
    worker = ThreadPoolExecutor(max_workers=1)
    node_params = NodeParams(
        model_config=args.model_config,
        weights=args.weights,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        input_height=args.input_height,
        input_width=args.input_width,
        include_stuff_detections=args.include_stuff_detections,
    )
    predictor = worker.submit(load_predictor, node_params).result()
    # the same work as the node: it only makes the full-resolution maps its subscribed outputs read
    node_options = message_options(node_params, frozenset(outputs))
    node_maps, node_stuff = maps_needed(node_options), stuff_segments_needed(node_options)
    K = np.array(info.k, dtype=np.float64).reshape(3, 3)
    worker.submit(predictor.warmup, 2).result()
    node_ms: list[float] = []
    per_output_ms: dict[str, list[float]] = {n: [] for n in outputs}
    publish_calls_ms: list[float] = []
    echo_ms: list[float] = []
    bare_ms: list[float] = []
    bare_all_maps_ms: list[float] = []
    bare_stages: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 600
        while (
            image_pub.get_subscription_count() == 0
            or any(client.count_publishers(f"/bench_node/{n}") == 0 for n in outputs)
            or echo_pub.get_subscription_count() == 0
            or client.count_publishers(ECHO_REPLY) == 0
        ):
            if node_proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"node did not come up:\n{(tmp / 'node.log').read_text()[-3000:]}")
            if echo_proc.poll() is not None:
                raise SystemExit(f"image_echo.py did not come up:\n{(tmp / 'echo.log').read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(1.0)
        info_pub.publish(info)
        time.sleep(0.5)
        for i in range(args.frames + 3):
            msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
            msg.data = frames[i % len(frames)].tobytes()
            msg.header.stamp.sec = i + 1
            msg.header.frame_id = "camera_optical"
            t0 = time.perf_counter()
            image_pub.publish(msg)
            publish_call_ms = (time.perf_counter() - t0) * 1e3  # the camera side's own cost, included
            with arrived:
                wanted = [(n, i + 1) for n in outputs]
                complete = arrived.wait_for(lambda keys=wanted: all(k in arrivals for k in keys), timeout=120)
                done = [arrivals.get(k) for k in wanted]
            if not complete:
                raise SystemExit(f"no outputs for frame {i + 1}:\n{(tmp / 'node.log').read_text()[-3000:]}")
            bare, stages = worker.submit(
                _timed_predict, predictor, frames[i % len(frames)], K, node_maps, node_stuff
            ).result()
            if not args.skip_all_maps_reference:
                bare_all_maps, _ = worker.submit(_timed_predict, predictor, frames[i % len(frames)], K).result()
                if i >= 3:
                    bare_all_maps_ms.append(bare_all_maps)
            # the same image through a process that only takes it and answers: the transport floor
            t0_echo = time.perf_counter()
            echo_pub.publish(msg)
            with arrived:
                if not arrived.wait_for(lambda key=("echo", i + 1): key in arrivals, timeout=60):
                    raise SystemExit(f"no answer from image_echo.py for frame {i + 1}")
                echo_done = arrivals[("echo", i + 1)]
            if i >= 3:
                node_ms.append((max(done) - t0) * 1e3)
                publish_calls_ms.append(publish_call_ms)
                for name, arrived_at in zip(outputs, done, strict=True):
                    per_output_ms[name].append((arrived_at - t0) * 1e3)
                bare_ms.append(bare)
                echo_ms.append((echo_done - t0_echo) * 1e3)
                for stage, ms in stages.items():
                    bare_stages.setdefault(stage, []).append(ms)
        time.sleep(1.5)  # one more /diagnostics message with every frame in it
    finally:
        stop = True
        spinner.join(timeout=5)
        node_proc.send_signal(2)
        try:
            node_proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        echo_proc.send_signal(2)
        try:
            echo_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            echo_proc.kill()
        log.close()
        echo_log.close()
        client.destroy_node()
        rclpy.try_shutdown()

    node_stats, bare_stats = _percentiles(node_ms), _percentiles(bare_ms)
    overhead_ms = node_stats["median_ms"] - bare_stats["median_ms"]
    echo_stats = _percentiles(echo_ms)
    own_ms = overhead_ms - echo_stats["median_ms"]
    report = {
        "benchmark": "node_latency",
        "image": f"{args.width}x{args.height} rgb8",
        "frames": args.frames,
        "outputs": list(outputs),
        "frames_source": "synthetic street scenes (render_frame seeds 0-3)",
        "include_stuff_detections": args.include_stuff_detections,
        "shm_profile": args.shm,
        "subscriber": args.subscriber,
        "device": args.device,
        "backend": args.backend,
        "precision": args.precision,
        "network_input": [predictor.input_hw[0], predictor.input_hw[1]],
        "model_config": args.model_config or "default",
        "retain_freed_memory": retention.detail,
        "node_publish_to_outputs": node_stats,
        "node_publish_to_output_median_ms": {n: round(float(np.median(v)), 2) for n, v in per_output_ms.items()},
        # predict(maps=...) with the maps the node makes for these outputs: the target's baseline
        "bare_predictor_maps": sorted(node_maps),
        "bare_predictor_stuff_segments": node_stuff,
        "bare_predictor": bare_stats,
        # predict() with every map at the input resolution and every statistic (its defaults), for reference
        "bare_predictor_all_maps": _percentiles(bare_all_maps_ms) if bare_all_maps_ms else None,
        # the latency above starts before this process's publish() of the input image, so it
        # includes the (Python) camera side serialising ~6 MB: its own median, for attribution
        "input_publish_call_median_ms": round(float(np.median(publish_calls_ms)), 2),
        "node_overhead_median_ms": overhead_ms,
        "node_overhead_pct_of_inference": 100.0 * overhead_ms / bare_stats["median_ms"],
        # the same per frame (node minus bare on the same image, measured back to back): less
        # sensitive to the machine drifting between the two medians
        "node_overhead_paired_median_ms": float(np.median(np.subtract(node_ms, bare_ms))),
        "target_pct": 5.0,
        # publish -> answer from image_echo.py (takes the image as the node does, answers with its
        # header): the part of the overhead that is transport, not the node's work
        "transport_floor": echo_stats,
        "transport_floor_pct_of_inference": 100.0 * echo_stats["median_ms"] / bare_stats["median_ms"],
        "node_own_overhead_median_ms": own_ms,
        "node_own_overhead_pct_of_inference": 100.0 * own_ms / bare_stats["median_ms"],
        # inside the node (p50 over its recent frames, warm-up included): where the time goes
        "node_stages_p50_ms": dict(sorted(node_stages.items())),
        # the node's own work outside inference, from its own clock (p50 of received -> last output
        # out, minus p50 of its inference): unlike the difference of two medians, not swamped when the
        # inference itself varies by more than the overhead (a seconds-long model on a CPU)
        "node_own_work_from_stages_ms": (
            node_stages["total"] - node_stages["inference"]
            if {"total", "inference"} <= node_stages.keys()
            else None
        ),
        "bare_stages_p50_ms": {k: round(float(np.median(v)), 2) for k, v in sorted(bare_stages.items())},
        "host": {**machine_info(args.device), "load_average_1m_at_end": os.getloadavg()[0]},
    }
    suffix = f"_{Path(args.model_config).stem}" if args.model_config else ""
    suffix += ("_shm" if args.shm else "") + _outputs_suffix(outputs)
    suffix += "_stuff_detections" if args.include_stuff_detections else ""
    name = f"node_latency_{args.width}x{args.height}_{args.device.replace(':', '')}{suffix}.json"
    out = args.out or REPO / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
