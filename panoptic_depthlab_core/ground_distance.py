"""Distance without a trained depth decoder: where a thing touches a flat road, seen by a pinhole camera.

A camera at height h above the road, pitched down by theta, sees a road pixel in row v at the angle
beta = theta + atan((v - c_y) / f_y) below the horizontal; that point's depth along the optical axis
is z = h * cos(beta - theta) / sin(beta) (valid below the horizon, beta > 0). A thing's ground
contact is the bottom of its mask: the lowest mask pixel of every column, aggregated by a high
quantile (a car's tyres, a pedestrian's feet — not the body's underside between them). A contact
cut by the image's bottom border, or whose columns end on another object (the bottom is hidden),
gives a too-far distance: it is marked unreliable.

Everything runs on the id map the segments were computed from — the network's map when the result
was upsampled (``FrameResult.upsampling``), with rows and columns mapped back to input pixels — so
the cost is a few vectorised passes over ~0.1 Mpixel, whatever the camera resolution.

Sources (``Segment.distance_source``): "depth" (decoder only), "ground" (no trained decoder, see
:func:`depth_decoder_trained`), "fused" (both, inverse-variance weighted). :class:`DepthGroundAgreement`
watches the two over a window and reports a persistent disagreement (a depth-decoder health warning).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import ConfigError
from .metadata import LABEL_DIVISOR, THING_TRAIN_IDS
from .results import FrameResult, Segment

MAX_CAMERA_HEIGHT_M = 10.0
MAX_PITCH_RAD = math.radians(45.0)


class CameraMountError(ConfigError):
    """The camera's height or pitch above the road is missing or absurd; the message says which."""


@dataclass(frozen=True)
class CameraMount:
    """The camera above a flat road: height of the optical centre (m) and pitch (rad, > 0 looks down,
    as the synthetic world's and Cityscapes' ``extrinsic.pitch``)."""

    height_m: float
    pitch_rad: float = 0.0

    def __post_init__(self) -> None:
        h, p = self.height_m, self.pitch_rad
        if h is None:
            raise CameraMountError("camera height above the road is missing (camera_height_m)")
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h):
            raise CameraMountError(f"camera height above the road must be a finite number of metres, got {h!r}")
        if not 0.0 < h <= MAX_CAMERA_HEIGHT_M:
            raise CameraMountError(
                f"camera height above the road must be in (0, {MAX_CAMERA_HEIGHT_M:g}] m, got {h!r} m"
            )
        if p is None:
            raise CameraMountError("camera pitch is missing (camera_pitch_rad; 0 = optical axis level)")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
            raise CameraMountError(f"camera pitch must be a finite number of radians, got {p!r}")
        if abs(p) > MAX_PITCH_RAD:
            raise CameraMountError(
                f"camera pitch must be within +-45 deg (+-{MAX_PITCH_RAD:.4f} rad), got {p!r} rad "
                f"({math.degrees(p):.1f} deg): degrees given as radians?"
            )

    @classmethod
    def from_cityscapes_json(cls, camera: Mapping) -> CameraMount:
        """From a Cityscapes ``camera/*_camera.json`` mapping (``extrinsic.z`` ~ height, ``.pitch``)."""
        try:
            ext = camera["extrinsic"]
            return cls(height_m=float(ext["z"]), pitch_rad=float(ext["pitch"]))
        except (KeyError, TypeError) as exc:
            raise CameraMountError(f"camera JSON has no extrinsic z/pitch: {exc}") from exc


