"""bag-eval-fleet: many bags with 2 local worker processes and on a real local Ray (loopback only);
a worker is SIGKILLed mid-bag, and the rerun completes with nothing lost or doubled.

Tiny everything (a 6-frame 64x128 synthetic drive per bag, the tiny model with fixed weights). The
workers are real processes (spawned, or Ray's), killed for real; every output bag is read back in
full with rosbags and must hold exactly one message per frame on every output topic.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rosbags")
pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from tiny_models import TINY_MODEL  # noqa: E402

from panoptic_depthlab_ros.bags import bag_eval, fleet, synth_bag  # noqa: E402
from panoptic_depthlab_ros.bags.common import open_bag  # noqa: E402
from panoptic_depthlab_ros.messages import OUTPUT_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 6
SIZE = (64, 128)
BAGS = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny model YAML + fixed weights (every worker loads the same model)."""
    import torch

    from panoptic_depthlab_core.config import from_dict
    from panoptic_depthlab_core.model import ModelConfig, build_model
    from panoptic_depthlab_core.weights import save_safetensors

    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_safetensors(build_model(from_dict(ModelConfig, dict(TINY_MODEL))).state_dict(), root / "w.safetensors")
    (root / "m.yaml").write_text(yaml.safe_dump({"model": dict(TINY_MODEL), "input": {"height": 64, "width": 128}}))
    return root / "m.yaml", root / "w.safetensors"


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> Path:
    """BAGS synthetic drives (both storages) under one folder, plus a list file naming them."""
    root = tmp_path_factory.mktemp("fleet_bags")
    for i in range(BAGS):
        storage = "sqlite3" if i == 1 else "mcap"
        synth_bag.write_synth_bag(root / "drives" / f"drive{i}", frames=FRAMES, size=SIZE, seed=i, storage=storage)
    (root / "bags.txt").write_text("# the fleet\n" + "".join(f"drives/drive{i}\n" for i in range(BAGS)))
    return root


def fleet_args(inputs: list[str], out_dir: Path, model: tuple[Path, Path], *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    fleet.add_arguments(parser)
    config, weights = model
    return parser.parse_args([*inputs, "--out-dir", str(out_dir), "--config", str(config), "--weights",
                              str(weights), "--backend", "torch", "--threads-per-worker", "1", *extra])  # fmt: skip


def expected_topics() -> dict[str, int]:
    topics = bag_eval.output_topic_names(bag_eval.DEFAULT_NODE_NAME)
    counts = {topics[name]: FRAMES for name in OUTPUT_NAMES}
    counts[topics["label_info"]] = 1
    return counts


def read_counts(bag: Path) -> dict[str, int]:
    """Every message of the bag deserialized (so it is readable to the end); count per topic."""
    from panoptic_depthlab_ros.bag_types import make_typestore

    store = make_typestore()
    reader = open_bag(bag)
    counts: dict[str, int] = {}
    try:
        for connection, _, raw in reader.messages():
            store.deserialize_cdr(raw, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    finally:
        reader.close()
    return counts


def read_raw(bag: Path) -> list[tuple[str, int, bytes]]:
    reader = open_bag(bag)
    try:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    finally:
        reader.close()


def assert_complete(out_dir: Path) -> None:
    """One folder per bag, each complete: readable output bag with exactly the expected messages,
    metrics, a matching done marker; no leftovers."""
    names = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".") and p.is_dir())
    assert names == [f"drive{i}" for i in range(BAGS)]
    for name in names:
        folder = out_dir / name
        marker = json.loads((folder / fleet.MARKER).read_text())
        assert marker["status"] == "done" and marker["frames"] == FRAMES
        assert read_counts(folder / "output") == expected_topics() == marker["output_messages"]
        metrics = json.loads((folder / "metrics" / "metrics.json").read_text())
        assert metrics["frames"] == FRAMES
    assert not any((out_dir / fleet.WORK_DIR).glob("*")), "unpublished work left behind"


