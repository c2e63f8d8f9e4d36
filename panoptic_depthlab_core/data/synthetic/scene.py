"""Procedural street layouts: the road, its sides, and the actors (things and street furniture).

A :class:`Scene` is a pure description (numbers, no pixels) drawn from one ``np.random.Generator``;
``render.py`` turns it into pixels for a camera pose and a time. Actors move linearly in time, so a
scene rendered at successive times is a temporally coherent drive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Cityscapes label ids used by the generator
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 7, 8, 11, 12, 13, 17
TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 32, 33
EGO_VEHICLE = 1

# facade segment kinds
GAP, SEG_BUILDING, SEG_VEGETATION, SEG_WALL, SEG_FENCE = 0, 1, 2, 3, 4
SEGMENT_LABEL = np.array([0, BUILDING, VEGETATION, WALL, FENCE], dtype=np.uint8)


@dataclass(frozen=True)
class Material:
    """Surface appearance; ``kind`` selects the texture function in render.py (linear RGB 0-1)."""

    kind: str
    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    param: float = 0.0


@dataclass
class Part:
    """A primitive in its actor's frame (x right, y up, z forward along the actor's heading)."""

    kind: str
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    label_id: int
    material: Material


@dataclass
class Actor:
    """A rigid object on the ground at (x0, z0) at t = 0 moving with (vx, vz) m/s, heading ``yaw``.

    ``instance_k`` is the per-class instance index for things (None for stuff).
    """

    label_id: int
    parts: list[Part]
    x0: float
    z0: float
    yaw: float
    vx: float = 0.0
    vz: float = 0.0
    instance_k: int | None = None

    def position(self, time_s: float) -> tuple[float, float]:
        return self.x0 + self.vx * time_s, self.z0 + self.vz * time_s


@dataclass
class FacadeRow:
    """A vertical plane x = ``x`` split along z into segments (building, vegetation, wall, ...)."""

    x: float
    z_edges: np.ndarray  # (n+1,)
    kind: np.ndarray  # (n,) int
    top: np.ndarray  # (n,) metres
    color: np.ndarray  # (n,3)
    floor_h: np.ndarray  # (n,)
    col_w: np.ndarray  # (n,)


@dataclass
class Lighting:
    sun: np.ndarray  # unit vector towards the sun (world)
    ambient: float
    diffuse: float
    haze_color: np.ndarray
    visibility_m: float
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    exposure: float
    noise_sigma: float
    tint: np.ndarray


@dataclass
class Scene:
    road_left: float  # x of the left kerb (negative)
    road_right: float
    kerb_h: float
    walk_left: float  # x of the sidewalk's outer edge (negative)
    walk_right: float
    lane_lines: list[tuple[float, bool]]  # (x, solid)
    dash_period: float
    crosswalks: list[float]  # z of each zebra start
    strips: dict[int, tuple[np.ndarray, np.ndarray]]  # side -> (z_edges, is_terrain per segment)
    rows: list[FacadeRow]
    far_z: float
    far_x_edges: np.ndarray
    far_kind: np.ndarray
    far_top: np.ndarray
    far_color: np.ndarray
    road_color: np.ndarray
    walk_color: np.ndarray
    terrain_color: np.ndarray
    lighting: Lighting
    actors: list[Actor] = field(default_factory=list)
    noise_tile: np.ndarray | None = None
    hood_height: float = 0.06  # fraction of image height covered by the ego vehicle's hood
    hood_color: np.ndarray | None = None


def _rgb(rng: np.random.Generator, lo: float, hi: float, spread: float = 0.0) -> tuple[float, float, float]:
    base = rng.uniform(lo, hi)
    c = base * (1.0 + rng.uniform(-spread, spread, 3))
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


CAR_PAINTS = np.array(
    [
        [0.8, 0.8, 0.82],
        [0.05, 0.05, 0.06],
        [0.45, 0.46, 0.5],
        [0.6, 0.05, 0.04],
        [0.06, 0.12, 0.4],
        [0.2, 0.22, 0.25],
        [0.85, 0.85, 0.8],
        [0.1, 0.25, 0.12],
        [0.5, 0.35, 0.15],
        [0.9, 0.6, 0.05],
    ]
)


def _paint(rng: np.random.Generator) -> tuple[float, float, float]:
    c = CAR_PAINTS[rng.integers(len(CAR_PAINTS))] * rng.uniform(0.8, 1.1)
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


def _wheels(width: float, axles: list[float], radius: float, label: int) -> list[Part]:
    tyre = Material("tyre", (0.03, 0.03, 0.035), (0.35, 0.35, 0.36))
    parts = []
    for z in axles:
        for sx in (-1.0, 1.0):
            parts.append(Part("cyl_x", (sx * (width / 2 - 0.1), radius, z), (radius, 0.13, 0.0), label, tyre))
    return parts


def make_car(rng: np.random.Generator) -> list[Part]:
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.9)
    height = rng.uniform(1.4, 1.65)
    paint = _paint(rng)
    body_lo, body_hi = 0.28, rng.uniform(0.85, 1.0)
    cabin_h = height - body_hi
    cabin_len = length * rng.uniform(0.45, 0.55)
    parts = [
        Part(
            "box",
            (0, (body_lo + body_hi) / 2, 0),
            (width / 2, (body_hi - body_lo) / 2, length / 2),
            CAR,
            Material("car_body", paint),
        ),
        Part(
            "box",
            (0, body_hi + cabin_h / 2, -0.05 * length),
            (width / 2 * 0.86, cabin_h / 2, cabin_len / 2),
            CAR,
            Material("glass", (0.04, 0.05, 0.07), paint),
        ),
    ]
    return parts + _wheels(width, [length / 2 - 0.8, -length / 2 + 0.8], 0.32, CAR)


def make_truck(rng: np.random.Generator) -> list[Part]:
    width = rng.uniform(2.3, 2.55)
    cab_len, cargo_len = rng.uniform(1.9, 2.4), rng.uniform(4.5, 8.0)
    cab_h, cargo_h = rng.uniform(2.6, 3.1), rng.uniform(3.0, 3.8)
    length = cab_len + 0.3 + cargo_len
    z_front = length / 2
    paint = _paint(rng)
    cargo_col = _rgb(rng, 0.4, 0.9, 0.15)
    parts = [
        Part(
            "box",
            (0, 0.5 + (cab_h - 0.5) / 2, z_front - cab_len / 2),
            (width / 2, (cab_h - 0.5) / 2, cab_len / 2),
            TRUCK,
            Material("truck_cab", paint, (0.04, 0.05, 0.07)),
        ),
        Part(
            "box",
            (0, 0.9 + (cargo_h - 0.9) / 2, -length / 2 + cargo_len / 2),
            (width / 2, (cargo_h - 0.9) / 2, cargo_len / 2),
            TRUCK,
            Material("ribbed", cargo_col),
        ),
        Part(
            "box",
            (0, 0.7, 0),
            (width / 2 * 0.8, 0.2, length / 2 * 0.95),
            TRUCK,
            Material("plain", (0.05, 0.05, 0.05)),
        ),
    ]
    return parts + _wheels(width, [z_front - 1.2, -length / 2 + 1.5, -length / 2 + 2.6], 0.5, TRUCK)


def make_bus(rng: np.random.Generator) -> list[Part]:
    width, length, height = 2.55, rng.uniform(10.5, 12.5), rng.uniform(2.9, 3.2)
    paint = _paint(rng) if rng.random() < 0.5 else (0.85, 0.75, 0.1)
    parts = [
        Part(
            "box",
            (0, 0.35 + (height - 0.35) / 2, 0),
            (width / 2, (height - 0.35) / 2, length / 2),
            BUS,
            Material("bus", paint, (0.05, 0.06, 0.08)),
        ),
    ]
    return parts + _wheels(width, [length / 2 - 2.6, -length / 2 + 3.0], 0.5, BUS)


def make_person(rng: np.random.Generator, label: int = PERSON, seated: bool = False) -> list[Part]:
    h = rng.uniform(1.55, 1.92)
    skin = _rgb(rng, 0.25, 0.75, 0.25)
    top = _rgb(rng, 0.03, 0.8, 0.6)
    legs = _rgb(rng, 0.03, 0.4, 0.3)
    leg_h = 0.47 * h
    torso_h = 0.3 * h
    parts = []
    if seated:  # on a saddle at ~0.9-1.0 m; thighs forward, shins down
        saddle = 0.95
        for sx in (-0.11, 0.11):
            parts.append(
                Part("box", (sx, saddle - 0.02, 0.2), (0.07, 0.07, 0.25), label, Material("cloth", legs))
            )
            parts.append(
                Part(
                    "box",
                    (sx, saddle / 2 + 0.05, 0.42),
                    (0.06, saddle / 2 - 0.05, 0.07),
                    label,
                    Material("cloth", legs),
                )
            )
        base = saddle
        lean = 0.12
    else:
        for sx in (-0.1, 0.1):
            parts.append(
                Part("box", (sx, leg_h / 2, 0), (0.075, leg_h / 2, 0.09), label, Material("cloth", legs))
            )
        base = leg_h
        lean = 0.0
    parts.append(
        Part("box", (0, base + torso_h / 2, lean), (0.2, torso_h / 2, 0.12), label, Material("cloth", top))
    )
    for sx in (-0.25, 0.25):
        parts.append(
            Part(
                "box",
                (sx, base + torso_h * 0.45, lean + (0.15 if seated else 0)),
                (0.05, torso_h * 0.45, 0.06 if not seated else 0.2),
                label,
                Material("cloth", top),
            )
        )
    head_r = 0.11 * h / 1.75
    parts.append(
        Part(
            "ellipsoid",
            (0, base + torso_h + 0.04 + head_r, lean),
            (head_r * 0.85, head_r, head_r * 0.95),
            label,
            Material("skin", skin),
        )
    )
    return parts


def make_bicycle(rng: np.random.Generator) -> list[Part]:
    col = _rgb(rng, 0.1, 0.8, 0.5)
    r = 0.34
    wheel = Material("tyre", (0.03, 0.03, 0.03), (0.55, 0.55, 0.55))
    frame = Material("plain", col)
    return [
        Part("cyl_x", (0, r, 0.52), (r, 0.025, 0), BICYCLE, wheel),
        Part("cyl_x", (0, r, -0.52), (r, 0.025, 0), BICYCLE, wheel),
        Part("box", (0, 0.62, 0.0), (0.025, 0.025, 0.45), BICYCLE, frame),
        Part("box", (0, 0.5, -0.1), (0.025, 0.17, 0.025), BICYCLE, frame),
        Part("box", (0, 0.86, -0.1), (0.06, 0.025, 0.12), BICYCLE, Material("plain", (0.05, 0.05, 0.05))),
        Part("box", (0, 0.78, 0.45), (0.025, 0.2, 0.025), BICYCLE, frame),
        Part("box", (0, 1.0, 0.45), (0.28, 0.02, 0.02), BICYCLE, frame),
    ]


def make_motorcycle(rng: np.random.Generator) -> list[Part]:
    col = _paint(rng)
    r = 0.31
    wheel = Material("tyre", (0.03, 0.03, 0.03), (0.4, 0.4, 0.42))
    return [
        Part("cyl_x", (0, r, 0.7), (r, 0.07, 0), MOTORCYCLE, wheel),
        Part("cyl_x", (0, r, -0.7), (r, 0.08, 0), MOTORCYCLE, wheel),
        Part("box", (0, 0.62, 0.0), (0.2, 0.25, 0.6), MOTORCYCLE, Material("car_body", col)),
        Part("box", (0, 0.92, -0.15), (0.16, 0.06, 0.35), MOTORCYCLE, Material("plain", (0.04, 0.04, 0.04))),
        Part("box", (0, 1.08, 0.55), (0.36, 0.025, 0.03), MOTORCYCLE, Material("plain", (0.2, 0.2, 0.2))),
    ]


def _segments(rng: np.random.Generator, z0: float, z1: float, choices, probs, widths) -> tuple:
    edges = [z0]
    kinds = []
    while edges[-1] < z1:
        k = int(rng.choice(choices, p=probs))
        lo, hi = widths[k]
        edges.append(edges[-1] + rng.uniform(lo, hi))
        kinds.append(k)
    return np.array(edges), np.array(kinds, dtype=np.int64)


def _facade_row(rng, x, z0, z1, back: bool) -> FacadeRow:
    widths = {
        GAP: (8, 16),
        SEG_BUILDING: (8, 30),
        SEG_VEGETATION: (6, 25),
        SEG_WALL: (5, 20),
        SEG_FENCE: (5, 20),
    }
    if back:
        edges, kinds = _segments(rng, z0, z1, [SEG_BUILDING, SEG_VEGETATION, GAP], [0.6, 0.33, 0.07], widths)
    else:
        edges, kinds = _segments(
            rng,
            z0,
            z1,
            [SEG_BUILDING, GAP, SEG_VEGETATION, SEG_WALL, SEG_FENCE],
            [0.58, 0.08, 0.12, 0.12, 0.10],
            widths,
        )
    n = len(kinds)
    top = np.empty(n)
    color = np.empty((n, 3))
    for i, k in enumerate(kinds):
        if k == SEG_BUILDING:
            top[i] = rng.uniform(7, 26) * (1.4 if back else 1.0)
            warm = rng.uniform(0.25, 0.75)
            color[i] = np.clip(
                warm
                * np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0)])
                * rng.uniform(0.9, 1.1, 3),
                0,
                1,
            )
        elif k == SEG_VEGETATION:
            top[i] = rng.uniform(3, 12)
            color[i] = np.array([rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.4), rng.uniform(0.03, 0.12)])
        elif k == SEG_WALL:
            top[i] = rng.uniform(0.9, 3.0)
            color[i] = np.full(3, rng.uniform(0.35, 0.7)) * rng.uniform(0.9, 1.05, 3)
        elif k == SEG_FENCE:
            top[i] = rng.uniform(1.0, 2.2)
            color[i] = np.full(3, rng.uniform(0.3, 0.7)) * np.array([1.0, 0.95, 0.9])
        else:
            top[i] = 0.0
            color[i] = 0.0
    return FacadeRow(
        x=float(x),
        z_edges=edges,
        kind=kinds,
        top=top,
        color=np.clip(color, 0, 1),
        floor_h=rng.uniform(2.9, 3.6, n),
        col_w=rng.uniform(2.0, 4.5, n),
    )


def _lighting(rng: np.random.Generator) -> Lighting:
    elev = np.deg2rad(rng.uniform(12, 70))
    azim = rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)])
    overcast = rng.random() < 0.35
    haze = np.clip(np.array([0.75, 0.8, 0.88]) * rng.uniform(0.8, 1.1) * rng.uniform(0.95, 1.05, 3), 0, 1)
    zenith = np.array([0.25, 0.45, 0.8]) * rng.uniform(0.8, 1.1) if not overcast else haze * 0.95
    return Lighting(
        sun=sun,
        ambient=float(rng.uniform(0.45, 0.6) if overcast else rng.uniform(0.3, 0.45)),
        diffuse=float(rng.uniform(0.2, 0.4) if overcast else rng.uniform(0.6, 0.95)),
        haze_color=haze,
        visibility_m=float(rng.uniform(150, 700)),
        sky_zenith=np.clip(zenith, 0, 1),
        sky_horizon=haze,
        exposure=float(rng.uniform(0.75, 1.3)),
        noise_sigma=float(rng.uniform(0.5, 3.5)),
        tint=np.clip(np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.06, 0.06, 3), 0.8, 1.2),
    )


def _noise_tile(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A seamless-enough value-noise tile in [-1, 1]: a few octaves of upsampled random grids."""
    tile = np.zeros((size, size), dtype=np.float32)
    amp = 1.0
    for cells in (8, 16, 32, 64, 256):
        grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        reps = size // cells
        up = np.repeat(np.repeat(grid, reps, axis=0), reps, axis=1)
        if reps > 1:  # cheap smoothing: average with shifted copies (wraps around: tileable)
            k = reps // 2
            up = 0.25 * (up + np.roll(up, k, 0) + np.roll(up, k, 1) + np.roll(np.roll(up, k, 0), k, 1))
        tile += amp * up
        amp *= 0.6
    return tile / np.abs(tile).max()


