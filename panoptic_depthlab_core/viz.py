"""Images for people: distance-coloured overlay, depth colour image, panoptic colour image.

All functions take numpy arrays (RGB uint8 image, int panoptic ids, float depth in metres) and
return new RGB uint8 images of the same size. Colouring is vectorised: a compact per-pixel segment
index map indexes small per-segment colour/alpha tables, outlines come from one neighbour
comparison on that map, and only the text labels are drawn per segment (cv2, small regions).
The colour scale follows the seed's figures: ``jet`` at t = 1 - (d - near) / (far - near), so near
is red, the middle green and far blue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from panoptic_depthlab_core.metadata import LABEL_DIVISOR, PALETTE
from panoptic_depthlab_core.results import NearestUpsampling, Segment

_NO_DEPTH_RGB = np.array([160, 160, 160], np.uint8)  # things without a valid distance
_JET_RANGE = (0.15, 0.9)  # part of jet used: blue .. red (the seed used 0.15 .. 1.0, a dark red)


@dataclass
class VizConfig:
    """Overlay appearance; distances outside [near_m, far_m] take the end colours."""

    near_m: float = 10.0
    far_m: float = 60.0
    thing_alpha: float = 0.6
    stuff_alpha: float = 0.4
    outline_px: int = 2  # 0: no outlines
    outline_stuff: bool = False
    label_things: bool = True
    label_stuff: bool = False
    min_label_area: int = 100  # pixels; smaller segments get no text
    legend: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.near_m) and math.isfinite(self.far_m) and self.near_m < self.far_m):
            raise ValueError(f"need finite near_m < far_m, got near_m={self.near_m}, far_m={self.far_m}")
        for name in ("thing_alpha", "stuff_alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.outline_px < 0:
            raise ValueError(f"outline_px must be >= 0, got {self.outline_px}")


# ----------------------------------------------------------------------------------------------
# colour scales


def _jet(t: np.ndarray) -> np.ndarray:
    """Matplotlib-like jet, t in [0, 1] -> float RGB in [0, 1]."""
    t = t[..., None] * 4.0
    return np.clip(1.5 - np.abs(t - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)


def distance_to_rgb(distance_m, near_m: float = 10.0, far_m: float = 60.0) -> np.ndarray:
    """Distances (any shape) -> uint8 RGB [..., 3]: near red, mid green, far blue, NaN grey."""
    d = np.asarray(distance_m, dtype=np.float64)
    t = 1.0 - np.clip((d - near_m) / (far_m - near_m), 0.0, 1.0)
    lo, hi = _JET_RANGE
    rgb = np.round(_jet(np.nan_to_num(lo + (hi - lo) * t)) * 255).astype(np.uint8)
    rgb[~np.isfinite(d)] = _NO_DEPTH_RGB
    return rgb


def _font_scale(h: int) -> float:
    return max(0.35, 0.55 * h / 720)


def _put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    """White text with a dark outline, kept inside the image."""
    thickness = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(min(max(org[0], 1), img.shape[1] - tw - 1))
    y = int(min(max(org[1], th + 1), img.shape[0] - base - 1))
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _nice_step(span: float, max_ticks: int = 6) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000):
        if span / step <= max_ticks - 1:
            return float(step)
    return span / (max_ticks - 1)


def _draw_colour_bar(
    img: np.ndarray, low_m: float, high_m: float, colour_fn, ticks: Sequence[float], title: str
) -> None:
    """A horizontal colour bar with metre ticks at the bottom-left corner (in place)."""
    h, w = img.shape[:2]
    scale = _font_scale(h) * 0.8
    bar_w = max(60, min(w - 20, int(w * 0.28)))
    bar_h = max(6, int(h * 0.018))
    text_h = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1]
    pad = max(4, bar_h // 2)
    box_h = bar_h + 2 * text_h + 4 * pad
    x0, y0 = pad, h - box_h - pad
    if y0 < 0 or bar_w < 20:
        return  # image too small for a legend
    roi = img[y0 : y0 + box_h, x0 : x0 + bar_w + 2 * pad]
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken the background box
    values = np.linspace(low_m, high_m, bar_w)
    bar_y = y0 + pad + text_h + pad
    img[bar_y : bar_y + bar_h, x0 + pad : x0 + pad + bar_w] = colour_fn(values)[None]
    _put_text(img, title, (x0 + pad, y0 + pad + text_h), scale)
    for v in ticks:
        tx = x0 + pad + int(round((v - low_m) / (high_m - low_m) * (bar_w - 1)))
        cv2.line(img, (tx, bar_y + bar_h), (tx, bar_y + bar_h + pad // 2 + 1), (255, 255, 255), 1)
        label = f"{v:g}"
        tw = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        _put_text(img, label, (tx - tw // 2, bar_y + bar_h + pad + text_h), scale)


# ----------------------------------------------------------------------------------------------
# input checks and the compact segment index


def _check_image(image_rgb) -> np.ndarray:
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"image must be a uint8 numpy array, got {getattr(image_rgb, 'dtype', type(image_rgb))}"
        )
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be RGB [H,W,3], got shape {image_rgb.shape}")
    return image_rgb


def _check_ids(panoptic_ids, shape: tuple[int, int] | None = None) -> np.ndarray:
    if not isinstance(panoptic_ids, np.ndarray) or not np.issubdtype(panoptic_ids.dtype, np.integer):
        raise ValueError(
            "panoptic_ids must be an integer numpy array, "
            f"got {getattr(panoptic_ids, 'dtype', type(panoptic_ids))}"
        )
    if panoptic_ids.ndim != 2:
        raise ValueError(f"panoptic_ids must be [H,W], got shape {panoptic_ids.shape}")
    if shape is not None and panoptic_ids.shape != shape:
        raise ValueError(f"panoptic_ids shape {panoptic_ids.shape} does not match the image {shape}")
    return panoptic_ids


def _index_map(panoptic_ids: np.ndarray, seg_ids: np.ndarray, dtype: type = np.int32) -> np.ndarray:
    """Per pixel, the position of its id in ``seg_ids`` (sorted unique), or len(seg_ids) if absent."""
    s = seg_ids.size
    if s == 0:
        return np.zeros(panoptic_ids.shape, dtype)
    lo, hi = int(seg_ids[0]), int(seg_ids[-1])
    ids = panoptic_ids if panoptic_ids.dtype.kind == "i" else panoptic_ids.astype(np.int64)
    limits = np.iinfo(ids.dtype)
    if hi - lo < (1 << 24) and limits.min < lo and hi < limits.max:
        span = hi - lo
        lut = np.full(span + 2, s, dtype)  # the last entry (also reached as -1): out of range
        lut[seg_ids - lo] = np.arange(s, dtype=dtype)
        rel = np.clip(ids, lo - 1, hi + 1)  # in the ids' own dtype: no overflow below
        rel -= ids.dtype.type(lo)  # now -1 .. span + 1
        return np.take(lut, rel)
    pos = np.clip(np.searchsorted(seg_ids, panoptic_ids), 0, s - 1)
    return np.where(seg_ids[pos] == panoptic_ids, pos, s).astype(dtype)


def _boundaries(index: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels whose 4-neighbour belongs to another segment, grown to ``thickness`` px."""
    edge = np.zeros(index.shape, bool)
    dx = index[:, 1:] != index[:, :-1]
    dy = index[1:, :] != index[:-1, :]
    edge[:, 1:] |= dx
    edge[1:, :] |= dy
    if thickness >= 2:  # both sides of each boundary
        edge[:, :-1] |= dx
        edge[:-1, :] |= dy
    if thickness > 2:
        k = thickness - 1
        edge = cv2.dilate(edge.view(np.uint8), np.ones((k, k), np.uint8)).view(bool)
    return edge


