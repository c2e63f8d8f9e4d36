"""Checkpoints: weights as safetensors + a second file with optimizer/scheduler/scaler/RNG/data position.

Every file is written to a temporary name and renamed into place, and the ``last_checkpoint`` pointer is
updated last, so an interrupted write never leaves a half checkpoint that ``--resume`` would pick up.
The state file holds only our own tensors and plain Python values and is read with
``torch.load(weights_only=True)``, which cannot execute code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panoptic_depthlab_core.weights import load_safetensors, save_safetensors

POINTER = "last_checkpoint"
_NAME = re.compile(r"^checkpoint_(\d{7})$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used (missing, corrupt or not ours); the message names the file."""


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CheckpointManager:
    def __init__(self, directory: str | Path, keep_last: int = 3) -> None:
        self.dir = Path(directory)
        self.keep_last = keep_last

    def paths(self, iteration: int) -> tuple[Path, Path]:
        stem = f"checkpoint_{iteration:07d}"
        return self.dir / f"{stem}.safetensors", self.dir / f"{stem}.state.pt"

    def existing(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        iters = []
        for p in self.dir.glob("checkpoint_*.safetensors"):
            m = _NAME.match(p.name[: -len(".safetensors")])
            if m:
                iters.append(int(m.group(1)))
        return sorted(iters)

    def has_any(self) -> bool:
        return (self.dir / POINTER).exists() or bool(self.existing())

    def save(
        self,
        iteration: int,
        weights: dict[str, torch.Tensor],
        state: dict[str, Any],
        metadata: dict[str, str] | None = None,
    ) -> Path:
        """Write both files, then move the pointer; prune old checkpoints. Returns the weights path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        weights_path, state_path = self.paths(iteration)
        save_safetensors(weights, weights_path, {"iteration": str(iteration), **(metadata or {})})
        _atomic_torch_save({"iteration": iteration, **state}, state_path)
        pointer_tmp = self.dir / (POINTER + ".tmp")
        pointer_tmp.write_text(f"checkpoint_{iteration:07d}\n")
        os.replace(pointer_tmp, self.dir / POINTER)
        if self.keep_last > 0:
            for old in self.existing()[: -self.keep_last]:
                for p in self.paths(old):
                    p.unlink(missing_ok=True)
        return weights_path

    def latest(self) -> int | None:
        """Iteration named by the pointer file; None when the directory holds no checkpoint at all."""
        pointer = self.dir / POINTER
        if not pointer.exists():
            if self.existing():
                raise CheckpointError(f"{pointer} is missing although {self.dir} holds checkpoint files")
            return None
        name = pointer.read_text().strip()
        m = _NAME.match(name)
        if not m:
            raise CheckpointError(f"{pointer} is corrupt: expected 'checkpoint_NNNNNNN', found {name[:60]!r}")
        return int(m.group(1))

    def load(self, iteration: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read and check both files of a checkpoint; any problem -> CheckpointError naming the file."""
        weights_path, state_path = self.paths(iteration)
        for p in (weights_path, state_path):
            if not p.is_file():
                raise CheckpointError(f"cannot resume: checkpoint file {p} is missing")
        try:
            weights = load_safetensors(weights_path)
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"cannot resume: weights file {weights_path} is corrupt ({exc})") from exc
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged zip/pickle
            raise CheckpointError(
                f"cannot resume: training-state file {state_path} is corrupt or not ours "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from exc
        required = ("iteration", "optimizer", "scheduler", "scaler", "rng", "data_position")
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        if missing:
            raise CheckpointError(f"cannot resume: {state_path} lacks {missing}")
        if state["iteration"] != iteration:
            raise CheckpointError(
                f"cannot resume: {state_path} is for iteration {state['iteration']}, not {iteration}"
            )
        return weights, state
