"""The training/validation Dataset and DataLoader over Cityscapes-format data (real or synthetic).

Each item is a dict of tensors::

    image           uint8 [3, H, W] RGB 0-255 (normalise in the model)
    sem_seg         int64 [H, W] train ids, 255 = ignore
    sem_seg_weights float [H, W]
    center          float [1, H, W]      center_weights  float [H, W]
    offset          float [2, H, W] (dy, dx) pixels   offset_weights float [H, W]
    depth           float [1, H, W] metres (0 where invalid)
    depth_valid     bool  [1, H, W]
    file_name       str (the image path)   image_id  str

Determinism: the augmentation of every item is drawn from ``np.random.default_rng([seed, epoch,
index])``, so a run is reproducible whatever the number of workers; call
``loader.sampler.set_epoch(epoch)`` (both samplers here have it) to get new draws per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .cityscapes import (
    CityscapesRecord,
    find_records,
    read_depth,
    read_image,
    read_panoptic,
)
from .targets import build_panoptic_targets
from .transforms import AugmentParams, apply_augmentation, sample_augmentation


@dataclass
class DataConfig:
    """Where the data is and how it is turned into training targets (embedded in the train config)."""

    root: str = "data/synthetic"
    split: str = "train"
    augment: bool = True  # scale / crop / flip (off for evaluation)
    crop_size: tuple[int, int] = (512, 1024)  # (h, w)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True  # horizontal flip with p = 0.5
    max_depth_m: float = 80.0  # depth beyond this (after the /s of scaling, too) is ignored
    gaussian_sigma: float = 10.0
    small_instance_area: int = 4096
    small_instance_weight: float = 3.0
    ignore_stuff_in_offset: bool = True
    ignore_crowd_in_semantic: bool = False
    pad_value: tuple[int, int, int] = (124, 116, 104)  # RGB ImageNet mean: zero after normalising
    num_workers: int = 2
    # how workers start: "spawn" (default) is immune to fork-after-threads deadlocks (OpenCV,
    # OpenMP pools in the parent); "fork" starts faster
    worker_start: Literal["spawn", "forkserver", "fork"] = "spawn"
    max_images: int = 0  # 0 = all; else the first N (sorted) images


class PanopticDepthDataset(Dataset):
    """Cityscapes-format images with panoptic targets and depth.

    With augmentation on, ``dataset[(i, seed)]`` is item i augmented with
    ``np.random.default_rng(seed)`` (what :class:`SeededSampler` hands out) and ``dataset[i]`` uses
    the seed ``[i]`` (the same crop every time). ``augment=False``: full-resolution items.
    """

    def __init__(self, config: DataConfig, augment: bool | None = None) -> None:
        self.config = config
        self.augment = config.augment if augment is None else augment
        if config.max_depth_m <= 0:
            raise ValueError(f"max_depth_m must be > 0, got {config.max_depth_m}")
        records = find_records(config.root, config.split, require_panoptic=True, require_depth=True)
        if config.max_images > 0:
            records = records[: config.max_images]
        self.records: list[CityscapesRecord] = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            index, seed = key
        else:
            index, seed = key, None
        return self.load(int(index), seed)

    def load(self, index: int, seed: int | None = None) -> dict:
        cfg = self.config
        rec = self.records[index]
        image = read_image(rec.image_path)
        segment_ids, segments = read_panoptic(rec)
        depth, valid = read_depth(rec, max_depth_m=cfg.max_depth_m)
        shape = image.shape[:2]
        for name, arr in (("panoptic GT", segment_ids), ("disparity", depth)):
            if arr.shape != shape:
                raise ValueError(
                    f"{rec.image_id}: {name} is {arr.shape}, image is {shape} ({rec.image_path})"
                )
        if self.augment:
            rng = np.random.default_rng(seed if seed is not None else [index])
            params = sample_augmentation(rng, shape, cfg.crop_size, cfg.scale_range, 0.5 if cfg.flip else 0.0)
            image, segment_ids, depth, valid = apply_augmentation(params, image, segment_ids, depth, valid,
                                                                  cfg.pad_value)  # fmt: skip
            valid &= depth <= cfg.max_depth_m
            depth[~valid] = 0.0
        else:
            params = AugmentParams(1.0, 0, 0, shape[0], shape[1], False)
        targets = build_panoptic_targets(
            segment_ids, segments, cfg.gaussian_sigma, cfg.small_instance_area, cfg.small_instance_weight,
            cfg.ignore_stuff_in_offset, cfg.ignore_crowd_in_semantic,
        )  # fmt: skip
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "sem_seg": torch.from_numpy(targets["sem_seg"]),
            "sem_seg_weights": torch.from_numpy(targets["sem_seg_weights"]),
            "center": torch.from_numpy(targets["center"]),
            "center_weights": torch.from_numpy(targets["center_weights"]),
            "offset": torch.from_numpy(targets["offset"]),
            "offset_weights": torch.from_numpy(targets["offset_weights"]),
            "depth": torch.from_numpy(depth[None].astype(np.float32)),
            "depth_valid": torch.from_numpy(valid[None].copy()),
            "file_name": str(rec.image_path),
            "image_id": rec.image_id,
            "scale": float(params.scale),
        }
        return item


class SeededSampler(Sampler):
    """Wraps an index sampler; yields ``(index, seed)`` with the seed from (seed, epoch, index)."""

    def __init__(self, inner: Sampler, seed: int) -> None:
        self.inner = inner
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        for index in self.inner:
            seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
            yield int(index), seed

    def __len__(self) -> int:
        return len(self.inner)


class _EpochShuffle(Sampler):
    """A permutation per epoch from (seed, epoch) -- RandomSampler without hidden global state."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)  # workers are the parallelism; keep OpenCV from oversubscribing cores


def build_dataloader(
    config: DataConfig,
    batch_size: int,
    train: bool = True,
    seed: int = 0,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader of :class:`PanopticDepthDataset` items.

    ``train``: shuffled, augmented (if ``config.augment``), ``drop_last`` by default. Else in order
    and un-augmented. ``distributed``: a DistributedSampler (rank / world_size default to the process
    group's). Same seed -> same batches, whatever ``config.num_workers`` is.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = PanopticDepthDataset(config, augment=config.augment and train)
    if len(dataset) == 0:
        raise ValueError(f"no images in {Path(config.root)} split {config.split}")
    drop = train if drop_last is None else drop_last
    inner: Sampler
    if distributed:
        inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                   drop_last=drop)  # fmt: skip
    else:
        inner = _EpochShuffle(len(dataset), seed, shuffle=train)
    sampler = SeededSampler(inner, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=drop,
        worker_init_fn=_worker_init if config.num_workers > 0 else None,
        multiprocessing_context=config.worker_start if config.num_workers > 0 else None,
        persistent_workers=config.num_workers > 0,  # spawn once; the sampler (and epoch) lives here
        pin_memory=False,
    )
