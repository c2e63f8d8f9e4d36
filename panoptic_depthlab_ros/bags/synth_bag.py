"""``panoptic-depthlab synth-bag --out BAG --frames N --size HxW --seed S``: a synthetic drive as a bag.

The frames come from the synthetic world's drive (``SyntheticDrive``, the frames of ``render_sequence``:
one street, the ego driving forward, others moving), with its exact depth, labels (ids kept by each
object over the drive) and motion (``/gt/tracks``) as GT topics. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from panoptic_depthlab_core.config import parse_size
from panoptic_depthlab_core.data.synthetic.drive import SyntheticDrive
from panoptic_depthlab_core.metadata import IGNORE_LABEL, LABEL_DIVISOR, label_id_to_train_id_lut

from .common import STORAGES, cli_main
from .drive_bag import DriveFrame, write_drive_bag

DEFAULT_FPS = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    parser.add_argument("--size", default="256x512", help="image HxW (default 256x512)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate (default 10)")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage (default mcap)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def instance_ids_to_panoptic(instance_ids: np.ndarray) -> np.ndarray:
    """Cityscapes instanceIds (label_id*1000+k for things, bare label id elsewhere) -> our ids.

    Ours: train_id*1000 + instance, stuff instance 0, things k+1 (a bare thing label id is a crowd
    region, instance 0, as the PQ evaluation reads it), -1 void.
    """
    ids = np.asarray(instance_ids).astype(np.int64)
    lut = label_id_to_train_id_lut().astype(np.int64)
    is_instance = ids >= LABEL_DIVISOR
    label = np.where(is_instance, ids // LABEL_DIVISOR, ids)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"instance ids hold label ids outside 0..255 (min {label.min()}, max {label.max()})")
    train = lut[label]
    instance = np.where(is_instance, ids % LABEL_DIVISOR + 1, 0)
    if instance.size and instance.max() >= LABEL_DIVISOR:
        raise ValueError("more than 998 instances of one class cannot be encoded")
    return np.where(train == IGNORE_LABEL, -1, train * LABEL_DIVISOR + instance).astype(np.int32)


def synthetic_drive_frames(seed: int, num_frames: int, size: tuple[int, int], fps: float) -> Iterator:
    """DriveFrames of the synthetic world's coherent drive (lazily rendered), with the exact motion."""
    drive = SyntheticDrive(seed, num_frames, size, fps=fps)
    for frame, motion in drive.frames_with_motion():
        yield DriveFrame(
            rgb=frame.rgb,
            K=frame.K,
            depth_m=frame.depth_m,
            panoptic_ids=instance_ids_to_panoptic(frame.instance_ids),
            camera_height_m=frame.camera.height_m,
            camera_pitch_rad=frame.camera.pitch,
            motion=motion,
        )


def write_synth_bag(
    out: str | Path,
    frames: int = 60,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    fps: float = DEFAULT_FPS,
    storage: str = "mcap",
    progress: bool = False,
) -> dict[str, int]:
    """Render and write the drive; returns messages per topic."""
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    with tqdm(total=frames, unit="frame", desc="synth-bag", disable=not progress, dynamic_ncols=True) as bar:
        frame_iter = synthetic_drive_frames(seed, frames, size, fps)
        return write_drive_bag(out, frame_iter, storage=storage, fps=fps, on_frame=lambda _: bar.update(1))


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    counts = write_synth_bag(
        args.out, args.frames, size, args.seed, args.fps, args.storage, progress=not args.no_progress
    )
    print(f"synth-bag: wrote {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab synth-bag"))