def generate_scene(rng: np.random.Generator, z_min: float = -40.0, z_max: float = 320.0) -> Scene:
    """Draw a street covering z in [z_min, z_max] (the ego starts at x = 0, z = 0)."""
    lane_w = rng.uniform(3.0, 3.6)
    n_fwd = int(rng.integers(1, 3))
    n_opp = int(rng.integers(0, 3))
    ego_lane = int(rng.integers(0, n_fwd))
    park_r = rng.random() < 0.75
    park_l = rng.random() < (0.6 if n_opp else 0.3)
    right = (n_fwd - ego_lane - 0.5) * lane_w
    left = -(ego_lane + 0.5) * lane_w - n_opp * lane_w
    lane_lines: list[tuple[float, bool]] = []
    for i in range(1, n_fwd):
        lane_lines.append((right - i * lane_w, False))
    center_x = -(ego_lane + 0.5) * lane_w
    if n_opp:
        lane_lines.append((center_x, True))
        for i in range(1, n_opp):
            lane_lines.append((center_x - i * lane_w, False))
    road_right = right + (2.3 if park_r else 0.4)
    road_left = left - (2.3 if park_l else 0.4)
    if park_r:
        lane_lines.append((right, True))
    if park_l:
        lane_lines.append((left, True))
    kerb_h = rng.uniform(0.1, 0.18)
    walk_right = road_right + rng.uniform(2.0, 5.0)
    walk_left = road_left - rng.uniform(2.0, 5.0)
    strips = {}
    rows = []
    for side, walk in ((-1, walk_left), (1, walk_right)):
        edges, kinds = _segments(rng, z_min, z_max, [0, 1], [0.55, 0.45], {0: (10, 40), 1: (10, 50)})
        strip_w = rng.uniform(0.0, 5.0)
        strips[side] = (edges, kinds.astype(bool) & (strip_w > 0.5))
        front_x = walk + side * strip_w
        rows.append(_facade_row(rng, front_x, z_min, z_max, back=False))
        rows.append(_facade_row(rng, front_x + side * rng.uniform(15, 40), z_min, z_max, back=True))
    far_edges, far_kind = _segments(
        rng,
        -300,
        300,
        [SEG_BUILDING, SEG_VEGETATION],
        [0.6, 0.4],
        {SEG_BUILDING: (10, 40), SEG_VEGETATION: (10, 40)},
    )
    far_top = np.where(
        far_kind == SEG_BUILDING, rng.uniform(10, 40, len(far_kind)), rng.uniform(6, 18, len(far_kind))
    )
    far_color = np.where(
        (far_kind == SEG_BUILDING)[:, None],
        rng.uniform(0.3, 0.7, (len(far_kind), 3)),
        np.array([0.1, 0.3, 0.08]) * rng.uniform(0.7, 1.2, (len(far_kind), 1)),
    )
    scene = Scene(
        road_left=float(road_left),
        road_right=float(road_right),
        kerb_h=float(kerb_h),
        walk_left=float(walk_left),
        walk_right=float(walk_right),
        lane_lines=lane_lines,
        dash_period=float(rng.uniform(6, 12)),
        crosswalks=[float(z) for z in rng.uniform(10, 120, int(rng.integers(0, 3)))],
        strips=strips,
        rows=rows,
        far_z=float(z_max),
        far_x_edges=far_edges,
        far_kind=far_kind,
        far_top=far_top,
        far_color=np.clip(far_color, 0, 1),
        road_color=np.full(3, rng.uniform(0.12, 0.3)) * rng.uniform(0.95, 1.05, 3),
        walk_color=np.clip(
            np.full(3, rng.uniform(0.35, 0.6)) * np.array([1.0, 0.97, rng.uniform(0.85, 1.0)]), 0, 1
        ),
        terrain_color=np.array([rng.uniform(0.15, 0.35), rng.uniform(0.3, 0.45), rng.uniform(0.05, 0.15)]),
        lighting=_lighting(rng),
        noise_tile=_noise_tile(rng),
        hood_height=float(rng.uniform(0.04, 0.09)),
        hood_color=np.array(_paint(rng)) * 0.6,
    )
    _populate(rng, scene, lane_w, n_fwd, n_opp, ego_lane, park_l, park_r, z_min, z_max)
    return scene


