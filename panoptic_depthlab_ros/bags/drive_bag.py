"""Write a camera drive (RGB + intrinsics + optional GT depth/panoptic) as a rosbag2 bag.

Messages are built with the rosbags typestore and serialized to CDR in pure Python, so making bags
needs no ROS installation. Topic layout (what bag-eval and the demo expect by default):

- ``/camera/image_raw``   sensor_msgs/Image rgb8
- ``/camera/camera_info`` sensor_msgs/CameraInfo (plumb_bob, no distortion, P = [K | 0])
- ``/gt/depth``           sensor_msgs/Image 32FC1, metres along z, NaN where there is no depth
- ``/gt/panoptic``        sensor_msgs/Image 16UC1, train_id * 1000 + instance, 65535 = void (the
  node's ``~/panoptic`` encoding)
- ``/gt/tracks``          panoptic_depthlab_msgs/TrackedSegmentArray, the exact motion of every visible
  thing when the drive knows it (synth-bag): id and panoptic_id = the GT panoptic id (the same object
  keeps it over the drive), distance = z of its ground reference point, velocity relative to the
  camera, in_path for a 1.5 m corridor (``GT_CORRIDOR_HALF_WIDTH_M``) with the exact time to collision
- ``/tf_static``          tf2_msgs/TFMessage base_link -> camera_optical_frame (transient local)

Every message of one frame carries the same header stamp, and is written at that bag time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import BagWriter

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GT_DEPTH_TOPIC = "/gt/depth"
GT_PANOPTIC_TOPIC = "/gt/panoptic"
GT_TRACKS_TOPIC = "/gt/tracks"
GT_TRACKS_TYPE = "panoptic_depthlab_msgs/msg/TrackedSegmentArray"
GT_CORRIDOR_HALF_WIDTH_M = 1.5  # the tracker's default corridor (TrackerConfig.corridor_half_width_m)
TF_STATIC_TOPIC = "/tf_static"
CAMERA_FRAME_ID = "camera_optical_frame"
BASE_FRAME_ID = "base_link"
PANOPTIC_VOID_16U = 65535
# A fixed start time keeps bags byte-identical for the same inputs (2023-11-14T22:13:20Z).
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000


@dataclass
class DriveFrame:
    """One camera frame; GT maps are optional (None: that topic gets no message for this frame)."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    K: np.ndarray  # 3x3
    depth_m: np.ndarray | None = None  # float32 [H, W], NaN/0/inf where invalid
    panoptic_ids: np.ndarray | None = None  # int [H, W], train_id*1000+instance, -1 void
    camera_height_m: float | None = None  # mount for /tf_static (taken from the first frame)
    camera_pitch_rad: float | None = None
    motion: Any = None  # data.synthetic.drive.FrameMotion: exact motion for /gt/tracks (None: no message)


def panoptic_to_16u(panoptic_ids: np.ndarray) -> np.ndarray:
    """Our id map (-1 void) -> the 16UC1 wire encoding (65535 void)."""
    ids = np.asarray(panoptic_ids).astype(np.int64)
    if ids.size and int(ids.max()) >= PANOPTIC_VOID_16U:
        raise ValueError(f"panoptic id {int(ids.max())} does not fit 16UC1 (max {PANOPTIC_VOID_16U - 1})")
    return np.where(ids < 0, PANOPTIC_VOID_16U, ids).astype(np.uint16)


def panoptic_from_16u(panoptic_16u: np.ndarray) -> np.ndarray:
    """The 16UC1 wire encoding -> our int32 id map with -1 void."""
    ids = np.asarray(panoptic_16u).astype(np.int32)
    ids[ids == PANOPTIC_VOID_16U] = -1
    return ids


