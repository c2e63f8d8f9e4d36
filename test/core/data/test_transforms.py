"""Augmentation consistency: images whose pixel values encode their own coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_depthlab_core.data.transforms import AugmentParams, apply_augmentation, sample_augmentation

H, W = 128, 256
PAD = (124, 116, 104)


def _coded():
    yy, xx = np.mgrid[:H, :W]
    image = np.stack([xx, 2 * yy, np.full_like(xx, 50)], -1).astype(np.uint8)  # R = x, G = 2y
    ids = (yy * W + xx + 1).astype(np.int32)  # every pixel its own segment id
    depth = (1.0 + xx + 1000.0 * yy).astype(np.float32)
    valid = (xx % 7) != 0
    return image, ids, depth, valid


@pytest.mark.parametrize("seed", range(12))
def test_image_labels_and_depth_move_together(seed):
    image, ids, depth, valid = _coded()
    rng = np.random.default_rng(seed)
    p = sample_augmentation(rng, (H, W), (96, 160), (0.5, 2.0), 0.5)
    img, seg, dep, val = apply_augmentation(p, image, ids, depth, valid, PAD)
    assert img.shape == (96, 160, 3) and seg.shape == dep.shape == val.shape == (96, 160)
    pad = seg == 0
    inside = ~pad
    src_y, src_x = np.divmod(seg[inside] - 1, W)
    # labels: the nearest source pixel of each output pixel, through scale, crop and flip
    sy, sx = round(H * p.scale) / H, round(W * p.scale) / W
    rows, cols = np.nonzero(inside)
    exp_cols = (p.crop_w - 1 - cols) if p.flip else cols
    np.testing.assert_array_equal(src_y, np.floor((p.crop_y0 + rows + 0.5) / sy))
    np.testing.assert_array_equal(src_x, np.floor((p.crop_x0 + exp_cols + 0.5) / sx))
    # depth: same source pixel, divided by the scale; validity carried along
    np.testing.assert_array_equal(val[inside], valid[src_y, src_x])
    ok = val[inside]
    np.testing.assert_allclose(dep[inside][ok] * p.scale, 1.0 + src_x[ok] + 1000.0 * src_y[ok], rtol=1e-5)
    assert (dep[~val] == 0).all()
    # image: bilinear/area sampled at the same place -> R ~ x and G ~ 2y of the label's source
    interior = inside & np.pad(np.ones((94, 158), bool), 1)
    src_yi, src_xi = np.divmod(seg[interior] - 1, W)
    tol = 1.0 + 0.5 / min(p.scale, 1.0)  # nearest vs interpolated sampling (+ area averaging)
    assert np.abs(img[interior][:, 0].astype(float) - src_xi).max() <= tol
    assert np.abs(img[interior][:, 1].astype(float) - 2 * src_yi).max() <= 2 * tol
    # padding: void labels, invalid depth, the pad colour
    assert (img[pad] == PAD).all() and not val[pad].any()


def test_flip_and_identity_exactly():
    image, ids, depth, valid = _coded()
    same = apply_augmentation(AugmentParams(1.0, 0, 0, H, W, False), image, ids, depth, valid)
    np.testing.assert_array_equal(same[0], image)
    np.testing.assert_array_equal(same[1], ids)
    np.testing.assert_array_equal(same[2], np.where(valid, depth, 0))  # invalid depth reads 0
    flipped = apply_augmentation(AugmentParams(1.0, 0, 0, H, W, True), image, ids, depth, valid)
    np.testing.assert_array_equal(flipped[0], image[:, ::-1])
    np.testing.assert_array_equal(flipped[1], ids[:, ::-1])
    np.testing.assert_array_equal(flipped[3], valid[:, ::-1])


def test_scale_two_halves_depth_and_doubles_sizes():
    image, ids, depth, valid = _coded()
    img, seg, dep, val = apply_augmentation(AugmentParams(2.0, 0, 0, 64, 64, False), image, ids, depth, valid)
    np.testing.assert_array_equal(seg[::2, ::2], ids[:32, :32])
    np.testing.assert_array_equal(seg[1::2, 1::2], ids[:32, :32])
    np.testing.assert_allclose(dep[val], (depth[:32, :32].repeat(2, 0).repeat(2, 1) / 2)[val])


def test_bad_arguments():
    image, ids, depth, valid = _coded()
    with pytest.raises(ValueError, match="differ"):
        apply_augmentation(AugmentParams(1.0, 0, 0, 8, 8, False), image, ids[:5], depth, valid)
    with pytest.raises(ValueError, match="scale_range"):
        sample_augmentation(np.random.default_rng(0), (H, W), (8, 8), (2.0, 1.0))
