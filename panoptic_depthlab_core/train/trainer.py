"""The training loop: Adam + WarmupPolyLR, optional AMP and clipping, freezing, DDP, exact resume.

One process per device (``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; gloo on CPU, NCCL on CUDA).
Resuming is exact because everything that decides the next step is either in the checkpoint
(weights, optimizer, scheduler, scaler, RNG) or a pure function of the iteration: the sample order is
DistributedSampler's per-epoch shuffle started at the saved position, and every sample's augmentation
is drawn from its own seed (run seed, global stream position) by the dataset, whichever worker loads it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from panoptic_depthlab_core.config import to_dict
from panoptic_depthlab_core.data.loader import PanopticDepthDataset, build_dataloader
from panoptic_depthlab_core.metadata import IGNORE_LABEL, PALETTE
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.train.bn_recalibration import recalibrate_batchnorm
from panoptic_depthlab_core.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    rng_state,
    set_rng_state,
)
from panoptic_depthlab_core.train.config import TrainConfig
from panoptic_depthlab_core.train.cpu_speedups import use_space_to_batch_depthwise
from panoptic_depthlab_core.train.losses import panoptic_depth_losses
from panoptic_depthlab_core.train.schedule import WarmupPolyLR
from panoptic_depthlab_core.viz import colorize_depth
from panoptic_depthlab_core.weights import check_state_dict, load_model_weights, save_safetensors

log = logging.getLogger("panoptic_depthlab.train")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; training stopped before the bad step touched weights or checkpoints."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> DistInfo:
    """Read torchrun's environment; start the process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was requested but CUDA is not available")
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(rank, world, local_rank, device)


# ------------------------------------------------------------------------------------------- data
def sample_seed(seed: int, position: int) -> int:
    """A per-sample augmentation seed from the run seed and the sample's global stream position."""
    return (seed * 1_000_003 + position * 7_919 + 12_345) % (2**63 - 1)


class ResumableDistributedSampler(Sampler):
    """An endless stream of ``(index, sample_seed)`` for one rank, starting at a saved position.

    Each epoch's order is ``DistributedSampler``'s (shuffled with ``seed + epoch``, padded, sharded
    ``rank::world``); ``start`` is how many samples this rank has already consumed.
    """

    def __init__(
        self, dataset: Dataset, seed: int, rank: int, world_size: int, start: int = 0, shuffle: bool = True
    ) -> None:
        self.dataset = dataset
        self.seed, self.rank, self.world_size, self.start, self.shuffle = (
            seed,
            rank,
            world_size,
            start,
            shuffle,
        )

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=False,
        )
        per_epoch = len(sampler)
        epoch, offset = divmod(self.start, per_epoch)
        position = self.start
        while True:
            sampler.set_epoch(epoch)
            for index in list(sampler)[offset:]:
                global_position = position * self.world_size + self.rank
                yield int(index), sample_seed(self.seed, global_position)
                position += 1
            offset = 0
            epoch += 1


def build_train_dataset(cfg: TrainConfig) -> Dataset:
    """The augmented training set; ``dataset[(index, seed)]`` draws its augmentation from ``seed``."""
    return PanopticDepthDataset(cfg.data)


def build_train_loader(cfg: TrainConfig, dataset: Dataset, info: DistInfo, start_sample: int) -> DataLoader:
    per_rank = cfg.solver.ims_per_batch // info.world_size
    sampler = ResumableDistributedSampler(dataset, cfg.seed, info.rank, info.world_size, start_sample)
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the main RNG untouched
    )


