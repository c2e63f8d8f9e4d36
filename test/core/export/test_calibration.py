"""INT8 calibration reader: every source kind (synthetic, Cityscapes layout, image folder, rosbag2
bag), letterbox identical to inference, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from panoptic_depthlab_core.export.calibration import (
    DEFAULT_PAD_RGB,
    CalibrationDataReader,
    letterbox_rgb,
    list_calibration_images,
)


def _write_images(directory: Path, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (h, w) in enumerate(sizes):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 200  # red: checks the BGR->RGB swap
        rgb[: h // 2, :, 1] = 100
        cv2.imwrite(str(directory / f"img_{i:02d}.png"), rgb[:, :, ::-1])
        images.append(rgb)
    return images


def test_reader_letterboxes_and_batches(tmp_path: Path) -> None:
    _write_images(tmp_path / "calib", [(64, 128)] * 4 + [(100, 100)])
    (tmp_path / "calib" / "notes.txt").write_text("not an image")
    reader = CalibrationDataReader(tmp_path / "calib", (32, 64), batch_size=2)
    assert len(reader.files) == 5 and len(reader) == 2  # trailing partial batch dropped
    batches = list(reader)
    assert [b.shape for b in batches] == [(2, 3, 32, 64)] * 2
    assert all(b.dtype == np.float32 for b in batches)
    assert np.allclose(batches[0][:, 0], 200)  # channel 0 is red
    assert np.allclose(batches[0][:, 1, :15], 100) and np.allclose(
        batches[0][:, 1, 17:], 0
    )  # edge row blurred


def test_reader_matches_inference_letterbox_including_padding(tmp_path: Path) -> None:
    (image,) = _write_images(tmp_path / "c", [(100, 100)])
    reader = CalibrationDataReader(tmp_path / "c", (32, 64))
    batch = next(iter(reader))
    expected, (vh, vw) = letterbox_rgb(image, (32, 64))
    assert (vh, vw) == (32, 32)
    np.testing.assert_allclose(batch, expected.numpy())
    pad = batch[0, :, :, 32:]
    np.testing.assert_allclose(
        pad, np.broadcast_to(np.array(DEFAULT_PAD_RGB, np.float32)[:, None, None], pad.shape)
    )


def test_get_next_protocol_and_rewind(tmp_path: Path) -> None:
    _write_images(tmp_path / "c", [(32, 64)] * 3)
    reader = CalibrationDataReader(tmp_path / "c", (32, 64))
    feeds = [reader.get_next() for _ in range(4)]
    assert [f is None for f in feeds] == [False, False, False, True]
    assert set(feeds[0]) == {"images"}
    reader.rewind()
    assert reader.get_next() is not None


def test_max_images_spreads_over_the_set(tmp_path: Path) -> None:
    _write_images(tmp_path / "c", [(16, 16)] * 10)
    files = list_calibration_images(tmp_path / "c", max_images=3)
    assert [f.name for f in files] == ["img_00.png", "img_04.png", "img_09.png"]


def test_bad_calibration_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        CalibrationDataReader(tmp_path / "missing", (32, 64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no calibration images"):
        CalibrationDataReader(tmp_path / "empty", (32, 64))
    _write_images(tmp_path / "one", [(16, 16)])
    with pytest.raises(ValueError, match="fewer than one batch"):
        CalibrationDataReader(tmp_path / "one", (32, 64), batch_size=4)
    with pytest.raises(ValueError, match=">= 1"):
        list_calibration_images(tmp_path / "one", max_images=0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        next(iter(CalibrationDataReader(tmp_path / "bad", (32, 64))))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        letterbox_rgb(np.zeros((4, 4), np.uint8), (32, 64))


def test_fingerprint_follows_the_calibration_data(tmp_path: Path) -> None:
    from panoptic_depthlab_core.export.calibration import CalibrationDataReader

    root = tmp_path / "calib"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(root / f"img{i}.png"), rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    base = CalibrationDataReader(root, (32, 64)).fingerprint()
    assert CalibrationDataReader(root, (32, 64)).fingerprint() == base  # deterministic
    assert CalibrationDataReader(root, (64, 128)).fingerprint() != base  # other network input
    assert CalibrationDataReader(root, (32, 64), max_images=2).fingerprint() != base  # other subset
    cv2.imwrite(str(root / "img1.png"), rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    assert CalibrationDataReader(root, (32, 64)).fingerprint() != base  # same names, new pixels


def test_calibration_cache_is_reused_only_for_its_own_calibration(tmp_path: Path) -> None:
    import hashlib

    from panoptic_depthlab_core.export.calibration import (
        cached_calibration_id,
        calibration_id,
        reusable_calibration_cache,
        write_calibration_record,
    )

    cache = tmp_path / "model.calib"
    assert cached_calibration_id(cache) is None
    assert reusable_calibration_cache(cache, None) is None
    cache.write_bytes(b"TRT-8601-MinMaxCalibration\nimages: 3c010a14\n")
    # a cache without a record (brought from elsewhere) is identified by its bytes
    assert cached_calibration_id(cache) == hashlib.sha256(cache.read_bytes()).hexdigest()
    first = calibration_id("f" * 64, "minmax")
    assert first != calibration_id("f" * 64, "entropy") != calibration_id("e" * 64, "minmax")
    write_calibration_record(cache, first)
    assert cached_calibration_id(cache) == first
    assert reusable_calibration_cache(cache, first) == cache.read_bytes()
    assert reusable_calibration_cache(cache, None) == cache.read_bytes()  # no images: the cache is it
    assert reusable_calibration_cache(cache, calibration_id("e" * 64, "minmax")) is None  # new images


# ------------------------------------------------------------------------------ sources
def _cityscapes(root: Path, split: str, cities: dict[str, int]) -> None:
    for city, count in cities.items():
        folder = root / "leftImg8bit" / split / city
        folder.mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(folder / f"{city}_{i:06d}_000019_leftImg8bit.png"), np.full((20, 40, 3), i, np.uint8))
    (root / "gtFine" / split).mkdir(parents=True)  # GT is not read


def test_synthetic_source_renders_deterministic_frames() -> None:
    from panoptic_depthlab_core.export.calibration import SyntheticSource, open_calibration_source

    source = open_calibration_source("synthetic:5", max_images=2, synthetic_size=(32, 64))
    assert isinstance(source, SyntheticSource) and (source.seed, len(source)) == (5, 2)
    assert source.description == "synthetic:seed=5 size=32x64"
    reader = CalibrationDataReader(source, (32, 64))
    batches = list(reader)
    assert len(batches) == 2 and batches[0].shape == (1, 3, 32, 64) and not np.array_equal(*batches)
    again = CalibrationDataReader(SyntheticSource(5, 2, (32, 64)), (32, 64))
    assert again.fingerprint() == reader.fingerprint()
    assert CalibrationDataReader(SyntheticSource(6, 2, (32, 64)), (32, 64)).fingerprint() != reader.fingerprint()
    assert open_calibration_source("synthetic").seed == 1  # the default model's training seed, not val's 7
    with pytest.raises(ValueError, match="synthetic:SEED"):
        open_calibration_source("synthetic:abc")


def test_cityscapes_layout_reads_only_the_split(tmp_path: Path) -> None:
    from panoptic_depthlab_core.export.calibration import CityscapesSource, open_calibration_source

    _cityscapes(tmp_path / "cs", "train", {"aachen": 3, "bremen": 2})
    _cityscapes(tmp_path / "cs", "val", {"lindau": 4})
    source = open_calibration_source(tmp_path / "cs")
    assert isinstance(source, CityscapesSource) and len(source) == 5  # train by default, both cities
    assert [p.parent.name for p in source.files] == ["aachen"] * 3 + ["bremen"] * 2
    val = open_calibration_source(tmp_path / "cs", split="val", max_images=2)
    assert len(val) == 2 and all("lindau" in p.name for p in val.files)
    assert CalibrationDataReader(tmp_path / "cs", (32, 64), split="val").description.endswith("split=val")
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/test"):
        open_calibration_source(tmp_path / "cs", split="test")


def test_image_folder_source(tmp_path: Path) -> None:
    from panoptic_depthlab_core.export.calibration import ImageFolderSource, open_calibration_source

    _write_images(tmp_path / "cam" / "front", [(32, 64)] * 2)
    _write_images(tmp_path / "cam" / "rear", [(48, 64)])
    source = open_calibration_source(tmp_path / "cam")
    assert isinstance(source, ImageFolderSource) and len(source) == 3
    assert [b.shape for b in CalibrationDataReader(source, (32, 64))] == [(1, 3, 32, 64)] * 3
    with pytest.raises(FileNotFoundError, match="calibration data not found"):
        open_calibration_source(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt is a file but not a bag"):
        open_calibration_source(tmp_path / "notes.txt")


def _write_bag(path: Path, storage: str = "mcap", frames: int = 3) -> list[np.ndarray]:
    """A bag as `ros2 bag record` stores a camera: raw rgb8 images on one topic, jpeg on another,
    CameraInfo after its image, and an unrelated topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image = ts.types["sensor_msgs/msg/Image"]
    CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
    CameraInfo = ts.types["sensor_msgs/msg/CameraInfo"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    RoI = ts.types["sensor_msgs/msg/RegionOfInterest"]
    String = ts.types["std_msgs/msg/String"]
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    rgbs = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        raw = writer.add_connection("/front/image_raw", Image.__msgtype__, typestore=ts)
        jpeg = writer.add_connection("/rear/image/compressed", CompressedImage.__msgtype__, typestore=ts)
        info = writer.add_connection("/front/camera_info", CameraInfo.__msgtype__, typestore=ts)
        other = writer.add_connection("/rosout_text", String.__msgtype__, typestore=ts)
        for i in range(frames):
            t = 1_000_000_000 + i * 100_000_000
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="front")
            rgb = np.zeros((24, 40, 3), np.uint8)
            rgb[..., 0] = 200
            rgb[:, : 10 + i] = (0, 50, 100)
            rgbs.append(rgb)
            step = 40 * 3 + 8  # padded rows, as some drivers write them
            data = np.zeros((24, step), np.uint8)
            data[:, : 40 * 3] = rgb.reshape(24, -1)
            msg = Image(header=header, height=24, width=40, encoding="rgb8", is_bigendian=0, step=step,
                        data=data.reshape(-1))  # fmt: skip
            writer.write(raw, t, ts.serialize_cdr(msg, Image.__msgtype__))
            cam = CameraInfo(header=header, height=24, width=40, distortion_model="plumb_bob",
                             d=np.zeros(5), k=np.eye(3).reshape(-1), r=np.eye(3).reshape(-1),
                             p=np.zeros(12), binning_x=0, binning_y=0,
                             roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))  # fmt: skip
            writer.write(info, t + 1000, ts.serialize_cdr(cam, CameraInfo.__msgtype__))
            ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1])
            comp = CompressedImage(header=header, format="jpeg", data=np.frombuffer(buf.tobytes(), np.uint8))
            writer.write(jpeg, t + 2000, ts.serialize_cdr(comp, CompressedImage.__msgtype__))
            writer.write(other, t + 3000, ts.serialize_cdr(String(data="hello"), String.__msgtype__))
    return rgbs


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_source_reads_every_camera(tmp_path: Path, storage: str) -> None:
    from panoptic_depthlab_core.export.calibration import BagSource, open_calibration_source

    rgbs = _write_bag(tmp_path / "drive", storage)
    source = open_calibration_source(tmp_path / "drive")
    assert isinstance(source, BagSource)
    assert source.topics == ["/front/image_raw", "/rear/image/compressed"] and len(source) == 6
    frames = list(source.images(len(source)))
    assert len(frames) == 6 and all(f.shape == (24, 40, 3) for f in frames)
    np.testing.assert_array_equal(frames[0], rgbs[0])  # raw rgb8 with padded rows: exact
    assert np.abs(frames[1].astype(int) - rgbs[0]).mean() < 4  # its jpeg twin (bag time order)
    front = open_calibration_source(tmp_path / "drive", topics=["/front/image_raw"], max_images=2)
    assert len(front) == 2 and front.stride == 2  # spread over the recording: frames 0 and 2
    picked = list(front.images(2))
    np.testing.assert_array_equal(picked[1], rgbs[2])
    rear = ["/rear/image/compressed"]
    reader = CalibrationDataReader(tmp_path / "drive", (32, 64), topics=rear)
    assert len(reader) == 3 and reader.description.startswith("bag:")
    assert reader.fingerprint() == CalibrationDataReader(tmp_path / "drive", (32, 64), topics=rear).fingerprint()
    with pytest.raises(ValueError, match=r"no image topic \['/nope'\].*image topics"):
        open_calibration_source(tmp_path / "drive", topics=["/nope"])


def test_bad_bags_name_the_file(tmp_path: Path) -> None:
    from panoptic_depthlab_core.export.calibration import open_calibration_source

    _write_bag(tmp_path / "drive", "mcap")
    mcap = next((tmp_path / "drive").glob("*.mcap"))
    broken = tmp_path / "broken.mcap"
    broken.write_bytes(mcap.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"broken\.mcap"):
        source = open_calibration_source(broken)
        list(source.images(len(source)))
    garbage = tmp_path / "garbage.db3"
    garbage.write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.db3"):
        open_calibration_source(garbage)