def _blend(image: np.ndarray, colour: np.ndarray, alpha256: np.ndarray) -> np.ndarray:
    """image * (1 - a) + colour * a with a per-pixel alpha in 0..256, in uint16 arithmetic."""
    a = alpha256[..., None]
    out = image.astype(np.uint16) * (256 - a) + colour.astype(np.uint16) * a + 128
    return (out >> 8).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# the distance overlay: one call, or in two steps around the segment statistics


def _segment_luts(
    class_ids: np.ndarray, is_thing: np.ndarray, thing_rgb: np.ndarray, cfg: VizConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-segment colour, alpha (0..256), outlined flag and outline colour, plus a last slot
    (alpha 0) for pixels of no listed segment. Things take ``thing_rgb`` (n, 3), stuff the palette."""
    palette = np.vstack([PALETTE, np.zeros((1, 3), np.uint8)])
    cls = np.where((class_ids >= 0) & (class_ids < len(PALETTE)), class_ids, len(PALETTE))
    thing = np.r_[is_thing, False]
    colour = np.where(thing[:, None], np.vstack([thing_rgb, np.zeros((1, 3), np.uint8)]),
                      palette[np.r_[cls, 0]]).astype(np.uint8)  # fmt: skip
    alpha = np.where(thing, round(cfg.thing_alpha * 256), round(cfg.stuff_alpha * 256)).astype(np.uint16)
    alpha[-1] = 0  # pixels of no listed segment stay as they are
    outlined = thing if not cfg.outline_stuff else np.r_[np.ones(is_thing.size, bool), False]
    return colour, alpha, outlined, _outline_colour(colour)


def _outline_colour(rgb: np.ndarray) -> np.ndarray:
    """Outlines are their fill colour brightened: a third of the way towards white."""
    return (255 - (255 - rgb.astype(np.uint16)) // 3).astype(np.uint8)


def overlay_distance(
    image_rgb: np.ndarray,
    panoptic_ids: np.ndarray | None,
    segments: Sequence[Segment],
    cfg: VizConfig | None = None,
    bgr: bool = False,
    upsampling: NearestUpsampling | None = None,
) -> np.ndarray:
    """The seed's distance figure: things tinted by distance with outlines and "car 12.3 m" labels,
    stuff in the Cityscapes palette, void untouched, a metre legend in the corner.

    ``bgr``: return the figure in BGR channel order (what a bgr8 message carries) without another
    full-image copy. ``upsampling`` (``FrameResult.upsampling``): ``panoptic_ids`` is that
    network map upsampled, so each pixel's segment is looked up on the network map and the result
    upsampled — the same figure from fewer lookups; ``panoptic_ids`` may then be None (not made)."""
    cfg = cfg or VizConfig()
    image = _check_image(image_rgb)
    if panoptic_ids is None and upsampling is None:
        raise ValueError("overlay_distance needs panoptic_ids or the upsampling that makes them")
    ids_hw = image.shape[:2]
    if panoptic_ids is not None:
        _check_ids(panoptic_ids, ids_hw)
    segs = sorted(segments, key=lambda s: s.id)
    seg_ids = np.array([s.id for s in segs], np.int64)
    if len(np.unique(seg_ids)) != len(seg_ids):
        raise ValueError("segments contain duplicate ids")
    n = len(segs)
    is_thing = np.array([s.is_thing for s in segs], bool)
    class_ids = np.array([s.class_id for s in segs], np.int64)
    thing_rgb = distance_to_rgb(np.array([s.distance_m for s in segs]), cfg.near_m, cfg.far_m)
    colour_lut, alpha_lut, outlined, edge_lut = _segment_luts(class_ids, is_thing, thing_rgb, cfg)
    if bgr:
        colour_lut, edge_lut = colour_lut[:, ::-1], edge_lut[:, ::-1]
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    small = 2 * (n + 1) <= 256
    index_dtype = np.uint8 if small else np.int32
    if upsampling is not None:
        if (upsampling.rows.size, upsampling.cols.size) != ids_hw:
            raise ValueError(
                f"upsampling maps to {upsampling.rows.size}x{upsampling.cols.size}, "
                f"but the image (and panoptic_ids) is {ids_hw[0]}x{ids_hw[1]}"
            )
        index = upsampling.upsample(_index_map(upsampling.panoptic_ids, seg_ids, index_dtype))
    else:
        index = _index_map(panoptic_ids, seg_ids, index_dtype)
    if small:
        _mark_outlines(index, n, outlined, cfg.outline_px)
        lut_inv, lut_add = _composite_luts(colour_lut, alpha_lut, edge_lut)
        out16 = _composite(image, index, lut_inv, lut_add)
        np.right_shift(out16, 8, out=out16)
        out = out16.astype(np.uint8)
    else:  # more segments than a uint8 index holds: the general (slower) path
        out = _blend(image, colour_lut[index], alpha_lut[index])
        if cfg.outline_px > 0 and n:
            edge_index = np.where(outlined[index], index, -1)
            edge = _boundaries(edge_index, cfg.outline_px) & outlined[index]
            out[edge] = edge_lut[index[edge]]
    _annotate(out, segs, cfg, bgr)
    return out


def _annotate(out: np.ndarray, segs: Sequence[Segment], cfg: VizConfig, bgr: bool) -> None:
    """The "car 12.3 m" labels and the metre legend, drawn in place."""
    scale = _font_scale(out.shape[0])
    for seg in segs:
        wanted = cfg.label_things if seg.is_thing else cfg.label_stuff
        if not wanted or seg.area < cfg.min_label_area:
            continue
        text = f"{seg.class_name} {seg.distance_m:.1f} m" if math.isfinite(seg.distance_m) else seg.class_name
        tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        cx, cy = seg.centroid_xy
        _put_text(out, text, (int(cx) - tw // 2, int(cy)), scale)

    if cfg.legend:
        ticks = (cfg.near_m, (cfg.near_m + cfg.far_m) / 2, cfg.far_m)
        order = slice(None, None, -1) if bgr else slice(None)
        _draw_colour_bar(
            out,
            cfg.near_m,
            cfg.far_m,
            lambda v: distance_to_rgb(v, cfg.near_m, cfg.far_m)[..., order],
            [round(t, 1) for t in ticks],
            "distance [m]",
        )


def _mark_outlines(index: np.ndarray, n: int, outlined: np.ndarray, outline_px: int) -> None:
    """Move the outline pixels of outlined segments (uint8 slots 0..n) to slots n+1.., in place."""
    if outline_px <= 0 or n == 0:
        return
    k = n + 1
    outlined_u8 = np.zeros(256, np.uint8)
    outlined_u8[:k] = outlined
    on_outlined = cv2.LUT(index, outlined_u8).view(bool)
    edge_index = np.where(on_outlined, index, np.uint8(255))
    edge = _boundaries(edge_index, outline_px) & on_outlined
    np.add(index, np.uint8(k), out=index, where=edge)


def _composite_luts(
    colour_lut: np.ndarray, alpha_lut: np.ndarray, edge_lut: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tables for ``_composite``: slots 0..n fill (alpha blend), n+1.. outline (opaque)."""
    k = alpha_lut.size
    lut_inv = np.zeros(256, np.uint16)
    lut_add = np.zeros((256, 3), np.uint16)
    lut_inv[:k] = 256 - alpha_lut
    lut_add[:k] = colour_lut.astype(np.uint16) * alpha_lut[:, None] + 128
    lut_add[k : 2 * k] = edge_lut.astype(np.uint16) * 256 + 128
    return lut_inv, lut_add


def _composite(image: np.ndarray, index: np.ndarray, lut_inv: np.ndarray, lut_add: np.ndarray) -> np.ndarray:
    """image * (256 - a) + colour * a + 128 per pixel (uint16, not yet shifted), by OpenCV lookups.

    Same integer arithmetic as :func:`_blend`; outline slots have a = 256, so one lookup per pixel
    yields fill or outline; table lookups are several times faster than per-pixel numpy gathers."""
    index3 = cv2.merge([index, index, index])
    inv = cv2.LUT(index3, lut_inv.reshape(256, 1, 1).repeat(3, axis=2))
    add = cv2.LUT(index3, lut_add.reshape(256, 1, 3))
    return cv2.add(cv2.multiply(image.astype(np.uint16), inv), add)


def colorize_depth(
    depth_m: np.ndarray, min_m: float = 0.0, max_m: float = 80.0, scale_bar: bool = True
) -> np.ndarray:
    """Depth [H,W] metres -> RGB: near red .. far blue over [min_m, max_m], invalid (NaN, <= 0) black,
    with a metre scale bar."""
    if (
        not isinstance(depth_m, np.ndarray)
        or not np.issubdtype(depth_m.dtype, np.floating)
        or depth_m.ndim != 2
    ):
        raise ValueError(
            f"depth_m must be a float numpy array [H,W], got {getattr(depth_m, 'dtype', type(depth_m))} "
            f"{getattr(depth_m, 'shape', '')}"
        )
    if not (math.isfinite(min_m) and math.isfinite(max_m) and min_m < max_m):
        raise ValueError(f"need finite min_m < max_m, got {min_m}, {max_m}")
    # A 1024-entry table instead of jet per pixel: one quantisation + one lookup at 1080p.
    table = distance_to_rgb(np.linspace(min_m, max_m, 1024), min_m, max_m)
    with np.errstate(invalid="ignore", over="ignore"):
        valid = np.isfinite(depth_m) & (depth_m > 0)
        q = np.clip((np.where(valid, depth_m, min_m) - min_m) * (1023.0 / (max_m - min_m)), 0, 1023)
    out = table[q.astype(np.int32)]
    out[~valid] = 0
    if scale_bar:
        step = _nice_step(max_m - min_m)
        first = math.ceil(min_m / step) * step
        ticks = [first + i * step for i in range(int((max_m - first) // step) + 1)]
        _draw_colour_bar(out, min_m, max_m, lambda v: distance_to_rgb(v, min_m, max_m), ticks, "depth [m]")
    return out


def colorize_panoptic(panoptic_ids: np.ndarray, label_divisor: int = LABEL_DIVISOR) -> np.ndarray:
    """Panoptic ids [H,W] -> RGB: Cityscapes palette per class, thing instances shifted apart by a
    fixed per-instance colour offset, void (negative ids, unknown classes) black."""
    ids = _check_ids(panoptic_ids)
    seg_ids = np.unique(ids)
    seg_ids = seg_ids[seg_ids >= 0]
    cls = seg_ids // label_divisor
    inst = seg_ids % label_divisor
    known = cls < len(PALETTE)
    base = np.zeros((seg_ids.size + 1, 3), np.int16)
    base[:-1][known] = PALETTE[cls[known]]
    # Deterministic per-instance shifts of 20..100 per channel, towards the middle of the range so
    # they never clip away; instance 0 (stuff) keeps the palette colour.
    shift = 20 + (inst[:, None] * np.array([53, 97, 193])) % 81
    shift[inst == 0] = 0
    base[:-1] += np.where(base[:-1] < 128, shift, -shift).astype(np.int16)
    lut = np.clip(base, 0, 255).astype(np.uint8)
    lut[:-1][~known] = 0
    return lut[_index_map(ids, seg_ids.astype(np.int64))]