# ------------------------------------------------------------------------------------------ model
def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm -> BatchNorm2d (gloo has no SyncBN; on one process they are the same)."""
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def apply_freezing(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """Set requires_grad from ``freeze``; returns the names of modules to keep in eval mode."""
    train_only, frozen = cfg.freeze.train_only, cfg.freeze.frozen

    def is_frozen(name: str) -> bool:
        return _matches(name, frozen) or (bool(train_only) and not _matches(name, train_only))

    names = [n for n, _ in model.named_parameters()]
    for prefix in [*train_only, *frozen]:
        if not any(n.startswith(prefix) for n in names):
            raise ValueError(f"freeze: prefix {prefix!r} matches no parameter of the model")
    for name, p in model.named_parameters():
        p.requires_grad_(not is_frozen(name))
    frozen_modules = []
    for name, m in model.named_modules():
        if not name:
            continue
        params = list(m.parameters())
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) or params:
            if is_frozen(name + ".") and all(not p.requires_grad for p in params):
                frozen_modules.append(name)
    # keep only the outermost frozen modules
    return [n for n in frozen_modules if not any(n.startswith(o + ".") for o in frozen_modules if o != n)]


def set_train_mode(model: nn.Module, frozen_modules: list[str]) -> None:
    model.train()
    lookup = dict(model.named_modules())
    for name in frozen_modules:
        lookup[name].eval()


# -------------------------------------------------------------------------------------- summaries
def image_summary(
    batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], max_depth: float
) -> np.ndarray:
    """First image of the batch: [semantic overlay pred | GT] over [depth pred | GT], HWC uint8."""
    image = batch["image"][0].detach().float().cpu().permute(1, 2, 0).numpy().clip(0, 255)
    pred_sem = outputs["sem_logits"][0].detach().argmax(0).cpu().numpy()
    gt_sem = batch["sem_seg"][0].detach().cpu().numpy()

    def overlay(sem: np.ndarray) -> np.ndarray:
        colors = PALETTE[np.clip(sem, 0, len(PALETTE) - 1)].astype(np.float32)
        out = 0.5 * image + 0.5 * colors
        out[sem == IGNORE_LABEL] = image[sem == IGNORE_LABEL]
        return out.astype(np.uint8)

    gt_depth = batch["depth"][0, 0].detach().float().cpu().numpy().copy()
    gt_depth[~batch["depth_valid"][0, 0].detach().cpu().numpy().astype(bool)] = np.nan
    pred_depth = outputs["depth"][0, 0].detach().float().cpu().numpy()
    top = np.concatenate([overlay(pred_sem), overlay(gt_sem)], axis=1)
    bottom = np.concatenate(
        [colorize_depth(d, 0.0, max_depth, scale_bar=False) for d in (pred_depth, gt_depth)], axis=1
    )
    return np.concatenate([top, bottom], axis=0)


# ------------------------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    final_weights: Path
    iterations: int
    last_losses: dict[str, float]
    model: nn.Module  # the trained network (unwrapped from DDP), as this process holds it


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
    }


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (serialised with torch.save, exchanged as byte tensors, read back with
    weights_only=True), so a resumed run continues each rank's random stream."""
    state = rng_state()
    if info.world_size == 1:
        return [state]
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).to(info.device)
    size = torch.tensor([payload.numel()], device=info.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=info.device)
    padded[: payload.numel()] = payload
    gathered = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return [
        torch.load(io.BytesIO(g[: int(n.item())].cpu().numpy().tobytes()), weights_only=True)
        for g, n in zip(gathered, sizes, strict=True)
    ]


def _recalibrate_bn(model: nn.Module, cfg: TrainConfig, frozen_modules: list[str], info: DistInfo) -> int:
    """BatchNorm statistics re-estimated over training batches (the last checkpoint keeps the
    running ones, so a resume is unaffected). Same batches as ``panoptic-depthlab recalibrate-bn
    --batch-size <ims_per_batch> --seed <seed>`` (same statistics up to float rounding). Under DDP
    rank 0 does it, and only rank 0 writes the final weights."""
    loader = build_dataloader(cfg.data, cfg.solver.ims_per_batch, train=True, seed=cfg.seed)
    lookup = dict(model.named_modules())

    def on_device(batches):
        for batch in batches:
            yield batch["image"].to(info.device)

    seen = recalibrate_batchnorm(
        model, on_device(loader), cfg.bn_recalibration_batches, keep=[lookup[n] for n in frozen_modules]
    )
    log.info("BatchNorm statistics re-estimated over %d training batches", seen)
    return seen


