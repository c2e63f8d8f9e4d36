"""Turn a :class:`~.scene.Scene` into pixels: exact labels and z depth, then a plausible photo.

Geometry first (planes for road, sidewalks, kerbs and facades; primitives for everything else, all
through one z-buffer), appearance second (textures, sun shading, haze with distance, sky), camera
effects last (exposure, tint, gamma, mild blur, sensor noise). Labels and depth never see the
camera effects, so they stay exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import CameraParams, sample_camera
from .raycast import FACE_CAP_NEG, FACE_CAP_POS, Canvas, Primitive
from .scene import (
    EGO_VEHICLE,
    GAP,
    ROAD,
    SEG_BUILDING,
    SEG_FENCE,
    SEG_VEGETATION,
    SEG_WALL,
    SEGMENT_LABEL,
    SIDEWALK,
    SKY,
    TERRAIN,
    Actor,
    Scene,
    generate_scene,
)

SEQUENCE_STREAM = 0x5E0  # keeps the sequence's random streams apart from the single frames'


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered view with exact ground truth.

    - ``rgb``: (H, W, 3) uint8, RGB order.
    - ``label_ids``: (H, W) uint8 Cityscapes label ids (road 7 ... bicycle 33; sky 23; ego vehicle 1).
    - ``instance_ids``: (H, W) int32 as Cityscapes' instanceIds.png: label_id*1000 + k for thing
      instances (k from 0, per class), the bare label id elsewhere.
    - ``depth_m``: (H, W) float32 z depth along the optical axis in metres; NaN where there is no
      surface (sky, ego vehicle).
    - ``camera``: intrinsics, baseline and mounting; ``K`` and ``baseline`` are shortcuts.
    - ``index``, ``time_s``: position in the sequence (time 0 for single frames).
    - ``world_from_camera``: (4, 4) pose of the optical frame in the street frame (X right, Y up,
      Z forward), for TF in bag demos.
    """

    rgb: np.ndarray
    label_ids: np.ndarray
    instance_ids: np.ndarray
    depth_m: np.ndarray
    camera: CameraParams
    index: int
    time_s: float
    world_from_camera: np.ndarray

    @property
    def K(self) -> np.ndarray:  # noqa: N802
        return self.camera.K

    @property
    def baseline(self) -> float:
        return self.camera.baseline

    def disparity_png(self) -> np.ndarray:
        """uint16 Cityscapes disparity: p = round(d*256) + 1 with d = baseline*fx/z; 0 = invalid."""
        return depth_to_disparity_png(self.depth_m, self.camera.baseline, self.camera.fx)