class Killer(threading.Thread):
    """SIGKILLs the first worker seen working on a bag (its pid is in the work folder's name)."""

    def __init__(self, out_dir: Path, check_pid=None) -> None:
        super().__init__(daemon=True)
        self.work = out_dir / fleet.WORK_DIR
        self.check_pid = check_pid
        self.killed: tuple[str, int] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        pattern = re.compile(r"^(?P<name>.+)\.[^.]+\.(?P<pid>\d+)\.[0-9a-f]{8}$")
        while not self.stop.is_set() and self.killed is None:
            for entry in sorted(self.work.glob("*")) if self.work.is_dir() else []:
                match = pattern.match(entry.name)
                if match is None:
                    continue
                pid = int(match["pid"])
                if self.check_pid is not None and not self.check_pid(pid):
                    continue
                time.sleep(0.3)  # inside the bag (model loaded or frames running), not at its first line
                if not entry.exists():
                    continue  # finished in between: wait for the next one
                os.kill(pid, signal.SIGKILL)
                self.killed = (match["name"], pid)
                return
            time.sleep(0.02)


def test_collect_bags_directory_glob_and_list(bags: Path, tmp_path: Path) -> None:
    expected = [(bags / "drives" / f"drive{i}").resolve() for i in range(BAGS)]
    assert fleet.collect_bags([str(bags / "drives")]) == expected
    assert fleet.collect_bags([str(bags / "drives" / "drive*")]) == expected
    assert fleet.collect_bags([str(bags / "bags.txt")]) == expected
    assert fleet.collect_bags(["@" + str(bags / "bags.txt"), str(bags / "drives" / "drive0")]) == expected
    single = next((bags / "drives" / "drive0").glob("*.mcap"))
    assert fleet.collect_bags([str(single)]) == [single.resolve()]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        fleet.collect_bags([str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError, match="no bags"):
        fleet.collect_bags([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="pattern"):
        fleet.collect_bags([str(tmp_path / "x*")])
    names = fleet.output_names([Path("/a/drive"), Path("/b/drive"), Path("/c/other.mcap")])
    assert names[0] != names[1] and names[0].startswith("drive-") and names[2] == "other"


@pytest.mark.slow
def test_local_workers_killed_worker_rerun_completes(bags: Path, model, tmp_path: Path) -> None:
    """2 local workers, one SIGKILLed mid-bag (no retries): that bag is reported failed with the
    reason and left unpublished; the rerun runs only it; every output is then complete, once."""
    out = tmp_path / "fleet"
    killer = Killer(out)
    killer.start()
    report = fleet.run_fleet(fleet_args([str(bags / "drives")], out, model, "--workers", "2", "--retries", "0"))
    killer.stop.set()
    assert killer.killed is not None, "no worker was seen working"
    name, pid = killer.killed
    rows = {b["name"]: b for b in report["bags"]}
    assert rows[name]["status"] == "failed" and f"worker {pid} died (killed by SIGKILL)" in rows[name]["error"]
    assert not (out / name).exists()  # never a half-written result under the bag's name
    done_before = {n: (out / n / fleet.MARKER).stat().st_mtime_ns for n, r in rows.items() if r["status"] == "done"}
    assert len(done_before) == BAGS - 1
    assert report["overall"]["failed"] == 1 and report["failures"][0]["bag"] == name

    rerun = fleet.run_fleet(fleet_args([str(bags / "bags.txt")], out, model, "--workers", "2", "--retries", "0"))
    statuses = {b["name"]: b["status"] for b in rerun["bags"]}
    assert statuses == {n: ("done" if n == name else "skipped") for n in statuses}
    assert {n: (out / n / fleet.MARKER).stat().st_mtime_ns for n in done_before} == done_before  # untouched
    assert_complete(out)
    assert rerun["overall"]["frames"] == BAGS * FRAMES and rerun["overall"]["frames_this_run"] == FRAMES
    assert json.loads((out / "fleet_report.json").read_text())["overall"]["failed"] == 0

    # the re-run bag holds the same message bytes as a plain bag-eval of it (deterministic outputs)
    import torch

    parser = argparse.ArgumentParser()
    bag_eval.add_arguments(parser)
    reference = tmp_path / "reference"
    config, weights = model
    ref_args = parser.parse_args([str(bags / "drives" / name), "--out", str(reference), "--config", str(config),
                                  "--weights", str(weights), "--backend", "torch", "--no-progress"])  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers ran (--threads-per-worker 1)
    try:
        assert bag_eval.BagEvaluator(ref_args).run().complete
    finally:
        torch.set_num_threads(threads)
    assert read_raw(out / name / "output") == read_raw(reference)


def test_local_changed_options_replace_the_result_atomically(bags: Path, model, tmp_path: Path) -> None:
    """A finished bag is evaluated again when the options change; the new result replaces the old.
    (In the driver process, --workers 0: what is tested here does not depend on the executor.)"""
    out = tmp_path / "fleet"
    one = str(bags / "drives" / "drive0")
    first = fleet.run_fleet(fleet_args([one], out, model, "--workers", "0", "--max-frames", "2"))
    assert first["bags"][0]["status"] == "done" and first["bags"][0]["frames"] == 2
    again = fleet.run_fleet(fleet_args([one], out, model, "--workers", "0", "--max-frames", "2"))
    assert again["bags"][0]["status"] == "skipped"
    # a duplicate run of a finished bag (Ray re-running a task whose worker was lost, say) is dropped
    marker = out / "drive0" / fleet.MARKER
    before = marker.read_bytes(), marker.stat().st_mtime_ns
    jobs, _ = fleet.plan_jobs(fleet_args([one], out, model, "--workers", "0", "--max-frames", "2"))
    duplicate = fleet.process_bag(jobs[0], fleet.ProcessorCache())
    assert duplicate.status == "done" and "another worker finished this bag first" in duplicate.error
    assert (marker.read_bytes(), marker.stat().st_mtime_ns) == before
    assert not any((out / fleet.WORK_DIR).glob("*"))
    changed = fleet.run_fleet(fleet_args([one], out, model, "--workers", "0", "--max-frames", "3",
                                         "--export-predictions"))  # fmt: skip
    assert changed["bags"][0]["status"] == "done" and changed["bags"][0]["frames"] == 3
    counts = read_counts(out / "drive0" / "output")
    assert counts[bag_eval.output_topic_names(bag_eval.DEFAULT_NODE_NAME)["panoptic"]] == 3
    doc = json.loads((out / "drive0" / "predictions" / "cityscapes_panoptic_predictions.json").read_text())
    assert [a["image_id"] for a in doc["annotations"]] == [f"camera-image-raw_000000_{i:06d}" for i in range(3)]
    assert not (out / fleet.TRASH_DIR).exists() or not any((out / fleet.TRASH_DIR).iterdir())


# ------------------------------------------------------------------------------------------ Ray


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def listening_addresses(pids: set[int]) -> dict[int, set[str]]:
    """pid -> local addresses of its listening TCP sockets (from /proc, no tools needed)."""
    inodes: dict[str, str] = {}
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                ip_hex = parts[1].split(":")[0]
                if len(ip_hex) == 8:
                    ip = ".".join(str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    words = [ip_hex[i : i + 8] for i in range(0, 32, 8)]
                    raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
                    ip = (
                        ".".join(str(b) for b in raw[12:])
                        if raw[:12] == b"\0" * 10 + b"\xff\xff"
                        else ("::" if raw == b"\0" * 16 else raw.hex())
                    )
                    if raw == b"\0" * 15 + b"\x01":
                        ip = "::1"
                inodes[parts[9]] = ip
    out: dict[int, set[str]] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
            if inode in inodes:
                out.setdefault(pid, set()).add(inodes[inode])
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray (2 CPUs) bound to 127.0.0.1 only; one per module (starting it takes ~10 s).

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray take the loopback address as the node's (else it
    replaces 127.0.0.1 by the machine's address and binds its servers to every interface)."""
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)  # before Ray is imported: it reads them at import
        ray = pytest.importorskip("ray")
        context = ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            num_cpus=2,
            num_gpus=0,
            object_store_memory=100 * 1024 * 1024,
            log_to_driver=False,
            configure_logging=False,
        )
        try:
            yield context.address_info["gcs_address"]
        finally:
            ray.shutdown()


@pytest.mark.slow
def test_ray_fleet_killed_worker_rerun_completes_on_loopback(bags: Path, model, tmp_path: Path, ray_cluster) -> None:
    """``--ray ADDRESS`` from a separate driver process, 2 workers, one killed mid-bag (no retries):
    reported failed; the rerun completes it and skips the rest; every Ray socket is on 127.0.0.1."""
    out = tmp_path / "fleet"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    config, weights = model
    argv = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag-eval-fleet", str(bags / "drives"), "--out-dir",
            str(out), "--ray", ray_cluster, "--config", str(config), "--weights", str(weights), "--backend",
            "torch", "--retries", "0"]  # fmt: skip
    mine = os.getpid()

    def is_ray_worker(pid: int) -> bool:
        try:
            return pid in _descendants(mine) and b"ray::" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    killer = Killer(out, check_pid=is_ray_worker)
    sockets: dict[int, set[str]] = {}

    def watch_sockets(proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            for pid, addresses in listening_addresses(_descendants(mine)).items():
                sockets.setdefault(pid, set()).update(addresses)
            time.sleep(0.5)

    killer.start()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = threading.Thread(target=watch_sockets, args=(proc,), daemon=True)
    watcher.start()
    output, _ = proc.communicate(timeout=240)
    killer.stop.set()
    watcher.join()
    assert killer.killed is not None, output
    name, pid = killer.killed
    assert proc.returncode == 1, output  # a failed bag
    report = json.loads((out / "fleet_report.json").read_text())
    assert report["executor"] == "ray" and report["overall"]["failed"] == 1
    failure = report["failures"][0]
    assert failure["bag"] == name and ("Worker" in failure["reason"] or "died" in failure["reason"]), failure
    assert not (out / name).exists()

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    statuses = {b["name"]: b["status"] for b in json.loads((out / "fleet_report.json").read_text())["bags"]}
    assert statuses == {n: ("done" if n == name else "skipped") for n in statuses}
    assert_complete(out)

    # the network rule: Ray's servers (GCS, raylet, workers, the drivers) listen on loopback only
    assert sockets, "no listening socket of the Ray processes was seen"
    exposed = {pid: addresses for pid, addresses in sockets.items() if not addresses <= {"127.0.0.1", "::1"}}
    assert not exposed, {pid: (addresses, _cmdline(pid)) for pid, addresses in exposed.items()}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(exited)"


# ------------------------------------------------------------------------------------------ bag-eval export


def test_bag_eval_export_predictions_equal_the_output_bag(bags: Path, model, tmp_path: Path) -> None:
    """``bag-eval --export-predictions``: the id PNGs hold exactly the ids of the bag's panoptic output,
    the disparity PNGs its depth (Cityscapes' quantisation), one annotation per frame with its stamp."""
    import cv2
    import numpy as np
    import torch

    from panoptic_depthlab_core.eval.prediction_export import read_exported_panoptic
    from panoptic_depthlab_ros.bag_types import make_typestore
    from panoptic_depthlab_ros.bags.bag_eval import gt_image_to_array
    from panoptic_depthlab_ros.bags.drive_bag import panoptic_from_16u
    from panoptic_depthlab_ros.cli import main

    config, weights = model
    out, pred = tmp_path / "out", tmp_path / "pred"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["bag-eval", str(bags / "drives" / "drive0"), "--out", str(out), "--config", str(config),
                     "--weights", str(weights), "--backend", "torch", "--no-progress", "--export-predictions",
                     str(pred), "--stereo-baseline", "0.2"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    doc = json.loads((pred / "cityscapes_panoptic_predictions.json").read_text())
    assert doc["info"]["depth_format"] == "disparity"
    topics = bag_eval.output_topic_names(bag_eval.DEFAULT_NODE_NAME)
    store = make_typestore()
    reader = open_bag(out)
    maps: dict[str, list] = {"panoptic": [], "depth": [], "camera_info": []}
    try:
        for connection, _, raw in reader.messages():
            for name in maps:
                if connection.topic == topics[name]:
                    maps[name].append(store.deserialize_cdr(raw, connection.msgtype))
    finally:
        reader.close()
    assert len(doc["annotations"]) == len(maps["panoptic"]) == FRAMES
    for i, (ann, pan_msg, depth_msg, info) in enumerate(
        zip(doc["annotations"], maps["panoptic"], maps["depth"], maps["camera_info"], strict=True)
    ):
        assert ann["image_id"] == f"camera-image-raw_000000_{i:06d}"
        assert ann["stamp_ns"] == pan_msg.header.stamp.sec * 10**9 + pan_msg.header.stamp.nanosec
        ids = panoptic_from_16u(gt_image_to_array(pan_msg, "panoptic"))
        np.testing.assert_array_equal(read_exported_panoptic(pred, ann["image_id"], "predictions"), ids)
        depth = gt_image_to_array(depth_msg, "depth").astype(np.float64)
        p = cv2.imread(str(pred / ann["depth_file"]), cv2.IMREAD_UNCHANGED).astype(np.float64)
        fx = float(info.k[0])
        valid = np.isfinite(depth) & (depth > 0)
        np.testing.assert_array_equal(p[~valid], 0)
        expected = np.minimum(np.round(0.2 * fx / depth[valid] * 256) + 1, 65535)
        np.testing.assert_array_equal(p[valid], expected)


def test_bag_export_image_ids_per_camera(tmp_path: Path) -> None:
    """Two cameras' frames get distinct Cityscapes-shaped ids; disparity without fx is skipped, counted."""
    import numpy as np

    from panoptic_depthlab_core.results import FrameResult
    from panoptic_depthlab_ros.bags.bag_eval import CameraReport, PendingFrame
    from panoptic_depthlab_ros.bags.prediction_export import BagPredictionExport, ExportSettings
    from panoptic_depthlab_ros.processing import ProcessedFrame

    with pytest.raises(ValueError, match="stereo-baseline"):
        ExportSettings(tmp_path, "disparity")
    export = BagPredictionExport(ExportSettings(tmp_path / "pred", "auto", 0.2))
    K = np.array([[50.0, 0, 4], [0, 50.0, 2], [0, 0, 1]])
    ids = np.full((4, 8), 13001, np.int32)
    depth = np.full((4, 8), 10.0, np.float32)
    for namespace, topic, k in (("front_left", "/front_left/image_raw", K), ("", "/rear/image/compressed", None)):
        camera = CameraReport(topic, "", "", "", namespace)
        for index in range(2):
            result = FrameResult(ids, None, depth, K=k)
            frame = PendingFrame(None, index, 100 + index, 200 + index, b"")
            export.on_frame(camera, frame, ProcessedFrame(result, {}))
    doc = json.loads(export.close().read_text())
    assert [a["image_id"] for a in doc["annotations"]] == [
        "front-left_000000_000000", "front-left_000000_000001",
        "rear-image-compressed_000000_000000", "rear-image-compressed_000000_000001",
    ]  # fmt: skip
    assert [a["depth_file"] is not None for a in doc["annotations"]] == [True, True, False, False]
    assert doc["info"]["frames_without_depth"] == 2 and doc["annotations"][1]["stamp_ns"] == 201


def test_ray_address_unreachable_is_a_clear_error() -> None:
    """``--ray HOST:PORT`` with nothing listening fails at once (ray.init would wait minutes)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed
    with pytest.raises(ValueError, match="cannot reach the Ray head"):
        fleet.check_ray_address(f"127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(ValueError, match="HOST:PORT"):
        fleet.check_ray_address("no-port")
    fleet.check_ray_address("auto")  # resolved by Ray itself
