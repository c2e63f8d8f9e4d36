"""bag-eval on bags as other tools write them: rosbags' Writer (sqlite3, MCAP) and the mcap +
mcap-ros2-support writer, in the layout ``ros2 bag record`` stores (CameraInfo just after its
image), two cameras (raw rgb8 and jpeg CompressedImage), unrelated topics, header stamps that differ
from bag times. Also: byte-identical output across processes, damaged bags in both storages, a bag
without image messages.

None of these bags is written with the project's own BagWriter: the messages are rosbags objects from
its stock Jazzy typestore, serialised by rosbags or by mcap-ros2-support's own CDR encoder.
Tiny model (test/tiny_models.py) with saved seeded weights, 64x128 frames: plumbing, not quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_models import TINY_MODEL

pytest.importorskip("rosbags")
pytest.importorskip("mcap_ros2")
pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from bag_contents import read_all  # noqa: E402

from panoptic_depthlab_ros.bags import bag_eval  # noqa: E402
from panoptic_depthlab_ros.bags.common import open_bag  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = (64, 128)
FRAMES = 4
T0_NS = 1_712_000_000 * 10**9 + 123_456_789
PERIOD_NS = 100_000_000
STAMP_LAG_NS = 23_000_000  # header stamp = capture time, bag time = receive time (later)
INFO_DELAY_NS = 400_000  # CameraInfo recorded just after its image
WRITERS = ("rosbags-sqlite3", "rosbags-mcap", "mcap-ros2")


@dataclass(frozen=True)
class Cam:
    image_topic: str
    info_topic: str | None  # None: the bag has no CameraInfo for this camera
    jpeg: bool
    seed: int
    offset_ns: int = 0  # bag-time offset from the other camera
    gt_prefix: str | None = None  # GT topics <prefix>/panoptic and <prefix>/depth, written after the image


FRONT = Cam("/front/image_raw", "/front/camera_info", jpeg=False, seed=3, gt_prefix="/front/gt")
LEFT = Cam("/left/image_raw/compressed", "/left/camera_info", jpeg=True, seed=5, offset_ns=7_000_000)


def fx_of(cam: Cam, k: int) -> float:
    """Every frame has its own K (fx), so a frame paired with the wrong CameraInfo shows."""
    return 90.0 + 10.0 * k + (0.5 if cam.jpeg else 0.0)


def stamp_of(cam: Cam, k: int) -> int:
    return T0_NS + k * PERIOD_NS + cam.offset_ns - STAMP_LAG_NS


def log_time_of(cam: Cam, k: int) -> int:
    return T0_NS + k * PERIOD_NS + cam.offset_ns


# ------------------------------------------------------------------------------------------ writing


def recorded_messages(
    cams: tuple[Cam, ...],
    frames: int = FRAMES,
    size: tuple[int, int] = SIZE,
    info_lag_ns: int = INFO_DELAY_NS,
    gt_lag_ns: int = 2 * INFO_DELAY_NS + 1_000_000,
    gt_size: tuple[int, int] | None = None,
) -> tuple[object, list[tuple[str, str, int, object]]]:
    """(stock rosbags typestore, [(topic, type, bag time, rosbags message)]) in bag-time order.
    ``gt_lag_ns`` < 0: GT recorded before its image; ``gt_size``: the GT maps of frame 1 cut to it."""
    import cv2
    from rosbags.typesys import Stores, get_typestore

    from panoptic_depthlab_core.data.synthetic.render import render_sequence
    from panoptic_depthlab_ros.bags.synth_bag import instance_ids_to_panoptic

    store = get_typestore(Stores.ROS2_JAZZY)
    T = store.types
    height, width = size

    def header(stamp: int, frame_id: str):
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id
        )

    def image(pixels: np.ndarray, encoding: str, stamp: int, frame_id: str):
        pixels = np.ascontiguousarray(pixels)
        return T["sensor_msgs/msg/Image"](
            header=header(stamp, frame_id),
            height=pixels.shape[0],
            width=pixels.shape[1],
            encoding=encoding,
            is_bigendian=0,
            step=pixels.nbytes // pixels.shape[0],
            data=pixels.reshape(-1).view(np.uint8),
        )

    records: list[tuple[str, str, int, object]] = []
    for cam in cams:
        frame_id = cam.image_topic.split("/")[1] + "_optical_frame"
        for k, frame in enumerate(render_sequence(cam.seed, frames, size, fps=10.0)):
            stamp, log_time = stamp_of(cam, k), log_time_of(cam, k)
            if cam.jpeg:
                ok, jpg = cv2.imencode(".jpg", frame.rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
                assert ok
                msg = T["sensor_msgs/msg/CompressedImage"](
                    header=header(stamp, frame_id), format="rgb8; jpeg compressed bgr8", data=jpg.reshape(-1)
                )
                records.append((cam.image_topic, "sensor_msgs/msg/CompressedImage", log_time, msg))
            else:
                msg = image(frame.rgb, "rgb8", stamp, frame_id)
                records.append((cam.image_topic, "sensor_msgs/msg/Image", log_time, msg))
            if cam.info_topic is not None:
                K = np.asarray(frame.K, dtype=np.float64).copy()
                K[0, 0] = fx_of(cam, k)
                P = np.zeros((3, 4))
                P[:, :3] = K
                info = T["sensor_msgs/msg/CameraInfo"](
                    header=header(stamp, frame_id),
                    height=height,
                    width=width,
                    distortion_model="plumb_bob",
                    d=np.zeros(5),
                    k=K.reshape(-1),
                    r=np.eye(3).reshape(-1),
                    p=P.reshape(-1),
                    binning_x=0,
                    binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](
                        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                    ),
                )
                records.append((cam.info_topic, "sensor_msgs/msg/CameraInfo", log_time + info_lag_ns, info))
            if cam.gt_prefix is not None:
                pan = instance_ids_to_panoptic(frame.instance_ids)
                pan16 = np.where(pan < 0, 65535, pan).astype(np.uint16)
                depth = np.asarray(frame.depth_m, dtype=np.float32).copy()
                depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
                gt_time = log_time + gt_lag_ns
                if gt_size is not None and k == 1:
                    pan16, depth = pan16[: gt_size[0], : gt_size[1]], depth[: gt_size[0], : gt_size[1]]
                records.append(
                    (
                        f"{cam.gt_prefix}/panoptic",
                        "sensor_msgs/msg/Image",
                        gt_time,
                        image(pan16, "16UC1", stamp, frame_id),
                    )
                )
                records.append(
                    (f"{cam.gt_prefix}/depth", "sensor_msgs/msg/Image", gt_time, image(depth, "32FC1", stamp, frame_id))
                )
    # unrelated topics: an IMU at 50 Hz and /tf at 10 Hz
    span = frames * PERIOD_NS
    for j in range(span // 20_000_000):
        t = T0_NS - 5_000_000 + j * 20_000_000
        imu = T["sensor_msgs/msg/Imu"](
            header=header(t, "imu"),
            orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            orientation_covariance=np.zeros(9),
            angular_velocity=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.01 * j),
            angular_velocity_covariance=np.zeros(9),
            linear_acceleration=T["geometry_msgs/msg/Vector3"](x=0.1, y=0.0, z=9.81),
            linear_acceleration_covariance=np.zeros(9),
        )
        records.append(("/imu/data", "sensor_msgs/msg/Imu", t, imu))
        if j % 5 == 0:
            transform = T["geometry_msgs/msg/TransformStamped"](
                header=header(t, "odom"),
                child_frame_id="base_link",
                transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=0.1 * j, y=0.0, z=0.0),
                    rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                ),
            )
            records.append(("/tf", "tf2_msgs/msg/TFMessage", t, T["tf2_msgs/msg/TFMessage"](transforms=[transform])))
    records.sort(key=lambda r: r[2])  # stable: an image stays before its CameraInfo at equal times
    return store, records


def plain(msg: object) -> object:
    """A rosbags message as dicts/lists/bytes, what mcap-ros2-support's encoder takes."""
    if isinstance(msg, np.ndarray):
        return msg.tobytes() if msg.dtype == np.uint8 else msg.tolist()
    if isinstance(msg, (list, tuple)):
        return [plain(v) for v in msg]
    if hasattr(msg, "__dataclass_fields__"):
        return {name: plain(getattr(msg, name)) for name in msg.__dataclass_fields__ if name != "__msgtype__"}
    return msg


