"""Panoptic-DeepLab post-processing: centers -> instances -> panoptic ids, as tensor operations.

The results are identical to detectron2's ``projects/Panoptic-DeepLab/panoptic_deeplab/post_processing.py``
(same thresholding, NMS, top-k rule, nearest-center grouping with the float32 distances its
``torch.norm`` computes (see ``center_distances``) and first-index ``argmin``, ``torch.mode``
majority vote with its smallest-value tie-break, per-class numbering in increasing instance id
order, stuff area filter), but without its Python loops over instances and classes: votes,
numbering and stuff areas come from bincounts and cumulative sums, grouping only looks at thing
pixels and at the few centers that can possibly be nearest to each pixel, and NMS takes window
maxima only at above-threshold pixels. The one deliberate difference: instance scores use the
exact mask mean (see ``segment_scores``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from panoptic_depthlab_core.metadata import LABEL_DIVISOR, THING_TRAIN_IDS


@dataclass
class PostprocessConfig:
    """Parameters of the panoptic post-processing (detectron2's defaults for Cityscapes)."""

    center_threshold: float = 0.1  # center values <= this are not centers
    nms_kernel: int = 7  # odd max-pool window for center NMS
    top_k: int | None = 200  # keep centers strictly above the k-th largest peak (None: all peaks)
    stuff_area: int = 2048  # stuff classes with fewer pixels become void
    # instances with fewer pixels become void; 0 = keep all (detectron2 has no such limit). Small
    # spurious instances cost PQ a false positive each; a model's YAML sets what suits it.
    thing_area: int = 0
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS
    label_divisor: int = LABEL_DIVISOR
    void_label: int = -1

    def __post_init__(self) -> None:
        if not math.isfinite(self.center_threshold):
            raise ValueError(f"center_threshold must be finite, got {self.center_threshold}")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be a positive odd integer, got {self.nms_kernel}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.stuff_area < 0:
            raise ValueError(f"stuff_area must be >= 0, got {self.stuff_area}")
        if self.thing_area < 0:
            raise ValueError(f"thing_area must be >= 0, got {self.thing_area}")
        if self.label_divisor < 1:
            raise ValueError(f"label_divisor must be >= 1, got {self.label_divisor}")
        if any(t < 0 for t in self.thing_ids):
            raise ValueError(f"thing_ids must be non-negative class ids, got {self.thing_ids}")
        if self.void_label >= 0:
            raise ValueError(f"void_label must be negative (ids are >= 0), got {self.void_label}")
        self.thing_ids = tuple(int(t) for t in self.thing_ids)


# ----------------------------------------------------------------------------------------------
# centers


_DENSE_NMS_FRACTION = 0.25  # above this share of above-threshold pixels, max-pool the whole map
_MAX_WINDOW_GATHER = 1 << 22  # candidates x window pixels gathered at once (32 MB of int64 indices)


def _peaks(center: torch.Tensor, threshold: float, nms_kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (raster order) and values of the thresholded local maxima of one [H,W] map.

    detectron2: values <= threshold become -1, then pixels that differ from the max-pool of the
    map are set to -1. A pixel above the threshold is a peak iff it equals the maximum of its
    window; pixels at -1 never pass the top-k floor (>= 0). So the window maximum is only needed
    at the (few) above-threshold pixels: one gather per window offset instead of a dense max-pool.
    Padding with -1 equals max-pool's -inf padding, as each window holds its own pixel (> -1).
    """
    h, w = center.shape
    heat = F.threshold(center, threshold, -1.0)  # values <= threshold -> -1
    cand = torch.nonzero(center.reshape(-1) > threshold).squeeze(1)
    r = (nms_kernel - 1) // 2
    if cand.numel() > _DENSE_NMS_FRACTION * h * w:
        pooled = F.max_pool2d(heat[None, None], kernel_size=nms_kernel, stride=1, padding=r)[0, 0]
        keep = heat.reshape(-1)[cand] == pooled.reshape(-1)[cand]
        return cand[keep], heat.reshape(-1)[cand[keep]]
    padded = F.pad(heat, (r, r, r, r), value=-1.0).reshape(-1)
    wp = w + 2 * r
    base = (cand // w + r) * wp + (cand % w + r)
    value = padded[base]
    steps = torch.arange(-r, r + 1, device=center.device)
    window = (steps[:, None] * wp + steps[None, :]).reshape(-1)  # flat offsets of the window
    if cand.numel() * window.numel() <= _MAX_WINDOW_GATHER:  # every window in one gather
        window_max = padded[base[:, None] + window[None, :]].amax(dim=1)
    else:  # bounded memory: nms_kernel**2 gathers of the candidates, not a loop over pixels
        window_max = value.clone()
        for offset in window.tolist():
            torch.maximum(window_max, padded[base + offset], out=window_max)
    keep = value == window_max
    return cand[keep], value[keep]


def _top_k_floor(peak_values: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """The value centers must strictly exceed: the map's k-th largest value clamped at 0.

    Non-peaks are -1, so only positive peaks can make the clamped k-th value positive; with fewer
    than k of them the k-th largest value is <= 0 and the floor is 0.
    """
    floor = peak_values.new_zeros(())
    if top_k is None:
        return floor
    positive = peak_values[peak_values > 0]
    if positive.numel() >= top_k:
        floor = torch.topk(positive, top_k).values[-1]
    return floor


def find_instance_centers(
    center: torch.Tensor, threshold: float = 0.1, nms_kernel: int = 7, top_k: int | None = 200
) -> torch.Tensor:
    """Instance centers of one center heatmap ([1,H,W] or [H,W], raw values) as LongTensor [K,2] (y, x).

    detectron2's exact rule: values <= threshold become -1, max-pool NMS keeps local maxima, then
    only pixels strictly greater than the top_k-th largest value (clamped at 0) survive, so with
    top_k or more peaks at most top_k - 1 remain. Rows are in raster order.
    """
    _check_float_tensor(center, "center")
    if center.dim() == 3:
        if center.shape[0] != 1:
            raise ValueError(f"center must be [1,H,W] or [H,W], got shape {tuple(center.shape)}")
        center = center[0]
    if center.dim() != 2:
        raise ValueError(f"center must be [1,H,W] or [H,W], got shape {tuple(center.shape)}")
    return _find_centers_batched(center[None, None], threshold, nms_kernel, top_k)[0]


def _find_centers_batched(
    center: torch.Tensor, threshold: float, nms_kernel: int, top_k: int | None
) -> list[torch.Tensor]:
    """[B,1,H,W] -> B LongTensors [K_b,2] (y, x) in raster order."""
    w = center.shape[3]
    out = []
    for i in range(center.shape[0]):
        index, value = _peaks(center[i, 0], threshold, nms_kernel)
        index = index[value > _top_k_floor(value, top_k)]
        out.append(torch.stack((index // w, index % w), dim=1))
    return out


# ----------------------------------------------------------------------------------------------
# grouping

_TARGET_CELLS = 4096  # grid cells used to prune centers that cannot be nearest
_MAX_PAIR_ELEMENTS = 1 << 22  # pixels x candidate centers evaluated per chunk
_MAX_DIRECT_PAIRS = 1 << 19  # up to this many pixels x centers, every distance (no candidate table)


def _candidate_table(loc_y: torch.Tensor, loc_x: torch.Tensor, centers: torch.Tensor):
    """Per pixel, a short ascending list of the only centers that can be its nearest one.

    The predicted locations are binned into square cells; for every occupied cell, a center is a
    candidate when its smallest possible distance to the cell is not larger than the smallest
    largest-distance over all centers (with a safety margin in float64). Returns (table [cells, M]
    with padding -1, cell index per pixel); exact, because a non-candidate is farther than some
    candidate for every point of the cell by more (1e-6 relative) than float32 rounding of the
    distances can close, so it can neither win nor tie.
    """
    dev = loc_y.device
    y0, y1 = float(loc_y.min()), float(loc_y.max())
    x0, x1 = float(loc_x.min()), float(loc_x.max())
    cell = max(4.0, math.sqrt((y1 - y0 + 1.0) * (x1 - x0 + 1.0) / _TARGET_CELLS))
    ny = int((y1 - y0) // cell) + 1
    nx = int((x1 - x0) // cell) + 1
    gy = ((loc_y.double() - y0) / cell).floor().long().clamp_(0, ny - 1)
    gx = ((loc_x.double() - x0) / cell).floor().long().clamp_(0, nx - 1)
    cell_of_px = gy * nx + gx
    occupied = torch.nonzero(torch.bincount(cell_of_px, minlength=ny * nx)).squeeze(1)
    compact = torch.full((ny * nx,), -1, dtype=torch.long, device=dev)
    compact[occupied] = torch.arange(occupied.numel(), device=dev)
    margin = 1.0  # covers floor() rounding of the cell assignment
    by0 = y0 + (occupied // nx).double() * cell - margin
    bx0 = x0 + (occupied % nx).double() * cell - margin
    by1, bx1 = by0 + cell + 2 * margin, bx0 + cell + 2 * margin
    cy, cx = centers[:, 0].double()[None], centers[:, 1].double()[None]
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    dy_min = torch.maximum(torch.maximum(by0[:, None] - cy, cy - by1[:, None]), zero)
    dx_min = torch.maximum(torch.maximum(bx0[:, None] - cx, cx - bx1[:, None]), zero)
    dy_max = torch.maximum((cy - by0[:, None]).abs(), (cy - by1[:, None]).abs())
    dx_max = torch.maximum((cx - bx0[:, None]).abs(), (cx - bx1[:, None]).abs())
    min_d2 = dy_min**2 + dx_min**2
    bound = (dy_max**2 + dx_max**2).min(dim=1, keepdim=True).values
    is_cand = min_d2 <= bound * (1 + 1e-6) + 1e-3
    m = int(is_cand.sum(dim=1).max())
    order = torch.argsort((~is_cand).to(torch.int8), dim=1, stable=True)[:, :m]  # ascending ids
    table = torch.where(is_cand.gather(1, order), order, torch.full_like(order, -1))
    return table, compact[cell_of_px]


def center_distances(
    center_y: torch.Tensor, center_x: torch.Tensor, loc_y: torch.Tensor, loc_x: torch.Tensor
) -> torch.Tensor:
    """Distances from locations to centers (broadcast shapes) in detectron2's float arithmetic.

    detectron2's ``group_pixels`` takes ``torch.norm(center_points - center_loc, dim=-1)`` of a
    [K, H*W, 2] difference whose last dimension is strided (``center_loc`` is a transposed
    [2, H*W] map). torch reduces that on a CPU as ``f(dy*dy) + f(dx*dx)`` (both squares rounded)
    and takes a correctly rounded square root (its CUDA reduction was not compared). Over a
    contiguous last dimension torch.norm instead fuses the second square into the sum (one
    rounding), and on center bisectors the two orders pick different centers; so the operations
    are spelled out here, each its own rounding, whatever the memory layout of the inputs.
    The root is taken in float64 and rounded: torch's float32 sqrt is not correctly rounded on
    every CPU, and the rounded root matters, because distinct sums that round to one distance
    are a tie that ``argmin`` gives to the lower center index. A float64 root within a few ulps
    rounds to the exact float32 one: a float32 sum is never closer than 2**-50 (relative) to the
    square of a float32 rounding midpoint.
    """
    dy = center_y - loc_y
    dx = center_x - loc_x
    sum_sq = dy.mul_(dy).add_(dx.mul_(dx))
    return torch.sqrt(sum_sq.double()).to(sum_sq.dtype)


def _nearest_center(loc_y: torch.Tensor, loc_x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest center for each location; detectron2's distance and tie-break."""
    n, k = loc_y.numel(), centers.shape[0]
    if k == 1:
        return torch.zeros(n, dtype=torch.long, device=loc_y.device)
    center_y, center_x = centers[:, 0].to(loc_y.dtype), centers[:, 1].to(loc_y.dtype)
    if n * k <= _MAX_DIRECT_PAIRS:  # few centers: all distances beat building the table
        return center_distances(center_y[None], center_x[None], loc_y[:, None], loc_x[:, None]).argmin(dim=1)
    table, cell_of_px = _candidate_table(loc_y, loc_x, centers)
    m = table.shape[1]
    out = torch.empty(n, dtype=torch.long, device=loc_y.device)
    chunk = max(1, _MAX_PAIR_ELEMENTS // m)
    for s in range(0, n, chunk):  # bounded memory; a handful of iterations at 1024x2048
        cand = table[cell_of_px[s : s + chunk]]  # [n_c, m], ascending center ids, -1 padding
        safe = cand.clamp(min=0)
        dist = center_distances(
            center_y[safe], center_x[safe], loc_y[s : s + chunk, None], loc_x[s : s + chunk, None]
        )
        dist = dist.masked_fill_(cand < 0, float("inf"))
        out[s : s + chunk] = cand.gather(1, dist.argmin(dim=1, keepdim=True)).squeeze(1)
    return out


def group_pixels(
    centers: torch.Tensor, offsets: torch.Tensor, thing_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Instance id map [H,W] (1..K, 0 = none): each pixel's (y, x) + offset goes to the nearest center.

    ``offsets`` is [2,H,W] (dy, dx) in pixels. With ``thing_mask`` [H,W] only those pixels are
    grouped and every other pixel gets 0 (detectron2 multiplies by its thing mask afterwards; the
    result is the same). Ties go to the lower center index, like detectron2's argmin.
    """
    _check_float_tensor(offsets, "offsets")
    if offsets.dim() != 3 or offsets.shape[0] != 2:
        raise ValueError(f"offsets must be [2,H,W] (dy, dx), got shape {tuple(offsets.shape)}")
    h, w = offsets.shape[1:]
    if centers.dim() != 2 or centers.shape[1] != 2 or centers.dtype.is_floating_point:
        raise ValueError(
            f"centers must be an integer tensor [K,2] (y, x), got {centers.dtype} {tuple(centers.shape)}"
        )
    instance = torch.zeros((h, w), dtype=torch.long, device=offsets.device)
    if centers.shape[0] == 0:
        return instance
    if thing_mask is None:
        sel = torch.arange(h * w, device=offsets.device)
    else:
        if thing_mask.shape != (h, w):
            raise ValueError(f"thing_mask must be [H,W]={h, w}, got shape {tuple(thing_mask.shape)}")
        sel = torch.nonzero(thing_mask.reshape(-1).bool()).squeeze(1)
    instance.view(-1)[sel] = _group_selected(centers.to(offsets.device), offsets, sel)
    return instance


def _group_selected(centers: torch.Tensor, offsets: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Instance ids (1..K) of the flat pixel indices ``sel``; empty when there are no centers."""
    if sel.numel() == 0 or centers.shape[0] == 0:
        return torch.zeros(0 if centers.shape[0] == 0 else sel.numel(), dtype=torch.long, device=sel.device)
    w = offsets.shape[2]
    off = offsets.reshape(2, -1)
    loc_y = (sel // w).to(offsets.dtype) + off[0, sel]
    loc_x = (sel % w).to(offsets.dtype) + off[1, sel]
    if not bool(torch.isfinite(loc_y.sum() + loc_x.sum())):
        raise ValueError("offsets contain non-finite values at thing pixels")
    return _nearest_center(loc_y, loc_x, centers) + 1


# ----------------------------------------------------------------------------------------------
# merge


def _thing_lut(thing_ids: tuple[int, ...], num_classes: int, device) -> torch.Tensor:
    lut = torch.zeros(num_classes, dtype=torch.bool, device=device)
    ids = [t for t in thing_ids if t < num_classes]
    if ids:
        lut[torch.tensor(ids, device=device)] = True
    return lut


def merge_semantic_and_instance(
    semantic: torch.Tensor,
    instance: torch.Tensor,
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS,
    stuff_area: int = 2048,
    label_divisor: int = LABEL_DIVISOR,
    void_label: int = -1,
    thing_area: int = 0,
) -> torch.Tensor:
    """Panoptic id map [H,W] int64 from semantic classes and instance ids, as detectron2 merges them.

    Things, by increasing instance id: class = majority vote of the semantic labels of the thing
    pixels of the instance (ties -> smallest class, like ``torch.mode``), id = class * divisor + n
    with n counting instances of that class from 1; instances without thing pixels take no number.
    Stuff: each non-thing class's pixels without instance become class * divisor when there are at
    least ``stuff_area`` of them. Instances with fewer than ``thing_area`` thing pixels take no
    number and are void (0: none; detectron2 has no such limit). Everything else is ``void_label``.
    """
    if semantic.shape != instance.shape or semantic.dim() != 2:
        raise ValueError(
            f"semantic and instance must both be [H,W], got {tuple(semantic.shape)} "
            f"and {tuple(instance.shape)}"
        )
    if semantic.dtype.is_floating_point or instance.dtype.is_floating_point:
        raise ValueError(
            f"semantic and instance must be integer tensors, got {semantic.dtype}, {instance.dtype}"
        )
    sem = semantic.long()
    ins = instance.long().to(sem.device)
    if sem.numel() == 0:
        return torch.full_like(sem, void_label)
    if int(sem.min()) < 0 or int(ins.min()) < 0:
        raise ValueError("semantic classes and instance ids must be >= 0")
    is_thing_class = _thing_lut(tuple(thing_ids), int(sem.max()) + 1, sem.device)
    flat_sem, flat_ins = sem.reshape(-1), ins.reshape(-1)
    with_instance = flat_ins > 0
    sel = torch.nonzero(with_instance & is_thing_class[flat_sem]).squeeze(1)
    # Pixels with an instance id but a stuff class are neither thing nor stuff in detectron2: void.
    stray = with_instance & ~is_thing_class[flat_sem]
    merged = _merge_flat(
        flat_sem, sel, flat_ins[sel], is_thing_class, stuff_area, label_divisor, void_label, stray,
        thing_area,
    )
    return merged.panoptic.view_as(sem)


@dataclass
class _Merged:
    """A flat panoptic map plus its segment table (stuff segments first, then instances)."""

    panoptic: torch.Tensor  # [N] int64
    seg_ids: torch.Tensor  # [S]
    seg_class: torch.Tensor  # [S]
    seg_area: torch.Tensor  # [S]
    num_stuff: int
    stuff_index: torch.Tensor  # [C] segment index of each class's stuff segment, S if none
    instance_index: torch.Tensor  # [num_ins] segment index of each instance id, S if none


def _merge_flat(
    sem: torch.Tensor,
    sel: torch.Tensor,
    ins_sel: torch.Tensor,
    is_thing_class: torch.Tensor,
    stuff_area: int,
    label_divisor: int,
    void_label: int,
    stray: torch.Tensor | None = None,
    thing_area: int = 0,
) -> _Merged:
    """The merge on a flat semantic map; ``sel`` = thing pixels with an instance, ``ins_sel`` their ids.

    Every other pixel has instance 0 (except ``stray`` ones: instance on a stuff class, left void).
    """
    num_classes = is_thing_class.numel()
    num_ins = int(ins_sel.max()) + 1 if ins_sel.numel() else 1
    sem_sel = sem[sel]
    votes = torch.bincount(ins_sel * num_classes + sem_sel, minlength=num_ins * num_classes)
    votes = votes.view(num_ins, num_classes)
    cls = votes.argmax(dim=1)  # first maximum = smallest class among ties, as torch.mode
    ins_area = votes.sum(dim=1)
    has_pixels = ins_area >= max(thing_area, 1)  # smaller instances: no number, void pixels
    has_pixels[0] = False
    per_class = F.one_hot(cls, num_classes) * has_pixels[:, None]
    number = per_class.cumsum(dim=0).gather(1, cls[:, None]).squeeze(1)  # running count per class
    ins_lut = torch.where(has_pixels, cls * label_divisor + number, torch.full_like(cls, void_label))

    # Stuff area = pixels of the class without an instance = all of them minus those with one.
    stuff_px_area = torch.bincount(sem, minlength=num_classes) - torch.bincount(
        sem_sel, minlength=num_classes
    )
    if stray is not None:
        stuff_px_area -= torch.bincount(sem[stray], minlength=num_classes)
    classes = torch.arange(num_classes, device=sem.device)
    keep_stuff = ~is_thing_class & (stuff_px_area >= stuff_area)
    stuff_lut = torch.where(keep_stuff, classes * label_divisor, torch.full_like(classes, void_label))
    pan = stuff_lut[sem]  # thing classes map to void here
    pan[sel] = ins_lut[ins_sel]
    if stray is not None:
        pan[stray] = void_label

    stuff_cls = torch.nonzero(keep_stuff & (stuff_px_area > 0)).squeeze(1)
    instances = torch.nonzero(has_pixels).squeeze(1)
    ns, s = stuff_cls.numel(), stuff_cls.numel() + instances.numel()
    stuff_index = torch.full((num_classes,), s, dtype=torch.long, device=sem.device)
    stuff_index[stuff_cls] = torch.arange(ns, device=sem.device)
    instance_index = torch.full((num_ins,), s, dtype=torch.long, device=sem.device)
    instance_index[instances] = torch.arange(ns, s, device=sem.device)
    return _Merged(
        panoptic=pan,
        seg_ids=torch.cat((stuff_cls * label_divisor, ins_lut[instances])),
        seg_class=torch.cat((stuff_cls, cls[instances])),
        seg_area=torch.cat((stuff_px_area[stuff_cls], ins_area[instances])),
        num_stuff=ns,
        stuff_index=stuff_index,
        instance_index=instance_index,
    )


# ----------------------------------------------------------------------------------------------
# scores and the batched entry point


def _compact_ids(ids: torch.Tensor, void_label: int):
    """Sorted unique non-void ids of a flat map and the compact index of every pixel (S for void)."""
    valid = ids != void_label
    if not bool(valid.any()):
        return ids.new_zeros(0), torch.zeros_like(ids)
    lo, hi = int(ids[valid].min()), int(ids[valid].max())
    if hi - lo < (1 << 24):
        present = torch.bincount(ids[valid] - lo, minlength=hi - lo + 1) > 0
        lut = present.long().cumsum(0) - 1
        seg_ids = torch.nonzero(present).squeeze(1) + lo
        index = torch.where(valid, lut[(ids - lo).clamp(0, hi - lo)], seg_ids.numel())
        return seg_ids, index
    seg_ids, inverse = torch.unique(ids[valid], return_inverse=True)
    index = torch.full_like(ids, seg_ids.numel())
    index[valid] = inverse
    return seg_ids, index


def segment_scores(
    panoptic_ids: torch.Tensor,
    sem_logits: torch.Tensor,
    center: torch.Tensor,
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS,
    label_divisor: int = LABEL_DIVISOR,
    void_label: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment of one image: (ids [S] int64 ascending, scores [S] float32).

    Things as detectron2 scores instances: mean softmax probability of the segment's class over
    its mask x raw center value at (int(mean y), int(mean x)) of the mask. The means are exact
    (integer sums); detectron2's float32 mean can fall just below an integer mean and read the
    pixel before it. Stuff: the mean class probability alone.
    ``panoptic_ids`` [H,W], ``sem_logits`` [C,H,W], ``center`` [1,H,W] or [H,W].
    """
    if (
        panoptic_ids.dim() != 2
        or sem_logits.dim() != 3
        or tuple(sem_logits.shape[1:]) != tuple(panoptic_ids.shape)
    ):
        raise ValueError(
            f"need panoptic_ids [H,W] and sem_logits [C,H,W] of the same H,W, "
            f"got {tuple(panoptic_ids.shape)} "
            f"and {tuple(sem_logits.shape)}"
        )
    w = panoptic_ids.shape[1]
    flat = panoptic_ids.reshape(-1).long()
    seg_ids, index = _compact_ids(flat, void_label)
    if seg_ids.numel() == 0:
        return seg_ids, torch.zeros(0, dtype=torch.float32, device=flat.device)
    seg_class = seg_ids // label_divisor
    area = torch.bincount(index, minlength=seg_ids.numel() + 1)[:-1]
    is_thing = _thing_lut(tuple(thing_ids), int(seg_class.max()) + 1, flat.device)[seg_class]
    thing_px = torch.nonzero(torch.cat((is_thing, is_thing.new_zeros(1)))[index]).squeeze(1)
    lse = torch.logsumexp(sem_logits, dim=0)
    scores = _scores(index, seg_class, area, is_thing, thing_px, index[thing_px], sem_logits, lse, center, w)
    return seg_ids, scores


def _scores(index, seg_class, area, is_thing, thing_px, thing_index, sem_logits, lse, center, w):
    """Scores from a per-pixel segment index (S = void) and the segment table; see segment_scores."""
    s = seg_class.numel()
    cls_px = torch.cat((seg_class.clamp(0, sem_logits.shape[0] - 1), seg_class.new_zeros(1)))[index]
    # p(class) = exp(l_class - logsumexp(l)): the softmax value of the segment's class only.
    class_logit = sem_logits.reshape(sem_logits.shape[0], -1).gather(0, cls_px[None]).squeeze(0)
    prob = torch.exp(class_logit - lse.reshape(-1)).double()
    mean_prob = torch.bincount(index, weights=prob, minlength=s + 1)[:s] / area
    # Exact coordinate sums (integers below 2**53 in float64) over the things' pixels only.
    sum_y = torch.bincount(thing_index, weights=(thing_px // w).double(), minlength=s + 1)[:s]
    sum_x = torch.bincount(thing_index, weights=(thing_px % w).double(), minlength=s + 1)[:s]
    area_px = area.clamp(min=1).long()
    mean_y, mean_x = sum_y.long() // area_px, sum_x.long() // area_px  # int() of the non-negative mean
    center_value = center.reshape(-1)[(mean_y * w + mean_x).clamp(0, center.numel() - 1)].double()
    return torch.where(is_thing, mean_prob * center_value, mean_prob).float()


def _logsumexp_from_max(logits: torch.Tensor, max_logit: torch.Tensor) -> torch.Tensor:
    """logsumexp over channels of [C,H,W] given the channel max, one channel at a time.

    Accumulating per channel keeps the working set in cache, which makes it faster on a CPU than
    ``torch.logsumexp(logits, 0)``, which reduces over the strided channel dimension.
    """
    total = torch.zeros_like(max_logit)
    for c in range(logits.shape[0]):  # C (19) whole-image ops, not a loop over pixels
        total += torch.exp(logits[c] - max_logit)
    return max_logit + torch.log(total)


def _check_float_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating point tensor, got {t.dtype}")


def panoptic_postprocess(
    sem_logits: torch.Tensor,
    center: torch.Tensor,
    offsets: torch.Tensor,
    cfg: PostprocessConfig | None = None,
    with_scores: bool = True,
) -> dict:
    """Batched panoptic post-processing of raw network outputs (all at the same resolution).

    Inputs: ``sem_logits`` [B,C,H,W], ``center`` [B,1,H,W] raw heatmap, ``offsets`` [B,2,H,W]
    (dy, dx) in pixels. Returns a dict:
      - ``panoptic_ids`` int32 [B,H,W]: class * label_divisor + instance, stuff instance 0, void -1;
      - ``semantic`` uint8 [B,H,W] (int64 when C > 256): argmax train ids;
      - ``centers``: B LongTensors [K,2] (y, x);
      - ``segment_ids`` / ``segment_scores``: B tensors [S] (see ``segment_scores``) and
        ``scores``: B dicts {panoptic id: score} (only with ``with_scores``).
    """
    cfg = cfg or PostprocessConfig()
    for t, name in ((sem_logits, "sem_logits"), (center, "center"), (offsets, "offsets")):
        _check_float_tensor(t, name)
        if t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B,*,H,W], got shape {tuple(t.shape)}")
    b, c, h, w = sem_logits.shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"sem_logits must have classes and pixels, got shape {tuple(sem_logits.shape)}")
    if tuple(center.shape) != (b, 1, h, w):
        raise ValueError(f"center must be [B,1,H,W]={(b, 1, h, w)}, got {tuple(center.shape)}")
    if tuple(offsets.shape) != (b, 2, h, w):
        raise ValueError(f"offsets must be [B,2,H,W]={(b, 2, h, w)}, got {tuple(offsets.shape)}")
    if not (center.device == offsets.device == sem_logits.device):
        raise ValueError("sem_logits, center and offsets must be on the same device")

    # the Predictor passes views cropped out of the letterbox: copied once here, not in every reshape
    sem_logits, center, offsets = sem_logits.contiguous(), center.contiguous(), offsets.contiguous()
    max_logit, semantic = sem_logits.max(dim=1)  # first maximum on ties, like argmax
    is_thing_class = _thing_lut(cfg.thing_ids, c, semantic.device)
    centers = _find_centers_batched(center, cfg.center_threshold, cfg.nms_kernel, cfg.top_k)
    panoptic, seg_ids, seg_scores, score_dicts = [], [], [], []
    for i in range(b):  # images differ in their number of centers
        flat_sem = semantic[i].reshape(-1)
        things = torch.nonzero(is_thing_class[flat_sem]).squeeze(1)
        ins_things = _group_selected(centers[i], offsets[i], things)
        if ins_things.numel() == 0:  # no centers: no instance anywhere
            things = things[:0]
        merged = _merge_flat(
            flat_sem,
            things,
            ins_things,
            is_thing_class,
            cfg.stuff_area,
            cfg.label_divisor,
            cfg.void_label,
            thing_area=cfg.thing_area,
        )
        panoptic.append(merged.panoptic.view(h, w))
        if with_scores:
            # Segment index per pixel from the merge's tables: no pass over the ids needed.
            index = merged.stuff_index[flat_sem]
            thing_index = merged.instance_index[ins_things]
            index[things] = thing_index
            is_thing = torch.arange(merged.seg_ids.numel(), device=index.device) >= merged.num_stuff
            lse = _logsumexp_from_max(sem_logits[i], max_logit[i])
            scores = _scores(
                index,
                merged.seg_class,
                merged.seg_area,
                is_thing,
                things,
                thing_index,
                sem_logits[i],
                lse,
                center[i],
                w,
            )
            order = torch.argsort(merged.seg_ids)
            ids, scores = merged.seg_ids[order], scores[order]
            seg_ids.append(ids)
            seg_scores.append(scores)
            score_dicts.append(dict(zip(ids.tolist(), scores.tolist(), strict=True)))
    out = {
        "panoptic_ids": torch.stack(panoptic).to(torch.int32),
        "semantic": semantic.to(torch.uint8) if c <= 256 else semantic,
        "centers": centers,
    }
    if with_scores:
        out.update(segment_ids=seg_ids, segment_scores=seg_scores, scores=score_dicts)
    return out
