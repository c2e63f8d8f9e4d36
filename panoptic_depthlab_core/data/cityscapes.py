"""Cityscapes on disk (real, or the synthetic set written in its layout): find and read the files.

Instances come from the **panoptic ground truth** (``gtFine/cityscapes_panoptic_{split}.json`` +
PNGs, as cityscapesscripts' ``createPanopticImgs`` writes them with label-id categories), which is
what detectron2's Cityscapes panoptic loader reads too. For real Cityscapes, create it once with
``csCreatePanopticImgs --dataset-folder ROOT/gtFine --set-names val train``.

Depth comes from ``disparity/`` with each image's own ``camera/*.json``:
``depth = baseline * fx / ((p - 1) / 256)`` for p > 1; p <= 1 is invalid (never turned into a cap).

Every missing file is a FileNotFoundError and every undecodable one a ValueError, naming the path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from panoptic_depthlab_core.metadata import (
    IGNORE_LABEL,
    LABEL_DIVISOR,
    label_id_to_train_id_lut,
)

_LABEL_TO_TRAIN = label_id_to_train_id_lut()
_THING_LABEL_IDS = frozenset((24, 25, 26, 27, 28, 31, 32, 33))


@dataclass(frozen=True)
class CameraCalibration:
    baseline: float  # metres
    fx: float
    fy: float
    u0: float
    v0: float


@dataclass(frozen=True)
class PanopticSegment:
    """One segment of the panoptic GT: ``id`` as in the PNG (the instanceIds value), its train id."""

    id: int
    label_id: int
    train_id: int
    is_thing: bool
    iscrowd: bool
    area: int = 0


@dataclass(frozen=True)
class CityscapesRecord:
    """Paths of one image and its annotations; ``segments`` is None when no panoptic GT was asked."""

    image_id: str  # "{city}_{seq:06d}_{frame:06d}"
    image_path: Path
    label_ids_path: Path
    instance_ids_path: Path
    disparity_path: Path | None
    camera_path: Path | None
    panoptic_path: Path | None
    segments: tuple[PanopticSegment, ...] | None


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing {what}: {path}")
    return path


def _read_panoptic_json(path: Path) -> dict[str, dict]:
    _require(path, "panoptic GT json (run cityscapesscripts' csCreatePanopticImgs)")
    try:
        data = json.loads(path.read_text())
        annotations = data["annotations"]
        return {a["image_id"]: a for a in annotations}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"corrupt panoptic GT json {path}: {exc}") from exc


def _segments_from_annotation(ann: dict, json_path: Path) -> tuple[PanopticSegment, ...]:
    segments = []
    try:
        for s in ann["segments_info"]:
            label_id = int(s["category_id"])
            if not 0 <= label_id < 256:
                raise ValueError(f"category_id {label_id} is not a Cityscapes label id")
            train_id = int(_LABEL_TO_TRAIN[label_id])
            if train_id == IGNORE_LABEL:
                continue
            segments.append(PanopticSegment(
                id=int(s["id"]), label_id=label_id, train_id=train_id,
                is_thing=label_id in _THING_LABEL_IDS, iscrowd=bool(s.get("iscrowd", 0)),
                area=int(s.get("area", 0)),
            ))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"corrupt segments_info for {ann.get('image_id')} in {json_path}: {exc}") from exc
    return tuple(segments)


def find_records(
    root: str | Path,
    split: str,
    require_panoptic: bool = True,
    require_depth: bool = True,
) -> list[CityscapesRecord]:
    """All images of ``split`` under ``root`` (sorted), with every file the loader needs checked.

    Raises FileNotFoundError naming the first missing path (or the empty image folder).
    """
    root = Path(root)
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise FileNotFoundError(f"no image folder {img_dir} (expected Cityscapes layout under {root})")
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise FileNotFoundError(f"no *_leftImg8bit.png images under {img_dir}")
    pan_json = root / "gtFine" / f"cityscapes_panoptic_{split}.json"
    annotations = _read_panoptic_json(pan_json) if require_panoptic else {}
    records = []
    for img in images:
        city = img.parent.name
        image_id = img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / city
        rec_pan, segments = None, None
        if require_panoptic:
            ann = annotations.get(image_id)
            if ann is None:
                raise FileNotFoundError(f"image {image_id} has no annotation in {pan_json}")
            rec_pan = _require(
                root / "gtFine" / f"cityscapes_panoptic_{split}" / ann["file_name"], "panoptic GT png"
            )
            segments = _segments_from_annotation(ann, pan_json)
        disp = cam = None
        if require_depth:
            disp = _require(root / "disparity" / split / city / f"{image_id}_disparity.png", "disparity")
            cam = _require(root / "camera" / split / city / f"{image_id}_camera.json", "camera json")
        records.append(CityscapesRecord(
            image_id=image_id,
            image_path=img,
            label_ids_path=_require(gt / f"{image_id}_gtFine_labelIds.png", "label ids"),
            instance_ids_path=_require(gt / f"{image_id}_gtFine_instanceIds.png", "instance ids"),
            disparity_path=disp,
            camera_path=cam,
            panoptic_path=rec_pan,
            segments=segments,
        ))  # fmt: skip
    return records


# -- readers -------------------------------------------------------------------------------------
def _imread(path: str | Path, flags: int, what: str) -> np.ndarray:
    path = Path(path)
    _require(path, what)
    array = cv2.imread(str(path), flags)
    if array is None:
        raise ValueError(f"cannot decode {what} {path} (corrupt or not an image)")
    return array


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    bgr = _imread(path, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label_ids(path: str | Path) -> np.ndarray:
    """(H, W) uint8 Cityscapes label ids."""
    labels = _imread(path, cv2.IMREAD_UNCHANGED, "label ids")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(
            f"label ids {path} must be a single-channel 8-bit PNG, got {labels.dtype} {labels.shape}"
        )
    return labels


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Label ids -> train ids (255 for every ignored label id)."""
    return _LABEL_TO_TRAIN[label_ids]


