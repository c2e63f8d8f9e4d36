"""Write predictions in the formats the Cityscapes tools read, so they can be scored outside this project.

One export folder holds, per frame ``image_id`` (Cityscapes' ``{city}_{seq:06d}_{frame:06d}`` for
Cityscapes images; any name without ``/`` otherwise)::

    cityscapes_panoptic_{split}.json                  COCO panoptic results: images, annotations
                                                      (file_name, image_id, segments_info), categories
    cityscapes_panoptic_{split}/{image_id}_panoptic.png   id-encoded RGB, id = R + 256 G + 256^2 B, 0 = void
    labelIds/{image_id}_labelIds.png                  8-bit Cityscapes *label* ids (0 'unlabeled' = void)
    disparity/{image_id}_disparity.png                16-bit, p = round(d * 256) + 1, 0 = invalid, or
    depth/{image_id}_depth.npy | _depth.tiff           float32 metres along z, NaN = invalid

That is what cityscapesscripts' ``csEvalPanopticSemanticLabeling`` (``--prediction-json-file`` =
the JSON; the PNG folder is found beside it), ``csEvalPixelLevelSemanticLabeling``
(``CITYSCAPES_RESULTS=DIR/labelIds``: it walks the whole folder, so nothing else may live there),
COCO's panopticapi and detectron2's Cityscapes evaluators read, and what the Cityscapes benchmark
server accepts. ``category_id`` is the Cityscapes label id (person = 24), as the test set requires;
``categories`` is the list ``createPanopticImgs`` writes.

Segment ids in the PNG: ``label_id * 1000 + instance`` for thing instances and ``label_id`` for
stuff (and for a thing-class region without an instance), the encoding of Cityscapes'
``instanceIds.png`` and its panoptic GT; unique per image and below 2^24. The colour PNG that
``infer`` writes for people cannot be decoded back to ids (two instances may share a colour); this one
can.

Disparity follows the Cityscapes ``disparity/`` files: ``d = baseline * fx / depth`` in pixels of
the image, stored as ``round(d * 256) + 1``; it needs the stereo baseline (metres) and fx (pixels).
Depths too near for 16 bits (d > 255.99 px) are clipped to the nearest representable value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from panoptic_depthlab_core.metadata import (
    CITYSCAPES_CLASSES,
    IGNORE_LABEL,
    LABEL_DIVISOR,
    NUM_CLASSES,
    train_id_to_label_id_lut,
)

DEPTH_FORMATS = ("auto", "disparity", "npy", "tiff", "none")
# Cityscapes' label categories ("supercategory" in the COCO categories), by label id.
_SUPERCATEGORY = {
    7: "flat", 8: "flat", 11: "construction", 12: "construction", 13: "construction", 17: "object",
    19: "object", 20: "object", 21: "nature", 22: "nature", 23: "sky", 24: "human", 25: "human",
    26: "vehicle", 27: "vehicle", 28: "vehicle", 31: "vehicle", 32: "vehicle", 33: "vehicle",
}  # fmt: skip
_TRAIN_TO_LABEL = train_id_to_label_id_lut()
_IMAGE_ID = re.compile(r"^[^/\\\x00]+$")
MAX_DISPARITY_PNG = 65535


def cityscapes_categories() -> list[dict[str, Any]]:
    """The ``categories`` of a Cityscapes panoptic JSON with label ids (what createPanopticImgs writes)."""
    return [
        {
            "id": c.label_id,
            "name": c.name,
            "color": list(c.color),
            "supercategory": _SUPERCATEGORY[c.label_id],
            "isthing": 1 if c.is_thing else 0,
        }
        for c in CITYSCAPES_CLASSES
    ]


def panoptic_to_segment_ids(panoptic_ids: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Our ids (``train_id * 1000 + instance``, -1 void) -> Cityscapes segment ids + ``segments_info``.

    Returns a uint32 map (0 = void) and one entry per segment, sorted by id: ``id``, ``category_id``
    (label id), ``area``, ``bbox`` ([x, y, w, h], pixels), ``iscrowd`` (0: a prediction is never crowd).
    Ids whose class is not a train id are void, as the evaluator treats them.
    """
    ids = np.asarray(panoptic_ids)
    if ids.ndim != 2:
        raise ValueError(f"panoptic_ids must be a 2-D id map, got shape {ids.shape}")
    ids = ids.astype(np.int64)
    train = np.floor_divide(ids, LABEL_DIVISOR)
    instance = ids - train * LABEL_DIVISOR
    valid = (ids >= 0) & (train < NUM_CLASSES)
    label = _TRAIN_TO_LABEL[np.where(valid, train, 0)].astype(np.int64)
    segment = np.where(instance > 0, label * LABEL_DIVISOR + instance, label)
    segment = np.where(valid, segment, 0).astype(np.uint32)

    # ids < 34 * 1000: a bincount and a lookup table instead of np.unique's sort (no sort per frame)
    all_counts = np.bincount(segment.ravel())
    uniq = np.flatnonzero(all_counts)
    counts = all_counts[uniq]
    slot = np.zeros(all_counts.size, dtype=np.int32)
    slot[uniq] = np.arange(uniq.size, dtype=np.int32)
    inverse = slot[segment]
    height, width = segment.shape
    # bbox per segment: the rows and columns that hold it (a segments x rows/cols presence table)
    in_row = np.zeros((uniq.size, height), dtype=bool)
    in_col = np.zeros((uniq.size, width), dtype=bool)
    in_row[inverse, np.arange(height)[:, None]] = True
    in_col[inverse, np.arange(width)[None, :]] = True
    y0 = in_row.argmax(axis=1)
    y1 = height - 1 - in_row[:, ::-1].argmax(axis=1)
    x0 = in_col.argmax(axis=1)
    x1 = width - 1 - in_col[:, ::-1].argmax(axis=1)
    info = []
    for k, seg_id in enumerate(uniq.tolist()):
        if seg_id == 0:
            continue
        info.append({
            "id": int(seg_id),
            "category_id": int(seg_id // LABEL_DIVISOR if seg_id >= LABEL_DIVISOR else seg_id),
            "area": int(counts[k]),
            "bbox": [int(x0[k]), int(y0[k]), int(x1[k] - x0[k] + 1), int(y1[k] - y0[k] + 1)],
            "iscrowd": 0,
        })  # fmt: skip
    return segment, info


def segment_ids_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
    """(H, W) ids < 2^24 -> (H, W, 3) uint8 RGB with id = R + 256 G + 256^2 B (COCO panoptic)."""
    ids = np.asarray(segment_ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 1 << 24):
        raise ValueError("segment ids must lie in 0 .. 2^24 - 1 for an RGB panoptic PNG")
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`segment_ids_to_rgb` (panopticapi's ``rgb2id``)."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def semantic_to_label_ids(semantic: np.ndarray) -> np.ndarray:
    """Train ids (255 void) -> Cityscapes label ids (0 'unlabeled' for void), uint8."""
    sem = np.asarray(semantic)
    if sem.ndim != 2:
        raise ValueError(f"semantic must be a 2-D map, got shape {sem.shape}")
    sem = sem.astype(np.int64)
    valid = (sem >= 0) & (sem < NUM_CLASSES)
    return np.where(valid, _TRAIN_TO_LABEL[np.where(valid, sem, 0)], 0).astype(np.uint8)


def depth_to_disparity_png(depth_m: np.ndarray, baseline_m: float, fx: float) -> np.ndarray:
    """Depth (m) -> Cityscapes disparity PNG values: ``round(baseline * fx / depth * 256) + 1``, 0 invalid.

    Non-finite or non-positive depth is invalid (0). ``fx`` must be that of the depth map's pixels.
    """
    if not (np.isfinite(baseline_m) and baseline_m > 0 and np.isfinite(fx) and fx > 0):
        raise ValueError(f"disparity needs baseline > 0 m and fx > 0 px, got baseline {baseline_m}, fx {fx}")
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    disparity = np.zeros(depth.shape, dtype=np.float64)
    disparity[valid] = baseline_m * fx / depth[valid]
    p = np.minimum(np.round(disparity * 256.0) + 1.0, MAX_DISPARITY_PNG)
    return np.where(valid, p, 0).astype(np.uint16)


def resolve_depth_format(requested: str, baseline_known: bool) -> str:
    """``auto`` -> ``disparity`` when a stereo baseline is known, else float32 ``tiff``."""
    if requested not in DEPTH_FORMATS:
        raise ValueError(f"depth format must be one of {', '.join(DEPTH_FORMATS)}, got {requested!r}")
    if requested == "auto":
        return "disparity" if baseline_known else "tiff"
    return requested


def image_id_from_filename(name: str) -> str:
    """``aachen_000000_000019_leftImg8bit.png`` -> ``aachen_000000_000019``; other names: their stem."""
    stem = Path(name).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    return stem[: -len("_leftImg8bit")] if stem.endswith("_leftImg8bit") else stem


def _get(pred: Any, name: str) -> Any:
    if isinstance(pred, Mapping):
        return pred.get(name)
    return getattr(pred, name, None)


def _imwrite(path: Path, array: np.ndarray) -> None:
    """Write through a temporary name and rename, so a crash never leaves a truncated PNG/TIFF."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not cv2.imwrite(str(tmp), array):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)


def _write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class ExportedFrame:
    """Where one frame's files went (paths relative to the export folder)."""

    image_id: str
    panoptic_png: str
    label_ids_png: str
    depth_file: str | None
    segments: int


class PredictionExporter:
    """Accumulates frames (``add``) and writes the JSON on ``close()`` (also as a context manager).

    ``depth_format``: ``disparity`` (needs ``baseline_m`` and ``fx`` per frame), ``npy``, ``tiff``
    or ``none``; resolve ``auto`` first with :func:`resolve_depth_format`. The JSON is rewritten
    atomically every ``flush_every`` frames and at the end, so a killed run leaves a JSON that names
    exactly the PNGs written before it.
    """

    def __init__(
        self,
        out_dir: str | Path,
        split: str = "val",
        depth_format: str = "tiff",
        flush_every: int = 50,
    ) -> None:
        if depth_format not in DEPTH_FORMATS or depth_format == "auto":
            raise ValueError(
                f"depth_format must be one of disparity, npy, tiff, none (resolve 'auto' first), "
                f"got {depth_format!r}"
            )
        if not split or "/" in split:
            raise ValueError(f"split must be a non-empty name without '/', got {split!r}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.depth_format = depth_format
        self.flush_every = max(1, int(flush_every))
        self.name = f"cityscapes_panoptic_{split}"
        self.json_path = self.out_dir / f"{self.name}.json"
        self.panoptic_dir = self.out_dir / self.name
        self.label_ids_dir = self.out_dir / "labelIds"
        self.depth_dir = self.out_dir / ("disparity" if depth_format == "disparity" else "depth")
        for folder in (self.panoptic_dir, self.label_ids_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if depth_format != "none":
            self.depth_dir.mkdir(parents=True, exist_ok=True)
        self.info: dict[str, Any] = {
            "description": "Panoptic-DepthLab predictions (Cityscapes panoptic format, label ids)",
            "depth_format": depth_format,
        }
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._closed = False

    def __enter__(self) -> PredictionExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self,
        image_id: str,
        prediction: Any,
        baseline_m: float | None = None,
        fx: float | None = None,
        file_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
        skip_depth: bool = False,
    ) -> ExportedFrame:
        """Write one frame. ``prediction``: a FrameResult or anything with ``panoptic_ids`` and
        optionally ``semantic`` (train ids; derived from the ids when absent) and ``depth_m``.
        ``file_name``: the input image's name for the JSON's ``images`` entry; ``extra``: more
        fields for its annotation (a bag's header stamp, say; the Cityscapes tools ignore them).
        ``skip_depth``: no depth file for this frame (its calibration is unknown, say)."""
        if self._closed:
            raise RuntimeError("PredictionExporter.add after close()")
        if not _IMAGE_ID.match(image_id or ""):
            raise ValueError(f"image id must be a non-empty file name without '/', got {image_id!r}")
        if image_id in self._seen:
            raise ValueError(f"image id {image_id!r} was exported twice (image ids must be unique)")
        panoptic = _get(prediction, "panoptic_ids")
        if panoptic is None:
            raise ValueError(f"{image_id}: the prediction has no panoptic_ids (ask the predictor for all maps)")
        segment_ids, segments_info = panoptic_to_segment_ids(panoptic)
        height, width = segment_ids.shape
        semantic = _get(prediction, "semantic")
        if semantic is None:
            ids = np.asarray(panoptic).astype(np.int64)
            semantic = np.where(ids >= 0, ids // LABEL_DIVISOR, IGNORE_LABEL)
        semantic = np.asarray(semantic)
        if semantic.shape != (height, width):
            raise ValueError(f"{image_id}: semantic is {semantic.shape}, panoptic_ids {(height, width)}")

        depth_file = None
        depth_image = None
        if self.depth_format != "none" and not skip_depth:
            depth = _get(prediction, "depth_m")
            if depth is None:
                raise ValueError(f"{image_id}: the prediction has no depth_m (or export with depth format 'none')")
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != (height, width):
                raise ValueError(f"{image_id}: depth_m is {depth.shape}, panoptic_ids {(height, width)}")
            if self.depth_format == "disparity":
                if baseline_m is None or fx is None:
                    raise ValueError(
                        f"{image_id}: disparity export needs the stereo baseline and fx of the camera "
                        "(give a baseline, or choose the npy/tiff depth format)"
                    )
                depth_image = depth_to_disparity_png(depth, float(baseline_m), float(fx))
                depth_file = f"disparity/{image_id}_disparity.png"
            else:
                depth_file = f"depth/{image_id}_depth.{self.depth_format}"

        panoptic_file = f"{image_id}_panoptic.png"
        label_file = f"labelIds/{image_id}_labelIds.png"
        _imwrite(self.panoptic_dir / panoptic_file, segment_ids_to_rgb(segment_ids)[:, :, ::-1])  # cv2: BGR
        _imwrite(self.out_dir / label_file, semantic_to_label_ids(semantic))
        if depth_file is not None:
            path = self.out_dir / depth_file
            if depth_image is not None:
                _imwrite(path, depth_image)
            elif self.depth_format == "npy":
                tmp = path.with_name(f".{path.stem}.tmp.npy")
                np.save(tmp, np.ascontiguousarray(depth, dtype=np.float32), allow_pickle=False)
                os.replace(tmp, path)
            else:
                _imwrite(path, np.ascontiguousarray(depth, dtype=np.float32))

        self._seen.add(image_id)
        self.images.append({
            "id": image_id, "width": int(width), "height": int(height),
            "file_name": file_name or f"{image_id}_leftImg8bit.png",
        })  # fmt: skip
        annotation: dict[str, Any] = {
            "image_id": image_id,
            "file_name": panoptic_file,
            "segments_info": segments_info,
        }
        if self.depth_format != "none":
            annotation["depth_file"] = depth_file
        if extra:
            annotation.update({k: v for k, v in extra.items() if k not in annotation})
        self.annotations.append(annotation)
        if len(self.annotations) % self.flush_every == 0:
            self.write_json()
        return ExportedFrame(image_id, f"{self.name}/{panoptic_file}", label_file, depth_file, len(segments_info))

    def write_json(self) -> Path:
        """(Re)write the JSON with every frame added so far; returns its path."""
        doc = {
            "info": self.info,
            "images": self.images,
            "annotations": self.annotations,
            "categories": cityscapes_categories(),
        }
        _write_json_atomic(self.json_path, doc)
        return self.json_path

    def close(self) -> Path:
        """Write the JSON (idempotent); returns its path."""
        if not self._closed:
            self.write_json()
            self._closed = True
        return self.json_path


def read_exported_panoptic(export_dir: str | Path, image_id: str, split: str = "val") -> np.ndarray:
    """An exported frame's ids back in our encoding (``train_id * 1000 + instance``, -1 void)."""
    folder = Path(export_dir) / f"cityscapes_panoptic_{split}"
    path = folder / f"{image_id}_panoptic.png"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"no exported panoptic PNG {path}")
    seg = rgb_to_segment_ids(bgr[:, :, ::-1])
    label_to_train = np.full(256, -1, np.int64)
    for c in CITYSCAPES_CLASSES:
        label_to_train[c.label_id] = c.train_id
    label = np.where(seg >= LABEL_DIVISOR, seg // LABEL_DIVISOR, seg)
    train = label_to_train[np.clip(label, 0, 255)]
    instance = np.where(seg >= LABEL_DIVISOR, seg % LABEL_DIVISOR, 0)
    return np.where((seg > 0) & (train >= 0), train * LABEL_DIVISOR + instance, -1).astype(np.int32)