def _populate(rng, scene: Scene, lane_w, n_fwd, n_opp, ego_lane, park_l, park_r, z_min, z_max) -> None:
    actors: list[Actor] = []
    counters: dict[int, int] = {}

    def add(label: int, parts: list[Part], x: float, z: float, yaw: float, vx=0.0, vz=0.0) -> None:
        k = None
        if label in (PERSON, RIDER, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE):
            k = counters.get(label, 0)
            counters[label] = k + 1
        actors.append(Actor(label, parts, float(x), float(z), float(yaw), float(vx), float(vz), k))

    def vehicle(kind_p=(0.78, 0.11, 0.11)):
        k = rng.choice(3, p=kind_p)
        if k == 0:
            return CAR, make_car(rng), 4.5
        if k == 1:
            return TRUCK, make_truck(rng), 9.0
        return BUS, make_bus(rng), 12.0

    # parked cars along the kerbs
    for side, parked in ((1, park_r), (-1, park_l)):
        if not parked:
            continue
        kerb = scene.road_right if side > 0 else scene.road_left
        z = z_min + rng.uniform(0, 30)
        while z < z_max - 40:
            if rng.random() < 0.78:
                label, parts, length = vehicle((0.9, 0.07, 0.03))
                yaw = (0.0 if rng.random() < 0.8 else np.pi) + rng.normal(0, 0.03)
                add(label, parts, kerb - side * 1.15, z + length / 2, yaw)
                z += length + rng.uniform(0.6, 5.0)
            else:
                z += rng.uniform(4, 25)
    # moving traffic
    for lane in range(n_fwd + n_opp):
        forward = lane < n_fwd
        if forward:
            x = (lane - ego_lane) * lane_w
        else:
            x = -(ego_lane + 0.5) * lane_w - (lane - n_fwd + 0.5) * lane_w
        speed = rng.uniform(4, 14)
        z = rng.uniform(5, 25) if (forward and x == 0) else rng.uniform(-15, 20)
        while z < z_max - 20:
            if rng.random() < 0.75:
                label, parts, length = vehicle()
                yaw = (0.0 if forward else np.pi) + rng.normal(0, 0.01)
                add(
                    label,
                    parts,
                    x + rng.normal(0, 0.2),
                    z + length / 2,
                    yaw,
                    0.0,
                    speed if forward else -speed,
                )
                z += length + rng.uniform(6, 40)
            else:
                z += rng.uniform(10, 40)
    # pedestrians on the sidewalks (denser near the camera)
    for side in (-1, 1):
        inner = scene.road_right if side > 0 else scene.road_left
        outer = scene.walk_right if side > 0 else scene.walk_left
        for _ in range(int(rng.integers(2, 12))):
            x = rng.uniform(min(inner, outer) + 0.4, max(inner, outer) - 0.4)
            z = 2.0 + rng.exponential(30.0)
            if z > z_max - 30:
                continue
            walking = rng.random() < 0.7
            heading = 0.0 if rng.random() < 0.5 else np.pi
            v = rng.uniform(0.8, 1.6) if walking else 0.0
            add(PERSON, make_person(rng), x, z, heading + rng.normal(0, 0.3), 0.0, v * np.cos(heading))
    # pedestrians crossing at zebras
    for zc in scene.crosswalks:
        for _ in range(int(rng.integers(0, 4))):
            x = rng.uniform(scene.road_left, scene.road_right)
            direction = 1.0 if rng.random() < 0.5 else -1.0
            add(
                PERSON,
                make_person(rng),
                x,
                zc + rng.uniform(0.5, 3.5),
                direction * np.pi / 2,
                direction * rng.uniform(0.8, 1.5),
                0.0,
            )
    # riders: bicycle or motorcycle plus its rider, two instances moving together
    for _ in range(int(rng.integers(0, 5))):
        moto = rng.random() < 0.35
        forward = rng.random() < 0.7 or n_opp == 0
        if forward:
            x = scene.road_right - (2.8 if park_r else 0.8) + rng.normal(0, 0.3)
        else:
            x = scene.road_left + (2.8 if park_l else 0.8)
        z = rng.uniform(3, 90)
        speed = rng.uniform(8, 14) if moto else rng.uniform(3, 6)
        yaw = 0.0 if forward else np.pi
        vz = speed if forward else -speed
        vehicle_parts = make_motorcycle(rng) if moto else make_bicycle(rng)
        add(MOTORCYCLE if moto else BICYCLE, vehicle_parts, x, z, yaw, 0.0, vz)
        add(RIDER, make_person(rng, RIDER, seated=True), x, z, yaw, 0.0, vz)
    # street furniture: poles with lights and signs, trees, hedges, fences, walls
    metal = Material("plain", (0.35, 0.36, 0.38))
    for side in (-1, 1):
        kerb = scene.road_right if side > 0 else scene.road_left
        outer = scene.walk_right if side > 0 else scene.walk_left
        z = z_min + rng.uniform(0, 20)
        while z < z_max - 10:
            x = kerb + side * rng.uniform(0.3, 0.7)
            h = rng.uniform(4.5, 9.0)
            r = rng.uniform(0.06, 0.12)
            parts = [Part("cyl_y", (0, h / 2, 0), (r, h / 2, 0), POLE, metal)]
            u = rng.random()
            if u < 0.3:  # traffic light on an arm over the road
                arm = rng.uniform(1.5, 4.5)
                parts.append(Part("box", (-side * arm / 2, h - 0.15, 0), (arm / 2, 0.06, 0.06), POLE, metal))
                parts.append(
                    Part(
                        "box",
                        (-side * arm, h - 0.75, 0),
                        (0.17, 0.48, 0.14),
                        TRAFFIC_LIGHT,
                        Material("light", (0.05, 0.05, 0.05), param=float(rng.integers(3))),
                    )
                )
                parts.append(
                    Part(
                        "box",
                        (side * 0.2, 2.6, 0),
                        (0.15, 0.4, 0.12),
                        TRAFFIC_LIGHT,
                        Material("light", (0.08, 0.08, 0.07), param=float(rng.integers(3))),
                    )
                )
            elif u < 0.65:  # sign plate(s)
                col = [(0.75, 0.05, 0.05), (0.05, 0.2, 0.7), (0.9, 0.75, 0.05)][int(rng.integers(3))]
                sy = rng.uniform(2.2, 3.2)
                if rng.random() < 0.5:
                    parts.append(
                        Part(
                            "box",
                            (0, sy, -r - 0.03),
                            (0.32, 0.32, 0.015),
                            TRAFFIC_SIGN,
                            Material("sign", col, (0.95, 0.95, 0.95)),
                        )
                    )
                else:
                    parts.append(
                        Part(
                            "cyl_z",
                            (0, sy, -r - 0.03),
                            (0.33, 0.015, 0),
                            TRAFFIC_SIGN,
                            Material("sign", col, (0.95, 0.95, 0.95)),
                        )
                    )
            add(POLE, parts, x, z, 0.0)
            z += rng.uniform(12, 35)
        # trees at the outer sidewalk edge
        if rng.random() < 0.7:
            z = z_min + rng.uniform(0, 15)
            spacing = rng.uniform(8, 20)
            while z < z_max - 10:
                x = outer - side * rng.uniform(0.8, 1.5)
                trunk_h = rng.uniform(2.0, 3.5)
                crown = (rng.uniform(1.3, 2.8), rng.uniform(1.5, 3.0), rng.uniform(1.3, 2.8))
                leaf = (rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.45), rng.uniform(0.03, 0.12))
                parts = [
                    Part(
                        "cyl_y",
                        (0, trunk_h / 2 + 0.5, 0),
                        (rng.uniform(0.12, 0.25), trunk_h / 2 + 0.5, 0),
                        VEGETATION,
                        Material("bark", (0.2, 0.13, 0.08)),
                    ),
                    Part(
                        "ellipsoid",
                        (0, trunk_h + crown[1] * 0.8, 0),
                        crown,
                        VEGETATION,
                        Material("leaves", leaf, (leaf[0] * 1.8, leaf[1] * 1.5, leaf[2] * 1.5)),
                    ),
                ]
                add(VEGETATION, parts, x, z, float(rng.uniform(0, np.pi)))
                z += spacing * rng.uniform(0.8, 1.25)
        # hedges, fences and low walls along the outer sidewalk edge
        z = z_min + rng.uniform(0, 30)
        while z < z_max - 20:
            length = rng.uniform(5, 25)
            kind = rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])
            x = outer + side * 0.2
            if kind == 1:  # hedge
                h = rng.uniform(0.7, 1.8)
                leaf = (rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.4), rng.uniform(0.03, 0.1))
                add(
                    VEGETATION,
                    [
                        Part(
                            "box",
                            (0, h / 2, 0),
                            (0.45, h / 2, length / 2),
                            VEGETATION,
                            Material("leaves", leaf, (leaf[0] * 1.6, leaf[1] * 1.4, leaf[2])),
                        )
                    ],
                    x + side * 0.3,
                    z + length / 2,
                    0.0,
                )
            elif kind == 2:  # fence
                h = rng.uniform(0.9, 2.0)
                add(
                    FENCE,
                    [
                        Part(
                            "box",
                            (0, h / 2, 0),
                            (0.03, h / 2, length / 2),
                            FENCE,
                            Material("fence", _rgb(rng, 0.2, 0.6, 0.1), param=rng.uniform(0.12, 0.3)),
                        )
                    ],
                    x,
                    z + length / 2,
                    0.0,
                )
            elif kind == 3:  # wall
                h = rng.uniform(0.6, 2.0)
                add(
                    WALL,
                    [
                        Part(
                            "box",
                            (0, h / 2, 0),
                            (0.15, h / 2, length / 2),
                            WALL,
                            Material("wall", _rgb(rng, 0.35, 0.7, 0.08)),
                        )
                    ],
                    x + side * 0.15,
                    z + length / 2,
                    0.0,
                )
            z += length + rng.uniform(3, 30)
    scene.actors = actors
