"""The Dataset/DataLoader: item contract, seeded determinism (any worker count), sharding, config."""

from __future__ import annotations

import pytest
import torch

from panoptic_depthlab_core.config import ConfigError, from_dict
from panoptic_depthlab_core.data.loader import DataConfig, PanopticDepthDataset, build_dataloader

CROP = (64, 96)


def _cfg(root, **kw):
    return DataConfig(root=str(root), split="train", crop_size=CROP, num_workers=0, **kw)


def test_item_contract(synthetic_root):
    ds = PanopticDepthDataset(_cfg(synthetic_root))
    item = ds[(1, 42)]
    h, w = CROP
    expect = {
        "image": ((3, h, w), torch.uint8),
        "sem_seg": ((h, w), torch.int64),
        "sem_seg_weights": ((h, w), torch.float32),
        "center": ((1, h, w), torch.float32),
        "center_weights": ((h, w), torch.float32),
        "offset": ((2, h, w), torch.float32),
        "offset_weights": ((h, w), torch.float32),
        "depth": ((1, h, w), torch.float32),
        "depth_valid": ((1, h, w), torch.bool),
    }
    for name, (shape, dtype) in expect.items():
        assert tuple(item[name].shape) == shape, name
        assert item[name].dtype == dtype, name
        if dtype.is_floating_point:
            assert torch.isfinite(item[name]).all(), name
    assert item["file_name"].endswith("_leftImg8bit.png")
    assert set(item["sem_seg"].unique().tolist()) <= set(range(19)) | {255}
    d = item["depth"][item["depth_valid"]]
    assert d.numel() > 0 and (d > 0).all() and (d <= 80.0).all()
    assert (item["depth"][~item["depth_valid"]] == 0).all()
    assert torch.equal(ds[1]["image"], ds[1]["image"])  # plain index: a fixed seed
    full = PanopticDepthDataset(_cfg(synthetic_root), augment=False)[0]
    assert tuple(full["image"].shape) == (3, 128, 256)


def _batches(loader, epochs=(0,)):
    out = []
    for e in epochs:
        loader.sampler.set_epoch(e)
        out += [b for b in loader]
    return out


def test_same_seed_same_batches_with_or_without_workers(synthetic_root):
    a = _batches(build_dataloader(_cfg(synthetic_root), batch_size=2, seed=3), (0, 1))
    cfg2 = _cfg(synthetic_root)
    cfg2.num_workers = 1  # a spawned worker process (the default start method)
    b = _batches(build_dataloader(cfg2, batch_size=2, seed=3), (0, 1))
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert x["image_id"] == y["image_id"]
        for k in ("image", "sem_seg", "center", "offset", "depth", "depth_valid"):
            assert torch.equal(x[k], y[k]), k
    # a new epoch gives new draws; another seed another order or crops
    assert not all(torch.equal(a[i]["image"], a[i + 2]["image"]) for i in range(2))
    c = _batches(build_dataloader(_cfg(synthetic_root), batch_size=2, seed=4))
    assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(a[:2], c, strict=True))


def test_distributed_shards_are_disjoint(synthetic_root):
    seen = []
    for rank in range(2):
        loader = build_dataloader(_cfg(synthetic_root), batch_size=1, seed=0, distributed=True, rank=rank,
                                  world_size=2)  # fmt: skip
        seen.append([b["image_id"][0] for b in loader])
    assert len(seen[0]) == len(seen[1]) == 2
    assert not set(seen[0]) & set(seen[1])


def test_eval_loader_is_in_order_and_unaugmented(synthetic_root):
    cfg = DataConfig(root=str(synthetic_root), split="val", num_workers=0)
    batches = list(build_dataloader(cfg, batch_size=1, train=False))
    assert [b["image_id"][0] for b in batches] == ["synthville_000000_000019", "synthville_000001_000019"]
    assert tuple(batches[0]["image"].shape) == (1, 3, 128, 256)


def test_config_from_yaml_dict_and_errors(synthetic_root):
    cfg = from_dict(
        DataConfig, {"root": str(synthetic_root), "crop_size": [32, 64], "scale_range": [0.5, 1.5]}
    )
    assert cfg.crop_size == (32, 64) and cfg.scale_range == (0.5, 1.5)
    with pytest.raises(ConfigError, match="crop_sise"):
        from_dict(DataConfig, {"crop_sise": [1, 2]})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataloader(DataConfig(root="/nowhere", num_workers=0), batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloader(_cfg(synthetic_root), batch_size=0)
