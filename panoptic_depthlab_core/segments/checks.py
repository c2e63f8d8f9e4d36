"""The input checks every segment statistic shares: one place, one wording of each error."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def to_numpy(x, name: str) -> np.ndarray:
    """A numpy array or a torch tensor (copied to the host) as a numpy array; ValueError otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def check_intrinsics(K) -> np.ndarray | None:
    """The camera matrix K as float64 [3,3], or None; ValueError when it is not a finite 3x3 with
    fx, fy > 0. The one check of K for the Predictor and every statistic."""
    if K is None:
        return None
    K = np.asarray(to_numpy(K, "K") if not isinstance(K, (list, tuple)) else K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"camera matrix K must be 3x3, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError("camera matrix K contains non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"camera matrix K must have positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


def _is_integer(a: np.ndarray | torch.Tensor) -> bool:
    if isinstance(a, torch.Tensor):
        return not (a.is_floating_point() or a.is_complex() or a.dtype == torch.bool)
    return np.issubdtype(a.dtype, np.integer)


def _is_float(a: np.ndarray | torch.Tensor) -> bool:
    return a.is_floating_point() if isinstance(a, torch.Tensor) else np.issubdtype(a.dtype, np.floating)


def check_inputs(panoptic_ids, depth_m, K, scores) -> np.ndarray | None:
    """ValueError naming what is wrong with one frame's inputs (numpy arrays or torch tensors, not
    mixed with lists); returns K as ``check_intrinsics`` does.

    ``panoptic_ids``: integer [H,W]; ``depth_m``: None or float [H,W] of the same shape;
    ``scores``: None or a mapping {panoptic id: score}."""
    shape = tuple(panoptic_ids.shape)
    if len(shape) != 2:
        raise ValueError(f"panoptic_ids must be a 2-D [H,W] map, got shape {shape}")
    if not _is_integer(panoptic_ids):
        raise ValueError(f"panoptic_ids must have an integer dtype, got {panoptic_ids.dtype}")
    if depth_m is not None:
        if tuple(depth_m.shape) != shape:
            raise ValueError(f"depth_m must have the shape of panoptic_ids {shape}, got {tuple(depth_m.shape)}")
        if not _is_float(depth_m):
            raise ValueError(f"depth_m must be a float map in metres, got dtype {depth_m.dtype}")
    if scores is not None and not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a mapping {{panoptic id: score}}, got {type(scores).__name__}")
    return check_intrinsics(K)


def numpy_inputs(panoptic_ids, depth_m, K, scores) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(ids, depth or None, K or None) as numpy after ``check_inputs``."""
    ids_map = to_numpy(panoptic_ids, "panoptic_ids")
    depth = None if depth_m is None else to_numpy(depth_m, "depth_m")
    return ids_map, depth, check_inputs(ids_map, depth, K, scores)