@dataclass
class GroundDistanceConfig:
    """How ground contacts are found and how they are combined with the depth decoder."""

    contact_quantile: float = 0.9  # of the column bottoms (0.5: median column; 1: lowest pixel)
    contact_band_px: float = 6.0  # columns ending within this of the contact row form the contact
    occluded_fraction: float = 0.4  # more contact columns than this ending on another thing/void/border: unreliable
    # Column bottoms this close to the image's bottom edge (fraction of its height) count as cut by the
    # border: predicted masks bleed a few rows down at the frame's edge, and a contact there reads metres
    # too near while looking like a clean one.
    border_margin_fraction: float = 0.02
    min_elevation_rad: float = 0.002  # contacts closer to the horizon than this have no distance
    max_distance_m: float = 150.0  # farther contacts are kept but unreliable
    depth_relative_std: float = 0.1  # the decoder's 1-sigma error (fraction of the distance), for fusion
    contact_row_std_px: float = 1.5  # the contact row's 1-sigma error (input pixels), for fusion
    # A contact whose columns mostly end on sidewalk stands on the kerb, this much above the road
    # (Cityscapes' kerbs: ~0.1-0.15 m); 0 treats sidewalks as road.
    sidewalk_height_m: float = 0.12
    sidewalk_train_id: int = 1
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS
    label_divisor: int = LABEL_DIVISOR

    def __post_init__(self) -> None:
        if not 0.0 <= self.contact_quantile <= 1.0:
            raise ConfigError(f"contact_quantile must be in [0, 1], got {self.contact_quantile}")
        if not 0.0 <= self.occluded_fraction <= 1.0:
            raise ConfigError(f"occluded_fraction must be in [0, 1], got {self.occluded_fraction}")
        if not 0.0 <= self.border_margin_fraction < 0.5:
            raise ConfigError(f"border_margin_fraction must be in [0, 0.5), got {self.border_margin_fraction}")
        if not 0.0 <= self.sidewalk_height_m < 1.0:
            raise ConfigError(f"sidewalk_height_m must be in [0, 1) m, got {self.sidewalk_height_m}")
        for name in ("contact_band_px", "max_distance_m", "depth_relative_std", "contact_row_std_px"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_elevation_rad < 0.5:
            raise ConfigError(f"min_elevation_rad must be in [0, 0.5), got {self.min_elevation_rad}")
        self.thing_ids = tuple(int(t) for t in self.thing_ids)


@dataclass(frozen=True)
class GroundContact:
    """One thing's ground contact (input pixels) and what the flat road says about its distance."""

    segment_id: int
    u_px: float  # column of the contact (mean of the contact columns)
    v_px: float  # row of the contact: bottom edge of the mask
    distance_m: float  # z depth along the optical axis; NaN at/above the horizon
    position_xyz_m: tuple[float, float, float] | None  # contact point, camera optical frame
    reliable: bool
    reason: str  # "" when reliable; else image_border | near_border | occluded | above_horizon | too_far
    columns: int  # mask columns at the contact
    depth_distance_m: float = math.nan  # the depth decoder's distance of the segment (filled by apply)


def ground_depth(v_px: np.ndarray | float, K: np.ndarray, mount: CameraMount) -> np.ndarray:
    """z depth (m) of the road point in image row ``v_px``; NaN at or above the horizon."""
    fy, cy = float(K[1, 1]), float(K[1, 2])
    beta = mount.pitch_rad + np.arctan((np.asarray(v_px, dtype=np.float64) - cy) / fy)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = mount.height_m * np.cos(beta - mount.pitch_rad) / np.sin(beta)
    return np.where(beta > 0, z, np.nan)


def ground_depth_std(z: np.ndarray | float, K: np.ndarray, mount: CameraMount, row_std_px: float) -> np.ndarray:
    """1-sigma of the ground depth for a contact-row error of ``row_std_px`` (dz/dv ~ z^2 / (h f_y))."""
    z = np.asarray(z, dtype=np.float64)
    return z * z * row_std_px / (mount.height_m * float(K[1, 1]))


def _input_coordinates(rows: np.ndarray | None, cols: np.ndarray | None, h: int, w: int):
    """Bottom edge (input rows) of each map row and centre (input columns) of each map column."""
    if rows is None:
        bottom = np.arange(h, dtype=np.float64) + 0.5
        input_h = h
    else:
        rows = np.asarray(rows)
        last = np.searchsorted(rows, np.arange(h), side="right") - 1
        bottom = last.astype(np.float64) + 0.5
        input_h = rows.size
    if cols is None:
        centre = np.arange(w, dtype=np.float64)
    else:
        cols = np.asarray(cols)
        first = np.searchsorted(cols, np.arange(w), side="left")
        last = np.searchsorted(cols, np.arange(w), side="right") - 1
        centre = (first + last) / 2.0
    return bottom, centre, input_h


def ground_contacts(
    panoptic_ids: np.ndarray,
    K: np.ndarray | None,
    mount: CameraMount,
    cfg: GroundDistanceConfig | None = None,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> dict[int, GroundContact]:
    """Ground contact of every thing in ``panoptic_ids`` (any resolution; ``rows``/``cols`` map input
    rows/columns to map rows/columns, as ``NearestUpsampling``). Without K: no contacts."""
    cfg = cfg or GroundDistanceConfig()
    if K is None:
        return {}
    ids = np.asarray(panoptic_ids)
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"panoptic_ids must be a non-empty 2-D map, got shape {ids.shape}")
    h, w = ids.shape
    div = cfg.label_divisor
    thing_lut = np.zeros(max(max(cfg.thing_ids, default=0) + 2, 64), dtype=bool)
    thing_lut[list(cfg.thing_ids)] = True
    cls = np.where(ids >= 0, ids // div, thing_lut.size - 1)
    cls = np.minimum(cls, thing_lut.size - 1)
    is_thing = thing_lut[cls] & (ids % div != 0) & (ids >= 0)
    # bottom pixels: a thing pixel whose lower neighbour is something else (or the last row)
    bottom = np.zeros((h, w), dtype=bool)
    bottom[:-1] = is_thing[:-1] & (ids[:-1] != ids[1:])
    bottom[-1] = is_thing[-1]
    r, c = np.nonzero(bottom)
    if r.size == 0:
        return {}
    seg_ids, seg = np.unique(ids[r, c], return_inverse=True)
    key = seg.astype(np.int64) * w + c
    order = np.lexsort((r, key))  # by (segment, column), rows ascending: the last per group is the lowest
    key, r, c, seg = key[order], r[order], c[order], seg[order]
    last = np.r_[key[1:] != key[:-1], True]
    r, c, seg = r[last], c[last], seg[last]
    below = np.full(r.shape, -2, dtype=np.int64)  # -2: the image border
    inside = r < h - 1
    below[inside] = ids[r[inside] + 1, c[inside]]
    below_cls = np.where(below >= 0, np.minimum(below // div, thing_lut.size - 1), thing_lut.size - 1)
    hidden = (below == -1) | ((below >= 0) & thing_lut[below_cls] & (below % div != 0))
    at_border = below == -2
    near_border = at_border | (r >= h - 1 - math.ceil(cfg.border_margin_fraction * h))
    on_sidewalk = (below >= 0) & (below_cls == cfg.sidewalk_train_id) & (below % div == 0)
    v_bottom, u_centre, _ = _input_coordinates(rows, cols, h, w)
    v = v_bottom[r]
    u = u_centre[c]
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])

    # per segment, vectorised: the contact row is a quantile of the column bottoms (numpy's linear
    # interpolation), the contact columns those ending within contact_band_px of it
    n_seg = seg_ids.size
    order = np.lexsort((v, seg))
    seg, v, u = seg[order], v[order], u[order]
    at_border, near_border = at_border[order], near_border[order]
    hidden, on_sidewalk = hidden[order], on_sidewalk[order]
    count = np.bincount(seg, minlength=n_seg)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    pos = cfg.contact_quantile * (count - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count - 1)
    v_contact = v[start + lo] + (pos - lo) * (v[start + hi] - v[start + lo])
    band = v >= v_contact[seg] - cfg.contact_band_px
    n_band = np.bincount(seg, weights=band, minlength=n_seg)
    u_contact = np.bincount(seg, weights=band * u, minlength=n_seg) / n_band
    frac_border = np.bincount(seg, weights=band & at_border, minlength=n_seg) / n_band
    frac_near_border = np.bincount(seg, weights=band & near_border, minlength=n_seg) / n_band
    frac_hidden = np.bincount(seg, weights=band & hidden, minlength=n_seg) / n_band
    frac_sidewalk = np.bincount(seg, weights=band & on_sidewalk, minlength=n_seg) / n_band
    height = np.full(n_seg, mount.height_m)
    if cfg.sidewalk_height_m > 0:
        height = np.where(frac_sidewalk > 0.5, max(mount.height_m - cfg.sidewalk_height_m, 0.01), height)
    beta = mount.pitch_rad + np.arctan((v_contact - cy) / fy)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = height * np.cos(beta - mount.pitch_rad) / np.sin(beta)
    valid = (beta > cfg.min_elevation_rad) & np.isfinite(z)
    z = np.where(valid, z, np.nan)
    contacts: dict[int, GroundContact] = {}
    for i, sid in enumerate(seg_ids.tolist()):
        if frac_border[i] > cfg.occluded_fraction:
            reason = "image_border"
        elif frac_hidden[i] > cfg.occluded_fraction:
            reason = "occluded"
        elif not valid[i]:
            reason = "above_horizon"
        elif z[i] > cfg.max_distance_m:
            reason = "too_far"
        elif frac_near_border[i] > cfg.occluded_fraction:  # after the geometry: z is finite here
            reason = "near_border"
        else:
            reason = ""
        zi, ui, vi = float(z[i]), float(u_contact[i]), float(v_contact[i])
        position = ((ui - cx) / fx * zi, (vi - cy) / fy * zi, zi) if valid[i] else None
        contacts[int(sid)] = GroundContact(int(sid), ui, vi, zi, position, reason == "", reason, int(n_band[i]))
    return contacts


def contacts_for_result(result: FrameResult, mount: CameraMount,
                        cfg: GroundDistanceConfig | None = None) -> dict[int, GroundContact]:
    """Ground contacts of a predicted frame, on the network's id map when it was upsampled."""
    if result.upsampling is not None:
        up = result.upsampling
        return ground_contacts(up.panoptic_ids, result.K, mount, cfg, up.rows, up.cols)
    if result.panoptic_ids is None:
        raise ValueError("the result has neither an id map nor its upsampling")
    return ground_contacts(result.panoptic_ids, result.K, mount, cfg)


def apply_ground_distance(
    result: FrameResult,
    mount: CameraMount,
    depth_trained: bool,
    cfg: GroundDistanceConfig | None = None,
) -> dict[int, GroundContact]:
    """Set every thing segment's distance, 3D position, ``distance_source`` and ``distance_reliable``
    (``result.segments`` is replaced by updated copies); returns the contacts by segment id.

    - ``depth_trained`` False (no trained depth decoder): the ground distance ("ground"); a segment
      without a contact (no K, above the horizon) gets NaN distance and no position.
    - ``depth_trained`` True: "fused" where a reliable contact and a depth distance both exist
      (inverse-variance weighted), else the decoder's ("depth").
    Stuff segments are left as they are."""
    cfg = cfg or GroundDistanceConfig()
    contacts = contacts_for_result(result, mount, cfg) if result.K is not None else {}
    K = result.K
    segments: list[Segment] = []
    for seg in result.segments:
        if not seg.is_thing:
            segments.append(seg)
            continue
        contact = contacts.get(seg.id)
        depth_d = seg.distance_m
        if contact is not None:
            contacts[seg.id] = contact = replace(contact, depth_distance_m=depth_d)
        if not depth_trained:
            if contact is None or not math.isfinite(contact.distance_m):
                segments.append(replace(seg, distance_m=math.nan, position_xyz_m=None, distance_source="ground",
                                        distance_reliable=False))
            else:
                segments.append(replace(seg, distance_m=contact.distance_m, position_xyz_m=contact.position_xyz_m,
                                        distance_source="ground", distance_reliable=contact.reliable))
            continue
        # A near-border contact is doubtful alone (ground only: unreliable) but still informs a fusion
        # (weighted like any contact: near the bottom the ground distance's variance is small, so it
        # dominates); dropping it makes the published position jump between "fused" and "depth" as a
        # mask's bottom grazes the margin. Its distance is finite: ground_contacts marks geometry first.
        usable = contact is not None and (contact.reliable or contact.reason == "near_border")
        if not usable or not math.isfinite(depth_d) or K is None:
            segments.append(seg)
            continue
        g = contact.distance_m
        var_d = (cfg.depth_relative_std * depth_d) ** 2
        var_g = float(ground_depth_std(g, K, mount, cfg.contact_row_std_px)) ** 2
        fused = (depth_d / var_d + g / var_g) / (1.0 / var_d + 1.0 / var_g)
        position = seg.position_xyz_m
        if position is not None and depth_d > 0:
            position = tuple(float(p * fused / depth_d) for p in position)
        segments.append(replace(seg, distance_m=float(fused), position_xyz_m=position, distance_source="fused"))
    result.segments = segments
    return contacts


def depth_decoder_trained(weights: str | Path) -> bool:
    """Whether the weights' depth decoder was trained. False when the sidecar JSON (``<weights>.json``,
    written by ``convert-d2``) says ``depth_decoder_trained: false`` or ``depth_head: fresh_init``,
    or the safetensors metadata says ``depth_decoder_trained: false``; True otherwise (our own
    trained weights carry the decoder they were trained with)."""
    path = Path(weights)
    sidecar = Path(str(path) + ".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            if str(data.get("depth_decoder_trained", "")).lower() == "false" or data.get("depth_head") == "fresh_init":
                return False
    if path.is_file():
        try:
            with path.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)) if 0 < n < 100_000_000 else {}
        except (OSError, ValueError):
            header = {}
        meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
        if str(meta.get("depth_decoder_trained", "")).lower() == "false":
            return False
    return True


@dataclass(frozen=True)
class AgreementStatus:
    """The depth decoder vs the ground over the window: ``healthy`` None until enough samples."""

    healthy: bool | None
    median_ratio: float  # depth / ground distance; NaN without samples
    samples: int
    frames: int
    message: str


class DepthGroundAgreement:
    """Persistent disagreement between the depth decoder and the ground distance (a health warning).

    Each frame adds the ratio depth/ground of every thing with a reliable contact closer than
    ``max_range_m``; the status is unhealthy when, over the last ``window_frames`` frames with at
    least ``min_samples`` ratios, the median ratio lies outside ``[low, high]``."""

    def __init__(self, window_frames: int = 30, low: float = 0.8, high: float = 1.25, min_samples: int = 20,
                 max_range_m: float = 40.0) -> None:
        if window_frames < 1 or min_samples < 1:
            raise ValueError("window_frames and min_samples must be >= 1")
        if not 0 < low < 1 < high:
            raise ValueError(f"need 0 < low < 1 < high, got low={low}, high={high}")
        self.low, self.high, self.min_samples, self.max_range_m = low, high, min_samples, max_range_m
        self._frames: deque[np.ndarray] = deque(maxlen=window_frames)

    def update(self, contacts: Mapping[int, GroundContact]) -> AgreementStatus:
        ratios = [c.depth_distance_m / c.distance_m for c in contacts.values()
                  if c.reliable and math.isfinite(c.depth_distance_m) and math.isfinite(c.distance_m)
                  and 0 < c.distance_m <= self.max_range_m and c.depth_distance_m > 0]
        self._frames.append(np.asarray(ratios, dtype=np.float64))
        return self.status()

    def reset(self) -> None:
        self._frames.clear()

    def status(self) -> AgreementStatus:
        values = np.concatenate(list(self._frames)) if self._frames else np.zeros(0)
        n = int(values.size)
        if n < self.min_samples:
            return AgreementStatus(None, float(np.median(values)) if n else math.nan, n, len(self._frames),
                                   f"{n} depth/ground samples, need {self.min_samples}")
        median = float(np.median(values))
        healthy = self.low <= median <= self.high
        message = (f"depth decoder agrees with the ground plane (median depth/ground {median:.2f})" if healthy else
                   f"depth decoder disagrees with the ground plane: median depth/ground {median:.2f} outside "
                   f"[{self.low}, {self.high}] over {len(self._frames)} frames ({n} things)")
        return AgreementStatus(healthy, median, n, len(self._frames), message)
