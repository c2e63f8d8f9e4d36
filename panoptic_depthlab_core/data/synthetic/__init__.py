"""A synthetic driving world with exact panoptic and depth ground truth, in Cityscapes' format.

Public, stable API (the bag demos and tests build on it)::

    render_frame(seed, index, size=(512, 1024)) -> SyntheticFrame
    render_sequence(seed, num_frames, size=(512, 1024), fps=10.0) -> Iterator[SyntheticFrame]
    write_dataset(out_dir, num, size, seed, split, sequence, city, fps, sequences=1) -> list[str]
    SyntheticDrive(seed, num_frames, size, fps).frames_with_motion() -> (SyntheticFrame, FrameMotion)

A :class:`SyntheticFrame` holds ``rgb`` (uint8 RGB), ``label_ids`` (Cityscapes label ids),
``instance_ids`` (instanceIds.png values), ``depth_m`` (z depth, NaN = none), ``camera`` (``K``,
``baseline``), ``time_s`` and ``world_from_camera``.
"""

from .camera import CameraParams
from .drive import FrameMotion, ObjectMotion, SyntheticDrive, panoptic_from_instance_ids
from .render import SyntheticFrame, depth_to_disparity_png, render_frame, render_sequence
from .writer import create_panoptic, frame_stem, write_dataset, write_frame

__all__ = [
    "CameraParams",
    "FrameMotion",
    "ObjectMotion",
    "SyntheticDrive",
    "panoptic_from_instance_ids",
    "SyntheticFrame",
    "create_panoptic",
    "depth_to_disparity_png",
    "frame_stem",
    "render_frame",
    "render_sequence",
    "write_dataset",
    "write_frame",
]