def _write_run_files(cfg: TrainConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    # What the Predictor / eval need to load the weights this run writes.
    pipeline = {"model": to_dict(cfg.model)}
    pipeline["input"] = {"height": int(cfg.data.crop_size[0]), "width": int(cfg.data.crop_size[1])}
    (out / "model.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Run (or continue) training as configured; returns the final weights path on rank 0's disk.

    ``on_iteration(iteration, losses)`` runs after each completed step (tests use it to interrupt).
    """
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    info = init_distributed(cfg.device)
    solver = cfg.solver
    if solver.ims_per_batch % info.world_size:
        raise ValueError(
            f"solver.ims_per_batch={solver.ims_per_batch} is not divisible by {info.world_size} processes"
        )
    out = Path(cfg.output_dir)
    ckpt = CheckpointManager(out, cfg.checkpoint.keep_last)

    # Everything that can fail on bad input fails before anything is written.
    state = None
    if resume:
        latest = ckpt.latest()
        if latest is None:
            if info.is_main:
                log.warning("--resume: no checkpoint in %s; starting from scratch", out)
        else:
            weights, state = ckpt.load(latest)
    elif ckpt.has_any():
        raise ValueError(
            f"output_dir {out} already holds checkpoints; pass --resume to continue that run "
            "or choose another output_dir"
        )

    random.seed(cfg.seed + info.rank)
    np.random.seed((cfg.seed + info.rank) % (2**32))
    torch.manual_seed(cfg.seed + info.rank)

    dataset = build_train_dataset(cfg)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the training dataset is empty")

    model = build_model(cfg.model)
    if state is None and cfg.init.weights:
        kept = load_model_weights(model, cfg.init.weights, tuple(cfg.init.allow_missing_prefixes))
        if info.is_main:
            log.info("initialised from %s (%d tensors kept their fresh init)", cfg.init.weights, len(kept))
    if state is not None:
        missing, unexpected, mismatched = check_state_dict(model.state_dict(), weights)
        if missing or unexpected or mismatched:
            raise CheckpointError(
                f"cannot resume: checkpoint weights do not fit the configured model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {mismatched[:5]})"
            )
        model.load_state_dict(weights, strict=False)
    frozen_modules = apply_freezing(model, cfg)
    if info.world_size > 1 and info.device.type == "cuda" and cfg.model.norm == "SyncBN":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(info.device)
    memory_format = torch.channels_last if solver.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    if info.device.type == "cpu":
        use_space_to_batch_depthwise(model)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("freeze: every parameter is frozen; nothing to train")
    optimizer = torch.optim.Adam(
        params, lr=solver.base_lr, betas=solver.betas, weight_decay=solver.weight_decay
    )
    scheduler = WarmupPolyLR(
        optimizer,
        solver.max_iter,
        solver.warmup_iters,
        solver.warmup_factor,
        solver.poly_power,
        solver.constant_ending,
    )
    amp = solver.amp if info.device.type == "cuda" else "off"
    if solver.amp != "off" and amp == "off" and info.is_main:
        log.warning("solver.amp=%s needs CUDA; training in fp32 on %s", solver.amp, info.device)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    start_iter = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The schedule's shape comes from the config, so a resumed run may be extended (max_iter).
        scheduler.max_iter, scheduler.warmup_iters = solver.max_iter, solver.warmup_iters
        scheduler.warmup_factor, scheduler.power = solver.warmup_factor, solver.poly_power
        scheduler.constant_ending = solver.constant_ending
        scheduler.base_lrs = [solver.base_lr for _ in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, scheduler.get_lr(), strict=True):
            group["lr"] = lr
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) != info.world_size:
            log.warning(
                "checkpoint was written by %d processes, now %d: data order and RNG will differ",
                len(rngs),
                info.world_size,
            )
        set_rng_state(rngs[info.rank % len(rngs)])
        start_iter = int(state["iteration"])
        if info.is_main:
            log.info("resumed from iteration %d in %s", start_iter, out)
    elif info.is_main:
        _write_run_files(cfg, out)

    per_rank = solver.ims_per_batch // info.world_size
    loader = build_train_loader(cfg, dataset, info, start_sample=start_iter * per_rank)
    if info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None
        )
    core = _unwrap(model)

    writer = None
    if info.is_main and cfg.logging.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # heavy (TensorBoard); only when logging to it

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_iter + 1)
    pbar = None
    if info.is_main and cfg.logging.progress_bar:
        pbar = tqdm(total=solver.max_iter, initial=start_iter, desc="train", unit="it", dynamic_ncols=True)

    def save_checkpoint(iteration: int) -> None:
        rngs = _gather_rng(info)
        if info.is_main:
            path = ckpt.save(
                iteration,
                {k: v.detach() for k, v in core.state_dict().items()},
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rngs,
                    "data_position": {
                        "samples_per_rank": iteration * per_rank,
                        "world_size": info.world_size,
                        "seed": cfg.seed,
                    },
                },
                {"model": cfg.model.name},
            )
            log.info("checkpoint %s", path)

    set_train_mode(model, frozen_modules)
    data_iter = iter(loader)
    it = start_iter
    last: dict[str, float] = {}
    window_start, window_iters = time.perf_counter(), 0
    try:
        while it < solver.max_iter:
            batch = _to_device(next(data_iter), info.device)
            with torch.autocast(
                info.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                outputs = model(batch["image"].contiguous(memory_format=memory_format))
            outputs = {k: v.float() for k, v in outputs.items()}
            losses = panoptic_depth_losses(outputs, batch, cfg.loss)
            total = sum(losses.values())
            values = torch.stack([total.detach(), *[v.detach() for v in losses.values()]])
            if info.world_size > 1:
                dist.all_reduce(values)
                values /= info.world_size
            values_list = values.tolist()
            current = dict(zip(["loss_total", *losses.keys()], values_list, strict=True))
            if not all(math.isfinite(v) for v in values_list):
                good = ckpt.latest() if info.is_main else None
                detail = ", ".join(f"{k}={v:.4g}" for k, v in current.items())
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {it + 1} ({detail}); training stopped before the update. "
                    + (
                        f"Last good checkpoint: {ckpt.paths(good)[0]}"
                        if good is not None
                        else "No checkpoint was written yet."
                    )
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if solver.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, solver.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            it += 1
            window_iters += 1
            last = current

            if it % cfg.logging.log_period == 0 or it == solver.max_iter:
                elapsed = time.perf_counter() - window_start
                sec_per_iter = elapsed / max(window_iters, 1)
                ips = solver.ims_per_batch / sec_per_iter if sec_per_iter > 0 else float("nan")
                if info.is_main:
                    eta = sec_per_iter * (solver.max_iter - it)
                    log.info(
                        "iter %d/%d  %s  lr %.3g  %.2f s/it  %.1f img/s  eta %s",
                        it,
                        solver.max_iter,
                        "  ".join(f"{k} {v:.4f}" for k, v in current.items()),
                        lr,
                        sec_per_iter,
                        ips,
                        time.strftime("%H:%M:%S", time.gmtime(eta)),
                    )
                    if writer is not None:
                        for k, v in current.items():
                            writer.add_scalar(f"loss/{k}", v, it)
                        writer.add_scalar("lr", lr, it)
                        writer.add_scalar("throughput/images_per_s", ips, it)
                        writer.add_scalar("throughput/s_per_iter", sec_per_iter, it)
                window_start, window_iters = time.perf_counter(), 0
            if writer is not None and cfg.logging.image_period and it % cfg.logging.image_period == 0:
                grid = image_summary(batch, outputs, cfg.model.max_depth_m)
                writer.add_image("train/semantic_and_depth", grid, it, dataformats="HWC")
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{current['loss_total']:.3f}", lr=f"{lr:.2g}")
            if it % cfg.checkpoint.period == 0 or it == solver.max_iter:
                if info.world_size > 1:  # rank 0 writes its buffers; make every rank hold the same
                    for b in core.buffers():
                        dist.broadcast(b, 0)
                save_checkpoint(it)
            if on_iteration is not None:
                on_iteration(it, current)
    finally:
        if pbar is not None:
            pbar.close()
        if writer is not None:
            writer.flush()
            writer.close()

    final = out / "model_final.safetensors"
    if info.is_main:
        metadata = {"iteration": str(it), "model": cfg.model.name}
        if cfg.bn_recalibration_batches > 0:
            metadata["bn_recalibrated_batches"] = str(_recalibrate_bn(core, cfg, frozen_modules, info))
        save_safetensors(core.state_dict(), final, metadata)
        log.info("final weights %s", final)
    if info.world_size > 1:
        dist.barrier()
    return TrainResult(final, it, last, core)
