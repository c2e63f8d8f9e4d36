"""A synthetic drive with exact motion ground truth: per frame, the camera's mounting and pose, and
every visible thing's instance id (consistent over the whole drive), 3D position and velocity in the
camera's optical frame.

The world is the one ``render_sequence`` renders (same random streams, same bytes): one street, the
ego car driving straight at a constant speed along +Z, actors moving linearly. So the ground truth is
exact: an actor's velocity relative to the camera is ``R^T (v_actor - v_ego)`` (the camera does not
rotate), its position ``R^T (p_actor - camera origin)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from panoptic_depthlab_core.metadata import LABEL_DIVISOR, label_id_to_train_id_lut

from .camera import CameraParams, sample_camera
from .render import SEQUENCE_STREAM, SyntheticFrame, _check_size, _keep_ego_lane_clear, render_scene
from .scene import Scene, generate_scene

_TRAIN_ID = label_id_to_train_id_lut()


@dataclass(frozen=True)
class ObjectMotion:
    """One visible thing at one frame (camera optical frame: x right, y down, z forward)."""

    instance_id: int  # the instanceIds.png value, label_id * 1000 + k: the same over the whole drive
    panoptic_id: int  # train_id * 1000 + k + 1 (the project's id convention, as the Cityscapes loader)
    label_id: int
    train_id: int
    position_xyz_m: tuple[float, float, float]  # the actor's reference point on the ground
    velocity_xyz_mps: tuple[float, float, float]  # relative to the camera

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class FrameMotion:
    """The camera and the visible things' motion at one frame of a drive."""

    index: int
    time_s: float
    camera_height_m: float
    camera_pitch_rad: float
    ego_velocity_mps: tuple[float, float, float]  # street frame (X right, Y up, Z forward)
    world_from_camera: np.ndarray  # (4, 4)
    objects: list[ObjectMotion]

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "time_s": self.time_s,
            "camera_height_m": self.camera_height_m,
            "camera_pitch_rad": self.camera_pitch_rad,
            "ego_velocity_mps": list(self.ego_velocity_mps),
            "world_from_camera": self.world_from_camera.tolist(),
            "objects": [o.to_dict() for o in self.objects],
        }

    @classmethod
    def from_dict(cls, data: dict) -> FrameMotion:
        return cls(
            index=int(data["index"]),
            time_s=float(data["time_s"]),
            camera_height_m=float(data["camera_height_m"]),
            camera_pitch_rad=float(data["camera_pitch_rad"]),
            ego_velocity_mps=tuple(data["ego_velocity_mps"]),
            world_from_camera=np.asarray(data["world_from_camera"], dtype=np.float64),
            objects=[ObjectMotion(**{k: tuple(v) if isinstance(v, list) else v for k, v in o.items()})
                     for o in data["objects"]],
        )

    def by_panoptic_id(self) -> dict[int, ObjectMotion]:
        return {o.panoptic_id: o for o in self.objects}


def panoptic_from_instance_ids(instance_ids: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes instanceIds/labelIds -> int32 panoptic ids (train_id * 1000 + k + 1 for things,
    train_id * 1000 for stuff, -1 void), as the project's Cityscapes loader builds them."""
    train = _TRAIN_ID[label_ids].astype(np.int32)
    out = np.where(train == 255, -1, train * LABEL_DIVISOR).astype(np.int32)
    thing = (instance_ids >= 1000) & (train != 255)
    k = instance_ids[thing] % 1000
    out[thing] = train[thing] * LABEL_DIVISOR + k + 1
    return out


class SyntheticDrive:
    """``render_sequence(seed, num_frames, size, fps)`` with its world kept: frames plus motion truth."""

    def __init__(self, seed: int, num_frames: int, size: tuple[int, int] = (512, 1024), fps: float = 10.0) -> None:
        h, w = _check_size(size)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.seed, self.num_frames, self.fps = seed, num_frames, fps
        rng = np.random.default_rng([seed, SEQUENCE_STREAM])
        self.camera: CameraParams = sample_camera(rng, h, w)
        self.ego_speed_mps = float(rng.uniform(6.0, 11.0))
        travel = self.ego_speed_mps * num_frames / fps
        self.scene: Scene = generate_scene(rng, z_min=-40.0, z_max=travel + 320.0)
        _keep_ego_lane_clear(self.scene, self.ego_speed_mps)
        for actor in self.scene.actors:
            if actor.instance_k is not None and actor.instance_k >= LABEL_DIVISOR - 1:
                raise ValueError(f"drive seed {seed}: instance {actor.instance_k} of label {actor.label_id} "
                                 f"does not fit the id encoding (< {LABEL_DIVISOR - 1})")

    def time_s(self, index: int) -> float:
        return index / self.fps

    def render(self, index: int) -> SyntheticFrame:
        t = self.time_s(index)
        return render_scene(self.scene, self.camera, (0.0, self.ego_speed_mps * t), t,
                            np.random.default_rng([self.seed, SEQUENCE_STREAM, index]), index)

    def frames(self) -> Iterator[SyntheticFrame]:
        for i in range(self.num_frames):
            yield self.render(i)

    def motion(self, index: int, frame: SyntheticFrame | None = None) -> FrameMotion:
        """Motion truth at frame ``index``; with ``frame``, only the things visible in it."""
        t = self.time_s(index)
        cam = self.camera
        rot = cam.world_from_camera_rotation()
        origin = np.array([0.0, cam.height_m, self.ego_speed_mps * t])
        ego_v = np.array([0.0, 0.0, self.ego_speed_mps])
        visible = None if frame is None else set(np.unique(frame.instance_ids[frame.instance_ids >= 1000]).tolist())
        objects = []
        for actor in self.scene.actors:
            if actor.instance_k is None:
                continue
            instance_id = actor.label_id * 1000 + actor.instance_k
            if visible is not None and instance_id not in visible:
                continue
            x, z = actor.position(t)
            p = rot.T @ (np.array([x, 0.0, z]) - origin)
            v = rot.T @ (np.array([actor.vx, 0.0, actor.vz]) - ego_v)
            train = int(_TRAIN_ID[actor.label_id])
            objects.append(ObjectMotion(
                instance_id=instance_id,
                panoptic_id=train * LABEL_DIVISOR + actor.instance_k + 1,
                label_id=actor.label_id,
                train_id=train,
                position_xyz_m=(float(p[0]), float(p[1]), float(p[2])),
                velocity_xyz_mps=(float(v[0]), float(v[1]), float(v[2])),
            ))
        pose = np.eye(4)
        pose[:3, :3] = rot
        pose[:3, 3] = origin
        return FrameMotion(index, t, cam.height_m, cam.pitch, (0.0, 0.0, self.ego_speed_mps), pose, objects)

    def frames_with_motion(self) -> Iterator[tuple[SyntheticFrame, FrameMotion]]:
        for i in range(self.num_frames):
            frame = self.render(i)
            yield frame, self.motion(i, frame)
