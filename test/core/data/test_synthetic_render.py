"""The renderer: determinism, exact geometry of labels and depth, class coverage, sequences."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_depthlab_core.data.synthetic import render_frame, render_sequence
from panoptic_depthlab_core.metadata import label_id_to_train_id_lut

SIZE = (96, 192)


def test_same_seed_same_frame_and_different_seeds_differ():
    a = render_frame(3, 1, SIZE)
    b = render_frame(3, 1, SIZE)
    for name in ("rgb", "label_ids", "instance_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(np.isnan(a.depth_m), np.isnan(b.depth_m))
    np.testing.assert_array_equal(np.nan_to_num(a.depth_m), np.nan_to_num(b.depth_m))
    c = render_frame(3, 2, SIZE)
    assert not np.array_equal(a.label_ids, c.label_ids)
    assert a.rgb.dtype == np.uint8 and a.rgb.shape == (*SIZE, 3)
    assert a.depth_m.dtype == np.float32 and a.instance_ids.dtype == np.int32


def _world_points(frame):
    """Back-project every pixel with its depth into the street frame."""
    cam = frame.camera
    h, w = frame.depth_m.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(u - cam.u0) / cam.fx, (v - cam.v0) / cam.fy, np.ones_like(u, dtype=float)], -1)
    pose = frame.world_from_camera
    return rays * frame.depth_m[..., None].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]


def test_depth_is_exact_z_depth_on_the_road_plane():
    frame = render_frame(11, 0, (128, 256))
    pts = _world_points(frame)
    road = frame.label_ids == 7
    assert road.sum() > 500
    # every road pixel lies on the plane y = 0, so depth and label are exact per pixel centre
    np.testing.assert_allclose(pts[road][:, 1], 0.0, atol=2e-3 * np.nanmax(frame.depth_m[road]))
    # camera-frame z of the back-projected point equals the stored depth
    cam_pts = (pts[road] - frame.world_from_camera[:3, 3]) @ frame.world_from_camera[:3, :3]
    np.testing.assert_allclose(cam_pts[:, 2], frame.depth_m[road], rtol=1e-5)


def test_sky_and_ego_vehicle_have_no_depth_everything_else_has():
    frame = render_frame(4, 0, SIZE)
    nodepth = np.isnan(frame.depth_m)
    no_surface = np.isin(frame.label_ids, (23, 1))
    np.testing.assert_array_equal(nodepth, no_surface)
    assert (frame.depth_m[~nodepth] > 0.5).all()


def test_instances_match_labels_and_riders_are_separate_from_their_bikes():
    seen_rider = False
    for index in range(6):
        f = render_frame(21, index, SIZE)
        inst = f.instance_ids
        things = inst >= 1000
        np.testing.assert_array_equal(inst[things] // 1000, f.label_ids[things])
        np.testing.assert_array_equal(inst[~things], f.label_ids[~things])
        thing_labels = np.isin(f.label_ids, (24, 25, 26, 27, 28, 31, 32, 33))
        np.testing.assert_array_equal(things, thing_labels)  # every thing pixel belongs to an instance
        if (f.label_ids == 25).any():
            seen_rider = True
            assert not np.isin(inst[f.label_ids == 25] // 1000, (32, 33)).any()
    assert seen_rider


def test_a_small_set_covers_at_least_17_classes_and_near_and_far_things():
    lut = label_id_to_train_id_lut()
    classes = set()
    thing_depths = []
    for index in range(8):
        f = render_frame(0, index, (128, 256))
        classes |= set(lut[np.unique(f.label_ids)].tolist()) - {255}
        thing_depths.append(f.depth_m[f.instance_ids >= 1000])
    assert len(classes) >= 17, sorted(classes)
    d = np.concatenate(thing_depths)
    assert d.min() < 6.0 and d.max() > 80.0


def test_sequence_is_coherent_and_deterministic():
    frames = list(render_sequence(5, 4, SIZE, fps=10.0))
    again = list(render_sequence(5, 4, SIZE, fps=10.0))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    for a, b in zip(frames, again, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    cams = {f.camera for f in frames}
    assert len(cams) == 1  # one camera for the whole drive
    z = [f.world_from_camera[2, 3] for f in frames]
    steps = np.diff(z)
    assert (steps > 0.4).all() and np.allclose(steps, steps[0])  # the ego drives forward steadily
    agree = (frames[0].label_ids == frames[1].label_ids).mean()
    assert 0.6 < agree < 1.0  # consecutive frames: the same street, but it moves


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="size"):
        render_frame(0, 0, (4, 100))
    with pytest.raises(ValueError, match="num_frames"):
        next(render_sequence(0, 0, SIZE))
    with pytest.raises(ValueError, match="seed"):
        render_frame(-1, 0, SIZE)
