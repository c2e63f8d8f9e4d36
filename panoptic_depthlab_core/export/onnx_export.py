"""ONNX export of the network, validation of ONNX files, and a parity check against torch fp32.

The exported graph keeps the model's contract: input ``images`` (float32 RGB 0-255, [B, 3, H, W]),
outputs ``sem_logits``, ``center``, ``offset``, ``depth`` at input resolution. Normalisation,
padding to a multiple of 32 and the crop back are inside the graph, so every runtime is fed exactly
what the torch backend is fed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..model import OUTPUT_NAMES
from .locking import atomic_write_path, file_lock

# onnx (and with it .precision) is imported where it is used: it is the optional ``onnx`` extra, and
# the torch-only paths (bench, the tensorrt backend's cache directory) import this module.
PRECISIONS = ("fp32", "fp16", "int8")

log = logging.getLogger(__name__)

INPUT_NAME = "images"
MIN_OPSET = 17
PARITY_ATOL = 1e-3
CACHE_ENV = "PANOPTIC_DEPTHLAB_CACHE"


def default_cache_dir() -> Path:
    """Where exported models and engines go when no directory is configured."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "panoptic_depthlab"


def export_onnx(
    model: torch.nn.Module,
    out_path: str | Path,
    height: int,
    width: int,
    dynamic: bool = False,
    opset: int = MIN_OPSET,
    batch_size: int = 1,
    check: bool = True,
    precision: str = "fp32",
    calibration=None,
    int8_options: dict | None = None,
) -> Path:
    """Export ``model`` (eval) to ``out_path``; returns the path.

    ``dynamic`` makes batch, height and width symbolic. It traces at a size that is *not* a multiple
    of 32 so the in-graph padding is recorded with shape-dependent amounts (a trace at a divisible
    size would drop the pad and break other sizes).

    ``precision``: fp32, fp16 (``precision.convert_to_fp16``) or int8 (``precision.quantize_int8``
    with ``calibration``, a CalibrationDataReader, and ``int8_options`` passed on). The file's
    metadata records it (``panoptic_depthlab.precision``); inputs and outputs stay float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("precision int8 needs calibration data (a CalibrationDataReader)")
    if precision != "fp32":
        from .precision import convert_to_fp16, quantize_int8

        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pdl_export_", dir=out_path.parent) as tmp:
            fp32_path = export_onnx(model, Path(tmp) / "fp32.onnx", height, width, dynamic, opset, batch_size, check)
            if precision == "fp16":
                convert_to_fp16(fp32_path, out_path)
            else:
                quantize_int8(fp32_path, out_path, calibration, **(int8_options or {}))
        if check:
            check_onnx_file(out_path)
        log.info("exported %s ONNX %s (%dx%d)", precision, out_path, height, width)
        return out_path
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if height < 32 or width < 32:
        raise ValueError(f"export size must be at least 32x32, got {height}x{width}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    device = next(model.parameters()).device
    trace_h, trace_w = height, width
    divisor = int(getattr(model, "size_divisibility", 32))
    if dynamic:
        trace_h = height - 1 if height % divisor == 0 else height
        trace_w = width - 1 if width % divisor == 0 else width
    dummy = _example_image(trace_h, trace_w, batch_size, device)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        dynamic_axes.update({name: {0: "batch", 2: "height", 3: "width"} for name in OUTPUT_NAMES})
    with atomic_write_path(out_path) as tmp, warnings.catch_warnings():
        # The legacy (TorchScript) exporter: the torch.export one needs onnxscript and gains nothing here.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            # The wrapper must be in eval mode too: the exporter restores the *wrapper's* mode on
            # exit, which would otherwise flip the caller's model into training mode.
            torch.onnx.export(
                _OutputTuple(model).eval(),
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
    import onnx

    from .precision import set_onnx_metadata

    proto = onnx.load(str(out_path))
    set_onnx_metadata(proto, {"precision": "fp32", "input_hw": f"{height}x{width}", "dynamic": dynamic})
    with atomic_write_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
    del proto
    if check:
        check_onnx_file(out_path)
    log.info("exported ONNX %s (%dx%d, dynamic=%s, opset %d)", out_path, height, width, dynamic, opset)
    return out_path


class _OutputTuple(torch.nn.Module):
    """Dict outputs -> tuple in OUTPUT_NAMES order (the exporter names outputs positionally)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return tuple(out[name] for name in OUTPUT_NAMES)


def _example_image(height: int, width: int, batch_size: int, device: torch.device) -> torch.Tensor:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(batch_size, 3, height, width)).astype(np.float32)
    return torch.from_numpy(img).to(device)


