"""Ground-plane distance: the formula against exact depth on the synthetic road, contacts on the
network map, reliability marks, fusion/sources, the camera-mount errors, the health monitor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from panoptic_depthlab_core.config import ConfigError
from panoptic_depthlab_core.data.synthetic import panoptic_from_instance_ids, render_frame
from panoptic_depthlab_core.data.synthetic.camera import CameraParams
from panoptic_depthlab_core.data.synthetic.render import render_scene
from panoptic_depthlab_core.data.synthetic.scene import ROAD, generate_scene
from panoptic_depthlab_core.ground_distance import (
    CameraMount,
    CameraMountError,
    DepthGroundAgreement,
    GroundContact,
    GroundDistanceConfig,
    apply_ground_distance,
    depth_decoder_trained,
    ground_contacts,
    ground_depth,
)
from panoptic_depthlab_core.results import FrameResult, NearestUpsampling, Segment
from panoptic_depthlab_core.segments import compute_segments


@pytest.fixture(scope="module")
def street():
    frames = [render_frame(11, i, (256, 512)) for i in range(3)]
    return [(f, panoptic_from_instance_ids(f.instance_ids, f.label_ids)) for f in frames]


def test_ground_depth_equals_the_exact_road_depth() -> None:
    # a level-rolled camera over the synthetic street: every road pixel's exact z depth
    rng = np.random.default_rng(5)
    for pitch in (0.0, 0.04, -0.02):
        camera = CameraParams(width=320, height=160, fx=350.0, fy=351.0, u0=161.0, v0=78.0, baseline=0.2,
                              height_m=1.35, pitch=pitch, roll=0.0)
        frame = render_scene(generate_scene(rng), camera, (0.0, 0.0), 0.0, rng)
        rows, cols = np.nonzero(frame.label_ids == ROAD)
        z = ground_depth(rows.astype(np.float64), frame.K, CameraMount(1.35, pitch))
        exact = frame.depth_m[rows, cols]
        assert np.allclose(z, exact, rtol=1e-4)


def test_contacts_of_things_on_the_road_match_exact_depth(street) -> None:
    errors = []
    for frame, ids in street:
        mount = CameraMount(frame.camera.height_m, frame.camera.pitch)
        contacts = ground_contacts(ids, frame.K, mount)
        for sid, c in contacts.items():
            mask = ids == sid
            if not c.reliable or mask.sum() < 100:
                continue
            # the exact depth at the contact: the object's lowest visible pixels
            rr, cc = np.nonzero(mask)
            lowest = rr >= rr.max() - 1
            exact = float(np.nanmedian(frame.depth_m[rr[lowest], cc[lowest]]))
            if exact < 40:
                errors.append(abs(c.distance_m - exact) / exact)
    assert len(errors) >= 8
    assert float(np.median(errors)) < 0.08, errors


def test_contacts_on_the_network_map_agree_with_full_resolution(street) -> None:
    frame, ids = street[0]
    mount = CameraMount(frame.camera.height_m, frame.camera.pitch)
    full = ground_contacts(ids, frame.K, mount)
    rows = np.arange(256) // 2
    cols = np.arange(512) // 2
    small = ids[::2, ::2]
    K_full = frame.K
    half = ground_contacts(small, K_full, mount, rows=rows, cols=cols)
    common = [s for s in full if s in half and full[s].reliable and half[s].reliable and full[s].distance_m < 40]
    assert common
    for s in common:
        assert half[s].distance_m == pytest.approx(full[s].distance_m, rel=0.08)


def test_border_and_occlusion_marked_unreliable() -> None:
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    mount = CameraMount(1.5, 0.0)
    ids = np.zeros((480, 640), np.int32)  # road
    ids[300:400, 100:200] = 13001  # a car standing on the road
    ids[400:480, 300:400] = 13002  # a car cut by the bottom border
    ids[250:330, 450:550] = 13003  # a car whose bottom ends on ...
    ids[330:380, 440:560] = 11001  # ... a person in front of it
    c = ground_contacts(ids, K, mount)
    # the mask's last row is 399: its bottom edge (the contact) at v = 399.5
    assert c[13001].reliable and c[13001].distance_m == pytest.approx(1.5 * 500 / (399.5 - 240), rel=1e-9)
    assert not c[13002].reliable and c[13002].reason == "image_border"
    assert not c[13003].reliable and c[13003].reason == "occluded"
    assert c[11001].reliable
    ids[100:150, 10:50] = 13004  # entirely above the horizon (row 240)
    c = ground_contacts(ids, K, mount)
    assert c[13004].reason == "above_horizon" and math.isnan(c[13004].distance_m)
    assert ground_contacts(ids, None, mount) == {}  # no K: no contacts, no error


def _result_with_depth(ids: np.ndarray, depth: np.ndarray, K: np.ndarray) -> FrameResult:
    return FrameResult(ids, None, depth, compute_segments(ids, depth, K=K), K=K)


def test_sources_ground_fused_depth() -> None:
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    mount = CameraMount(1.5, 0.0)
    ids = np.zeros((480, 640), np.int32)
    ids[300:400, 100:200] = 13001
    ids[400:480, 300:400] = 13002
    truth = 1.5 * 500 / (399.5 - 240)
    depth = np.full(ids.shape, 30.0, np.float32)  # an untrained decoder's nonsense
    result = _result_with_depth(ids, depth, K)
    contacts = apply_ground_distance(result, mount, depth_trained=False)
    by_id = {s.id: s for s in result.segments}
    assert by_id[13001].distance_source == "ground" and by_id[13001].distance_m == pytest.approx(truth, rel=0.01)
    assert by_id[13001].position_xyz_m[2] == pytest.approx(truth, rel=0.01)
    assert by_id[13002].distance_source == "ground" and not by_id[13002].distance_reliable
    assert by_id[0].distance_source == "depth"  # stuff untouched
    assert contacts[13001].depth_distance_m == pytest.approx(30.0)
    # a trained decoder close to the truth: fused where the contact is reliable, depth elsewhere
    depth = np.full(ids.shape, truth * 1.05, np.float32)
    result = _result_with_depth(ids, depth, K)
    apply_ground_distance(result, mount, depth_trained=True)
    by_id = {s.id: s for s in result.segments}
    assert by_id[13001].distance_source == "fused"
    assert truth <= by_id[13001].distance_m <= truth * 1.05
    assert by_id[13002].distance_source == "depth" and by_id[13002].distance_m == pytest.approx(truth * 1.05)
    # no K: no ground, and without a trained decoder the distance is unknown, not noise
    result = _result_with_depth(ids, depth, K)
    result.K = None
    apply_ground_distance(result, mount, depth_trained=False)
    thing = next(s for s in result.segments if s.id == 13001)
    assert math.isnan(thing.distance_m) and thing.position_xyz_m is None and not thing.distance_reliable


def test_apply_uses_the_network_map_when_upsampled() -> None:
    K = np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]])
    small = np.zeros((90, 160), np.int32)
    small[50:70, 40:60] = 13001  # last network row 69 = input rows 552..559: bottom edge at v = 559.5
    rows, cols = np.arange(720) // 8, np.arange(1280) // 8
    up = NearestUpsampling(small, rows, cols)
    seg = Segment(id=13001, class_id=13, class_name="car", is_thing=True, score=1.0, area=25600,
                  bbox_xywh=(320, 400, 160, 160), centroid_xy=(400, 480))
    result = FrameResult(None, None, None, [seg], K=K, upsampling=up)
    apply_ground_distance(result, CameraMount(1.2, 0.0), depth_trained=False)
    assert result.segments[0].distance_m == pytest.approx(1.2 * 1000 / (559.5 - 360), rel=1e-9)


@pytest.mark.parametrize(
    ("height", "pitch", "match"),
    [(None, 0.0, "height .* missing"), (0.0, 0.0, r"height .* \(0, 10\]"), (-1.2, 0.0, "height"),
     (12.0, 0.0, "height"), (float("nan"), 0.0, "finite"), (1.4, None, "pitch is missing"),
     (1.4, 2.0, "45 deg"), (1.4, -0.9, "45 deg")],
)
def test_camera_mount_missing_or_absurd(height, pitch, match) -> None:
    with pytest.raises(CameraMountError, match=match):
        CameraMount(height, pitch)


def test_camera_mount_from_cityscapes_json() -> None:
    mount = CameraMount.from_cityscapes_json({"extrinsic": {"z": 1.22, "pitch": 0.038}})
    assert mount.height_m == 1.22 and mount.pitch_rad == 0.038
    with pytest.raises(CameraMountError, match="extrinsic"):
        CameraMount.from_cityscapes_json({"intrinsic": {}})


def test_depth_decoder_trained_from_sidecar_or_metadata(tmp_path) -> None:
    from panoptic_depthlab_core.weights import save_safetensors

    ours = tmp_path / "ours.safetensors"
    save_safetensors({"w": np.zeros(2, np.float32)}, ours)
    assert depth_decoder_trained(ours)
    converted = tmp_path / "d2.safetensors"
    save_safetensors({"w": np.zeros(2, np.float32)}, converted, metadata={"depth_decoder_trained": "false"})
    assert not depth_decoder_trained(converted)
    older = tmp_path / "old.safetensors"
    save_safetensors({"w": np.zeros(2, np.float32)}, older)
    (tmp_path / "old.safetensors.json").write_text(json.dumps({"depth_head": "fresh_init"}))
    assert not depth_decoder_trained(older)


def _contact(depth: float, ground: float) -> GroundContact:
    return GroundContact(13001, 0.0, 0.0, ground, (0.0, 0.0, ground), True, "", 10, depth)


def test_agreement_monitor_reports_persistent_disagreement() -> None:
    monitor = DepthGroundAgreement(window_frames=10, min_samples=6)
    assert monitor.update({1: _contact(10.0, 10.0)}).healthy is None  # too few samples yet
    for _ in range(9):
        status = monitor.update({1: _contact(10.5, 10.0), 2: _contact(19.0, 20.0)})
    assert status.healthy and 0.9 < status.median_ratio < 1.1
    for _ in range(10):  # the decoder now reads 40 % short, frame after frame
        status = monitor.update({1: _contact(6.0, 10.0), 2: _contact(12.0, 20.0)})
    assert status.healthy is False and "disagrees" in status.message
    assert status.median_ratio == pytest.approx(0.6)


def test_contact_a_few_rows_above_the_bottom_border_counts_as_cut() -> None:
    """A predicted mask that bleeds to within a few rows of the frame's bottom edge is not a clean
    contact (it would read metres too near): within border_margin_fraction of the height it is marked."""
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    mount = CameraMount(1.5, 0.0)
    ids = np.zeros((480, 640), np.int32)
    ids[380:476, 100:200] = 13001  # ends 4 rows above the border: inside 2 % of 480 rows (10 rows)
    ids[380:460, 300:400] = 13002  # ends 20 rows above it: a real contact
    c = ground_contacts(ids, K, mount)
    assert not c[13001].reliable and c[13001].reason == "near_border"
    assert c[13002].reliable
    loose = ground_contacts(ids, K, mount, GroundDistanceConfig(border_margin_fraction=0.0))
    assert loose[13001].reliable
    with pytest.raises(ConfigError, match="border_margin_fraction"):
        GroundDistanceConfig(border_margin_fraction=0.6)


def test_near_border_contact_is_fused_but_not_trusted_alone() -> None:
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    mount = CameraMount(1.5, 0.0)
    ids = np.zeros((480, 640), np.int32)
    ids[380:476, 100:200] = 13001  # bottom 4 rows above the border: near_border
    depth = np.full((480, 640), 5.0, np.float32)
    fused = _result_with_depth(ids, depth, K)
    apply_ground_distance(fused, mount, depth_trained=True)
    car = next(s for s in fused.segments if s.id == 13001)
    assert car.distance_source == "fused" and car.distance_reliable
    alone = _result_with_depth(ids, depth, K)
    apply_ground_distance(alone, mount, depth_trained=False)
    car = next(s for s in alone.segments if s.id == 13001)
    assert car.distance_source == "ground" and not car.distance_reliable
    # pitched far up, that contact row is above the horizon: the geometry decides (no NaN is fused),
    # the decoder's distance stays
    up = CameraMount(1.5, -0.6)
    assert ground_contacts(ids, K, up)[13001].reason == "above_horizon"
    tilted = _result_with_depth(ids, depth, K)
    apply_ground_distance(tilted, up, depth_trained=True)
    car = next(s for s in tilted.segments if s.id == 13001)
    assert car.distance_source == "depth" and car.distance_m == pytest.approx(5.0)
