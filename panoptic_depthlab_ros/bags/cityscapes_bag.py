"""``panoptic-depthlab cityscapes-bag --root DIR --split val [--city ...] --out BAG``: Cityscapes as a bag.

So users can replay Cityscapes (or the synthetic set in its layout) through the live node or
bag-eval. With ``leftImg8bit_sequence/`` present the 30-frame sequences are used (GT where it
exists: ``disparity_sequence/`` or ``disparity/``, and panoptic GT on the annotated frames);
otherwise the annotated ``leftImg8bit/`` frames. camera_info comes from each frame's
``camera/*_camera.json`` (a sequence frame uses its sequence's JSON); GT depth from disparity,
``baseline * fx / ((p - 1) / 256)`` for p > 1 (the data pipeline's reader); panoptic GT from
cityscapesscripts' panoptic JSON + PNGs when present, in the node's 16UC1 encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from panoptic_depthlab_core.config import parse_size
from panoptic_depthlab_core.data.cityscapes import (
    disparity_to_depth,
    find_records,
    load_gt,
    read_camera,
    read_disparity,
)
from panoptic_depthlab_core.data.cityscapes import read_image as read_rgb

from .common import STORAGES, cli_main
from .drive_bag import DriveFrame, write_drive_bag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, required=True, help="Cityscapes root (leftImg8bit/, gtFine/, ...)"
    )
    parser.add_argument("--split", default="val", help="split (default val)")
    parser.add_argument("--city", nargs="+", default=None, help="only these cities")
    parser.add_argument("--out", type=Path, required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage (default mcap)")
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frame rate of the bag (default 17 for sequences, as recorded; 2 for single frames)",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--resize", default=None, help="resize to HxW (K scaled; GT resized nearest)")
    parser.add_argument("--no-sequence", action="store_true", help="use leftImg8bit/ even if sequences exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class CityscapesFrame:
    """Paths of one frame: image and camera always; disparity and panoptic record when present."""

    image_path: Path
    camera_path: Path
    disparity_path: Path | None
    record: object | None  # data.cityscapes.CityscapesRecord with panoptic GT


def _stem(image_path: Path) -> str:
    return image_path.name[: -len("_leftImg8bit.png")]


def find_frames(root: Path, split: str, cities: Sequence[str] | None = None, sequence: bool = True) -> list:
    """The frames to write, sorted by city, sequence and frame number; FileNotFoundError naming gaps."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Cityscapes root not found: {root}")
    seq_dir = root / "leftImg8bit_sequence" / split
    use_sequence = sequence and seq_dir.is_dir()
    img_dir = seq_dir if use_sequence else root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise FileNotFoundError(f"no image folder {img_dir} (expected Cityscapes layout under {root})")
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if cities:
        unknown = sorted(set(cities) - {p.parent.name for p in images})
        if unknown:
            raise FileNotFoundError(f"no images of city {', '.join(unknown)} under {img_dir}")
        images = [p for p in images if p.parent.name in cities]
    if not images:
        raise FileNotFoundError(f"no *_leftImg8bit.png images under {img_dir}")
    records = {}
    if (root / "gtFine" / f"cityscapes_panoptic_{split}.json").exists():
        records = {
            r.image_id: r for r in find_records(root, split, require_panoptic=True, require_depth=False)
        }
    frames = []
    for image in images:
        city, stem = image.parent.name, _stem(image)
        camera_dir = root / "camera" / split / city
        camera = camera_dir / f"{stem}_camera.json"
        if not camera.exists():  # sequence frames: the sequence's (annotated frame's) camera
            prefix = "_".join(stem.split("_")[:2])
            same_sequence = sorted(camera_dir.glob(f"{prefix}_*_camera.json"))
            if not same_sequence:
                raise FileNotFoundError(f"missing camera json for {stem}: {camera} (camera_info needs it)")
            camera = same_sequence[0]
        disparity = None
        for folder in ("disparity_sequence", "disparity"):
            candidate = root / folder / split / city / f"{stem}_disparity.png"
            if candidate.exists():
                disparity = candidate
                break
        frames.append(CityscapesFrame(image, camera, disparity, records.get(stem)))
    return frames


def _camera_mount(path: Path) -> tuple[float, float]:
    """(height above ground m, pitch rad) from the camera JSON's extrinsic part (0, 0 if absent)."""
    try:
        extrinsic = json.loads(path.read_text()).get("extrinsic", {})
        return float(extrinsic.get("z", 0.0)), float(extrinsic.get("pitch", 0.0))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"corrupt camera json {path}: {exc!r}") from exc


def drive_frames(frames: Sequence[CityscapesFrame], resize: tuple[int, int] | None = None) -> Iterator:
    """DriveFrames (image, K, GT depth NaN-invalid, GT panoptic) read with the data pipeline's readers."""
    for frame in frames:
        rgb = read_rgb(frame.image_path)
        camera = read_camera(frame.camera_path)
        K = np.array([[camera.fx, 0.0, camera.u0], [0.0, camera.fy, camera.v0], [0.0, 0.0, 1.0]])
        depth = panoptic = None
        if frame.disparity_path is not None:
            depth, valid = disparity_to_depth(read_disparity(frame.disparity_path), camera)
            depth = np.where(valid, depth, np.nan).astype(np.float32)
        if frame.record is not None:
            panoptic = load_gt(frame.record).panoptic
        for name, gt in (("disparity", depth), ("panoptic GT", panoptic)):
            if gt is not None and gt.shape != rgb.shape[:2]:
                raise ValueError(
                    f"{frame.image_path.name}: {name} is {gt.shape}, the image is {rgb.shape[:2]}"
                )
        if resize is not None and resize != rgb.shape[:2]:
            height, width = resize
            sx, sy = width / rgb.shape[1], height / rgb.shape[0]
            K = K * np.array([[sx], [sy], [1.0]])  # fx, cx by sx; fy, cy by sy (image_proc's resize)
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            if depth is not None:
                depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
            if panoptic is not None:
                panoptic = cv2.resize(panoptic, (width, height), interpolation=cv2.INTER_NEAREST)
        height_m, pitch = _camera_mount(frame.camera_path)
        yield DriveFrame(rgb=rgb, K=K, depth_m=depth, panoptic_ids=panoptic, camera_height_m=height_m,
                         camera_pitch_rad=pitch)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    resize = parse_size(args.resize) if args.resize else None
    frames = find_frames(args.root, args.split, args.city, sequence=not args.no_sequence)
    if args.max_frames is not None:
        if args.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
        frames = frames[: args.max_frames]
    is_sequence = "leftImg8bit_sequence" in frames[0].image_path.parts
    fps = args.fps or (17.0 if is_sequence else 2.0)
    with_gt = sum(f.record is not None for f in frames)
    with_depth = sum(f.disparity_path is not None for f in frames)
    source = "leftImg8bit_sequence" if is_sequence else "leftImg8bit"
    print(
        f"cityscapes-bag: {len(frames)} frame(s) from {source}/{args.split}, {with_gt} with panoptic GT, "
        f"{with_depth} with depth GT, at {fps:g} frames/s"
    )
    with tqdm(total=len(frames), unit="frame", desc="cityscapes-bag", disable=args.no_progress) as bar:
        counts = write_drive_bag(
            args.out,
            drive_frames(frames, resize),
            storage=args.storage,
            fps=fps,
            on_frame=lambda _: bar.update(1),
        )
    print(f"cityscapes-bag: wrote {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab cityscapes-bag"))
