"""INT8 calibration data: images from a synthetic split, a Cityscapes-layout folder, a folder of
camera images or the frames of a rosbag2 bag, letterboxed exactly as the Predictor does.

Calibration must see what the network sees at run time, so the same letterbox (aspect kept,
bilinear with antialias, bottom/right padding with the pixel mean) is applied; otherwise the
activation ranges a quantizer measures are those of a different input distribution.

``open_calibration_source(spec)`` picks the source from what ``spec`` names:
``synthetic[:SEED]`` renders street frames on the fly (no files: the training distribution of the
default model, seed 1 = its training seed, so val (seed 7) stays unseen); a folder with
``leftImg8bit/`` is read as Cityscapes (one split); a rosbag2 bag (folder with ``metadata.yaml``,
or a ``.mcap``/``.db3`` file) gives the frames of its image topics; any other folder is read
recursively as camera images.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..image_messages import ImageConversionError, image_message_to_rgb
from ..preprocess import DEFAULT_PAD_RGB, letterbox_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DEFAULT_SYNTHETIC_SEED = 1  # the default model's training seed (MODEL_CARD.md); val uses 7


def _spread(items: list, max_items: int | None) -> list:
    """At most ``max_items`` of ``items``, spread over the whole (sorted) set rather than the first
    sequence, so a folder or bag of consecutive frames still gives varied scenes."""
    if max_items is None:
        return items
    if max_items < 1:
        raise ValueError(f"calibration image count must be >= 1, got {max_items}")
    if len(items) <= max_items:
        return items
    idx = np.linspace(0, len(items) - 1, max_items).round().astype(int)
    return [items[i] for i in idx]


def list_calibration_images(directory: str | Path, max_images: int | None = None) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted so runs are reproducible)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"calibration image directory not found: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no calibration images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return _spread(files, max_images)


def read_rgb(path: str | Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path} (unsupported or corrupt)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


# ------------------------------------------------------------------------------ image sources
class ImageFolderSource:
    """Every image file under a folder (recursive): a folder of camera images."""

    kind = "images"

    def __init__(self, directory: str | Path, max_images: int | None = None) -> None:
        self.root = Path(directory)
        self.files = list_calibration_images(directory, max_images)

    @property
    def description(self) -> str:
        return f"{self.kind}:{self.root}"

    def __len__(self) -> int:
        return len(self.files)

    def images(self, count: int) -> Iterator[np.ndarray]:
        for path in self.files[:count]:
            yield read_rgb(path)

    def fingerprint_update(self, h, count: int) -> None:
        for path in self.files[:count]:
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)


class CityscapesSource(ImageFolderSource):
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` of a Cityscapes-layout data set (the
    synthetic data sets written by ``panoptic-depthlab synth`` have this layout too)."""

    kind = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", max_images: int | None = None) -> None:
        self.root = Path(root)
        self.split = split
        folder = self.root / "leftImg8bit" / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"calibration split folder not found: {folder} (Cityscapes layout under {self.root})"
            )
        files = sorted(folder.glob("*/*_leftImg8bit.png"))
        if not files:
            raise ValueError(f"no calibration images (*/*_leftImg8bit.png) under {folder}")
        self.files = _spread(files, max_images)

    @property
    def description(self) -> str:
        return f"{self.kind}:{self.root} split={self.split}"


class SyntheticSource:
    """Street frames rendered on the fly by the synthetic world (no files needed)."""

    kind = "synthetic"

    def __init__(self, seed: int = DEFAULT_SYNTHETIC_SEED, count: int = 64, size: tuple[int, int] = (256, 512)):
        if count < 1:
            raise ValueError(f"calibration image count must be >= 1, got {count}")
        self.seed, self.count, self.size = int(seed), int(count), (int(size[0]), int(size[1]))

    @property
    def description(self) -> str:
        return f"{self.kind}:seed={self.seed} size={self.size[0]}x{self.size[1]}"

    def __len__(self) -> int:
        return self.count

    def images(self, count: int) -> Iterator[np.ndarray]:
        from ..data.synthetic.render import render_frame

        for index in range(count):
            yield render_frame(self.seed, index, self.size).rgb

    def fingerprint_update(self, h, count: int) -> None:
        # the renderer is deterministic in (seed, index, size); the pixels are hashed anyway so a
        # changed renderer gives another fingerprint
        for rgb in self.images(count):
            h.update(rgb.tobytes())


