"""Visualisation: colours, blending, outlines, labels, legends and input checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from panoptic_depthlab_core.metadata import PALETTE
from panoptic_depthlab_core.results import Segment
from panoptic_depthlab_core.segments import compute_segments
from panoptic_depthlab_core.viz import (
    VizConfig,
    colorize_depth,
    colorize_panoptic,
    distance_to_rgb,
    overlay_distance,
)


def scene(h: int = 120, w: int = 200):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ids = np.full((h, w), -1, np.int32)
    ids[h // 2 :] = 0  # road
    ids[: h // 4] = 10000  # sky; rows h/4 .. h/2 stay void
    ids[70:100, 20:60] = 13001  # near car
    ids[70:100, 120:180] = 13002  # far car
    depth = np.full((h, w), 30.0, np.float32)
    depth[70:100, 20:60] = 8.0
    depth[70:100, 120:180] = 70.0
    return image, ids, depth


def test_viz_distance_colours_near_red_mid_green_far_blue():
    near, mid, far, nan = distance_to_rgb(np.array([10.0, 35.0, 60.0, np.nan])).astype(int)
    assert near[0] > 200 and near[1] < 50 and near[2] < 50
    assert mid[1] == 255 and mid[0] < 200 and mid[2] < 200
    assert far[2] > 200 and far[0] < 50
    assert tuple(nan) == (160, 160, 160)
    # Beyond the range: the end colours.
    np.testing.assert_array_equal(distance_to_rgb([2.0, 100.0]), distance_to_rgb([10.0, 60.0]))
    np.testing.assert_array_equal(distance_to_rgb([20.0], near_m=20, far_m=40), distance_to_rgb([10.0]))


def test_viz_overlay_blends_things_by_distance_and_stuff_by_palette():
    image, ids, depth = scene()
    segments = compute_segments(ids, depth)
    cfg = VizConfig(outline_px=0, label_things=False, legend=False, thing_alpha=0.5, stuff_alpha=0.25)
    out = overlay_distance(image, ids, segments, cfg)
    assert out.shape == image.shape and out.dtype == np.uint8
    void = ids == -1
    np.testing.assert_array_equal(out[void], image[void])  # void untouched

    def blend(px, colour, alpha):
        a = round(alpha * 256)
        return (px.astype(int) * (256 - a) + np.array(colour, int) * a + 128) >> 8

    near_colour = distance_to_rgb(np.array([8.0]))[0]
    far_colour = distance_to_rgb(np.array([70.0]))[0]
    np.testing.assert_array_equal(out[80, 30], blend(image[80, 30], near_colour, 0.5))
    np.testing.assert_array_equal(out[80, 150], blend(image[80, 150], far_colour, 0.5))
    np.testing.assert_array_equal(out[110, 100], blend(image[110, 100], PALETTE[0], 0.25))  # road
    np.testing.assert_array_equal(out[5, 5], blend(image[5, 5], PALETTE[10], 0.25))  # sky


def test_viz_overlay_outlines_labels_and_legend_draw_where_expected():
    image = np.full((120, 200, 3), 90, np.uint8)
    _, ids, depth = scene()
    segments = compute_segments(ids, depth)
    plain = overlay_distance(image, ids, segments, VizConfig(outline_px=0, label_things=False, legend=False))
    outlined = overlay_distance(
        image, ids, segments, VizConfig(outline_px=1, label_things=False, legend=False)
    )
    changed = np.any(outlined != plain, axis=2)
    # 1-px outlines: exactly on the car pixels that touch another segment.
    car = np.isin(ids, [13001, 13002])
    assert changed.any() and not changed[~car].any()
    assert changed[70, 30] and changed[85, 20] and not changed[85, 40]
    labelled = overlay_distance(image, ids, segments, VizConfig(outline_px=0, legend=False))
    diff = np.any(labelled != plain, axis=2)
    assert diff[78:92, 10:70].any()  # text around the near car's centroid (40, 84.5)
    assert not diff[:60].any()  # nothing drawn far from the things
    with_legend = overlay_distance(image, ids, segments, VizConfig(outline_px=0, label_things=False))
    legend = np.any(with_legend != plain, axis=2)
    ys, xs = np.nonzero(legend)
    assert ys.min() > 60 and xs.max() < 120  # bottom-left corner only


def test_viz_overlay_with_no_segments_is_the_image():
    image, ids, _ = scene()
    out = overlay_distance(image, np.full_like(ids, -1), [], VizConfig(legend=False))
    np.testing.assert_array_equal(out, image)
    assert overlay_distance(image, ids, [], VizConfig()).shape == image.shape


def test_viz_thing_without_depth_is_grey_and_unlabelled_distance():
    image, ids, _ = scene()
    seg = Segment(
        id=13001,
        class_id=13,
        class_name="car",
        is_thing=True,
        score=0.9,
        area=1200,
        bbox_xywh=(20, 70, 40, 30),
        centroid_xy=(39.5, 84.5),
    )
    out = overlay_distance(
        image, ids, [seg], VizConfig(outline_px=0, label_things=False, legend=False, thing_alpha=1)
    )
    np.testing.assert_array_equal(out[80, 30], [160, 160, 160])


def test_viz_depth_colours_invalid_black_and_scale_bar():
    depth = np.tile(np.linspace(1, 79, 200, dtype=np.float32), (120, 1))
    depth[:10, :10] = np.nan
    depth[:10, 10:20] = 0.0
    depth[:10, 20:30] = np.inf
    out = colorize_depth(depth, scale_bar=False)
    assert out.shape == (120, 200, 3) and out.dtype == np.uint8
    assert (out[:10, :30] == 0).all()
    assert out[50, 40, 0] > 200 and out[50, 199, 2] > 200  # near red, far blue
    with_bar = colorize_depth(depth)
    ys, xs = np.nonzero(np.any(with_bar != out, axis=2))
    assert ys.min() > 60 and xs.max() < 120


def test_viz_panoptic_colours_palette_and_instances_apart():
    _, ids, _ = scene()
    ids[70:100, 60:80] = 13003  # a third car touching the first
    out = colorize_panoptic(ids)
    np.testing.assert_array_equal(out[110, 100], PALETTE[0])
    np.testing.assert_array_equal(out[5, 5], PALETTE[10])
    assert (out[40, 100] == 0).all()  # void
    cars = {tuple(out[80, 30]), tuple(out[80, 150]), tuple(out[80, 70])}
    assert len(cars) == 3


def test_viz_bad_input_raises_clear_errors():
    image, ids, depth = scene()
    with pytest.raises(ValueError, match="uint8"):
        overlay_distance(image.astype(np.float32), ids, [])
    with pytest.raises(ValueError, match="RGB"):
        overlay_distance(image[..., 0], ids, [])
    with pytest.raises(ValueError, match="does not match"):
        overlay_distance(image, ids[:10], [])
    with pytest.raises(ValueError, match="integer"):
        overlay_distance(image, ids.astype(np.float32), [])
    with pytest.raises(ValueError, match="duplicate"):
        segs = compute_segments(ids, depth)
        overlay_distance(image, ids, segs + segs[:1])
    with pytest.raises(ValueError, match="depth_m"):
        colorize_depth(depth.astype(np.int32))
    with pytest.raises(ValueError, match="min_m < max_m"):
        colorize_depth(depth, 50, 10)
    with pytest.raises(ValueError, match="near_m < far_m"):
        VizConfig(near_m=60, far_m=10)
    with pytest.raises(ValueError, match="alpha"):
        VizConfig(thing_alpha=1.5)


def test_viz_1080p_is_vectorised():
    """Generous bound (shared CI machines): catches per-segment full-image loops, not jitter."""
    h, w = 1080, 1920
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ids = np.zeros((h, w), np.int32)
    for n in range(60):
        y, x = int(rng.integers(0, h - 100)), int(rng.integers(0, w - 100))
        ids[y : y + 80, x : x + 90] = 13001 + n
    segments = compute_segments(ids, np.full((h, w), 20.0, np.float32))
    t0 = time.perf_counter()
    out = overlay_distance(image, ids, segments)
    elapsed = time.perf_counter() - t0
    assert out.shape == (h, w, 3)
    assert elapsed < 3.0, f"overlay took {elapsed:.2f} s at 1080p"


@pytest.mark.parametrize("count", [20, 200])  # the uint8 lookup path and the general path (> 127)
def test_viz_overlay_many_segments_and_bgr_order(count):
    h, w = 64, 20 * 16
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ids = np.full((h, w), 0, np.int32)  # road everywhere, then a grid of small cars
    for n in range(count):
        y, x = (n // 20) * 6, (n % 20) * 16
        ids[y : y + 5, x : x + 12] = 13001 + n
    depth = np.full((h, w), 20.0, np.float32)
    segments = compute_segments(ids, depth)
    cfg = VizConfig(outline_px=1, label_things=False, legend=False, thing_alpha=0.5, stuff_alpha=0.25)
    out = overlay_distance(image, ids, segments, cfg)
    out_bgr = overlay_distance(image, ids, segments, cfg, bgr=True)
    np.testing.assert_array_equal(out_bgr, out[:, :, ::-1])

    a = round(0.5 * 256)
    colour = distance_to_rgb(np.array([20.0]))[0].astype(int)
    last = count - 1
    inner = ((last // 20) * 6 + 2, (last % 20) * 16 + 5)  # inside the last car, away from its outline
    expected = (image[inner].astype(int) * (256 - a) + colour * a + 128) >> 8
    np.testing.assert_array_equal(out[inner], expected)
    edge = ((last // 20) * 6 + 2, (last % 20) * 16)  # its left column: outline, brightened colour
    np.testing.assert_array_equal(out[edge], 255 - (255 - colour) // 3)
    road = (h - 1, w - 1)
    a_road = round(0.25 * 256)
    expected_road = (image[road].astype(int) * (256 - a_road) + PALETTE[0].astype(int) * a_road + 128) >> 8
    np.testing.assert_array_equal(out[road], expected_road)


def test_viz_overlay_same_for_any_integer_id_dtype_and_ignores_unknown_huge_ids():
    image, ids, depth = scene()
    segments = compute_segments(ids, depth)
    cfg = VizConfig(legend=False, label_things=False)
    want = overlay_distance(image, ids, segments, cfg)
    for dtype in (np.int64, np.uint32):
        as_dtype = np.where(ids < 0, 60000, ids).astype(dtype)  # no negatives in unsigned maps
        expected = overlay_distance(image, np.where(ids < 0, 60000, ids).astype(np.int32), segments, cfg)
        np.testing.assert_array_equal(overlay_distance(image, as_dtype, segments, cfg), expected)
    huge = ids.copy()
    huge[ids == -1] = 2_000_000_000  # not a listed segment: stays untouched
    np.testing.assert_array_equal(overlay_distance(image, huge, segments, cfg), want)



@pytest.mark.parametrize("count", [6, 150])  # the uint8 index path and the general path
@pytest.mark.parametrize("out_hw", [(250, 333), (40, 70)])  # up- and downscaled
def test_viz_overlay_from_the_network_map_is_the_same_figure(count, out_hw):
    """``upsampling`` looks each segment up on the small map: exactly the full-resolution figure,
    also with void, ids without a segment and segments absent from the map."""
    from panoptic_depthlab_core.maps import nearest_index
    from panoptic_depthlab_core.results import NearestUpsampling

    rng = np.random.default_rng(count)
    small = rng.choice(np.r_[-1, 0, 10000, 13001 + np.arange(count)], size=(60, 97)).astype(np.int32)
    rows = nearest_index(60, out_hw[0], "cpu").numpy()
    cols = nearest_index(97, out_hw[1], "cpu").numpy()
    upsampling = NearestUpsampling(small, rows, cols)
    ids = upsampling.upsample(small)
    image = rng.integers(0, 256, (*out_hw, 3), dtype=np.uint8)
    depth = rng.uniform(5, 80, out_hw).astype(np.float32)
    segments = [s for s in compute_segments(ids, depth) if s.id != 13001]  # one id without a segment
    segments.append(Segment(id=13999, class_id=13, class_name="car", is_thing=True, score=1.0, area=0,
                            bbox_xywh=(0, 0, 0, 0), centroid_xy=(0, 0)))  # fmt: skip
    for bgr in (False, True):
        want = overlay_distance(image, ids, segments, VizConfig(), bgr=bgr)
        got = overlay_distance(image, ids, segments, VizConfig(), bgr=bgr, upsampling=upsampling)
        np.testing.assert_array_equal(got, want)
        # the full-resolution ids need not exist at all (Predictor.predict(maps=...) left them out)
        np.testing.assert_array_equal(overlay_distance(image, None, segments, bgr=bgr, upsampling=upsampling), want)
    wrong = NearestUpsampling(small, rows[:-1], cols)
    with pytest.raises(ValueError, match="upsampling maps to"):
        overlay_distance(image, ids, segments, upsampling=wrong)
    with pytest.raises(ValueError, match="upsampling maps to"):
        overlay_distance(image, None, segments, upsampling=wrong)
    with pytest.raises(ValueError, match="needs panoptic_ids or the upsampling"):
        overlay_distance(image, None, segments)