def read_instance_ids(path: str | Path) -> np.ndarray:
    """(H, W) int32 instanceIds (label_id*1000 + k for thing instances, else the label id)."""
    ids = _imread(path, cv2.IMREAD_UNCHANGED, "instance ids")
    if ids.ndim != 2 or ids.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"instance ids {path} must be a single-channel PNG, got {ids.dtype} {ids.shape}")
    return ids.astype(np.int32)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """(H, W) int32 segment ids, id = R + 256 G + 256^2 B (0 = void)."""
    bgr = _imread(path, cv2.IMREAD_COLOR, "panoptic GT png").astype(np.int32)
    return bgr[:, :, 2] + 256 * bgr[:, :, 1] + 65536 * bgr[:, :, 0]


def read_camera(path: str | Path) -> CameraCalibration:
    """Baseline and intrinsics from a Cityscapes ``camera/*_camera.json``."""
    path = Path(path)
    _require(path, "camera json")
    try:
        data = json.loads(path.read_text())
        cal = CameraCalibration(
            baseline=float(data["extrinsic"]["baseline"]),
            fx=float(data["intrinsic"]["fx"]),
            fy=float(data["intrinsic"]["fy"]),
            u0=float(data["intrinsic"]["u0"]),
            v0=float(data["intrinsic"]["v0"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"corrupt camera json {path}: {exc!r}") from exc
    if not (cal.baseline > 0 and cal.fx > 0 and cal.fy > 0):
        raise ValueError(f"camera json {path}: baseline and fx/fy must be > 0, got {cal}")
    return cal


def read_disparity(path: str | Path) -> np.ndarray:
    """(H, W) uint16 raw disparity PNG values."""
    disp = _imread(path, cv2.IMREAD_UNCHANGED, "disparity")
    if disp.ndim != 2 or disp.dtype != np.uint16:
        raise ValueError(
            f"disparity {path} must be a single-channel 16-bit PNG, got {disp.dtype} {disp.shape}"
        )
    return disp


def disparity_to_depth(
    disparity_png: np.ndarray, camera: CameraCalibration, max_depth_m: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (0 where invalid) and the valid mask.

    p <= 1 is invalid (p = 1 would be infinitely far), and so is depth beyond ``max_depth_m``.
    """
    p = disparity_png.astype(np.float32)
    valid = disparity_png > 1
    depth = np.zeros(p.shape, dtype=np.float32)
    depth[valid] = (camera.baseline * camera.fx * 256.0) / (p[valid] - 1.0)
    if max_depth_m is not None:
        valid &= depth <= max_depth_m
        depth[~valid] = 0.0
    return depth, valid


def read_depth(record: CityscapesRecord, max_depth_m: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    if record.disparity_path is None or record.camera_path is None:
        raise ValueError(f"{record.image_id}: record was found without depth (require_depth=False)")
    return disparity_to_depth(
        read_disparity(record.disparity_path), read_camera(record.camera_path), max_depth_m
    )


def read_panoptic(record: CityscapesRecord) -> tuple[np.ndarray, tuple[PanopticSegment, ...]]:
    """Segment-id map and its segments (ignored classes already dropped, as the JSON does)."""
    if record.panoptic_path is None or record.segments is None:
        raise ValueError(f"{record.image_id}: record was found without panoptic GT (require_panoptic=False)")
    return read_panoptic_png(record.panoptic_path), record.segments


def _check_same_shape(record: CityscapesRecord, shape: tuple[int, int], **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if arr.shape[:2] != shape:
            raise ValueError(
                f"{record.image_id}: {name} is {arr.shape[:2]}, image is {shape} ({record.image_path})"
            )


@dataclass(frozen=True)
class GroundTruth:
    """Evaluation GT of one image in the model's encoding.

    - ``panoptic``: int32, ``train_id * 1000 + instance``; instance = (instanceIds % 1000) + 1 for
      thing instances, 0 for stuff and for crowd regions; -1 = void.
    - ``semantic``: uint8 train ids, 255 = ignore.
    - ``depth_m``: float32 metres, NaN where invalid (or beyond ``max_depth_m`` when given).
    - ``segments``: the panoptic segments (``iscrowd`` marks crowd regions).
    """

    image_id: str
    panoptic: np.ndarray
    semantic: np.ndarray
    depth_m: np.ndarray | None
    segments: tuple[PanopticSegment, ...]
    camera: CameraCalibration | None


def panoptic_to_model_ids(segment_ids: np.ndarray, segments: tuple[PanopticSegment, ...]) -> np.ndarray:
    """Cityscapes segment ids -> ``train_id * 1000 + instance`` (see :class:`GroundTruth`), -1 void."""
    out = np.full(segment_ids.shape, -1, dtype=np.int32)
    if not segments:
        return out
    ids = np.array([s.id for s in segments], dtype=np.int64)
    values = np.array([
        s.train_id * LABEL_DIVISOR + ((s.id % LABEL_DIVISOR) + 1 if s.is_thing and not s.iscrowd else 0)
        for s in segments
    ], dtype=np.int32)  # fmt: skip
    order = np.argsort(ids)
    ids, values = ids[order], values[order]
    pos = np.clip(np.searchsorted(ids, segment_ids), 0, len(ids) - 1)
    match = ids[pos] == segment_ids
    out[match] = values[pos[match]]
    return out


def load_gt(record: CityscapesRecord, max_depth_m: float | None = None) -> GroundTruth:
    """Read one image's panoptic, semantic and depth GT for evaluation (see :class:`GroundTruth`)."""
    segment_ids, segments = read_panoptic(record)
    panoptic = panoptic_to_model_ids(segment_ids, segments)
    semantic = np.where(panoptic >= 0, panoptic // LABEL_DIVISOR, IGNORE_LABEL).astype(np.uint8)
    depth_m = camera = None
    if record.disparity_path is not None and record.camera_path is not None:
        camera = read_camera(record.camera_path)
        depth, valid = disparity_to_depth(read_disparity(record.disparity_path), camera, max_depth_m)
        depth_m = np.where(valid, depth, np.nan).astype(np.float32)
        _check_same_shape(record, panoptic.shape, depth=depth_m)
    return GroundTruth(record.image_id, panoptic, semantic, depth_m, segments, camera)
