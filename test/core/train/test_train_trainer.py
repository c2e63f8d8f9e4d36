"""The trainer on tiny synthetic data: overfitting, exact resume, 2-process gloo DDP, NaN stop,
freezing, and bad input (config, data path, corrupt checkpoint).

Tiny model (MobileNetV3 ×0.25, 16-channel decoders), 64×128 images, one CPU thread per process (on
a shared CPU, oversubscribed OpenMP threads are many times slower).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from tiny_models import NARROW_MODEL

from panoptic_depthlab_core.config import ConfigError, from_dict
from panoptic_depthlab_core.train.checkpoint import CheckpointError, CheckpointManager
from panoptic_depthlab_core.train.config import TrainConfig, load_train_config
from panoptic_depthlab_core.weights import load_safetensors

TRAIN_MODEL = {**NARROW_MODEL, "norm": "SyncBN"}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from panoptic_depthlab_core.data.synthetic.writer import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 4, (64, 128), seed=3, split="train")
    return root


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_cfg(out: Path, root: Path, **sections) -> TrainConfig:
    data = {
        "output_dir": str(out),
        "seed": 7,
        "cpu_threads": 1,
        "model": dict(TRAIN_MODEL),
        "data": {"root": str(root), "crop_size": [64, 128], "scale_range": [0.75, 1.25], "num_workers": 0},
        "solver": {"max_iter": 6, "ims_per_batch": 2, "warmup_iters": 2, "base_lr": 0.003},
        "checkpoint": {"period": 3},
        "logging": {"log_period": 2, "tensorboard": False, "progress_bar": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return from_dict(TrainConfig, data)


def test_tiny_model_overfits(tmp_path, synth_root):
    from panoptic_depthlab_core.train.trainer import train

    cfg = make_cfg(
        tmp_path / "run",
        synth_root,
        data={"max_images": 2, "augment": False},
        solver={"max_iter": 30, "warmup_iters": 0, "base_lr": 0.01},
        checkpoint={"period": 1000},
    )
    history: list[dict[str, float]] = []
    train(cfg, on_iteration=lambda it, losses: history.append(losses))
    first = {k: sum(h[k] for h in history[:3]) / 3 for k in history[0]}
    last = {k: sum(h[k] for h in history[-3:]) / 3 for k in history[0]}
    assert last["loss_total"] < first["loss_total"] / 4, (first, last)
    assert last["loss_sem_seg"] < first["loss_sem_seg"] / 1.5, (first, last)
    assert last["loss_center"] < first["loss_center"] / 4, (first, last)
    assert last["loss_depth"] < first["loss_depth"] / 2, (first, last)


def test_resume_matches_uninterrupted_run(tmp_path, synth_root):
    """Kill a run after its iteration-3 checkpoint (at iteration 5), resume it: the final weights equal
    an uninterrupted run's (tolerance 1e-6; in practice bit-identical on CPU)."""
    from panoptic_depthlab_core.train.trainer import train

    full = train(make_cfg(tmp_path / "full", synth_root, logging={"tensorboard": True, "image_period": 3}))

    class Crash(RuntimeError):
        pass

    def crash_at_5(it, _losses):
        if it == 5:
            raise Crash

    cut_cfg = make_cfg(tmp_path / "cut", synth_root)
    with pytest.raises(Crash):
        train(cut_cfg, on_iteration=crash_at_5)
    assert CheckpointManager(tmp_path / "cut").latest() == 3
    resumed = train(cut_cfg, resume=True)
    assert resumed.iterations == 6
    a, b = load_safetensors(full.final_weights), load_safetensors(resumed.final_weights)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    assert any((tmp_path / "full" / "tensorboard").iterdir())
    # a second fresh run into a directory with checkpoints is refused
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(cut_cfg)


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})  # fmt: skip
    import torch.distributed as dist

    from panoptic_depthlab_core.train.trainer import train

    try:
        result = train(cfg)
        state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
        torch.save(state, os.path.join(out, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path, synth_root):
    import torch.multiprocessing as mp

    cfg = make_cfg(tmp_path / "ddp", synth_root, solver={"max_iter": 3}, checkpoint={"period": 3})
    # fork: the children inherit the imported modules (spawn re-imports torch: ~15 s on a busy CPU)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    fresh = load_safetensors(tmp_path / "ddp" / "model_final.safetensors")
    changed = [k for k in r0 if k.endswith("weight") and not torch.equal(fresh[k], r0[k])]
    assert not changed  # rank 0 wrote what the ranks hold
    state = torch.load(tmp_path / "ddp" / "checkpoint_0000003.state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["data_position"]["world_size"] == 2


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, synth_root, monkeypatch):
    from panoptic_depthlab_core.model import build_model
    from panoptic_depthlab_core.train import trainer as trainer_mod
    from panoptic_depthlab_core.weights import load_model_weights

    real = trainer_mod.panoptic_depth_losses
    calls = {"n": 0}

    def poisoned(outputs, batch, cfg):
        calls["n"] += 1
        losses = real(outputs, batch, cfg)
        if calls["n"] == 5:
            losses["loss_depth"] = losses["loss_depth"] * float("nan")
        return losses

    monkeypatch.setattr(trainer_mod, "panoptic_depth_losses", poisoned)
    cfg = make_cfg(tmp_path / "nan", synth_root, checkpoint={"period": 2})
    with pytest.raises(
        trainer_mod.NonFiniteLossError, match=r"iteration 5 .*loss_depth=nan.*checkpoint_0000004"
    ):
        trainer_mod.train(cfg)
    mgr = CheckpointManager(tmp_path / "nan")
    assert mgr.latest() == 4 and mgr.existing() == [2, 4]
    assert not (tmp_path / "nan" / "model_final.safetensors").exists()
    weights, state = mgr.load(4)
    model = build_model(cfg.model)
    load_model_weights(model, mgr.paths(4)[0])
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert state["iteration"] == 4


def _initial_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A freshly initialised tiny model saved as init weights: (path, state dict)."""
    from panoptic_depthlab_core.model import build_model
    from panoptic_depthlab_core.weights import save_safetensors

    init = tmp_path / "init.safetensors"
    start = build_model(from_dict(TrainConfig, {"model": TRAIN_MODEL}).model).state_dict()
    save_safetensors(start, init)
    return init, start


def test_freeze_trains_only_depth_head(tmp_path, synth_root):
    """The seed recipe: start from given weights, train only ``depth_head.``; everything else, BN
    statistics included, stays bit-identical."""
    from panoptic_depthlab_core.train.trainer import train

    init, start = _initial_weights(tmp_path)
    cfg = make_cfg(
        tmp_path / "frz",
        synth_root,
        solver={"max_iter": 2},
        checkpoint={"period": 2},
        init={"weights": str(init), "allow_missing_prefixes": ["depth_head."]},
        freeze={"train_only": ["depth_head."]},
    )
    end = load_safetensors(train(cfg).final_weights)
    changed = [k for k, v in start.items() if not torch.equal(end[k], v)]
    assert changed and all(k.startswith("depth_head.") for k in changed), changed
    with pytest.raises(ValueError, match="matches no parameter"):
        train(make_cfg(tmp_path / "frz2", synth_root, freeze={"train_only": ["dpeth_head."]}))


def test_bn_recalibration_before_the_final_weights(tmp_path, synth_root):
    """``bn_recalibration_batches``: model_final gets re-estimated BN statistics of the trained
    parts; weights, frozen parts and the resumable checkpoint stay as trained."""
    from safetensors import safe_open

    from panoptic_depthlab_core.train.trainer import train

    init, start = _initial_weights(tmp_path)
    cfg = make_cfg(
        tmp_path / "recal",
        synth_root,
        solver={"max_iter": 2},
        checkpoint={"period": 2},
        init={"weights": str(init)},
        freeze={"train_only": ["depth_head."]},
        bn_recalibration_batches=2,
    )
    final_path = train(cfg).final_weights
    final = load_safetensors(final_path)
    manager = CheckpointManager(tmp_path / "recal", 2)
    checkpoint, _ = manager.load(manager.latest())
    stats = [k for k in final if k.endswith(("running_mean", "running_var"))]
    recalibrated = [k for k in stats if not torch.equal(final[k], checkpoint[k])]
    assert recalibrated and all(k.startswith("depth_head.") for k in recalibrated), recalibrated
    for key, value in final.items():
        if key.startswith("depth_head.") and key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert torch.equal(value, checkpoint[key]), key  # weights as trained
        if not key.startswith("depth_head."):
            assert torch.equal(value, start[key]), key  # frozen parts untouched, their BN included
    with safe_open(str(final_path), "pt") as f:
        assert f.metadata()["bn_recalibrated_batches"] == "2"


def test_bad_config_and_data_path(tmp_path, synth_root):
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  max_iterz: 3\n")
    with pytest.raises(ConfigError, match="solver.max_iterz"):
        load_train_config(path)
    path.write_text("solver:\n  max_iter: three\n")
    with pytest.raises(ConfigError, match="solver.max_iter"):
        load_train_config(path)
    path.write_text("output_dir: x\n")
    with pytest.raises(ConfigError, match="solver.base_lr"):
        load_train_config(path, ["solver.base_lr=fast"])
    from panoptic_depthlab_core.train.trainer import train

    missing = tmp_path / "no_such_data"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        train(make_cfg(tmp_path / "x", missing))
    assert not (tmp_path / "x" / "last_checkpoint").exists()


def test_corrupt_checkpoint_on_resume(tmp_path, synth_root):
    from panoptic_depthlab_core.train.trainer import train

    cfg = make_cfg(
        tmp_path / "run", synth_root, solver={"max_iter": 2}, checkpoint={"period": 1, "keep_last": 0}
    )
    train(cfg)
    run = tmp_path / "run"
    state_path = CheckpointManager(run).paths(2)[1]
    state_path.write_bytes(b"this is not a checkpoint")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    cfg2 = make_cfg(run, synth_root, solver={"max_iter": 4}, checkpoint={"period": 1, "keep_last": 0})
    with pytest.raises(CheckpointError, match=r"checkpoint_0000002\.state\.pt is corrupt"):
        train(cfg2, resume=True)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert before == after
    weights_path = CheckpointManager(run).paths(2)[0]
    weights_path.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"checkpoint_0000002\.safetensors is corrupt"):
        train(cfg2, resume=True)


def test_train_cli_reports_bad_config(tmp_path, capsys):
    from panoptic_depthlab_core.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  ims_per_batch: 2\nfoo: 1\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "foo" in capsys.readouterr().err
