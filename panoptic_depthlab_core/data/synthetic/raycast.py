"""Vectorised ray casting with a z-buffer: the canvas and the primitives scenes are built from.

Every primitive is intersected only inside its projected screen rectangle, with whole-array numpy
operations, and written where it is nearer than what the canvas already holds. The ray for pixel
(u, v) is ``origin + t * dir`` with ``dir = R @ ((u - u0)/fx, (v - v0)/fy, 1)``, so ``t`` *is* the z
depth along the optical axis: labels and depth come out exact, per pixel centre.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .camera import CameraParams

EPS_T = 1e-3

# face codes handed to materials
FACE_SIDE = 6  # cylinder mantle
FACE_CAP_POS = 7
FACE_CAP_NEG = 8
FACE_ELLIPSOID = 9


@dataclass
class Primitive:
    """One solid: ``kind`` is box | cyl_x | cyl_y | cyl_z | ellipsoid, in a frame turned by ``yaw`` about Y.

    ``half`` holds half extents (x, y, z) for boxes and ellipsoids; for cylinders (radius, half
    length along the axis, unused). ``label_id`` is the Cityscapes label id, ``instance_value`` the
    instanceIds.png value (label id for stuff, label_id*1000+k for things).
    """

    kind: str
    center: np.ndarray  # world (3,)
    yaw: float
    half: tuple[float, float, float]
    label_id: int
    instance_value: int
    material: object

    def corners(self) -> np.ndarray:
        hx, hy, hz = self.half
        if self.kind == "cyl_y":
            hx, hy, hz = self.half[0], self.half[1], self.half[0]
        elif self.kind == "cyl_x":
            hx, hy, hz = self.half[1], self.half[0], self.half[0]
        elif self.kind == "cyl_z":
            hx, hy, hz = self.half[0], self.half[0], self.half[1]
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.array([[sx * hx, sy * hy, sz * hz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        world = np.empty_like(local)
        world[:, 0] = c * local[:, 0] + s * local[:, 2]
        world[:, 1] = local[:, 1]
        world[:, 2] = -s * local[:, 0] + c * local[:, 2]
        return world + self.center


ShadeFn = Callable[[Primitive, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Canvas:
    """Colour, z depth, label-id and instance-id buffers for one view, plus its rays."""

    def __init__(self, camera: CameraParams, origin: np.ndarray) -> None:
        self.camera = camera
        h, w = camera.height, camera.width
        self.rot = camera.world_from_camera_rotation()
        a = ((np.arange(w) - camera.u0) / camera.fx).astype(np.float32)
        b = ((np.arange(h) - camera.v0) / camera.fy).astype(np.float32)
        r = self.rot.astype(np.float32)
        self.dx = a[None, :] * r[0, 0] + b[:, None] * r[0, 1] + r[0, 2]
        self.dy = a[None, :] * r[1, 0] + b[:, None] * r[1, 1] + r[1, 2]
        self.dz = a[None, :] * r[2, 0] + b[:, None] * r[2, 1] + r[2, 2]
        self.origin = np.asarray(origin, dtype=np.float64)
        self.depth = np.full((h, w), np.inf, dtype=np.float32)
        self.label = np.zeros((h, w), dtype=np.uint8)
        self.instance = np.zeros((h, w), dtype=np.int32)
        self.rgb = np.zeros((h, w, 3), dtype=np.float32)

    # -- geometry helpers -------------------------------------------------------------------
    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points (N,3) -> pixel u, v and camera z."""
        pc = (points - self.origin) @ self.rot  # rows: camera coordinates
        z = pc[:, 2]
        zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
        u = self.camera.fx * pc[:, 0] / zs + self.camera.u0
        v = self.camera.fy * pc[:, 1] / zs + self.camera.v0
        return u, v, z

    def window(self, corners: np.ndarray) -> tuple[int, int, int, int] | None:
        """Screen rectangle (r0, r1, c0, c1) that contains the projection of a convex hull."""
        win, _ = self.window_and_near(corners)
        return win

    def window_and_near(self, corners: np.ndarray) -> tuple[tuple[int, int, int, int] | None, float]:
        """The screen rectangle and the smallest camera z of the hull (for occlusion culling)."""
        u, v, z = self.project(corners)
        h, w = self.camera.height, self.camera.width
        if np.all(z <= 0.05):
            return None, 0.0
        if np.any(z <= 0.05):
            return (0, h, 0, w), 0.0  # straddles the camera plane: be conservative
        c0 = max(int(np.floor(u.min())) - 1, 0)
        c1 = min(int(np.ceil(u.max())) + 2, w)
        r0 = max(int(np.floor(v.min())) - 1, 0)
        r1 = min(int(np.ceil(v.max())) + 2, h)
        if c0 >= c1 or r0 >= r1:
            return None, 0.0
        return (r0, r1, c0, c1), float(z.min())

    def rays(self, win: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r0, r1, c0, c1 = win
        return self.dx[r0:r1, c0:c1], self.dy[r0:r1, c0:c1], self.dz[r0:r1, c0:c1]

    # -- compositing ------------------------------------------------------------------------
    def write(
        self,
        win: tuple[int, int, int, int],
        t: np.ndarray,
        hit: np.ndarray,
        label: int | np.ndarray,
        instance: int | np.ndarray,
        color: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray | None:
        """Z-test ``t`` where ``hit`` and write the winners; ``color(mask)`` gives their RGB (N,3).

        ``label``/``instance`` are scalars or arrays shaped like the window. Returns the mask of
        written pixels (window-shaped) or None when nothing won.
        """
        r0, r1, c0, c1 = win
        zbuf = self.depth[r0:r1, c0:c1]
        with np.errstate(invalid="ignore"):
            won = hit & (t < zbuf)
        if not won.any():
            return None
        np.copyto(zbuf, t, where=won)
        np.copyto(self.label[r0:r1, c0:c1], label, where=won, casting="unsafe")
        np.copyto(self.instance[r0:r1, c0:c1], instance, where=won, casting="unsafe")
        self.rgb[r0:r1, c0:c1][won] = color(won)
        return won

    def candidates(self, win: tuple[int, int, int, int], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute (rows, cols) in ``win`` where ``t`` is positive and nearer than the z-buffer.

        Large planes are intersected densely only for ``t``; everything else (hit tests, labels,
        textures) then runs on these few pixels.
        """
        r0, r1, c0, c1 = win
        with np.errstate(invalid="ignore"):
            m = (t > 0) & (t < self.depth[r0:r1, c0:c1])
        rows, cols = np.nonzero(m)
        return rows + r0, cols + c0

    def write_points(self, rows, cols, t, label, instance, rgb) -> None:
        """Write pixels that already passed the z-test (see :meth:`candidates`)."""
        self.depth[rows, cols] = t
        self.label[rows, cols] = label
        self.instance[rows, cols] = instance
        self.rgb[rows, cols] = rgb

    # -- primitives -------------------------------------------------------------------------
    def draw(self, prim: Primitive, shade: ShadeFn) -> None:
        """Intersect one primitive and composite it; ``shade(prim, local_pts, face, normal_w)``."""
        win, z_near = self.window_and_near(prim.corners())
        if win is None:
            return
        r0, r1, c0, c1 = win
        if self.depth[r0:r1, c0:c1].max() < z_near:  # already hidden behind nearer surfaces
            return
        dx, dy, dz = self.rays(win)
        c, s = np.float32(np.cos(prim.yaw)), np.float32(np.sin(prim.yaw))
        o = self.origin - prim.center
        ox = float(c * o[0] - s * o[2])
        oy = float(o[1])
        oz = float(s * o[0] + c * o[2])
        lx = c * dx - s * dz
        ly = dy
        lz = s * dx + c * dz
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if prim.kind == "box":
                t = _box(ox, oy, oz, lx, ly, lz, prim.half)
            elif prim.kind == "cyl_y":
                t = _cylinder(ox, oz, oy, lx, lz, ly, prim.half[0], prim.half[1])
            elif prim.kind == "cyl_x":
                t = _cylinder(oy, oz, ox, ly, lz, lx, prim.half[0], prim.half[1])
            elif prim.kind == "cyl_z":
                t = _cylinder(ox, oy, oz, lx, ly, lz, prim.half[0], prim.half[1])
            elif prim.kind == "ellipsoid":
                t = _ellipsoid(ox, oy, oz, lx, ly, lz, prim.half)
            else:
                raise ValueError(f"unknown primitive kind {prim.kind!r}")
        hit = np.isfinite(t)

        def color(won: np.ndarray) -> np.ndarray:
            tw = t[won]
            local = np.stack([ox + tw * lx[won], oy + tw * ly[won], oz + tw * lz[won]], axis=1)
            fw = _faces(prim, local)
            normal_l = _local_normal(prim, local, fw)
            normal_w = np.empty_like(normal_l)
            normal_w[:, 0] = c * normal_l[:, 0] + s * normal_l[:, 2]
            normal_w[:, 1] = normal_l[:, 1]
            normal_w[:, 2] = -s * normal_l[:, 0] + c * normal_l[:, 2]
            return shade(prim, local, fw, normal_w)

        self.write(win, t, hit, prim.label_id, prim.instance_value, color)


def _box(ox, oy, oz, lx, ly, lz, half):
    """Slab test; entry t (inf where missed). Faces are found later, on the winners only."""
    tnear = tfar = None
    for oo, dd, hh in ((ox, lx, half[0]), (oy, ly, half[1]), (oz, lz, half[2])):
        inv = 1.0 / dd
        mid = inv * (-oo)
        rad = np.abs(inv)
        rad *= hh
        ta = mid - rad
        mid += rad
        if tnear is None:
            tnear, tfar = ta, mid
        else:
            np.maximum(tnear, ta, out=tnear)
            np.minimum(tfar, mid, out=tfar)
    ok = (tnear <= tfar) & (tnear > EPS_T)
    return np.where(ok, tnear, np.float32(np.inf))


def _cylinder(op, oq, oa, dp, dq, da, radius, half_len):
    """Cylinder whose axis is 'a' through the origin; radial coordinates p, q."""
    a = dp * dp + dq * dq
    b = 2.0 * (op * dp + oq * dq)
    cc = op * op + oq * oq - radius * radius
    disc = b * b - 4.0 * a * cc
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    side_ok = (disc >= 0) & (t_side > EPS_T) & (np.abs(oa + t_side * da) <= half_len)
    t = np.where(side_ok, t_side, np.float32(np.inf))
    for sign in (1.0, -1.0):
        if (oa - sign * half_len) * sign <= 0:  # cap not facing the camera
            continue
        tc = (sign * half_len - oa) / da
        pp = op + tc * dp
        qq = oq + tc * dq
        cap_ok = (tc > EPS_T) & (pp * pp + qq * qq <= radius * radius) & (tc < t)
        t = np.where(cap_ok, tc, t)
    return t.astype(np.float32, copy=False)


def _ellipsoid(ox, oy, oz, lx, ly, lz, half):
    rx, ry, rz = half
    px, py, pz = ox / rx, oy / ry, oz / rz
    qx, qy, qz = lx / rx, ly / ry, lz / rz
    a = qx * qx + qy * qy + qz * qz
    b = 2.0 * (px * qx + py * qy + pz * qz)
    cc = px * px + py * py + pz * pz - 1.0
    disc = b * b - 4.0 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    ok = (disc >= 0) & (t > EPS_T)
    return np.where(ok, t, np.float32(np.inf)).astype(np.float32, copy=False)


_CYL_AXIS = {"cyl_x": 0, "cyl_y": 1, "cyl_z": 2}


def _faces(prim: Primitive, local: np.ndarray) -> np.ndarray:
    """Face codes of hit points: box axis*2 + (1 if the normal points negative); cylinder side or
    caps; ellipsoid. Recovered from where on the surface the point lies."""
    if prim.kind == "box":
        rel = np.abs(local) / np.asarray(prim.half, dtype=local.dtype)
        axis = np.argmax(rel, axis=1)
        neg = local[np.arange(len(local)), axis] < 0
        return (2 * axis + neg).astype(np.int8)
    if prim.kind in _CYL_AXIS:
        ax = _CYL_AXIS[prim.kind]
        radius, half_len = prim.half[0], prim.half[1]
        along = local[:, ax]
        radial = np.sqrt(np.sum(local * local, axis=1) - along * along)
        cap = np.abs(np.abs(along) - half_len) < np.abs(radial - radius)
        face = np.full(len(local), FACE_SIDE, dtype=np.int8)
        face[cap & (along > 0)] = FACE_CAP_POS
        face[cap & (along <= 0)] = FACE_CAP_NEG
        return face
    return np.full(len(local), FACE_ELLIPSOID, dtype=np.int8)


def _local_normal(prim: Primitive, local: np.ndarray, face: np.ndarray) -> np.ndarray:
    n = np.zeros_like(local)
    if prim.kind == "box":
        axis = face // 2
        sign = np.where(face % 2 == 1, -1.0, 1.0).astype(local.dtype)
        n[np.arange(len(face)), axis] = sign
    elif prim.kind in ("cyl_x", "cyl_y", "cyl_z"):
        ax = {"cyl_x": 0, "cyl_y": 1, "cyl_z": 2}[prim.kind]
        radial = local.copy()
        radial[:, ax] = 0.0
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-6)
        n = radial
        n[face == FACE_CAP_POS] = 0.0
        n[face == FACE_CAP_NEG] = 0.0
        n[face == FACE_CAP_POS, ax] = 1.0
        n[face == FACE_CAP_NEG, ax] = -1.0
    else:
        h = np.asarray(prim.half, dtype=local.dtype)
        n = local / (h * h)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
    return n
