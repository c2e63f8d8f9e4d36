"""A constant-velocity Kalman filter on a 3D position, one independent [position, velocity] pair per axis.

The three camera axes are filtered independently (the measurement noise is diagonal), so every
step is a handful of vector operations on length-3 arrays: a few microseconds per track, whatever
the number of tracks. Time steps come from the stamps; nothing assumes a constant frame rate.
"""

from __future__ import annotations

import numpy as np

# The velocity is unknown at birth: a standard deviation well above any road speed (m/s).
INITIAL_VELOCITY_STD_MPS = 20.0


class ConstantVelocityKalman3D:
    """State per axis: position p (m) and velocity v (m/s); covariance [[pp, pv], [pv, vv]] per axis.

    Process noise: continuous white-noise acceleration with spectral density ``accel_noise**2``.
    """

    def __init__(self, position: np.ndarray, position_std: np.ndarray, time_s: float, accel_noise: float) -> None:
        self.p = np.asarray(position, dtype=np.float64).copy()
        self.v = np.zeros(3)
        self.pp = np.asarray(position_std, dtype=np.float64) ** 2
        self.pv = np.zeros(3)
        self.vv = np.full(3, INITIAL_VELOCITY_STD_MPS**2)
        self.time_s = float(time_s)
        self.first_time_s = float(time_s)
        self.last_update_s = float(time_s)
        self.q = float(accel_noise) ** 2
        self.updates = 1

    def predicted(self, time_s: float) -> np.ndarray:
        """The position expected at ``time_s`` (no state change)."""
        return self.p + self.v * max(time_s - self.time_s, 0.0)

    def predict(self, time_s: float) -> None:
        """Move the state to ``time_s`` (never backwards: an older stamp leaves it as is)."""
        dt = time_s - self.time_s
        if dt <= 0.0:
            return
        q = self.q
        self.p = self.p + self.v * dt
        pp = self.pp + 2.0 * dt * self.pv + dt * dt * self.vv + q * dt**3 / 3.0
        pv = self.pv + dt * self.vv + q * dt * dt / 2.0
        self.vv = self.vv + q * dt
        self.pp, self.pv = pp, pv
        self.time_s = float(time_s)

    def update(self, measured: np.ndarray, measured_std: np.ndarray, keep_velocity: bool = False) -> None:
        """Fuse one position measurement taken at the current state time. ``keep_velocity``: the
        position is corrected but the velocity and its variance are left as predicted (a measurement
        whose apparent motion is not the object's, e.g. a thing sliding out of the image)."""
        v, vv = self.v, self.vv
        r = np.asarray(measured_std, dtype=np.float64) ** 2
        s = self.pp + r
        kp = self.pp / s
        kv = self.pv / s
        innovation = np.asarray(measured, dtype=np.float64) - self.p
        self.p = self.p + kp * innovation
        self.v = self.v + kv * innovation
        pp, pv, vv = self.pp, self.pv, self.vv
        self.pp = (1.0 - kp) * pp
        self.pv = (1.0 - kp) * pv
        self.vv = vv - kv * pv
        if keep_velocity:
            self.v, self.vv = v, vv
            return
        self.updates += 1
        self.last_update_s = self.time_s

    @property
    def span_s(self) -> float:
        """Time between the first and the latest measurement (how long the velocity has been observed)."""
        return self.last_update_s - self.first_time_s

    @property
    def velocity_std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.vv, 0.0))
