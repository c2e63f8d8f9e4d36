"""Network-resolution maps -> input-resolution maps (the step between post-processing and segments).

Ids and classes are resized nearest (exact labels, never blended), depth bilinear with half-pixel
centres. The nearest index is the one the network-resolution statistics
(``segments.network_resolution``) and ``results.NearestUpsampling`` use, so every consumer maps a
network pixel to the same input pixels.
"""

from __future__ import annotations

from collections.abc import Collection

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .results import NearestUpsampling

# The dense maps a FrameResult can carry at the input resolution (``Predictor.predict(maps=...)``).
DENSE_MAPS: frozenset[str] = frozenset({"panoptic", "semantic", "depth"})


def nearest_index(src: int, dst: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Nearest-neighbour resize index (pixel centres): the source position of each of ``dst``
    output positions. Integer maps are resized as ``ids[rows[:, None], cols[None, :]]`` (exact ids,
    no interpolation between labels); the segment statistics use the same index."""
    return ((torch.arange(dst, device=device) + 0.5) * (src / dst)).long().clamp_(max=src - 1)


def upsample_maps_host(maps: dict[str, np.ndarray], upsampling: NearestUpsampling,
                       names: Collection[str] = DENSE_MAPS) -> dict[str, np.ndarray | None]:
    """Network-resolution maps (panoptic int32, semantic uint8, depth float32) -> the maps named in
    ``names`` at the input resolution (the others None): ids nearest by ``upsampling``'s index,
    depth bilinear with half-pixel centres, as ``upsample_maps_device`` does with
    ``F.interpolate(..., align_corners=False)``. OpenCV and numpy gathers, because on a CPU they
    are several times faster than torch's resize (see docs/performance.md)."""
    size_wh = (int(upsampling.cols.size), int(upsampling.rows.size))
    return {
        "panoptic": upsampling.upsample(maps["panoptic"]) if "panoptic" in names else None,
        "semantic": upsampling.upsample(maps["semantic"]) if "semantic" in names else None,
        "depth": cv2.resize(np.ascontiguousarray(maps["depth"]), size_wh, interpolation=cv2.INTER_LINEAR)
        if "depth" in names
        else None,
    }


def upsample_maps_device(maps: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor,
                         names: Collection[str] = DENSE_MAPS) -> dict[str, torch.Tensor | None]:
    """The same as ``upsample_maps_host`` on the maps' device (a GPU): ``rows``/``cols`` are the
    ``nearest_index`` of the input rows and columns; the maps not in ``names`` are None."""
    def nearest(name: str) -> torch.Tensor | None:
        return maps[name][rows[:, None], cols[None, :]] if name in names else None

    depth = None
    if "depth" in names:
        size = (rows.numel(), cols.numel())
        depth = F.interpolate(maps["depth"][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return {"panoptic": nearest("panoptic"), "semantic": nearest("semantic"), "depth": depth}