class BagSource:
    """Frames of the image topics (sensor_msgs Image or CompressedImage) of a rosbag2 bag, read
    with rosbags (sqlite3 or MCAP); ``topics`` None = every image topic (several cameras)."""

    kind = "bag"

    def __init__(self, path: str | Path, topics: list[str] | None = None, max_images: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"calibration bag not found: {self.path}")
        with self._open() as reader:
            image_topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_MSGTYPES}
            wanted = list(topics) if topics else sorted(image_topics)
            missing = [t for t in wanted if t not in image_topics]
            if missing or not wanted:
                raise ValueError(
                    f"bag {self.path} has no image topic {missing or ''} (image topics: "
                    f"{sorted(image_topics) or 'none'}; all topics: {sorted({c.topic for c in reader.connections})})"
                )
            self.topics = wanted
            total = sum(c.msgcount for c in reader.connections if c.topic in wanted)
        if total == 0:
            raise ValueError(f"bag {self.path}: no messages on {', '.join(self.topics)}")
        self.total = total
        self.count = total if max_images is None else len(_spread(list(range(total)), max_images))
        # every k-th frame so the pick covers the whole recording
        self.stride = max(1, math.ceil(total / self.count))
        self.count = len(range(0, total, self.stride))

    @contextmanager
    def _open(self) -> Iterator[Any]:
        """The open bag reader, closed afterwards (AnyReader refuses a second ``open``)."""
        from rosbags.highlevel import AnyReader

        try:
            reader = AnyReader([self.path])
            reader.open()
        except Exception as exc:  # rosbags' ReaderError, sqlite/mcap errors of a damaged file
            raise ValueError(f"cannot read calibration bag {self.path}: {type(exc).__name__}: {exc}") from exc
        try:
            yield reader
        finally:
            reader.close()

    @property
    def description(self) -> str:
        return f"{self.kind}:{self.path} topics={','.join(self.topics)}"

    def __len__(self) -> int:
        return self.count

    def _messages(self, count: int) -> Iterator[tuple[str, int, bytes, object]]:
        with self._open() as reader:
            conns = [c for c in reader.connections if c.topic in self.topics]
            taken = 0
            try:
                for i, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
                    if taken >= count:
                        return
                    if i % self.stride:
                        continue
                    taken += 1
                    yield conn.topic, i, raw, lambda raw=raw, conn=conn: reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # rosbags/mcap/sqlite errors of a damaged file while reading
                raise ValueError(
                    f"calibration bag {self.path} is corrupt or truncated: {type(exc).__name__}: {exc}"
                ) from exc

    def images(self, count: int) -> Iterator[np.ndarray]:
        for topic, i, _, deserialize in self._messages(count):
            try:
                msg = deserialize()
            except Exception as exc:  # rosbags' CDR errors on a damaged message
                raise ValueError(
                    f"bag {self.path} topic {topic} message {i}: cannot deserialize: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                rgb = image_message_to_rgb(msg)
            except ImageConversionError as exc:
                raise ValueError(f"bag {self.path} topic {topic} message {i}: {exc}") from exc
            yield rgb

    def fingerprint_update(self, h, count: int) -> None:
        for topic, _, raw, _ in self._messages(count):
            h.update(topic.encode() + b"\0")
            h.update(bytes(raw))


def open_calibration_source(
    spec: str | Path,
    max_images: int | None = None,
    split: str = "train",
    topics: list[str] | None = None,
    synthetic_size: tuple[int, int] = (256, 512),
):
    """The image source ``spec`` names (see the module docstring)."""
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        seed_text = text.partition(":")[2]
        try:
            seed = int(seed_text) if seed_text else DEFAULT_SYNTHETIC_SEED
        except ValueError:
            raise ValueError(f"calibration source {text!r}: expected synthetic or synthetic:SEED") from None
        return SyntheticSource(seed, max_images or 64, synthetic_size)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"calibration data not found: {path}")
    if path.is_file():
        if path.suffix in (".mcap", ".db3"):
            return BagSource(path, topics, max_images)
        raise ValueError(f"calibration data {path} is a file but not a bag (.mcap/.db3); give a folder")
    if (path / "metadata.yaml").is_file():
        return BagSource(path, topics, max_images)
    if (path / "leftImg8bit").is_dir():
        return CityscapesSource(path, split, max_images)
    return ImageFolderSource(path, max_images)


