"""Dataset metadata: Cityscapes classes, train ids, label ids and colours.

Label ids are what Cityscapes files hold; train ids (0-18, 255 = void) are what the model predicts.
The tables follow cityscapesscripts' ``helpers/labels.py``; they are written out here so the core
package does not need cityscapesscripts at inference time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_LABEL = 255
LABEL_DIVISOR = 1000


@dataclass(frozen=True)
class ClassInfo:
    train_id: int
    label_id: int
    name: str
    is_thing: bool
    color: tuple[int, int, int]


CITYSCAPES_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, 7, "road", False, (128, 64, 128)),
    ClassInfo(1, 8, "sidewalk", False, (244, 35, 232)),
    ClassInfo(2, 11, "building", False, (70, 70, 70)),
    ClassInfo(3, 12, "wall", False, (102, 102, 156)),
    ClassInfo(4, 13, "fence", False, (190, 153, 153)),
    ClassInfo(5, 17, "pole", False, (153, 153, 153)),
    ClassInfo(6, 19, "traffic light", False, (250, 170, 30)),
    ClassInfo(7, 20, "traffic sign", False, (220, 220, 0)),
    ClassInfo(8, 21, "vegetation", False, (107, 142, 35)),
    ClassInfo(9, 22, "terrain", False, (152, 251, 152)),
    ClassInfo(10, 23, "sky", False, (70, 130, 180)),
    ClassInfo(11, 24, "person", True, (220, 20, 60)),
    ClassInfo(12, 25, "rider", True, (255, 0, 0)),
    ClassInfo(13, 26, "car", True, (0, 0, 142)),
    ClassInfo(14, 27, "truck", True, (0, 0, 70)),
    ClassInfo(15, 28, "bus", True, (0, 60, 100)),
    ClassInfo(16, 31, "train", True, (0, 80, 100)),
    ClassInfo(17, 32, "motorcycle", True, (0, 0, 230)),
    ClassInfo(18, 33, "bicycle", True, (119, 11, 32)),
)

NUM_CLASSES = len(CITYSCAPES_CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CITYSCAPES_CLASSES)
THING_TRAIN_IDS: tuple[int, ...] = tuple(c.train_id for c in CITYSCAPES_CLASSES if c.is_thing)
STUFF_TRAIN_IDS: tuple[int, ...] = tuple(c.train_id for c in CITYSCAPES_CLASSES if not c.is_thing)
SKY_TRAIN_ID = 10
PALETTE = np.array([c.color for c in CITYSCAPES_CLASSES], dtype=np.uint8)


def label_id_to_train_id_lut() -> np.ndarray:
    """A 256-entry lookup table label id -> train id (255 for every ignored label id)."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for c in CITYSCAPES_CLASSES:
        lut[c.label_id] = c.train_id
    return lut


def train_id_to_label_id_lut() -> np.ndarray:
    """A 256-entry lookup table train id -> label id (0 = 'unlabeled' for void)."""
    lut = np.zeros(256, dtype=np.uint8)
    for c in CITYSCAPES_CLASSES:
        lut[c.train_id] = c.label_id
    return lut
