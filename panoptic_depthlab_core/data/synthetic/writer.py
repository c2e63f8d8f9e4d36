"""Write synthetic frames in Cityscapes' exact on-disk layout, so the Cityscapes loader reads them.

Per frame (``stem = {city}_{seq:06d}_{frame:06d}``)::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png        8-bit RGB
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png         8-bit label ids
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png      16-bit, label_id*1000+k for things
    disparity/{split}/{city}/{stem}_disparity.png            16-bit, p = round(d*256)+1, 0 invalid
    camera/{split}/{city}/{stem}_camera.json                 extrinsic.baseline, intrinsic.fx/fy/u0/v0
    motion/{split}/{city}/{stem}_motion.json                 sequences only: time, camera mount and pose,
                                                             every visible thing's id, 3D position, velocity

and, per split, the panoptic ground truth written by cityscapesscripts' own ``createPanopticImgs``
conversion: ``gtFine/cityscapes_panoptic_{split}.json`` + ``gtFine/cityscapes_panoptic_{split}/``.
Single frames get ``seq = index, frame = 19`` (Cityscapes' annotated frame); drive ``s`` of a
sequence data set gets ``seq = s, frame = index`` (drive s renders ``SyntheticDrive(seed + s, ...)``).
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from .drive import FrameMotion, SyntheticDrive
from .render import SyntheticFrame, render_frame

SPLITS = ("train", "val", "test")


def frame_stem(city: str, seq: int, frame: int) -> str:
    return f"{city}_{seq:06d}_{frame:06d}"


def _imwrite(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def write_frame(
    root: str | Path, split: str, city: str, seq: int, frame_no: int, frame: SyntheticFrame
) -> str:
    """Write one frame's image, labels, instances, disparity and camera JSON; returns its stem."""
    root = Path(root)
    stem = frame_stem(city, seq, frame_no)
    inst = frame.instance_ids
    if inst.max() > np.iinfo(np.uint16).max or inst.min() < 0:
        raise ValueError(f"{stem}: instance ids out of the uint16 range of instanceIds.png")
    _imwrite(
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR),
    )
    _imwrite(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", frame.label_ids.astype(np.uint8))
    _imwrite(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", inst.astype(np.uint16))
    _imwrite(root / "disparity" / split / city / f"{stem}_disparity.png", frame.disparity_png())
    cam_path = root / "camera" / split / city / f"{stem}_camera.json"
    cam_path.parent.mkdir(parents=True, exist_ok=True)
    cam_path.write_text(json.dumps(frame.camera.to_cityscapes_json(), indent=2, sort_keys=True) + "\n")
    return stem


def motion_path(root: str | Path, split: str, city: str, stem: str) -> Path:
    return Path(root) / "motion" / split / city / f"{stem}_motion.json"


def write_motion(root: str | Path, split: str, city: str, stem: str, motion: FrameMotion) -> Path:
    """The motion ground truth of one sequence frame (JSON, ``FrameMotion.to_dict``)."""
    path = motion_path(root, split, city, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(motion.to_dict(), indent=1) + "\n")
    return path


def create_panoptic(root: str | Path, split: str) -> Path:
    """Run cityscapesscripts' ``createPanopticImgs`` on ``root/gtFine`` for ``split`` (label ids).

    Returns the JSON path. Its console chatter is swallowed; its errors are not.
    """
    # imported here: ~0.2 s, and only this conversion needs it (not the renderer's worker processes)
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    gt = Path(root) / "gtFine"
    if not any((gt / split).glob("*/*_gtFine_instanceIds.png")):
        raise FileNotFoundError(f"no *_gtFine_instanceIds.png under {gt / split}")
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(cityscapesPath=str(gt), outputFolder=str(gt), useTrainId=False, setNames=[split])
    return gt / f"cityscapes_panoptic_{split}.json"


def _render_and_write(job: tuple[str, int, tuple[int, int], int, str, str]) -> str:
    out_dir, i, size, seed, split, city = job
    return write_frame(out_dir, split, city, i, 19, render_frame(seed, i, size))


def _write_parallel(
    out_dir: str | Path,
    num: int,
    size: tuple[int, int],
    seed: int,
    split: str,
    city: str,
    progress: Callable[[int, int], None] | None,
    workers: int,
) -> list[str]:
    jobs = [(str(out_dir), i, size, seed, split, city) for i in range(num)]
    stems = []
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, stem in enumerate(pool.imap(_render_and_write, jobs, chunksize=4), start=1):
            stems.append(stem)
            if progress is not None:
                progress(done, num)
    create_panoptic(out_dir, split)
    return stems


def write_dataset(
    out_dir: str | Path,
    num: int,
    size: tuple[int, int] = (512, 1024),
    seed: int = 0,
    split: str = "train",
    sequence: bool = False,
    city: str = "synthville",
    fps: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
    sequences: int = 1,
) -> list[str]:
    """Render ``num`` frames into ``out_dir`` in Cityscapes layout and build the panoptic GT.

    ``sequence=False``: independent scenes ``render_frame(seed, i)``; ``True``: one drive
    ``render_sequence(seed, num, fps=fps)``. Returns the stems written, in order. Deterministic:
    the same arguments give the same bytes. ``workers`` > 1 renders independent scenes in that many
    processes (each frame depends only on (seed, i), so the bytes do not change). ``sequences``:
    how many drives of ``num`` frames each (``sequence=True``), drive s from seed + s, each frame
    with its motion ground truth (``motion/``).
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not city or "_" in city or "/" in city:
        raise ValueError(f"city must be a non-empty name without '_' or '/', got {city!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if sequences < 1:
        raise ValueError(f"sequences must be >= 1, got {sequences}")
    if workers > 1 and not sequence:
        return _write_parallel(out_dir, num, size, seed, split, city, progress, workers)
    stems = []
    if sequence:
        total = num * sequences
        for s in range(sequences):
            drive = SyntheticDrive(seed + s, num, size, fps=fps)
            for i, (frame, motion) in enumerate(drive.frames_with_motion()):
                stem = write_frame(out_dir, split, city, s, i, frame)
                write_motion(out_dir, split, city, stem, motion)
                stems.append(stem)
                if progress is not None:
                    progress(len(stems), total)
        create_panoptic(out_dir, split)
        return stems
    frames: Iterable[SyntheticFrame] = (render_frame(seed, i, size) for i in range(num))
    for i, frame in enumerate(frames):
        stems.append(write_frame(out_dir, split, city, i, 19, frame))
        if progress is not None:
            progress(i + 1, num)
    create_panoptic(out_dir, split)
    return stems