class CalibrationDataReader:
    """Iterates float32 NCHW numpy batches (RGB 0-255) for a fixed network input size.

    Usable as TensorRT calibrator input and as ONNX Runtime's quantization ``CalibrationDataReader``
    (``get_next()`` returns ``{"images": batch}`` then ``None``). ``source``: a spec for
    ``open_calibration_source`` (folder, bag, ``synthetic[:SEED]``) or an opened source.
    """

    def __init__(
        self,
        source,
        input_hw: tuple[int, int],
        batch_size: int = 1,
        max_images: int | None = None,
        pad_rgb: tuple[float, float, float] = DEFAULT_PAD_RGB,
        **source_options,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(source, (str, Path)):
            source = open_calibration_source(source, max_images, **source_options)
        self.source = source
        if len(source) < batch_size:
            raise ValueError(
                f"{len(source)} calibration image(s) in {source.description}, fewer than one batch "
                f"of {batch_size}"
            )
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.batch_size = batch_size
        self.pad_rgb = pad_rgb
        self._iter: Iterator[np.ndarray] | None = None

    @property
    def files(self) -> list[Path]:
        """The image files read (file sources; empty for rendered or bag frames)."""
        return list(getattr(self.source, "files", []))

    @property
    def description(self) -> str:
        return self.source.description

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size

    def __len__(self) -> int:
        """Number of full batches (a trailing partial batch is dropped: engines have a fixed batch)."""
        return len(self.source) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        batch: list[torch.Tensor] = []
        for rgb in self.source.images(self.num_images):
            batch.append(letterbox_rgb(rgb, self.input_hw, self.pad_rgb)[0])
            if len(batch) == self.batch_size:
                yield torch.cat(batch).numpy()
                batch = []

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self)
        batch = next(self._iter, None)
        return None if batch is None else {"images": batch}

    def rewind(self) -> None:
        self._iter = None

    def fingerprint(self) -> str:
        """sha256 over what the calibration sees: every image's bytes (in order), the input size,
        batch size and padding. Different data -> a different INT8 calibration and engine."""
        h = hashlib.sha256()
        h.update(json.dumps([list(self.input_hw), self.batch_size, list(self.pad_rgb)]).encode())
        self.source.fingerprint_update(h, self.num_images)
        return h.hexdigest()


# ------------------------------------------------------------------------------ calibration cache
# TensorRT's calibration cache holds the INT8 scales. Beside it, ``<cache>.json`` records which
# calibration produced them, so new calibration images are never silently answered from an old cache
# and an engine rebuilt from the cache alone gets the same engine-cache key as the one built from data.


def calibration_id(data_fingerprint: str, calibrator: str) -> str:
    """The identity of one calibration: its data and the calibrator algorithm."""
    return hashlib.sha256(f"{calibrator}|{data_fingerprint}".encode()).hexdigest()


def _cache_sidecar(cache_path: str | Path) -> Path:
    return Path(str(cache_path) + ".json")


def cached_calibration_id(cache_path: str | Path) -> str | None:
    """The calibration id recorded for an existing cache (sha256 of its bytes when it has no
    record: a cache brought from elsewhere is still one definite calibration); None if no cache."""
    path = Path(cache_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(_cache_sidecar(path).read_text())
        if isinstance(record, dict) and isinstance(record.get("calibration_id"), str):
            return record["calibration_id"]
    except (OSError, ValueError):
        pass
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reusable_calibration_cache(cache_path: str | Path, wanted_id: str | None) -> bytes | None:
    """The cache bytes if they may answer this calibration, else None (TensorRT then calibrates).

    ``wanted_id`` None: no calibration data was given, so an existing cache is the calibration."""
    path = Path(cache_path) if cache_path else None
    if path is None or not path.is_file():
        return None
    if wanted_id is not None and cached_calibration_id(path) != wanted_id:
        return None
    return path.read_bytes()


def write_calibration_record(cache_path: str | Path, cal_id: str) -> None:
    """Record which calibration wrote ``cache_path`` (called after TensorRT wrote the cache)."""
    from .locking import atomic_write_bytes

    atomic_write_bytes(_cache_sidecar(cache_path), (json.dumps({"calibration_id": cal_id}) + "\n").encode())
