"""The README picture: a generated frame, its panoptic ground truth and its depth, side by side.

``python -m panoptic_depthlab_core.data.synthetic.figure docs/synthetic_example.png``
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from panoptic_depthlab_core.metadata import PALETTE, label_id_to_train_id_lut

from .render import SyntheticFrame, render_frame


def panoptic_colors(frame: SyntheticFrame) -> np.ndarray:
    """Class colours; each thing instance gets its own brightness; void black. (H, W, 3) RGB."""
    train = label_id_to_train_id_lut()[frame.label_ids]
    out = np.zeros((*train.shape, 3), dtype=np.uint8)
    known = train != 255
    out[known] = PALETTE[train[known]]
    inst = frame.instance_ids
    things = inst >= 1000
    k = (inst % 1000).astype(np.float32)
    gain = 0.55 + 0.45 * ((k * 0.618) % 1.0)
    out[things] = np.clip(out[things] * gain[things, None] + 40 * (1 - gain[things, None]), 0, 255).astype(
        np.uint8
    )
    # instance outlines
    edge = np.zeros(inst.shape, dtype=bool)
    edge[1:] |= inst[1:] != inst[:-1]
    edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    out[edge & (things | np.roll(things, 1, 0) | np.roll(things, 1, 1))] = 255
    return out


def depth_colors(frame: SyntheticFrame, max_depth_m: float = 80.0) -> np.ndarray:
    """Log-depth colour map over 2 m .. max_depth_m (near bright), no-depth pixels black. RGB."""
    d = frame.depth_m
    valid = np.isfinite(d)
    v = np.zeros(d.shape, dtype=np.float32)
    v[valid] = 1.0 - np.log(np.clip(d[valid], 2.0, max_depth_m) / 2.0) / np.log(max_depth_m / 2.0)
    img = cv2.applyColorMap(((0.1 + 0.9 * v) * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    img[~valid] = 0
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def example_figure(seed: int = 0, index: int = 0, size: tuple[int, int] = (256, 512)) -> np.ndarray:
    frame = render_frame(seed, index, size)
    gap = np.full((size[0], 6, 3), 255, dtype=np.uint8)
    return np.concatenate([frame.rgb, gap, panoptic_colors(frame), gap, depth_colors(frame)], axis=1)


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "docs/synthetic_example.png"
    seed = int(argv[1]) if len(argv) > 1 else 0
    index = int(argv[2]) if len(argv) > 2 else 2
    if not cv2.imwrite(path, cv2.cvtColor(example_figure(seed, index), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
