"""The fast panoptic post-processing against a slow per-pixel reference and hand-built scenes."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import panoptic_depthlab_core.postprocess.panoptic as pp_module
from panoptic_depthlab_core.postprocess import (
    PostprocessConfig,
    find_instance_centers,
    group_pixels,
    merge_semantic_and_instance,
    panoptic_postprocess,
    segment_scores,
)

THINGS = tuple(range(11, 19))


# ---------------------------------------------------------------------------------------------
# slow, obviously correct reference: plain Python loops over pixels, written from the rules


def ref_centers(
    center: np.ndarray, threshold: float, kernel: int, top_k: int | None
) -> list[tuple[int, int]]:
    h, w = center.shape
    heat = [[float(center[y, x]) if center[y, x] > threshold else -1.0 for x in range(w)] for y in range(h)]
    r = (kernel - 1) // 2
    nms = [[-1.0] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            window = [
                heat[yy][xx]
                for yy in range(max(0, y - r), min(h, y + r + 1))
                for xx in range(max(0, x - r), min(w, x + r + 1))
            ]
            nms[y][x] = heat[y][x] if heat[y][x] == max(window) else -1.0
    values = sorted((v for row in nms for v in row), reverse=True)
    floor = 0.0 if top_k is None else max(values[min(top_k, len(values)) - 1], 0.0)
    return [(y, x) for y in range(h) for x in range(w) if nms[y][x] > floor]


def ref_panoptic(logits, center, offsets, cfg: PostprocessConfig):
    """Returns (panoptic [H,W] int64, centers, {id: score}) for one image, pixel by pixel."""
    c, h, w = logits.shape
    semantic = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            best = 0
            for k in range(1, c):
                if logits[k, y, x] > logits[best, y, x]:
                    best = k
            semantic[y, x] = best
    centers = ref_centers(center[0], cfg.center_threshold, cfg.nms_kernel, cfg.top_k)
    instance = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            if semantic[y, x] not in cfg.thing_ids or not centers:
                continue
            ly = np.float32(y) + np.float32(offsets[0, y, x])
            lx = np.float32(x) + np.float32(offsets[1, y, x])
            best_k, best_d = 0, math.inf
            for k, (cy, cx) in enumerate(centers):
                # detectron2's float32 order: both squares rounded, then the sum, then the root
                dy, dx = np.float32(cy) - ly, np.float32(cx) - lx
                d = float(np.sqrt(np.float32(dy * dy) + np.float32(dx * dx)))
                if d < best_d:
                    best_k, best_d = k, d
            instance[y, x] = best_k + 1
    pan = np.full((h, w), cfg.void_label, np.int64)
    per_class = Counter()
    for ins_id in range(1, len(centers) + 1):
        pixels = [(y, x) for y in range(h) for x in range(w) if instance[y, x] == ins_id]
        if not pixels or len(pixels) < cfg.thing_area:
            continue
        votes = Counter(int(semantic[p]) for p in pixels)
        top = max(votes.values())
        cls = min(k for k, v in votes.items() if v == top)
        per_class[cls] += 1
        for p in pixels:
            pan[p] = cls * cfg.label_divisor + per_class[cls]
    for cls in range(c):
        if cls in cfg.thing_ids:
            continue
        pixels = [(y, x) for y in range(h) for x in range(w) if semantic[y, x] == cls and instance[y, x] == 0]
        if pixels and len(pixels) >= cfg.stuff_area:
            for p in pixels:
                pan[p] = cls * cfg.label_divisor
    scores = {}
    for seg_id in sorted(set(pan.ravel().tolist()) - {cfg.void_label}):
        cls = seg_id // cfg.label_divisor
        pixels = [(y, x) for y in range(h) for x in range(w) if pan[y, x] == seg_id]
        probs = []
        for y, x in pixels:
            e = [math.exp(float(logits[k, y, x])) for k in range(c)]
            probs.append(e[cls] / sum(e))
        score = sum(probs) / len(probs)
        if cls in cfg.thing_ids:
            my = sum(p[0] for p in pixels) / len(pixels)
            mx = sum(p[1] for p in pixels) / len(pixels)
            score *= float(center[0, int(my), int(mx)])
        scores[seg_id] = score
    return pan, centers, scores


# ---------------------------------------------------------------------------------------------
# random scenes with many ties


def random_scene(seed: int):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(4, 28)), int(rng.integers(4, 28))
    num_classes = int(rng.choice([19, 7]))
    thing_ids = THINGS if num_classes == 19 else (3, 4, 6)
    # Quantised values make argmax ties, equal peaks (plateaus) and values exactly at the threshold.
    logits = rng.integers(-2, 3, size=(num_classes, h, w)).astype(np.float32)
    if rng.random() < 0.5:  # bias towards thing classes so instances get pixels
        logits[list(thing_ids)] += rng.integers(0, 2, size=(len(thing_ids), h, w))
    if rng.random() < 0.4:  # quantised: plateaus, values at the threshold, ties at the k-th value
        levels = np.array([0.0, 0.05, 0.1, 0.3, 0.5, 0.7], np.float32)
        center = rng.choice(levels, size=(1, h, w), p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    else:  # sparse distinct peaks
        center = rng.random((1, h, w)).astype(np.float32) * (rng.random((1, h, w)) < 0.15)
    if rng.random() < 0.15:
        center[:] = 0.0  # no centers at all
    if rng.random() < 0.5:
        offsets = rng.integers(-6, 7, size=(2, h, w)).astype(np.float32) / 2  # exact, tie-prone
    else:
        offsets = rng.normal(0, 4, size=(2, h, w)).astype(np.float32)
    nms_kernel = int(rng.choice([1, 3, 5, 7]))
    top_k = None if rng.random() < 0.2 else int(rng.integers(1, 8))
    if rng.random() < 0.25:  # exactly k peaks
        top_k = max(1, len(ref_centers(center[0], 0.1, nms_kernel, None)))
    cfg = PostprocessConfig(
        center_threshold=0.1,
        nms_kernel=nms_kernel,
        top_k=top_k,
        stuff_area=int(rng.integers(0, 12)),
        thing_area=int(rng.choice([0, 0, 1, 2, 4, 8])),
        thing_ids=thing_ids,
    )
    return logits, center.astype(np.float32), offsets, cfg


@pytest.mark.parametrize("seed", range(60))
def test_pdl_pp_matches_per_pixel_reference(seed):
    logits, center, offsets, cfg = random_scene(seed)
    out = panoptic_postprocess(
        torch.from_numpy(logits)[None], torch.from_numpy(center)[None], torch.from_numpy(offsets)[None], cfg
    )
    pan_ref, centers_ref, scores_ref = ref_panoptic(logits, center, offsets, cfg)
    assert out["centers"][0].tolist() == [list(c) for c in centers_ref]
    np.testing.assert_array_equal(out["panoptic_ids"][0].numpy(), pan_ref)
    assert out["panoptic_ids"].dtype == torch.int32
    np.testing.assert_array_equal(out["semantic"][0].numpy(), logits.argmax(0))
    assert sorted(out["scores"][0]) == sorted(scores_ref)
    for seg_id, score in scores_ref.items():
        assert out["scores"][0][seg_id] == pytest.approx(score, rel=1e-5, abs=1e-7)
    # The public scorer (from a finished panoptic map) agrees with the in-pipeline one.
    ids, scores = segment_scores(
        out["panoptic_ids"][0], torch.from_numpy(logits), torch.from_numpy(center), cfg.thing_ids
    )
    assert ids.tolist() == out["segment_ids"][0].tolist()
    torch.testing.assert_close(scores, out["segment_scores"][0], rtol=1e-5, atol=1e-7)


def test_pdl_pp_batched_equals_single_images():
    scenes = []
    rng = np.random.default_rng(5)
    for _ in range(3):
        logits = rng.normal(size=(19, 20, 24)).astype(np.float32)
        logits[13, 4:14, 3:20] += 4
        center = np.zeros((1, 20, 24), np.float32)
        center[0, rng.integers(0, 20, 4), rng.integers(0, 24, 4)] = 0.9
        offsets = rng.normal(0, 3, size=(2, 20, 24)).astype(np.float32)
        scenes.append((logits, center, offsets))
    cfg = PostprocessConfig(stuff_area=5)
    batched = panoptic_postprocess(*(torch.from_numpy(np.stack(x)) for x in zip(*scenes, strict=True)), cfg)
    for i, scene in enumerate(scenes):
        single = panoptic_postprocess(*(torch.from_numpy(x)[None] for x in scene), cfg)
        assert torch.equal(batched["panoptic_ids"][i], single["panoptic_ids"][0])
        assert batched["scores"][i] == single["scores"][0]


# ---------------------------------------------------------------------------------------------
# centers


def _peaks(n: int, h: int = 40, w: int = 40) -> torch.Tensor:
    """n isolated peaks (8 px apart) with distinct values, raster order = descending value order."""
    c = torch.zeros(1, h, w)
    for i in range(n):
        c[0, (i // 5) * 8 + 2, (i % 5) * 8 + 2] = 0.9 - 0.01 * i
    return c


def test_pdl_pp_top_k_exactly_k_peaks_keeps_k_minus_1():
    assert find_instance_centers(_peaks(5), 0.1, 7, top_k=5).shape[0] == 4
    assert find_instance_centers(_peaks(5), 0.1, 7, top_k=6).shape[0] == 5
    kept = find_instance_centers(_peaks(12), 0.1, 7, top_k=5)
    assert kept.shape[0] == 4  # more than k peaks: the k-1 strongest
    assert kept.tolist() == [[2, 2], [2, 10], [2, 18], [2, 26]]
    assert find_instance_centers(_peaks(12), 0.1, 7, top_k=None).shape[0] == 12


def d2_find_instance_center(center, threshold, nms_kernel, top_k):
    heat = F.threshold(center[None], threshold, -1)
    pooled = F.max_pool2d(heat, kernel_size=nms_kernel, stride=1, padding=(nms_kernel - 1) // 2)
    heat[heat != pooled] = -1
    heat = heat.squeeze()
    top = torch.topk(torch.flatten(heat), top_k)[0]
    return torch.nonzero(heat > top[-1].clamp_(min=0))


@pytest.mark.parametrize(
    "dense_fraction, window_gather",
    [(0.0, 1 << 22), (1.0, 1 << 22), (1.0, 0)],  # max-pool / one gather of all windows / one per offset
)
def test_pdl_pp_every_nms_path_equals_detectron2(monkeypatch, dense_fraction, window_gather):
    monkeypatch.setattr(pp_module, "_DENSE_NMS_FRACTION", dense_fraction)
    monkeypatch.setattr(pp_module, "_MAX_WINDOW_GATHER", window_gather)
    g = torch.Generator().manual_seed(3)
    for trial in range(8):
        center = torch.rand(1, 60, 90, generator=g) * (torch.rand(1, 60, 90, generator=g) < 0.3)
        if trial % 2:
            center = (center * 4).round() / 4  # plateaus and ties at the k-th value
        for kernel, top_k in ((7, 200), (3, 20), (5, 5), (1, 50)):
            expected = d2_find_instance_center(center.clone(), 0.1, kernel, top_k)
            assert torch.equal(find_instance_centers(center, 0.1, kernel, top_k), expected)


def test_pdl_pp_center_threshold_and_plateau():
    c = torch.zeros(12, 12)
    c[3, 3] = 0.1  # exactly the threshold: not a center
    c[8, 8] = c[8, 9] = 0.5  # plateau: both equal the local max, both kept
    c[8, 10] = 0.4  # next to a larger value: suppressed
    assert find_instance_centers(c, 0.1, 7, 200).tolist() == [[8, 8], [8, 9]]
    assert find_instance_centers(torch.zeros(1, 5, 5)).shape == (0, 2)
    assert find_instance_centers(torch.full((5, 5), -3.0)).shape == (0, 2)


def test_pdl_pp_negative_threshold_keeps_detectron2_clamp():
    # Peaks may survive the threshold but must still be > max(k-th value, 0).
    c = torch.full((9, 9), -0.5)
    c[4, 4] = -0.2
    assert find_instance_centers(c, threshold=-1.0, nms_kernel=3, top_k=200).shape[0] == 0


# ---------------------------------------------------------------------------------------------
# grouping: pruned search equals detectron2's brute force


def d2_group(centers: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    h, w = offsets.shape[1:]
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=offsets.dtype), torch.arange(w, dtype=offsets.dtype), indexing="ij"
    )
    loc = (torch.stack((yy, xx)) + offsets).flatten(1).T[None]
    dist = torch.norm(centers[:, None] - loc, dim=-1)
    return dist.argmin(dim=0).reshape(h, w) + 1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("direct_pairs", [0, 1 << 19, 1 << 30])  # candidate table / by size / all distances
def test_pdl_pp_group_pixels_equals_brute_force(seed, direct_pairs, monkeypatch):
    monkeypatch.setattr(pp_module, "_MAX_DIRECT_PAIRS", direct_pairs)
    g = torch.Generator().manual_seed(seed)
    h, w, k = 90, 160, [1, 2, 37, 150, 80, 5][seed]
    centers = torch.stack((torch.randint(0, h, (k,), generator=g), torch.randint(0, w, (k,), generator=g)), 1)
    # Offsets pointing near the centers (realistic) plus far-off outliers outside the image.
    target = centers[torch.randint(0, k, (h * w,), generator=g)].float()
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    offsets = (target.T.reshape(2, h, w) - torch.stack((yy, xx))) + torch.randn(2, h, w, generator=g) * 3
    offsets[:, :5] *= 20
    if seed % 2:
        offsets = offsets.round()  # integer geometry: exact ties between centers
    mask = torch.rand(h, w, generator=g) < 0.7
    ours = group_pixels(centers, offsets, mask)
    assert torch.equal(ours, d2_group(centers, offsets) * mask)
    assert torch.equal(group_pixels(centers, offsets), d2_group(centers, offsets))


# Locations within float32 rounding of the bisector of two centers, where detectron2's order
# (f32(dy*dy) + f32(dx*dx), rounded root) and torch.norm over a contiguous last dimension
# (f32(f32(dy*dy) + dx*dx): the second square fused into the sum) pick different centers:
# (centers, location, 1-based id detectron2 gives). Found by a search over random center pairs.
BISECTOR_CASES = [
    ([[50, 10], [5, 51]], (24.10017967224121, 26.768489837646484), 2),  # fused: a tie -> 1
    ([[2, 28], [42, 49]], (14.411174774169922, 52.95490646362305), 2),  # fused: a tie -> 1
    ([[39, 20], [13, 25]], (21.339378356933594, -1.735228180885315), 1),  # detectron2: a tie
    ([[36, 56], [0, 27]], (32.948272705078125, 22.943523406982422), 1),  # detectron2: a tie
]


def fused_order_nearest(centers, loc) -> int:
    """1-based nearest center by f32(f32(dy*dy) + dx*dx) (the sum exact in float64 here)."""
    dist = []
    for cy, cx in centers:
        dy, dx = np.float32(cy) - np.float32(loc[0]), np.float32(cx) - np.float32(loc[1])
        dy2, dx2 = float(dy * dy), float(dx) ** 2
        assert Fraction(dy2 + dx2) == Fraction(dy2) + Fraction(float(dx)) ** 2  # one rounding below
        dist.append(np.sqrt(np.float32(dy2 + dx2)))
    return int(np.argmin(dist)) + 1


@pytest.mark.parametrize("direct_pairs", [0, 1 << 30])  # candidate table / all distances
@pytest.mark.parametrize("case", range(len(BISECTOR_CASES)))
def test_pdl_pp_group_bisector_in_detectron2_float_order(case, direct_pairs, monkeypatch):
    monkeypatch.setattr(pp_module, "_MAX_DIRECT_PAIRS", direct_pairs)
    center_list, loc, d2_id = BISECTOR_CASES[case]
    assert fused_order_nearest(center_list, loc) != d2_id  # the two orders disagree here
    # Every pixel of a 4x6 image lands on the location (exact: integer minus float32, then back).
    h, w = 4, 6
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    offsets = torch.stack((loc[0] - yy, loc[1] - xx))
    centers = torch.tensor(center_list)
    expected = torch.full((h, w), d2_id)
    assert torch.equal(d2_group(centers, offsets), expected)  # detectron2's own expression agrees
    # the same ids whatever the centers' memory layout and integer type
    for layout in (centers, centers.T.contiguous().T, centers.int(), torch.cat((centers, centers), 1)[:, :2]):
        assert torch.equal(group_pixels(layout, offsets), expected)
    # ... and inside a larger scene with more centers far away (the candidate table prunes them)
    far = torch.tensor([[300, 500], [290, 10], [5, 400]])
    big_offsets = F.pad(offsets, (0, 600, 0, 300))
    out = group_pixels(torch.cat((centers, far)), big_offsets)
    assert torch.equal(out[:h, :w], expected)


def test_pdl_pp_center_distances_equal_detectron2_norm_values():
    g = torch.Generator().manual_seed(3)
    h, w, k = 40, 70, 25
    centers = torch.stack((torch.randint(0, h, (k,), generator=g), torch.randint(0, w, (k,), generator=g)), 1)
    offsets = torch.randn(2, h, w, generator=g) * 40
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    loc = (torch.stack((yy, xx)) + offsets).flatten(1).T[None]  # detectron2's [1, H*W, 2] view
    d2_dist = torch.norm(centers[:, None] - loc, dim=-1)  # [K, H*W]
    ours = pp_module.center_distances(
        centers[:, 0, None].float(), centers[:, 1, None].float(), loc[0, :, 0][None], loc[0, :, 1][None]
    )
    assert torch.equal(ours, d2_dist)


def test_pdl_pp_group_ties_go_to_lower_index():
    centers = torch.tensor([[0, 4], [0, 0], [8, 2]])
    offsets = torch.zeros(2, 1, 5)  # pixel (0, 2) is 2 px from centers 0 and 1
    assert group_pixels(centers, offsets).tolist() == [[2, 2, 1, 1, 1]]


# ---------------------------------------------------------------------------------------------
# merge: hand-built scenes with known ids


def test_pdl_pp_hand_built_scene():
    h, w = 20, 30
    logits = torch.full((19, h, w), -5.0)
    logits[0, 10:] = 5  # road, bottom half
    logits[10, :10] = 5  # sky, top half
    logits[1, 9, :3] = 10  # 3 px of sidewalk: below stuff_area -> void
    logits[13, 12:16, 2:8] = 10  # car A
    logits[13, 12:16, 20:28] = 10  # car B
    logits[11, 2:8, 12:16] = 10  # person
    logits[18, 0:2, 17:20] = 10  # bicycle pixels without a center: grouped to the person
    center = torch.zeros(1, h, w)
    center[0, 13, 4] = 0.8
    center[0, 13, 23] = 0.9
    center[0, 4, 14] = 0.7
    center[0, 3, 14] = 0.2  # not a peak (NMS), but the person's score reads it
    cfg = PostprocessConfig(stuff_area=10)
    out = panoptic_postprocess(logits[None], center[None], torch.zeros(1, 2, h, w), cfg)
    pan = out["panoptic_ids"][0]
    # Raster order of centers: person (4,14) -> 1, car A (13,4) -> 2, car B (13,23) -> 3.
    assert out["centers"][0].tolist() == [[4, 14], [13, 4], [13, 23]]
    assert (pan[2:8, 12:16] == 11001).all()
    assert (pan[0:2, 17:20] == 11001).all()  # the instance's majority class wins
    assert (pan[12:16, 2:8] == 13001).all()
    assert (pan[12:16, 20:28] == 13002).all()
    assert (pan[9, :3] == -1).all()
    assert int((pan == 0).sum()) == 10 * 30 - 4 * 6 - 4 * 8
    assert int((pan == 10000).sum()) == 10 * 30 - 3 - 4 * 6 - 2 * 3
    scores = out["scores"][0]
    assert set(scores) == {0, 10000, 11001, 13001, 13002}
    prob = torch.softmax(logits, dim=0)
    # car A: mask mean (13.5, 4.5) -> center[13, 4]
    assert scores[13001] == pytest.approx(0.8 * float(prob[13, 13, 4]), rel=1e-6)
    # person + bicycle pixels: mean y = (24*4.5 + 6*0.5)/30 = 3.7, mean x = (24*13.5 + 6*18)/30 = 14.4
    person_mask = pan == 11001
    assert scores[11001] == pytest.approx(0.2 * float(prob[11][person_mask].mean()), rel=1e-6)
    assert scores[0] == pytest.approx(float(prob[0][pan == 0].mean()), rel=1e-6)


def test_pdl_pp_majority_vote_tie_takes_smallest_class_like_torch_mode():
    sem = torch.tensor([[13, 11, 13, 11, 0, 0]])
    ins = torch.tensor([[1, 1, 1, 1, 0, 0]])
    assert int(torch.mode(torch.tensor([13, 11, 13, 11])).values) == 11
    pan = merge_semantic_and_instance(sem, ins, THINGS, stuff_area=2)
    assert pan.tolist() == [[11001, 11001, 11001, 11001, 0, 0]]


def test_pdl_pp_numbering_skips_empty_instances_and_counts_per_class():
    sem = torch.tensor([[13, 13, 11, 13, 12, 2]])
    ins = torch.tensor([[5, 5, 2, 3, 4, 7]])  # ids 1 and 6 are empty; 7 sits on stuff
    pan = merge_semantic_and_instance(sem, ins, THINGS, stuff_area=1)
    # Ascending instance ids: 2 -> person #1, 3 -> car #1, 4 -> rider #1, 5 -> car #2. Stuff pixel
    # with an instance id stays void (detectron2 takes stuff only where instance == 0).
    assert pan.tolist() == [[13002, 13002, 11001, 13001, 12001, -1]]


def test_pdl_pp_thing_pixels_without_centers_are_void_and_stuff_area_is_inclusive():
    sem = torch.tensor([[13, 13, 0, 0, 0, 1, 1]])
    ins = torch.zeros_like(sem)
    pan = merge_semantic_and_instance(sem, ins, THINGS, stuff_area=3)
    assert pan.tolist() == [[-1, -1, 0, 0, 0, -1, -1]]


def test_pdl_pp_thing_area_voids_small_instances_and_numbers_the_rest():
    # car instance 1: 2 px, instance 2: 3 px, person instance 3: 1 px; thing_area 3 is inclusive
    sem = torch.tensor([[13, 13, 13, 13, 13, 11, 0]])
    ins = torch.tensor([[1, 1, 2, 2, 2, 3, 0]])
    pan = merge_semantic_and_instance(sem, ins, THINGS, stuff_area=1, thing_area=3)
    assert pan.tolist() == [[-1, -1, 13001, 13001, 13001, -1, 0]]
    assert merge_semantic_and_instance(sem, ins, THINGS, stuff_area=1).tolist() == [
        [13001, 13001, 13002, 13002, 13002, 11001, 0]
    ]
    with pytest.raises(ValueError, match="thing_area"):
        PostprocessConfig(thing_area=-1)


def test_pdl_pp_nothing_detected_gives_empty_scores():
    logits = torch.zeros(1, 19, 8, 8)
    logits[:, 13] = 1  # all car, but no center
    out = panoptic_postprocess(logits, torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8))
    assert (out["panoptic_ids"] == -1).all()
    assert out["centers"][0].shape == (0, 2)
    assert out["scores"] == [{}]
    ids, scores = segment_scores(out["panoptic_ids"][0], logits[0], torch.zeros(1, 8, 8))
    assert ids.numel() == 0 and scores.numel() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pdl_pp_cuda_equals_cpu():
    for seed in range(10):
        logits, center, offsets, cfg = random_scene(seed)
        args = [torch.from_numpy(x)[None] for x in (logits, center, offsets)]
        cpu = panoptic_postprocess(*args, cfg)
        gpu = panoptic_postprocess(*(a.cuda() for a in args), cfg)
        assert torch.equal(cpu["panoptic_ids"], gpu["panoptic_ids"].cpu())
        assert cpu["scores"][0].keys() == gpu["scores"][0].keys()


# ---------------------------------------------------------------------------------------------
# bad input


def test_pdl_pp_bad_input_raises_clear_errors():
    good = (torch.zeros(1, 19, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="sem_logits must be a 4-D"):
        panoptic_postprocess(torch.zeros(19, 8, 8), *good[1:])
    with pytest.raises(ValueError, match="center must be"):
        panoptic_postprocess(good[0], torch.zeros(1, 1, 8, 9), good[2])
    with pytest.raises(ValueError, match="offsets must be"):
        panoptic_postprocess(good[0], good[1], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        panoptic_postprocess(good[0].long(), *good[1:])
    with pytest.raises(ValueError, match="torch.Tensor"):
        panoptic_postprocess(np.zeros((1, 19, 8, 8)), *good[1:])
    with pytest.raises(ValueError, match="center must be"):
        find_instance_centers(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        group_pixels(torch.tensor([[1, 1]]), torch.full((2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="integer"):
        merge_semantic_and_instance(torch.zeros(3, 3), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="nms_kernel"):
        PostprocessConfig(nms_kernel=4)
    with pytest.raises(ValueError, match="top_k"):
        PostprocessConfig(top_k=0)


def test_pdl_pp_config_from_yaml_dict():
    from panoptic_depthlab_core.config import ConfigError, from_dict

    cfg = from_dict(PostprocessConfig, {"top_k": 50, "thing_ids": [11, 13]})
    assert cfg.top_k == 50 and cfg.thing_ids == (11, 13)
    with pytest.raises(ConfigError):
        from_dict(PostprocessConfig, {"center_treshold": 0.2})
