"""Panoptic-DeepLab targets on a hand-built scene, and against detectron2's per-segment loop."""

from __future__ import annotations

import numpy as np

from panoptic_depthlab_core.data.cityscapes import PanopticSegment
from panoptic_depthlab_core.data.targets import build_panoptic_targets, gaussian_kernel

THING_TRAIN_IDS = {11, 12, 13, 14, 15, 16, 17, 18}


def _seg(id_, train_id, crowd=False):
    return PanopticSegment(id_, 0, train_id, train_id in THING_TRAIN_IDS, crowd)


def _scene():
    """200x300: road (id 7), a large car (70x80 = 5600 px), a small car (20x30), a crowd, void."""
    pan = np.full((200, 300), 7, np.int32)
    pan[10:80, 20:100] = 26000
    pan[150:170, 200:230] = 26001
    pan[100:120, 100:160] = 24  # crowd of persons
    pan[:, 290:] = 0  # void
    segments = [_seg(7, 0), _seg(26000, 13), _seg(26001, 13), _seg(24, 11, crowd=True), _seg(99999, 13)]
    return pan, segments


def test_hand_built_scene():
    pan, segments = _scene()
    t = build_panoptic_targets(pan, segments)
    sem = t["sem_seg"]
    assert sem[0, 0] == 0 and sem[50, 50] == 13 and sem[110, 120] == 11 and sem[5, 295] == 255
    w = t["sem_seg_weights"]
    assert w[50, 50] == 1.0  # 5600 px >= 4096
    assert w[160, 210] == 3.0  # 600 px small instance
    assert w[110, 120] == 3.0  # crowd things count as small instances too (detectron2)
    assert w[0, 0] == 1.0 and w[5, 295] == 1.0
    # centers: peak 1 at the rounded centroid; Gaussian sigma 10 around it
    c = t["center"][0]
    assert c.shape == (200, 300)
    # centroids (44.5, 59.5), (159.5, 214.5), (109.5, 129.5) round half to even, as in detectron2
    assert c[44, 60] == 1.0 and c[160, 214] == 1.0 and c[110, 130] == 1.0
    np.testing.assert_allclose(c[44, 60 + 10], np.exp(-0.5), rtol=1e-6)
    assert c[0, 200] == 0.0
    # offsets point to the centroid (44.5, 59.5) of the large car
    np.testing.assert_allclose(t["offset"][:, 10, 20], [34.5, 39.5])
    np.testing.assert_allclose(t["offset"][:, 79, 99], [-34.5, -39.5])
    assert (t["offset"][:, 0, 0] == 0).all()
    cw, ow = t["center_weights"], t["offset_weights"]
    assert cw[0, 0] == 1 and cw[50, 50] == 1 and cw[110, 120] == 0 and cw[5, 295] == 0
    assert ow[0, 0] == 0 and ow[50, 50] == 1 and ow[110, 120] == 0 and ow[5, 295] == 0


def _detectron2_reference(panoptic, segments, sigma=10, small_area=4096, small_weight=3):
    """detectron2's PanopticDeepLabTargetGenerator.__call__, transcribed loop for loop."""
    h, w = panoptic.shape
    g = gaussian_kernel(sigma)
    semantic = np.zeros_like(panoptic, dtype=np.uint8) + 255
    center = np.zeros((h, w), dtype=np.float32)
    offset = np.zeros((2, h, w), dtype=np.float32)
    y_coord, x_coord = np.meshgrid(
        np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"
    )
    semantic_weights = np.ones_like(panoptic, dtype=np.uint8)
    center_weights = np.zeros_like(panoptic, dtype=np.uint8)
    offset_weights = np.zeros_like(panoptic, dtype=np.uint8)
    for seg in segments:
        cat_id = seg.train_id
        semantic[panoptic == seg.id] = cat_id
        if not seg.iscrowd:
            center_weights[panoptic == seg.id] = 1
            if cat_id in THING_TRAIN_IDS:
                offset_weights[panoptic == seg.id] = 1
        if cat_id in THING_TRAIN_IDS:
            mask_index = np.where(panoptic == seg.id)
            if len(mask_index[0]) == 0:
                continue
            if len(mask_index[0]) < small_area:
                semantic_weights[panoptic == seg.id] = small_weight
            center_y, center_x = np.mean(mask_index[0]), np.mean(mask_index[1])
            y, x = int(round(center_y)), int(round(center_x))
            ul = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
            br = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
            gx0, gx1 = max(0, -ul[0]), min(br[0], w) - ul[0]
            gy0, gy1 = max(0, -ul[1]), min(br[1], h) - ul[1]
            cx0, cx1 = max(0, ul[0]), min(br[0], w)
            cy0, cy1 = max(0, ul[1]), min(br[1], h)
            center[cy0:cy1, cx0:cx1] = np.maximum(center[cy0:cy1, cx0:cx1], g[gy0:gy1, gx0:gx1])
            offset[0][mask_index] = center_y - y_coord[mask_index]
            offset[1][mask_index] = center_x - x_coord[mask_index]
    return semantic, semantic_weights, center, center_weights, offset, offset_weights


def test_matches_detectron2_loop_on_random_overlapping_blobs():
    rng = np.random.default_rng(0)
    h, w = 120, 170
    pan = np.full((h, w), 7, np.int32)
    segments = [_seg(7, 0), _seg(11, 2)]
    pan[:30] = 11
    for k in range(12):  # overlapping ellipses at the borders too: partly cropped instances
        cy, cx = rng.uniform(-10, h + 10), rng.uniform(-10, w + 10)
        ry, rx = rng.uniform(3, 40, 2)
        yy, xx = np.mgrid[:h, :w]
        label = (24, 26, 33)[k % 3]
        sid = label * 1000 + k
        pan[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = sid
        segments.append(_seg(sid, {24: 11, 26: 13, 33: 18}[label], crowd=(k == 5)))
    pan[:, :3] = 0
    ref = _detectron2_reference(pan, segments)
    t = build_panoptic_targets(pan, segments)
    np.testing.assert_array_equal(t["sem_seg"], ref[0])
    np.testing.assert_array_equal(t["sem_seg_weights"], ref[1])
    np.testing.assert_allclose(t["center"][0], ref[2], atol=1e-7)
    np.testing.assert_array_equal(t["center_weights"], ref[3])
    np.testing.assert_allclose(t["offset"], ref[4], atol=1e-4)
    np.testing.assert_array_equal(t["offset_weights"], ref[5])
    assert t["sem_seg"].dtype == np.int64 and t["offset"].dtype == np.float32
