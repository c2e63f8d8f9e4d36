"""The synthetic stereo camera: a Cityscapes-like pinhole camera on a car.

World frame: X right, Y up, Z forward along the street (metres). Camera frame: the optical frame
(x right, y down, z forward), so a ray built with a unit z component carries the z depth as its
parameter ``t`` -- that is what makes the rendered depth exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cityscapes' left camera at 2048 px width (fx 2262.52, fy 2265.30, baseline 0.209313 m).
CITYSCAPES_FX_2048 = 2262.52
CITYSCAPES_WIDTH = 2048
CITYSCAPES_BASELINE_M = 0.209313


@dataclass(frozen=True)
class CameraParams:
    """Intrinsics (pixels), stereo baseline and mounting (metres, radians; pitch > 0 looks down)."""

    width: int
    height: int
    fx: float
    fy: float
    u0: float
    v0: float
    baseline: float
    height_m: float
    pitch: float
    roll: float = 0.0

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name
        return np.array([[self.fx, 0.0, self.u0], [0.0, self.fy, self.v0], [0.0, 0.0, 1.0]])

    def world_from_camera_rotation(self) -> np.ndarray:
        """3x3 whose columns are the camera's x (right), y (down), z (forward) axes in world."""
        ct, st = np.cos(self.pitch), np.sin(self.pitch)
        forward = np.array([0.0, -st, ct])
        down0 = np.array([0.0, -ct, -st])
        right0 = np.array([1.0, 0.0, 0.0])
        cr, sr = np.cos(self.roll), np.sin(self.roll)
        right = cr * right0 + sr * down0
        down = -sr * right0 + cr * down0
        return np.stack([right, down, forward], axis=1)

    def to_cityscapes_json(self) -> dict:
        """The ``camera/*_camera.json`` content (Cityscapes' keys; angles in radians)."""
        return {
            "extrinsic": {
                "baseline": round(float(self.baseline), 6),
                "pitch": round(float(self.pitch), 6),
                "roll": round(float(self.roll), 6),
                "yaw": 0.0,
                "x": 0.0,
                "y": 0.0,
                "z": round(float(self.height_m), 6),
            },
            "intrinsic": {
                "fx": round(float(self.fx), 6),
                "fy": round(float(self.fy), 6),
                "u0": round(float(self.u0), 6),
                "v0": round(float(self.v0), 6),
            },
        }


def sample_camera(rng: np.random.Generator, height: int, width: int) -> CameraParams:
    """A Cityscapes-like camera with jitter: height 1.2-1.6 m, small pitch/roll, focal +-4 %."""
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    fx = CITYSCAPES_FX_2048 * width / CITYSCAPES_WIDTH * rng.uniform(0.96, 1.04)
    fy = fx * rng.uniform(0.995, 1.005)
    u0 = (width - 1) / 2.0 + rng.uniform(-0.02, 0.03) * width
    v0 = (height - 1) / 2.0 + rng.uniform(-0.015, 0.015) * height
    return CameraParams(
        width=width,
        height=height,
        fx=float(fx),
        fy=float(fy),
        u0=float(u0),
        v0=float(v0),
        baseline=float(CITYSCAPES_BASELINE_M * rng.uniform(0.97, 1.03)),
        height_m=float(rng.uniform(1.2, 1.6)),
        pitch=float(rng.uniform(0.0, 0.06)),
        roll=float(rng.uniform(-0.01, 0.01)),
    )
