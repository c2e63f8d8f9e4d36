"""Helpers for the node tests: a node in its own process, and an in-test rclpy client spinning in a thread.

Everything runs with the ros_env fixture's environment (LOCALHOST discovery, a domain id of our own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from panoptic_depthlab_ros.messages import OUTPUT_NAMES as MESSAGE_OUTPUT_NAMES
except ImportError:  # no ROS 2 here: every test using the harness skips (see test/conftest.py)
    MESSAGE_OUTPUT_NAMES = ()

REPO = Path(__file__).resolve().parents[2]
SMALL_MODEL = REPO / "config" / "models" / "panoptic_depthlab_small.yaml"
SHM_PROFILE = REPO / "config" / "fastdds_shm.xml"
OUTPUT_NAMES = MESSAGE_OUTPUT_NAMES  # every output the node publishes per frame
IMAGE_OUTPUTS = {"panoptic": "16UC1", "semantic": "mono8", "depth": "32FC1", "visualization": "bgr8"}


def make_test_weights(path: Path) -> Path:
    """Deterministic random weights for the small model (no trained model needed for plumbing tests)."""
    import torch

    from panoptic_depthlab_core.model import build_model, load_model_config
    from panoptic_depthlab_core.weights import save_safetensors

    torch.manual_seed(0)
    model = build_model(load_model_config(SMALL_MODEL))
    save_safetensors(model.state_dict(), path)
    return path


def write_params(path: Path, weights: Path, **extra: Any) -> Path:
    """A params file for a fast test node: small model, 128x256 network input."""
    values = {
        "model_config": str(SMALL_MODEL),
        "weights": str(weights),
        "input_height": 128,
        "input_width": 256,
        "include_stuff_detections": True,
        "diagnostics_period_s": 0.25,
        "error_log_throttle_s": 0.0,
        # the shared node's outputs are compared with the Predictor's per-frame ids; tracking tests
        # (test_ros_tracking.py) turn it on
        "tracking": False,
        **extra,
    }

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(v)

    lines = ["/**:", "  ros__parameters:"] + [f"    {k}: {fmt(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """``panoptic_depthlab_node`` in a subprocess; its stdout+stderr go to a log file."""

    def __init__(
        self,
        env: dict[str, str],
        params_file: Path,
        log_path: Path,
        name: str,
        namespace: str = "/test",
        shm_profile: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.fqn = f"{namespace.rstrip('/')}/{name}"
        env = dict(env)
        env["PYTHONUNBUFFERED"] = "1"
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
        if shm_profile:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "panoptic_depthlab_ros.node",
            "--ros-args",
            "--params-file",
            str(params_file),
            "-r",
            f"__node:={name}",
            "-r",
            f"__ns:={namespace}",
            *extra_args,
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(2)  # SIGINT: rclpy shuts down cleanly
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Client:
    """An rclpy node in the test process, spun by a background thread; collects received messages."""

    def __init__(self, context: Any, name: str = "pdl_test_client") -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: dict[str, list[Any]] = {}
        self.received_at: dict[str, list[float]] = {}  # time.monotonic() of each message
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us at the end
                return

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()

    def subscribe(self, key: str, msg_type: Any, topic: str, qos: Any = 10) -> Any:
        def cb(msg: Any) -> None:
            now = time.monotonic()
            with self.lock:
                self.received.setdefault(key, []).append(msg)
                self.received_at.setdefault(key, []).append(now)

        return self.node.create_subscription(msg_type, topic, cb, qos)

    def messages(self, key: str) -> list[Any]:
        with self.lock:
            return list(self.received.get(key, []))

    def arrivals(self, key: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(zip(self.received_at.get(key, []), self.received.get(key, []), strict=True))

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.received_at.clear()

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {name} did not answer in {timeout} s")
                time.sleep(0.02)
            return future.result()
        finally:
            self.node.destroy_client(client)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, node: NodeProcess | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if node is not None and not node.alive():
            raise AssertionError(f"node died while waiting for {what}:\n{node.log()[-4000:]}")
        time.sleep(0.05)
    tail = node.log()[-3000:] if node is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def diagnostics_values(array_msg: Any, node_fqn: str) -> dict[str, str] | None:
    for status in array_msg.status:
        if status.name.startswith(node_fqn + ":"):
            return {kv.key: kv.value for kv in status.values}
    return None


def latest_diagnostics(client: Client, node_fqn: str) -> dict[str, str]:
    for msg in reversed(client.messages("diagnostics")):
        values = diagnostics_values(msg, node_fqn)
        if values is not None:
            return values
    return {}


def make_image(
    width: int,
    height: int,
    stamp_sec: int,
    frame_id: str = "camera_optical",
    seed: int = 0,
    encoding: str = "rgb8",
) -> Any:
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}[encoding]
    pixels = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding=encoding, step=width * channels)
    msg.data = pixels.tobytes()
    msg.header.stamp.sec = stamp_sec
    msg.header.frame_id = frame_id
    return msg


def image_pixels(msg: Any) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, -1)


def input_publishers(client: Client, namespace: str, node: NodeProcess) -> dict[str, Any]:
    """Reliable image + camera_info publishers on a node's inputs in ``namespace`` (default
    transports), once the node has subscribed to both."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image

    ns = namespace.rstrip("/")
    image_pub = client.node.create_publisher(Image, f"{ns}/image", QoSProfile(depth=1))
    info_pub = client.node.create_publisher(CameraInfo, f"{ns}/camera_info", QoSProfile(depth=1))
    wait_until(
        lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
        30,
        f"the node to subscribe to {ns}/image and {ns}/camera_info",
        node,
    )
    return {"image": image_pub, "camera_info": info_pub}


def make_camera_info(
    width: int, height: int, frame_id: str = "camera_optical", f: float | None = None
) -> Any:
    from sensor_msgs.msg import CameraInfo

    f = f or 0.8 * width
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.header.frame_id = frame_id
    msg.k = [f, 0.0, width / 2.0, 0.0, f, height / 2.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, width / 2.0, 0.0, 0.0, f, height / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.d = [0.0] * 5
    return msg


def stamp_of(msg: Any) -> int:
    """header.stamp.sec; MarkerArray has no header, so its first marker's (the DELETEALL) is used."""
    if not hasattr(msg, "header"):
        return int(msg.markers[0].header.stamp.sec) if msg.markers else -1
    return int(msg.header.stamp.sec)


def set_parameters(client: Client, node_fqn: str, **values: Any) -> list[Any]:
    """Set parameters through the node's service; returns the SetParametersResult list."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request()
    request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return list(client.call(SetParameters, f"{node_fqn}/set_parameters", request).results)


def env_with(env: dict[str, str], **extra: str) -> dict[str, str]:
    out = dict(env)
    out.update(extra)
    return out


def free_mb() -> float:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