def depth_to_disparity_png(depth_m: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    out = np.zeros(depth_m.shape, dtype=np.uint16)
    valid = np.isfinite(depth_m) & (depth_m > 0)
    disp = baseline * fx / depth_m[valid].astype(np.float64)
    out[valid] = np.clip(np.round(disp * 256.0) + 1.0, 0, 65535).astype(np.uint16)
    return out


# --------------------------------------------------------------------------------------------
# textures
def _noise(tile: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    ia = (a * scale).astype(np.int32) & 255
    ib = (b * scale).astype(np.int32) & 255
    return tile[ib, ia]


def _lambert(scene: Scene, normal: np.ndarray) -> np.ndarray | float:
    lit = scene.lighting
    if normal.ndim == 1:
        return lit.ambient * (0.8 + 0.2 * normal[1]) + lit.diffuse * max(0.0, float(normal @ lit.sun))
    ndl = np.maximum(normal @ lit.sun.astype(np.float32), 0.0)
    return lit.ambient * (0.8 + 0.2 * normal[:, 1]) + lit.diffuse * ndl


GLASS = np.array([0.07, 0.09, 0.12], dtype=np.float32)
LAMP_COLORS = np.array([[2.0, 0.15, 0.08], [2.0, 1.3, 0.1], [0.15, 2.0, 0.6]], dtype=np.float32)


def _texture(scene: Scene, prim: Primitive, local: np.ndarray, face: np.ndarray) -> np.ndarray:
    m = prim.material
    n = len(local)
    col = np.empty((n, 3), dtype=np.float32)
    col[:] = m.color
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    hx, hy, hz = prim.half
    tile = scene.noise_tile
    kind = m.kind
    if kind in ("plain", "cloth", "skin", "bark", "car_body", "ribbed", "wall", "bus", "truck_cab"):
        col *= (1.0 + 0.07 * _noise(tile, x + z + prim.center[2], y, 6.0))[:, None]
    if kind == "car_body":
        upper = y > 0.15 * hy
        side = np.abs(x) > 0.62 * hx
        col[(face == 4) & upper & side] = (1.6, 1.6, 1.4)
        col[(face == 5) & upper & side] = (0.7, 0.03, 0.03)
        col[((face == 4) | (face == 5)) & (y < -0.55 * hy)] *= 0.3
    elif kind == "glass":
        pillar = (
            (((face == 4) | (face == 5)) & (np.abs(x) > 0.85 * hx))
            | (((face == 0) | (face == 1)) & ((np.abs(z) > 0.86 * hz) | (np.abs(z) < 0.06 * hz)))
            | (y < -0.82 * hy)
            | (face == 2)
        )
        col[:] = GLASS * (1.0 + 0.6 * _noise(tile, x + z, y, 3.0))[:, None]
        col[pillar] = m.color2
    elif kind == "bus":
        band = ((face == 0) | (face == 1)) & (y > -0.1 * hy) & (y < 0.68 * hy) & (((z / 1.3) % 1.0) > 0.08)
        front = (face == 4) & (y > -0.3 * hy) & (np.abs(x) < 0.93 * hx)
        back = (face == 5) & (y > 0.2 * hy) & (np.abs(x) < 0.85 * hx)
        col[band | front | back] = m.color2
        col[y < -0.85 * hy] *= 0.35
        col[(face == 5) & (y < -0.55 * hy) & (np.abs(x) > 0.7 * hx)] = (0.8, 0.05, 0.05)
    elif kind == "truck_cab":
        win = ((face == 4) & (y > 0.05 * hy) & (np.abs(x) < 0.9 * hx)) | (
            ((face == 0) | (face == 1)) & (y > 0.2 * hy) & (z > 0)
        )
        col[win] = m.color2
    elif kind == "ribbed":
        col[((face == 0) | (face == 1)) & (((z / 0.35) % 1.0) < 0.3)] *= 0.82
    elif kind == "tyre":
        hub = ((face == FACE_CAP_POS) | (face == FACE_CAP_NEG)) & (y * y + z * z < 0.3 * hx * hx)
        col[hub] = m.color2
    elif kind == "leaves":
        v = 0.5 + 0.5 * _noise(tile, x * 2.0 + z * 1.3 + prim.center[0], y * 2.0 + prim.center[2], 4.0)
        col = np.asarray(m.color, np.float32) + (np.asarray(m.color2, np.float32) - m.color) * v[:, None]
    elif kind == "light":
        for i, cy in enumerate((0.62 * hy, 0.0, -0.62 * hy)):
            lamp = (face == 5) & (x * x + (y - cy) ** 2 < (0.65 * hx) ** 2)
            col[lamp] = LAMP_COLORS[2 - i] if i == int(m.param) else LAMP_COLORS[2 - i] * 0.12
    elif kind == "sign":
        if prim.kind == "box":
            front = face == 5
            inner = np.maximum(np.abs(x), np.abs(y)) < 0.8 * hx
        else:
            front = face == FACE_CAP_NEG
            inner = x * x + y * y < (0.78 * hx) ** 2
        col[front & ~inner] = m.color2
        col[~front] = (0.45, 0.45, 0.47)
    elif kind == "fence":
        p = max(m.param, 0.05)
        open_cell = (((z / p) % 1.0) > 0.22) & (((y / p) % 1.0) > 0.22)
        col[open_cell] *= 0.45
    elif kind == "wall":
        col[(((y / 0.4) % 1.0) < 0.06) | (((z / 1.2) % 1.0) < 0.03)] *= 0.75
    return col


def _shade_primitive(scene: Scene):
    def shade(prim: Primitive, local: np.ndarray, face: np.ndarray, normal_w: np.ndarray) -> np.ndarray:
        return _texture(scene, prim, local, face) * _lambert(scene, normal_w)[:, None]

    return shade


# --------------------------------------------------------------------------------------------
# the environment: planes
def _horizon_rows(canvas: Canvas) -> int:
    below = np.nonzero((canvas.dy < 0).any(axis=1))[0]
    return int(below[0]) if len(below) else canvas.camera.height


def _draw_ground(canvas: Canvas, scene: Scene) -> None:
    h, w = canvas.camera.height, canvas.camera.width
    r0 = _horizon_rows(canvas)
    if r0 >= h:
        return
    win = (r0, h, 0, w)
    _, dy_win, _ = canvas.rays(win)
    ox, oy, oz = (float(v) for v in canvas.origin)
    tile = scene.noise_tile
    up = np.array([0.0, 1.0, 0.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        # road surface y = 0 (rays going up get t < 0 and drop out)
        rows, cols = canvas.candidates(win, (0.0 - oy) / dy_win)
        dy = canvas.dy[rows, cols]
        t = (0.0 - oy) / dy
        x = ox + t * canvas.dx[rows, cols]
        z = oz + t * canvas.dz[rows, cols]
        hit = (x >= scene.road_left) & (x <= scene.road_right)
        rows, cols, t, x, z = rows[hit], cols[hit], t[hit], x[hit], z[hit]
        shade = 1.0 + 0.12 * _noise(tile, x, z, 4.0) + 0.08 * _noise(tile, x, z, 0.5)
        col = scene.road_color.astype(np.float32)[None, :] * shade[:, None]
        mark = np.zeros(len(x), dtype=bool)
        for lx, solid in scene.lane_lines:
            near = np.abs(x - lx) < 0.07
            if not solid:
                near &= ((z / scene.dash_period) % 1.0) < 0.4
            mark |= near
        for zc in scene.crosswalks:
            mark |= (z > zc) & (z < zc + 4.0) & ((x % 1.0) < 0.5)
        col[mark] = 0.75 * (1.0 + 0.05 * _noise(tile, x[mark], z[mark], 8.0))[:, None]
        canvas.write_points(rows, cols, t, ROAD, ROAD, col * _lambert(scene, up))

        # raised sidewalk / terrain y = kerb_h
        rows, cols = canvas.candidates(win, (scene.kerb_h - oy) / dy_win)
        t = (scene.kerb_h - oy) / canvas.dy[rows, cols]
        x = ox + t * canvas.dx[rows, cols]
        z = oz + t * canvas.dz[rows, cols]
        hit = (x < scene.road_left) | (x > scene.road_right)
        rows, cols, t, x, z = rows[hit], cols[hit], t[hit], x[hit], z[hit]
        label = np.full(x.shape, SIDEWALK, dtype=np.uint8)
        for side, walk in ((-1, scene.walk_left), (1, scene.walk_right)):
            edges, terrain = scene.strips[side]
            front = scene.rows[0 if side < 0 else 2].x
            zone = (x * side > walk * side) & (x * side < front * side)
            seg = np.clip(np.searchsorted(edges, z[zone], side="right") - 1, 0, len(terrain) - 1)
            zl = label[zone]
            zl[terrain[seg]] = TERRAIN
            label[zone] = zl
        col = np.empty((len(x), 3), dtype=np.float32)
        col[:] = scene.walk_color
        col *= (1.0 + 0.08 * _noise(tile, x, z, 5.0))[:, None]
        joint = (((x / 0.6) % 1.0) < 0.05) | (((z / 0.6) % 1.0) < 0.05)
        col[joint] *= 0.8
        ter = label == TERRAIN
        v = 0.6 + 0.4 * _noise(tile, x[ter] * 1.7, z[ter] * 1.7, 6.0)
        col[ter] = scene.terrain_color.astype(np.float32)[None, :] * v[:, None]
        canvas.write_points(rows, cols, t, label, label, col * _lambert(scene, up))

        # kerb faces, vertical planes at the road edges
        dx_win = canvas.rays(win)[0]
        for xk, nx in ((scene.road_left, 1.0), (scene.road_right, -1.0)):
            if (ox - xk) * nx <= 0:
                continue
            rows, cols = canvas.candidates(win, (xk - ox) / dx_win)
            t = (xk - ox) / canvas.dx[rows, cols]
            yk = oy + t * canvas.dy[rows, cols]
            hit = (yk >= 0) & (yk <= scene.kerb_h)
            light = _lambert(scene, np.array([nx, 0.0, 0.0]))
            col = (scene.walk_color * 1.1 * light).astype(np.float32)
            canvas.write_points(rows[hit], cols[hit], t[hit], SIDEWALK, SIDEWALK, col)


def _facade_colors(scene: Scene, seg_color, kind, u, y, top, floor_h, col_w, seg) -> np.ndarray:
    tile = scene.noise_tile
    col = seg_color.astype(np.float32) * (1.0 + 0.06 * _noise(tile, u, y, 3.0))[:, None]
    bld = kind == SEG_BUILDING
    if bld.any():
        fu = (u / col_w) % 1.0
        fv = (y / floor_h) % 1.0
        win = bld & (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8) & (y > floor_h) & (y < top - 0.8)
        shop = bld & (seg % 2 == 0) & (y > 0.4) & (y < 2.6) & (fu > 0.08) & (fu < 0.92)
        glass = win | shop
        col[glass] = GLASS * (1.0 + 0.8 * _noise(tile, u[glass] * 0.3, y[glass] * 0.3, 1.0))[:, None]
        col[bld & (top - y < 0.4)] *= 0.7  # cornice
    veg = kind == SEG_VEGETATION
    if veg.any():
        col[veg] *= (0.6 + 0.5 * _noise(tile, u[veg] * 2.0, y[veg] * 2.0, 4.0))[:, None]
    wall = kind == SEG_WALL
    if wall.any():
        col[wall & (((y / 0.5) % 1.0) < 0.06)] *= 0.75
    fence = kind == SEG_FENCE
    if fence.any():
        open_cell = fence & (((u / 0.2) % 1.0) > 0.2) & (((y / 0.2) % 1.0) > 0.2)
        col[open_cell] *= 0.5
    return col


def _draw_vertical_segments(canvas, scene, axis, coord, normal, edges, kinds, tops, colors, floor_h, col_w):
    """A vertical plane {axis = coord} split into segments along the other horizontal axis."""
    ox, oy, oz = (float(v) for v in canvas.origin)
    along0, along1 = float(edges[0]), float(edges[-1])
    ymax = float(tops.max()) + 2.0
    if axis == 0:
        if (ox - coord) * normal[0] <= 0:
            return
        a0 = max(along0, oz + 0.3)
        if a0 >= along1:
            return
        corners = np.array([[coord, yy, zz] for yy in (0.0, ymax) for zz in (a0, along1)])
    else:
        corners = np.array([[xx, yy, coord] for yy in (0.0, ymax) for xx in (along0, along1)])
    win = canvas.window(corners)
    if win is None:
        return
    dx_win, _, dz_win = canvas.rays(win)
    with np.errstate(divide="ignore", invalid="ignore"):
        if axis == 0:
            rows, cols = canvas.candidates(win, (coord - ox) / dx_win)
            t = (coord - ox) / canvas.dx[rows, cols]
            along = oz + t * canvas.dz[rows, cols]
        else:
            rows, cols = canvas.candidates(win, (coord - oz) / dz_win)
            t = (coord - oz) / canvas.dz[rows, cols]
            along = ox + t * canvas.dx[rows, cols]
        y = oy + t * canvas.dy[rows, cols]
        seg = np.searchsorted(edges, along, side="right") - 1
        inside = (seg >= 0) & (seg < len(kinds))
        np.clip(seg, 0, len(kinds) - 1, out=seg)
        kind = kinds[seg]
        top = tops.astype(np.float32)[seg]
        veg = kind == SEG_VEGETATION
        if veg.any():  # ragged tree line
            top[veg] += 1.2 * _noise(scene.noise_tile, along[veg], np.zeros(int(veg.sum()), np.float32), 1.5)
        hit = inside & (kind != GAP) & (y >= 0) & (y <= top)
    rows, cols, t, along, y, seg, kind, top = (a[hit] for a in (rows, cols, t, along, y, seg, kind, top))
    label = SEGMENT_LABEL[kind]
    light = _lambert(scene, np.asarray(normal, dtype=np.float64))
    u = along - edges[seg]
    col = light * _facade_colors(scene, colors[seg], kind, u, y, top, floor_h[seg], col_w[seg], seg)
    canvas.write_points(rows, cols, t, label, label, col)


def _draw_sky(canvas: Canvas, scene: Scene, sky: np.ndarray) -> None:
    lit = scene.lighting
    dx, dy, dz = canvas.dx[sky], canvas.dy[sky], canvas.dz[sky]
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    elev = np.clip(dy / norm * 3.0, 0.0, 1.0)[:, None]
    col = lit.sky_horizon.astype(np.float32) + (lit.sky_zenith - lit.sky_horizon).astype(np.float32) * elev
    up = np.maximum(dy, 0.02)
    cloud = np.clip(_noise(scene.noise_tile, dx / up * 3.0, dz / up * 3.0, 2.0) * 1.5 - 0.2, 0, 1)
    col += (np.float32(0.95) - col) * (cloud * 0.8)[:, None]
    canvas.rgb[sky] = col
    canvas.label[sky] = SKY
    canvas.instance[sky] = SKY


def _actor_primitives(actor: Actor, time_s: float) -> list[Primitive]:
    x, z = actor.position(time_s)
    c, s = np.cos(actor.yaw), np.sin(actor.yaw)
    inst = actor.label_id if actor.instance_k is None else actor.label_id * 1000 + actor.instance_k
    prims = []
    for p in actor.parts:
        lx, ly, lz = p.center
        center = np.array([x + c * lx + s * lz, ly, z - s * lx + c * lz])
        value = inst if p.label_id == actor.label_id else p.label_id
        prims.append(Primitive(p.kind, center, actor.yaw, p.half, p.label_id, value, p.material))
    return prims


def render_scene(
    scene: Scene,
    camera: CameraParams,
    ego_xz: tuple[float, float],
    time_s: float,
    noise_rng: np.random.Generator,
    index: int = 0,
) -> SyntheticFrame:
    """Render ``scene`` seen from the camera on the ego car at ``ego_xz`` at time ``time_s``."""
    origin = np.array([ego_xz[0], camera.height_m, ego_xz[1]], dtype=np.float64)
    canvas = Canvas(camera, origin)
    h, w = camera.height, camera.width
    # actors near to far: hidden ones are culled by the z-buffer before any intersection work
    shade = _shade_primitive(scene)
    placed = []
    for actor in scene.actors:
        ax, az = actor.position(time_s)
        dz = az - origin[2]
        if dz < -15.0 or az > scene.far_z:
            continue
        placed.append((dz * dz + (ax - origin[0]) ** 2, len(placed), actor))
    placed.sort(key=lambda item: (item[0], item[1]))
    for _, _, actor in placed:
        for prim in _actor_primitives(actor, time_s):
            canvas.draw(prim, shade)
    # then the environment, which only colours what is still visible
    _draw_ground(canvas, scene)
    for row in scene.rows:
        normal = (1.0, 0.0, 0.0) if row.x < 0 else (-1.0, 0.0, 0.0)
        _draw_vertical_segments(
            canvas, scene, 0, row.x, normal, row.z_edges, row.kind, row.top, row.color, row.floor_h, row.col_w
        )
    n_far = len(scene.far_kind)
    _draw_vertical_segments(
        canvas,
        scene,
        2,
        scene.far_z,
        (0.0, 0.0, -1.0),
        scene.far_x_edges,
        scene.far_kind,
        scene.far_top,
        scene.far_color,
        np.full(n_far, 3.2),
        np.full(n_far, 3.0),
    )

    sky = ~np.isfinite(canvas.depth)
    _draw_sky(canvas, scene, sky)
    # ego vehicle hood: a void region at the bottom, no depth (as Cityscapes' 'ego vehicle')
    cols = (np.arange(w) - w / 2.0) / (w / 2.0)
    hood_top = h * (1.0 - scene.hood_height) + h * scene.hood_height * 0.7 * cols**2
    r_hood = min(int(np.floor(hood_top.min())), h)
    rows = np.arange(r_hood, h, dtype=np.float32)[:, None]
    hood = rows >= hood_top[None, :]
    np.copyto(canvas.label[r_hood:], EGO_VEHICLE, where=hood)
    np.copyto(canvas.instance[r_hood:], EGO_VEHICLE, where=hood)
    np.copyto(canvas.depth[r_hood:], np.float32(np.inf), where=hood)
    gloss = np.clip(1.2 - (rows - h * (1 - scene.hood_height)) / max(h * scene.hood_height, 1.0), 0.3, 1.5)
    hood_rgb = scene.hood_color.astype(np.float32)[None, None, :] * gloss[
        :, :, None
    ] + 0.15 * scene.lighting.sky_horizon.astype(np.float32)
    np.copyto(canvas.rgb[r_hood:], np.broadcast_to(hood_rgb, (h - r_hood, w, 3)), where=hood[:, :, None])

    depth = canvas.depth
    finite = np.isfinite(depth)
    lit = scene.lighting
    trans = np.exp(depth * np.float32(-1.0 / lit.visibility_m))  # 0 for sky: keep sky as drawn
    trans[~finite] = 1.0
    haze = lit.haze_color.astype(np.float32)
    rgb = canvas.rgb
    rgb -= haze
    rgb *= trans[:, :, None]
    rgb += haze
    rgb *= (lit.tint * lit.exposure * 255.0**2).astype(np.float32)  # gamma 2 below: sqrt(x*255^2)
    np.clip(rgb, 0.0, 255.0**2, out=rgb)
    np.sqrt(rgb, out=rgb)
    img = cv2.GaussianBlur(rgb, (3, 3), 0.6)  # a lens-ish softness
    # sensor noise: triangular (sum of two uniform bytes), std = noise_sigma; bytes are cheap to draw
    raw = np.frombuffer(noise_rng.bytes(2 * img.size), dtype=np.uint8).reshape(2, *img.shape)
    tri = raw[0].astype(np.float32)
    tri += raw[1]
    tri -= 255.0
    img += tri * np.float32(lit.noise_sigma / (256.0 / np.sqrt(6.0)))
    img += 0.5
    np.clip(img, 0, 255, out=img)
    rgb8 = img.astype(np.uint8)

    pose = np.eye(4)
    pose[:3, :3] = camera.world_from_camera_rotation()
    pose[:3, 3] = origin
    return SyntheticFrame(
        rgb=rgb8,
        label_ids=canvas.label,
        instance_ids=canvas.instance,
        depth_m=np.where(finite, depth, np.nan).astype(np.float32),
        camera=camera,
        index=index,
        time_s=float(time_s),
        world_from_camera=pose,
    )


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) < 8 or int(size[1]) < 8:
        raise ValueError(f"size must be (height, width) with both >= 8, got {size!r}")
    return int(size[0]), int(size[1])


def render_frame(seed: int, index: int, size: tuple[int, int] = (512, 1024)) -> SyntheticFrame:
    """An independent street scene; the same (seed, index, size) gives the same bytes."""
    h, w = _check_size(size)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    rng = np.random.default_rng([seed, index])
    camera = sample_camera(rng, h, w)
    scene = generate_scene(rng)
    return render_scene(scene, camera, (0.0, 0.0), 0.0, rng, index=index)


def render_sequence(
    seed: int,
    num_frames: int,
    size: tuple[int, int] = (512, 1024),
    fps: float = 10.0,
) -> Iterator[SyntheticFrame]:
    """A temporally coherent drive: one street and camera, the ego moving forward, others moving.

    Frame i is at time i/fps; ``world_from_camera`` gives the ego pose. Lazily rendered.
    """
    h, w = _check_size(size)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rng = np.random.default_rng([seed, SEQUENCE_STREAM])
    camera = sample_camera(rng, h, w)
    speed = float(rng.uniform(6.0, 11.0))
    travel = speed * num_frames / fps
    scene = generate_scene(rng, z_min=-40.0, z_max=travel + 320.0)
    _keep_ego_lane_clear(scene, speed)
    for i in range(num_frames):
        t = i / fps
        yield render_scene(
            scene, camera, (0.0, speed * t), t, np.random.default_rng([seed, SEQUENCE_STREAM, i]), i
        )


def _keep_ego_lane_clear(scene: Scene, ego_speed: float) -> None:
    """Vehicles ahead in the ego lane drive at least as fast as the ego, so it never drives into them."""
    for a in scene.actors:
        if a.vz > 0 and abs(a.x0) < 1.0 and a.label_id in (26, 27, 28):
            a.vz = max(a.vz, ego_speed + 0.5)