def _rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation -> (x, y, z, w), w >= 0."""
    w = np.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2.0
    x = np.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2.0
    y = np.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2.0
    z = np.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2.0
    x = np.copysign(x, R[2, 1] - R[1, 2])
    y = np.copysign(y, R[0, 2] - R[2, 0])
    z = np.copysign(z, R[1, 0] - R[0, 1])
    return float(x), float(y), float(z), float(w)


def camera_mount_rotation(pitch_rad: float) -> np.ndarray:
    """base_link (x fwd, y left, z up) <- optical frame (x right, y down, z fwd), nose down by pitch."""
    optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: optical axes in base
    c, s = np.cos(pitch_rad), np.sin(pitch_rad)
    pitch_down = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # about +y: forward tilts down
    return pitch_down @ optical


class RosbagsMessages:
    """Builds and serializes the messages above with a rosbags typestore."""

    def __init__(self, typestore: Any) -> None:
        self.store = typestore
        self.T = typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        time_cls = self.T["builtin_interfaces/msg/Time"]
        return self.T["std_msgs/msg/Header"](
            stamp=time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
            frame_id=frame_id,
        )

    def image(self, pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
        pixels = np.ascontiguousarray(pixels)
        if pixels.dtype.byteorder == ">":
            pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
        height, width = pixels.shape[:2]
        msg = self.T["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id),
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=pixels.nbytes // height,
            data=pixels.reshape(-1).view(np.uint8),
        )
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def camera_info(self, K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> bytes:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi_cls = self.T["sensor_msgs/msg/RegionOfInterest"]
        roi = roi_cls(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = self.T["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id),
            height=height,
            width=width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=K.reshape(-1),
            r=np.eye(3).reshape(-1),
            p=P.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"))

    def gt_tracks(self, motion: Any, stamp_ns: int, frame_id: str,
                  corridor_half_width_m: float = GT_CORRIDOR_HALF_WIDTH_M) -> bytes:
        """The exact motion of a frame's visible things as a TrackedSegmentArray (see the module doc)."""
        T = self.T
        segments = []
        for obj in motion.objects:
            x, _, z = obj.position_xyz_m
            vx, vy, vz = obj.velocity_xyz_mps
            in_path = bool(z > 0 and abs(x) <= corridor_half_width_m)
            ttc = math.nan
            if in_path:
                ttc = z / -vz if -vz > 0 else math.inf
            segments.append(T["panoptic_depthlab_msgs/msg/TrackedSegment"](
                id=str(obj.panoptic_id), panoptic_id=int(obj.panoptic_id), distance=float(z), distance_source=0,
                velocity=T["geometry_msgs/msg/Vector3"](x=float(vx), y=float(vy), z=float(vz)),
                in_path=in_path, time_to_collision=float(ttc), age=float(motion.time_s),
            ))
        msg = T[GT_TRACKS_TYPE](header=self.header(stamp_ns, frame_id), segments=segments)
        return bytes(self.store.serialize_cdr(msg, GT_TRACKS_TYPE))

    def tf_static(
        self,
        stamp_ns: int,
        parent: str,
        child: str,
        translation: tuple[float, float, float],
        rotation_xyzw: tuple[float, float, float, float],
    ) -> bytes:
        T = self.T
        transform = T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=translation[0], y=translation[1], z=translation[2]),
            rotation=T["geometry_msgs/msg/Quaternion"](
                x=rotation_xyzw[0], y=rotation_xyzw[1], z=rotation_xyzw[2], w=rotation_xyzw[3]
            ),
        )
        stamped = T["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, parent), child_frame_id=child, transform=transform
        )
        msg = T["tf2_msgs/msg/TFMessage"](transforms=[stamped])
        return bytes(self.store.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))


def write_drive_bag(
    out: str | Path,
    frames: Iterable[DriveFrame],
    storage: str = "mcap",
    fps: float = 10.0,
    start_ns: int = DEFAULT_START_NS,
    camera_height_m: float = 1.4,
    camera_pitch_rad: float = 0.0,
    frame_id: str = CAMERA_FRAME_ID,
    on_frame: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write ``frames`` at ``fps``; returns messages written per topic. Closes the bag on any error."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    with BagWriter(out, storage) as writer:
        build = RosbagsMessages(writer.typestore)
        writer.add_topic(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", transient_local=True)
        for index, frame in enumerate(frames):
            if index == 0:
                height_m = camera_height_m if frame.camera_height_m is None else frame.camera_height_m
                pitch = camera_pitch_rad if frame.camera_pitch_rad is None else frame.camera_pitch_rad
                quaternion = _rotation_to_quaternion(camera_mount_rotation(pitch))
                tf_raw = build.tf_static(start_ns, BASE_FRAME_ID, frame_id, (0.0, 0.0, height_m), quaternion)
                writer.write(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", start_ns, tf_raw)
            rgb = np.asarray(frame.rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"frame {index}: rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
            height, width = rgb.shape[:2]
            stamp = start_ns + round(index * 1e9 / fps)
            writer.write(
                CAMERA_INFO_TOPIC,
                "sensor_msgs/msg/CameraInfo",
                stamp,
                build.camera_info(frame.K, width, height, stamp, frame_id),
            )
            image_raw = build.image(rgb, "rgb8", stamp, frame_id)
            writer.write(IMAGE_TOPIC, "sensor_msgs/msg/Image", stamp, image_raw)
            if frame.depth_m is not None:
                depth = np.asarray(frame.depth_m, dtype=np.float32).copy()
                depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
                depth_raw = build.image(depth, "32FC1", stamp, frame_id)
                writer.write(GT_DEPTH_TOPIC, "sensor_msgs/msg/Image", stamp, depth_raw)
            if frame.panoptic_ids is not None:
                pan = panoptic_to_16u(frame.panoptic_ids)
                writer.write(
                    GT_PANOPTIC_TOPIC,
                    "sensor_msgs/msg/Image",
                    stamp,
                    build.image(pan, "16UC1", stamp, frame_id),
                )
            if frame.motion is not None:
                writer.write(GT_TRACKS_TOPIC, GT_TRACKS_TYPE, stamp, build.gt_tracks(frame.motion, stamp, frame_id))
            if on_frame is not None:
                on_frame(index)
        return dict(writer.counts)