def write_bag(
    path: Path, writer: str, store: object, records: list, empty_topics: dict[str, str] | None = None
) -> Path:
    """Write ``records`` with an independent writer; returns what to pass to bag-eval."""
    if writer == "mcap-ros2":
        from mcap_ros2.writer import Writer as McapRos2Writer

        path.mkdir(parents=True)
        file = path / f"{path.name}.mcap"  # no metadata.yaml: a bare MCAP as Foxglove & co. write it
        with open(file, "wb") as f:
            mcap_writer = McapRos2Writer(f, chunk_size=64 * 1024)
            schemas = {}
            for topic, msgtype, log_time, msg in records:
                if msgtype not in schemas:
                    schemas[msgtype] = mcap_writer.register_msgdef(
                        msgtype, store.generate_msgdef(msgtype, ros_version=2)[0]
                    )
                mcap_writer.write_message(topic, schemas[msgtype], plain(msg), log_time=log_time, publish_time=log_time)
            mcap_writer.finish()
        return path
    from rosbags.rosbag2 import StoragePlugin, Writer

    storage = {"rosbags-sqlite3": StoragePlugin.SQLITE3, "rosbags-mcap": StoragePlugin.MCAP}[writer]
    with Writer(path, version=9, storage_plugin=storage) as rb_writer:
        connections = {}
        for topic, msgtype in (empty_topics or {}).items():
            connections[topic] = rb_writer.add_connection(topic, msgtype, typestore=store)
        for topic, msgtype, log_time, msg in records:
            if topic not in connections:
                connections[topic] = rb_writer.add_connection(topic, msgtype, typestore=store)
            raw = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, msgtype)  # bytes: written as is
            rb_writer.write(connections[topic], log_time, raw)
    return path


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model YAML, seeded weights): the same model in this process and in subprocesses."""
    import torch

    from panoptic_depthlab_core.model import build_model, load_model_config
    from panoptic_depthlab_core.weights import save_safetensors

    root = tmp_path_factory.mktemp("tiny_model")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL}))
    torch.manual_seed(0)
    weights = save_path = root / "tiny.safetensors"
    save_safetensors(build_model(load_model_config(config)).state_dict(), save_path)
    return config, weights


@pytest.fixture(scope="module")
def params(tiny_model):
    from panoptic_depthlab_ros.params import NodeParams

    config, weights = tiny_model
    # stuff detections too, so detections/markers are not empty arrays (their padding is checked)
    return replace(
        NodeParams(),
        model_config=str(config),
        weights=str(weights),
        input_height=SIZE[0],
        input_width=SIZE[1],
        include_stuff_detections=True,
    )


@pytest.fixture(scope="module")
def processor(params):
    """One FrameProcessor for the module; one torch thread (a shared 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    proc = bag_eval.make_processor(params)
    yield proc
    proc.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_camera_bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recorded")
    store, records = recorded_messages((FRONT, LEFT))
    return {writer: write_bag(root / writer.replace("-", "_"), writer, store, records) for writer in WRITERS}


def stamp_ns(msg) -> int:
    if not hasattr(msg, "header"):  # MarkerArray
        stamps = {stamp_ns(marker) for marker in msg.markers}
        assert len(stamps) == 1, stamps
        return stamps.pop()
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def evaluate_camera(bag: Path, out: Path, cam: Cam, processor, params, *, with_gt: bool = False, **options):
    """bag-eval of ``cam`` alone (with its GT topics when ``with_gt``) into ``out``, no progress bar."""
    if with_gt:
        options.update(gt_depth_topics=(f"{cam.gt_prefix}/depth",), gt_panoptic_topics=(f"{cam.gt_prefix}/panoptic",))
    options = bag_eval.BagEvalOptions(image_topics=(cam.image_topic,), params=params, progress=False, **options)
    return bag_eval.evaluate_bag(bag, out, options, processor=processor)


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("writer", WRITERS)
def test_two_cameras_camera_info_after_image(tmp_path, two_camera_bags, processor, params, writer):
    """Each frame gets its OWN CameraInfo (recorded after it), outputs per camera namespace, GT metrics
    for the camera that has GT, stamps/bag times of the inputs; unrelated topics ignored."""
    out = tmp_path / "out"
    options = bag_eval.BagEvalOptions(
        image_topics=(FRONT.image_topic, LEFT.image_topic),
        gt_panoptic_topics=(f"{FRONT.gt_prefix}/panoptic", ""),
        gt_depth_topics=(f"{FRONT.gt_prefix}/depth", ""),
        params=params,
        progress=False,
    )
    report = bag_eval.evaluate_bag(two_camera_bags[writer], out, options, processor=processor)
    assert report.exit_code == 0 and report.error is None, report.error
    assert report.warnings == []
    front, left = report.cameras[FRONT.image_topic], report.cameras[LEFT.image_topic]
    assert (front.camera_info_topic, left.camera_info_topic) == (FRONT.info_topic, LEFT.info_topic)
    assert (front.output_namespace, left.output_namespace) == ("front", "left")
    for cam in (front, left):
        assert cam.frames == FRAMES and cam.camera_info_exact == FRAMES
        assert cam.camera_info_fallback == cam.camera_info_none == 0 and not cam.rejected
    assert front.frames_with_gt == FRAMES and front.summary["frames"] == FRAMES
    assert left.frames_with_gt == 0 and left.summary is None
    assert (tmp_path / "out_metrics" / "front" / "metrics.json").exists()
    assert not (tmp_path / "out_metrics" / "left").exists()

    outputs = read_all(out)
    assert not any(t.startswith(("/imu", "/tf")) for t in outputs)
    for cam in (FRONT, LEFT):
        ns = cam.image_topic.split("/")[1]
        infos = outputs[f"/{ns}/panoptic_depthlab/camera_info"]
        assert [t for t, _, _ in infos] == [log_time_of(cam, k) for k in range(FRAMES)]
        assert [stamp_ns(m) for _, _, m in infos] == [stamp_of(cam, k) for k in range(FRAMES)]
        # frame k carries K of the CameraInfo stamped like it (recorded after it), not frame k-1's
        assert [m.k[0] for _, _, m in infos] == [fx_of(cam, k) for k in range(FRAMES)]
        for name in ("panoptic", "depth", "detections", "detections_3d", "markers", "visualization"):
            msgs = outputs[f"/{ns}/panoptic_depthlab/{name}"]
            assert [stamp_ns(m) for _, _, m in msgs] == [stamp_of(cam, k) for k in range(FRAMES)], (ns, name)
        assert len(outputs[f"/{ns}/panoptic_depthlab/label_info"]) == 1
        assert outputs[f"/{ns}/panoptic_depthlab/panoptic"][0][2].header.frame_id == f"{ns}_optical_frame"
    per_frame = json.loads((tmp_path / "out_metrics" / "per_frame.json").read_text())
    assert per_frame["complete"] and set(per_frame["cameras"]) == {FRONT.image_topic, LEFT.image_topic}
    assert per_frame["cameras"][LEFT.image_topic]["camera_info_exact"] == FRAMES
    assert {row["camera_info"] for row in per_frame["per_frame"]} == {"exact"}

    # Every written message has zero padding: rosbags re-serialising it (zero-filled buffer) gives
    # the very same bytes (values are checked by the deserialisation itself).
    from panoptic_depthlab_ros.bag_types import make_typestore

    store = make_typestore()
    reader = open_bag(out)
    try:
        types = {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()
    for topic, msgs in outputs.items():
        for _, raw, msg in msgs:
            assert bytes(store.serialize_cdr(msg, types[topic])) == raw, topic


def test_single_camera_defaults_and_camera_info_beside_compressed(tmp_path, processor, params):
    """One jpeg camera: ``/left/image_raw/compressed`` finds ``/left/camera_info``; outputs keep the
    node's plain names; a camera without CameraInfo warns and counts its frames as unpaired."""
    store, records = recorded_messages((LEFT, replace(FRONT, info_topic=None, gt_prefix=None)))
    bag = write_bag(tmp_path / "bag", "rosbags-mcap", store, records)
    report = evaluate_camera(bag, tmp_path / "out", LEFT, processor, params)
    assert report.cameras[LEFT.image_topic].camera_info_topic == "/left/camera_info"
    assert report.cameras[LEFT.image_topic].camera_info_exact == FRAMES
    assert "/panoptic_depthlab/detections_3d" in report.output_counts

    report = evaluate_camera(bag, tmp_path / "out2", FRONT, processor, params)
    cam = report.cameras[FRONT.image_topic]
    assert cam.camera_info_topic == "" and cam.camera_info_none == FRAMES and cam.frames == FRAMES
    assert len(report.warnings) == 1 and "/front/camera_info" in report.warnings[0]
    assert "/panoptic_depthlab/detections_3d" not in report.output_counts
    assert report.output_counts["/panoptic_depthlab/panoptic"] == FRAMES


def test_camera_info_window_and_counted_fallback(tmp_path, processor, params):
    """CameraInfo recorded 0.3 s after its image: paired by stamp with a 0.5 s window; with a 0.1 s
    window every frame but the first falls back to the latest earlier one (counted, one warning),
    and the first has none."""
    cam = replace(FRONT, gt_prefix=None)
    store, records = recorded_messages((cam,), info_lag_ns=300_000_000)
    bag = write_bag(tmp_path / "bag", "rosbags-sqlite3", store, records)

    report = evaluate_camera(bag, tmp_path / "wide", cam, processor, params)
    assert report.cameras[cam.image_topic].camera_info_exact == FRAMES and report.warnings == []
    infos = read_all(tmp_path / "wide")["/panoptic_depthlab/camera_info"]
    assert [m.k[0] for _, _, m in infos] == [fx_of(cam, k) for k in range(FRAMES)]

    report = evaluate_camera(bag, tmp_path / "narrow", cam, processor, params, pairing_window_s=0.1)
    result = report.cameras[cam.image_topic]
    # Bag times of the topics read (s after frame 0): images 0 .1 .2 .3, their CameraInfos .3 .4 .5 .6
    # (the IMU and /tf are not read). A frame is decided once the bag is more than 0.1 s past it:
    # frame 0 at .2 (no CameraInfo yet: none), frame k >= 1 when CameraInfo k-1 arrives (fallback to it).
    assert (result.camera_info_exact, result.camera_info_fallback, result.camera_info_none) == (0, 3, 1)
    assert report.exit_code == 0 and result.frames == FRAMES
    assert sum("using the latest earlier one" in w for w in report.warnings) == 1
    assert sum("none before it" in w for w in report.warnings) == 1
    assert any("by stamp for 0 frame(s), the latest earlier one used for 3, none for 1" in w for w in report.warnings)
    infos = read_all(tmp_path / "narrow")["/panoptic_depthlab/camera_info"]
    assert [stamp_ns(m) for _, _, m in infos] == [stamp_of(cam, k) for k in (1, 2, 3)]
    assert [m.k[0] for _, _, m in infos] == [fx_of(cam, k) for k in (0, 1, 2)]
    rows = json.loads((tmp_path / "narrow_metrics" / "per_frame.json").read_text())["per_frame"]
    assert [r["camera_info"] for r in rows] == ["none", "fallback", "fallback", "fallback"]


def test_gt_before_or_after_the_image_gives_the_same_metrics(tmp_path, processor, params):
    """GT recorded before its image or after it: paired by stamp either way, the same numbers. A GT
    of the wrong size is skipped for that frame (counted, one warning), the run goes on."""
    cam = replace(FRONT, info_topic=None)
    summaries = {}
    for name, lag in (("before", -3_000_000), ("after", 40_000_000)):
        store, records = recorded_messages((cam,), gt_lag_ns=lag)
        bag = write_bag(tmp_path / f"bag_{name}", "rosbags-mcap", store, records)
        report = evaluate_camera(bag, tmp_path / f"out_{name}", cam, processor, params, with_gt=True)
        assert report.frames_with_gt == FRAMES and report.cameras[cam.image_topic].gt_missing == 0
        summaries[name] = report.summary
    assert summaries["before"] == summaries["after"] and summaries["before"]["frames"] == FRAMES

    store, records = recorded_messages((cam,), gt_size=(32, 128))
    bag = write_bag(tmp_path / "bag_bad_gt", "rosbags-sqlite3", store, records)
    report = evaluate_camera(bag, tmp_path / "out_bad_gt", cam, processor, params, with_gt=True)
    result = report.cameras[cam.image_topic]
    assert report.exit_code == 0 and result.frames == FRAMES and result.frames_with_gt == FRAMES - 1
    assert result.gt_rejected == {"gt_size_mismatch": 1}
    assert sum("GT not used" in w and "128x32" in w for w in report.warnings) == 1


DETERMINISM_SCRIPT = """
import sys, torch
from pathlib import Path
from panoptic_depthlab_ros.bags import bag_eval
from panoptic_depthlab_ros.params import NodeParams
torch.set_num_threads(1)
bag, out, config, weights = sys.argv[1:5]
params = NodeParams(model_config=config, weights=weights, input_height=64, input_width=128,
                    include_stuff_detections=True, backend="torch")
for storage in ("mcap", "sqlite3"):
    options = bag_eval.BagEvalOptions(image_topics=("/front/image_raw", "/left/image_raw/compressed"),
                                      storage=storage, params=params, progress=False, copy_inputs=True)
    report = bag_eval.evaluate_bag(bag, Path(out) / storage / "bag", options)
    assert report.exit_code == 0, report.error
"""


def first_difference(bag_a: Path, bag_b: Path) -> str:
    """Where two output bags differ: the first message (topic, index) whose bytes differ, else storage."""
    a, b = read_all(bag_a), read_all(bag_b)
    for topic in sorted(set(a) | set(b)):
        if len(a.get(topic, [])) != len(b.get(topic, [])):
            return f"{topic}: {len(a.get(topic, []))} vs {len(b.get(topic, []))} messages"
        for i, ((ta, ra, _), (tb, rb, _)) in enumerate(zip(a[topic], b[topic], strict=True)):
            if ta != tb or ra != rb:
                at = next((j for j in range(min(len(ra), len(rb))) if ra[j] != rb[j]), None)
                return f"{topic} message {i}: bag times {ta}/{tb}, {len(ra)}/{len(rb)} bytes, first differing byte {at}"
    return "every message is the same: the difference is in the storage layer"


@pytest.fixture(scope="module")
def torch_processor(params):
    """The torch backend (the default 'auto' is ONNX Runtime on a CPU, with an export cache): here the
    test is about our serialisation and storage, given a deterministic backend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    proc = bag_eval.make_processor(replace(params, backend="torch"))
    yield proc
    proc.close()
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_output_bags_byte_identical_across_processes(tmp_path, two_camera_bags, tiny_model, params, torch_processor):
    """A run here and one in a fresh process (different heap contents) give identical files, both
    storages: the storage file and metadata.yaml."""
    config, weights = tiny_model
    bag = two_camera_bags["rosbags-mcap"]
    subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT, str(bag), str(tmp_path / "b"), str(config), str(weights)],
        check=True,
        timeout=300,
        cwd=ROOT,
    )
    for storage in ("mcap", "sqlite3"):
        options = bag_eval.BagEvalOptions(
            image_topics=(FRONT.image_topic, LEFT.image_topic),
            storage=storage,
            params=replace(params, backend="torch"),
            progress=False,
            copy_inputs=True,
        )
        assert (
            bag_eval.evaluate_bag(bag, tmp_path / "a" / storage / "bag", options, processor=torch_processor).exit_code
            == 0
        )
        files_a = sorted(p.name for p in (tmp_path / "a" / storage / "bag").iterdir())
        files_b = sorted(p.name for p in (tmp_path / "b" / storage / "bag").iterdir())
        assert files_a == files_b and len(files_a) == 2, files_a  # the storage file + metadata.yaml
        for name in files_a:
            a = (tmp_path / "a" / storage / "bag" / name).read_bytes()
            b = (tmp_path / "b" / storage / "bag" / name).read_bytes()
            assert a == b, f"{storage}/{name} differs between the two runs: " + first_difference(
                tmp_path / "a" / storage / "bag", tmp_path / "b" / storage / "bag"
            )
    counts = {t: len(m) for t, m in read_all(tmp_path / "a" / "sqlite3" / "bag").items()}
    assert counts["/front/panoptic_depthlab/detections"] == FRAMES and counts["/imu/data"] > FRAMES


@pytest.mark.parametrize("writer", ["rosbags-sqlite3", "mcap-ros2", "rosbags-mcap"])
def test_damaged_bag_keeps_frames_before_the_damage(tmp_path, processor, params, writer, capsys):
    """A bag cut at 55 %: the frames before the cut are evaluated and written, exit code 1, the error
    names where reading stopped; the output bag is closed and readable; no traceback."""
    frames = 8
    cam = replace(FRONT, gt_prefix=None)
    store, records = recorded_messages((cam,), frames=frames, size=(128, 256))
    bag = write_bag(tmp_path / "bag", writer, store, records)
    (file,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * 0.55)])

    report = evaluate_camera(bag, tmp_path / "out", cam, processor, params)
    assert report.exit_code == 1
    assert 0 < report.frames < frames, report.frames
    assert "after message #" in report.error and "last good" in report.error, report.error
    assert ("row id" in report.error) if writer == "rosbags-sqlite3" else ("byte" in report.error)
    assert f"holds the {report.frames} frame(s) before it" in report.error
    outputs = read_all(tmp_path / "out")
    assert len(outputs["/panoptic_depthlab/panoptic"]) == report.frames
    # The frames kept are the first ones, each with its own CameraInfo, except the last one when the
    # cut fell between it and its CameraInfo: then the previous one is used (and counted).
    per_frame = json.loads((tmp_path / "out_metrics" / "per_frame.json").read_text())
    pairing = [row["camera_info"] for row in per_frame["per_frame"]]
    assert [row["index"] for row in per_frame["per_frame"]] == list(range(report.frames))
    assert pairing[:-1] == ["exact"] * (report.frames - 1) and pairing[-1] in ("exact", "fallback")
    kept = outputs["/panoptic_depthlab/camera_info"]
    own = [fx_of(cam, k) for k in range(report.frames)]
    if pairing[-1] == "fallback":
        own[-1] = fx_of(cam, report.frames - 2)
    assert [m.k[0] for _, _, m in kept] == own
    assert per_frame["complete"] is False and per_frame["error"] == report.error


def test_cli_exit_codes_for_bad_bags(tmp_path, tiny_model, capsys):
    """Through the installed command's entry point (``panoptic-depthlab``'s main): a damaged .db3 ->
    exit 1 naming the row, no image messages -> exit 2 with one line; the bad bag never raises."""
    import torch

    from panoptic_depthlab_ros.cli import main

    config, weights = tiny_model
    cam = replace(FRONT, gt_prefix=None)
    store, records = recorded_messages((cam,), frames=8, size=(128, 256))
    bag = write_bag(tmp_path / "cut", "rosbags-sqlite3", store, records)
    (db,) = bag.glob("*.db3")
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    empty = write_bag(
        tmp_path / "empty",
        "rosbags-mcap",
        store,
        [r for r in records if r[0] != cam.image_topic],
        empty_topics={cam.image_topic: "sensor_msgs/msg/Image"},
    )
    common = ["--config", str(config), "--weights", str(weights), "--input-size", "64x128", "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        capsys.readouterr()
        assert (
            main(["bag-eval", str(bag), "--out", str(tmp_path / "out_cut"), "--image-topic", cam.image_topic, *common])
            == 1
        )
        cut = capsys.readouterr()
        assert (
            main(
                [
                    "bag-eval",
                    str(empty),
                    "--out",
                    str(tmp_path / "out_empty"),
                    "--image-topic",
                    cam.image_topic,
                    *common,
                ]
            )
            == 2
        )
        none = capsys.readouterr()
    finally:
        torch.set_num_threads(threads)
    assert "bag-eval: error:" in cut.err and "row id" in cut.err and "frame(s) before it" in cut.err
    lines = [line for line in none.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no image messages on /front/image_raw" in lines[0], lines
    assert not (tmp_path / "out_empty").exists()


def test_stamp_store_pairs_by_stamp_and_forgets_old_messages():
    """The pairing store: exact stamps, the latest earlier stamp, a size cap, and bag-time expiry."""
    store = bag_eval.StampStore(size=3)
    for stamp, log_time in ((30, 300), (10, 100), (20, 200), (40, 400)):  # out of stamp order
        store.put(stamp, f"m{stamp}".encode(), log_time)
    assert 10 not in store and [s for s in (20, 30, 40) if s in store] == [20, 30, 40]  # oldest stamp went
    assert store.get(30) == (b"m30", 300) and store.get(35) is None
    assert store.latest_before(35)[:2] == (30, b"m30") and store.latest_before(20) is None
    assert store.pop(30) == (b"m30", 300) and store.latest_before(35)[0] == 20
    store.drop_older_than(300)
    assert 20 not in store and 40 in store
    assert bag_eval.camera_namespaces(["/front/image_raw", "/left/image_raw/compressed"]) == ["front", "left"]
    assert bag_eval.camera_namespaces(["/left_image", "/right_image"]) == ["left_image", "right_image"]
    assert bag_eval.camera_namespaces(["/cam/image_raw"]) == [""]


def test_cdr_serializer_zeroes_padding_through_the_rmw():
    """The rmw path (rmw_serialize into a zeroed buffer) gives rosbags' zero-padded bytes, and is the
    one used once a type agreed; strings of every length mod 4 put padding in many places."""
    from vision_msgs.msg import LabelInfo, VisionClass
    from visualization_msgs.msg import Marker, MarkerArray

    from panoptic_depthlab_ros.bags.common import CdrSerializer

    rmw, rosbags_only = CdrSerializer(), CdrSerializer(use_rmw=False)
    markers = MarkerArray(markers=[Marker(ns="n" * (i % 4), id=i, text="t" * i) for i in range(9)])
    labels = LabelInfo(class_map=[VisionClass(class_id=i, class_name="c" * i) for i in range(6)])
    for msg in (markers, labels, markers, labels):
        assert bytes(rmw(msg)) == bytes(rosbags_only(msg))
    assert rmw.rmw_types == {"visualization_msgs/msg/MarkerArray": True, "vision_msgs/msg/LabelInfo": True}
    assert rosbags_only.rmw_types == {}


def test_corrupt_image_messages_stop_the_run_keeping_what_came_before(tmp_path, processor, params):
    """Two images whose CDR is cut (a damaged copy): the frame before is kept, the run stops at the
    first with exit code 1 naming it; no exception escapes."""
    cam = replace(FRONT, gt_prefix=None)
    store, records = recorded_messages((cam,))
    images = [i for i, r in enumerate(records) if r[0] == cam.image_topic]
    for i in images[1:3]:
        topic, msgtype, log_time, msg = records[i]
        records[i] = (topic, msgtype, log_time, bytes(store.serialize_cdr(msg, msgtype))[:60])
    bag = write_bag(tmp_path / "bag", "rosbags-sqlite3", store, records)
    report = evaluate_camera(bag, tmp_path / "out", cam, processor, params)
    assert report.exit_code == 1 and report.frames == 1
    assert f"the {cam.image_topic} message at t=" in report.error and "cannot be deserialized" in report.error
    assert len(read_all(tmp_path / "out")["/panoptic_depthlab/panoptic"]) == 1


def test_cli_options_per_camera():
    """The command line as users type it: --image-topic repeated, the per-camera options once per camera
    in the same order ('' = none for that camera, a single '' = none for all); a count that does not
    match, or a camera given twice, is an error naming the option."""
    import argparse

    def options(*argv: str) -> bag_eval.BagEvalOptions:
        parser = argparse.ArgumentParser()
        bag_eval.add_arguments(parser)
        return bag_eval.options_from_args(parser.parse_args(["in_bag", "--out", "out", *argv]))

    two = ("--image-topic", FRONT.image_topic, "--image-topic", LEFT.image_topic)
    parsed = options(*two, "--camera-info-topic", "/front/info", "--camera-info-topic", "",
                     "--gt-panoptic-topic", "/front/gt/panoptic", "--gt-panoptic-topic", "",
                     "--gt-depth-topic", "")  # fmt: skip
    assert parsed.image_topics == (FRONT.image_topic, LEFT.image_topic)
    assert parsed.camera_info_topics == ("/front/info", "")
    assert parsed.gt_panoptic_topics == ("/front/gt/panoptic", "") and parsed.gt_depth_topics == ("", "")
    defaults = options()
    assert defaults.image_topics == (bag_eval.IMAGE_TOPIC,) and defaults.camera_info_topics is None
    with pytest.raises(ValueError, match=r"--camera-info-topic is given 1 time\(s\) for 2 image topic\(s\)"):
        options(*two, "--camera-info-topic", "/front/info")
    with pytest.raises(ValueError, match=r"--gt-depth-topic is given 3 time\(s\) for 2"):
        options(*two, *("--gt-depth-topic", "/d") * 3)
    with pytest.raises(ValueError, match="an image topic is given twice"):
        options("--image-topic", FRONT.image_topic, "--image-topic", FRONT.image_topic)
