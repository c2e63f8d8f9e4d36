"""Weights I/O: our own safetensors files, and detectron2 ``.pkl`` conversion without unsafe pickle.

detectron2 publishes Panoptic-DeepLab checkpoints as pickled dicts ``{"model": {name: ndarray}}``.
Unpickling runs arbitrary code, so :class:`RestrictedUnpickler` admits only the globals numpy needs to
rebuild arrays; anything else is refused with the global's name before it can run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .metadata import CLASS_NAMES
from .model import ModelConfig, build_model

log = logging.getLogger(__name__)

# (module, name) pairs a detectron2 / numpy pickle may reference. Nothing here can run code beyond
# constructing arrays, dtypes and plain containers.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # Python-2 era pickles store bytes through codecs.encode
}
TOLERATED_EXTRA_KEYS = ("pixel_mean", "pixel_std")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle referenced a global that could execute code; nothing was executed."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}': detectron2 checkpoints only need numpy arrays "
                "and builtin containers, so this file may be malicious"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r} (torch.save zip files are not supported)")


def restricted_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only numpy array reconstruction and builtin containers."""
    data = Path(path).read_bytes()
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_safetensors(state_dict: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None,
                     dtype: Any = None) -> None:
    """Write tensors (torch or numpy) atomically; ``dtype`` (e.g. torch.float16) casts floating tensors."""
    tensors = {}
    for k, v in state_dict.items():
        t = torch.as_tensor(v).detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    tmp.replace(path)


def load_safetensors(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"weights file {path} is not a readable safetensors file: {exc}") from exc


def check_state_dict(model_sd: dict[str, Any], loaded: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Return (missing, unexpected, shape mismatches) ignoring tolerated extras and BN counters."""
    def relevant(k: str) -> bool:
        return not k.endswith("num_batches_tracked") and k not in TOLERATED_EXTRA_KEYS

    want = {k for k in model_sd if relevant(k)}
    have = {k for k in loaded if relevant(k)}
    mismatched = [
        f"{k}: checkpoint {tuple(loaded[k].shape)} vs model {tuple(model_sd[k].shape)}"
        for k in sorted(want & have) if tuple(loaded[k].shape) != tuple(model_sd[k].shape)
    ]
    return sorted(want - have), sorted(have - want), mismatched


def load_model_weights(model: Any, path: str | Path, allow_missing_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Load a safetensors file into ``model``; every key and shape must match.

    Keys under ``allow_missing_prefixes`` may be absent (they keep their fresh initialisation); the
    list of such keys is returned.
    """
    loaded = load_safetensors(path)
    model_sd = model.state_dict()
    missing, unexpected, mismatched = check_state_dict(model_sd, loaded)
    tolerated = [k for k in missing if k.startswith(allow_missing_prefixes)] if allow_missing_prefixes else []
    missing = [k for k in missing if k not in tolerated]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"weights {path} do not fit the model: "
            f"missing {missing[:10]}{'...' if len(missing) > 10 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''} ({len(unexpected)}), "
            f"shape mismatches {mismatched[:10]}"
        )
    with torch.no_grad():
        for k, v in loaded.items():
            if k in model_sd:
                model_sd[k].copy_(v.to(model_sd[k].dtype))
    return tolerated


def convert_detectron2(pkl_path: str | Path, out_path: str | Path, variant: str = "regular") -> dict[str, Any]:
    """Convert a detectron2 Panoptic-DeepLab checkpoint; returns the sidecar dict it wrote.

    Every tensor keeps detectron2's name and shape. A checkpoint without ``depth_head.*`` gets a
    freshly initialised depth decoder (with a warning), so it runs but its depth is meaningless until
    the depth decoder is trained.
    """
    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise FileNotFoundError(f"detectron2 checkpoint not found: {pkl_path}")
    try:
        obj = restricted_load_pickle(pkl_path)
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise ValueError(f"{pkl_path} is not a readable detectron2 checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{pkl_path}: expected a dict, got {type(obj).__name__}")
    weights = obj.get("model", obj)
    if not isinstance(weights, dict) or not all(isinstance(v, np.ndarray) for v in weights.values()):
        raise ValueError(f"{pkl_path}: expected 'model' to map names to numpy arrays")

    if variant not in ("regular", "dsconv"):
        raise ValueError(f"variant must be 'regular' or 'dsconv', got {variant!r}")
    cfg = ModelConfig(name=f"panoptic_deeplab_r52_{variant}", use_dsconv=variant == "dsconv")
    model = build_model(cfg)
    model_sd = model.state_dict()
    loaded = OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in weights.items())
    missing, unexpected, mismatched = check_state_dict(model_sd, loaded)
    depth_missing = [k for k in missing if k.startswith("depth_head.")]
    missing = [k for k in missing if not k.startswith("depth_head.")]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{pkl_path} does not match the {variant} Panoptic-DeepLab R-52 layout: missing {missing}, "
            f"unexpected {unexpected}, shape mismatches {mismatched}"
        )
    if depth_missing:
        log.warning("%s has no depth_head.* tensors: the depth decoder is freshly initialised (%d tensors)",
                    pkl_path, len(depth_missing))
    out_sd = {}
    for k, v in model_sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        out_sd[k] = loaded[k].to(v.dtype) if k in loaded else v
    sidecar = {
        "variant": variant,
        "model_config": cfg.name,
        "classes": list(CLASS_NAMES),
        "source_file": pkl_path.name,
        "source_sha256": file_sha256(pkl_path),
        "depth_head": "checkpoint" if not depth_missing else "fresh_init",
        # ground_distance.depth_decoder_trained reads this: untrained -> distances from the ground plane
        "depth_decoder_trained": not depth_missing,
        "tensors": len(out_sd),
    }
    save_safetensors(out_sd, out_path, metadata={"variant": variant, "source_sha256": sidecar["source_sha256"],
                                                 "depth_decoder_trained": str(not depth_missing).lower()})
    Path(str(out_path) + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pkl", help="detectron2 checkpoint (.pkl with a 'model' dict of numpy arrays)")
    parser.add_argument("out", help="output .safetensors path (a .json sidecar is written beside it)")
    parser.add_argument("--variant", choices=["regular", "dsconv"], default="regular")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sidecar = convert_detectron2(args.pkl, args.out, args.variant)
    print(json.dumps(sidecar, indent=2))
    return 0