def check_onnx_file(path: str | Path):
    """Load and validate an exported model; returns the ``onnx.ModelProto``.

    Raises FileNotFoundError when missing and ValueError naming the problem when the file is not a
    valid ONNX model or lacks the ``images`` input / four named outputs.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"ONNX model {path} is empty (0 bytes)")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ValueError(f"ONNX model {path} is corrupt or not an ONNX file: {exc}") from exc
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ValueError(f"ONNX model {path} fails onnx.checker: {exc}") from exc
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if INPUT_NAME not in inputs:
        raise ValueError(f"ONNX model {path} has inputs {inputs}; expected one named {INPUT_NAME!r}")
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise ValueError(f"ONNX model {path} lacks outputs {missing} (has {outputs})")
    return proto


def onnx_input_shape(proto) -> list[int | str]:
    """The ``images`` input shape; symbolic dims come back as their names."""
    for inp in proto.graph.input:
        if inp.name == INPUT_NAME:
            dims = inp.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    raise ValueError(f"no {INPUT_NAME!r} input")


def model_fingerprint(model: torch.nn.Module, extra: str = "") -> str:
    """sha256 over the architecture text and every parameter/buffer, so a cached export is only reused
    for exactly this network and these weights."""
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(extra.encode())
    h.update(torch.__version__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        t = tensor.detach().cpu().contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cached_onnx_for_model(
    model: torch.nn.Module,
    input_hw: tuple[int, int],
    cache_dir: str | Path | None = None,
    opset: int = MIN_OPSET,
) -> Path:
    """Export ``model`` once per (weights, architecture, size) into the cache; later calls reuse it."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    onnx_dir = cache_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    fp = model_fingerprint(model, f"{input_hw}:{opset}")
    path = onnx_dir / f"model_{input_hw[0]}x{input_hw[1]}_{fp[:16]}.onnx"
    with file_lock(path.with_name(path.name + ".lock")):
        if path.is_file():
            try:
                check_onnx_file(path)
                return path
            except ValueError as exc:
                log.warning("re-exporting cached ONNX %s: %s", path, exc)
        export_onnx(model, path, input_hw[0], input_hw[1], opset=opset)
    return path


def onnx_parity(
    model: torch.nn.Module, onnx_path: str | Path, images: torch.Tensor, num_threads: int = 0
) -> dict[str, float]:
    """Max abs difference per output between torch fp32 (CPU) and ONNX Runtime (CPU) on ``images``."""
    import onnxruntime as ort

    images = images.detach().float().cpu()
    with torch.no_grad():
        ref = model.eval().float().cpu()(images)
    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    diffs = {}
    for name, value in zip(OUTPUT_NAMES, got, strict=True):
        if value.shape != tuple(ref[name].shape):
            raise ValueError(
                f"ONNX output {name} has shape {value.shape}, torch gives {tuple(ref[name].shape)}"
            )
        diffs[name] = float(np.abs(value - ref[name].numpy()).max())
    return diffs


def check_parity(
    model: torch.nn.Module, onnx_path: str | Path, images: torch.Tensor, atol: float = PARITY_ATOL
) -> dict[str, float]:
    """Raise ValueError when ONNX Runtime and torch differ by more than ``atol`` on logits or depth."""
    diffs = onnx_parity(model, onnx_path, images)
    bad = {k: v for k, v in diffs.items() if k in ("sem_logits", "depth") and v > atol}
    if bad:
        raise ValueError(f"ONNX Runtime differs from torch fp32 by more than {atol}: {bad} (all: {diffs})")
    return diffs


def with_trained_like_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (in place, returned) with BatchNorm statistics of realistic spread and predictor
    weights of trained-like magnitude, for parity checks of untrained models: fresh BN statistics are
    the identity and detectron2 initialises predictors with std 0.001, which makes every output ~0 and
    any tolerance meaningless; logits of several units exercise the real numerics. Uses torch's RNG."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        for name, m in model.named_modules():
            if name.endswith("predictor") and isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 5.0 / m.in_channels**0.5)
    return model


def realistic_test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A street-like uint8 RGB image (sky/road gradients, boxes, discs, mild noise) for parity checks:
    smooth regions and hard edges, unlike pure noise, which no real camera produces."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), dtype=np.float32)
    horizon = 0.45
    sky = ys < horizon
    img[..., 0] = np.where(sky, 110 + 60 * ys, 70 + 40 * ys + 10 * xs)
    img[..., 1] = np.where(sky, 150 + 50 * ys, 70 + 35 * ys)
    img[..., 2] = np.where(sky, 230 - 40 * ys, 75 + 30 * ys)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(6):  # buildings / cars
        h0 = int(rng.uniform(0.2, 0.6) * height)
        h1 = min(height, h0 + int(rng.uniform(0.1, 0.35) * height))
        w0 = int(rng.uniform(0, 0.85) * width)
        w1 = min(width, w0 + int(rng.uniform(0.05, 0.25) * width))
        img[h0:h1, w0:w1] = rng.uniform(20, 230, size=3)
    for _ in range(4):  # people / signs
        cy, cx = rng.uniform(0.3, 0.8) * height, rng.uniform(0, 1) * width
        r = rng.uniform(0.03, 0.08) * min(height, width) + 2
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(20, 230, size=3)
    img += rng.normal(0, 3, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
