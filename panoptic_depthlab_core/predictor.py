"""Predictor: one RGB image in, panoptic ids + semantic + depth + segments (with distances) out.

The data path, top to bottom: uint8 HWC image -> letterbox to the network size (keep aspect, pad) ->
backend (three heads) -> panoptic post-processing at network resolution -> crop the padding and map
back to the input resolution (ids nearest, depth bilinear) -> per-segment statistics with K.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, from_dict, load_yaml
from .model import ModelConfig, build_model
from .postprocess import PostprocessConfig, panoptic_postprocess
from .preprocess import letterbox_rgb
from .results import FrameResult, NearestUpsampling
from .runtime import BackendConfig, create_backend, resolve_backend_name
from .runtime.gpu_pipeline import PinnedStager
from .segments import SegmentsConfig, compute_segments, compute_segments_torch
from .segments_network import compute_segments_upsampled
from .weights import load_model_weights

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
DEFAULT_CONFIG = DEFAULT_MODEL_DIR / "model.yaml"
DEFAULT_WEIGHTS = DEFAULT_MODEL_DIR / "model.safetensors"
log = logging.getLogger(__name__)

# The dense maps a FrameResult can carry at the input resolution (``Predictor.predict(maps=...)``).
DENSE_MAPS: frozenset[str] = frozenset({"panoptic", "semantic", "depth"})
# predict(stuff_segments=...): stuff segments with every statistic, without depth statistics, or none
STUFF_SEGMENTS: tuple[str, ...] = ("full", "no_depth", "none")


@dataclass
class InputConfig:
    """Network input size; images are letterboxed into it (aspect kept, bottom/right padding)."""

    height: int = 1024
    width: int = 2048

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ConfigError(f"input size must be at least 32x32, got {self.height}x{self.width}")


@dataclass
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)


def load_pipeline_config(path: str | Path, overrides: dict | None = None) -> PipelineConfig:
    """Read a model YAML (sections model/input/postprocess/segments; any may be omitted)."""
    data = load_yaml(path)
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return from_dict(PipelineConfig, data)


def check_rgb_image(image: np.ndarray | torch.Tensor) -> None:
    """uint8 (H, W, 3) RGB as a numpy array, or as a torch tensor (e.g. decoded on the GPU)."""
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise ValueError(f"expected a numpy uint8 array of shape (H, W, 3) RGB, got {type(image).__name__}")
    shape = tuple(image.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {shape}")
    if image.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"expected dtype uint8 (RGB 0-255), got {image.dtype}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image has zero size: {shape}")


def _to_device(image: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.to(device, non_blocking=True)
    with warnings.catch_warnings():
        # Zero-copy views of ROS message buffers are read-only; the tensor is only read.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    return tensor.to(device, non_blocking=True)


def check_intrinsics(K: np.ndarray | None) -> np.ndarray | None:
    if K is None:
        return None
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"camera matrix K must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("camera matrix K contains non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"camera matrix K must have positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


class Predictor:
    """Loads a model config + weights; ``predict(rgb_uint8_hwc, K=None) -> FrameResult``."""

    def __init__(self, cfg: PipelineConfig, weights: str | Path | None, backend: BackendConfig | None = None,
                 model: torch.nn.Module | None = None) -> None:
        self.cfg = cfg
        self.backend_cfg = backend or BackendConfig()
        if model is None:
            model = build_model(cfg.model)
            if weights is not None:
                load_model_weights(model, weights)
        self.model = model.eval()
        self.input_hw = (cfg.input.height, cfg.input.width)
        self.backend = self._create_backend(self.backend_cfg)
        self.device = self.backend.device
        self._stager = PinnedStager()  # reused pinned host buffers for the output maps (GPU path)

    def _create_backend(self, bcfg: BackendConfig):
        """The backend; ``auto`` is resolved (``backend_cfg.name`` then says which one runs) and falls
        back to torch, with a warning, when onnxruntime cannot be set up (e.g. no writable cache for
        the exported model)."""
        name = resolve_backend_name(bcfg.name, bcfg.device, bcfg.precision)
        try:
            backend = create_backend(replace(bcfg, name=name), self.model, self.input_hw)
        except Exception as exc:  # export, cache or onnxruntime itself: for auto, torch still works
            if bcfg.name != "auto" or name == "torch":
                raise
            log.warning("backend auto: onnxruntime could not be set up (%s: %s); using torch", type(exc).__name__, exc)
            name = "torch"
            backend = create_backend(replace(bcfg, name=name), self.model, self.input_hw)
        self.backend_cfg = replace(bcfg, name=name)
        return backend

    @classmethod
    def from_config(cls, config: str | Path | None = None, weights: str | Path | None = None,
                    backend: str = "torch", device: str = "cpu", precision: str = "fp32",
                    overrides: dict | None = None, **backend_kwargs) -> Predictor:
        """Defaults to the shipped default model when neither config nor weights is given."""
        if config is None:
            config = DEFAULT_CONFIG
            weights = DEFAULT_WEIGHTS if weights is None else weights
        cfg = load_pipeline_config(config, overrides)
        bcfg = from_dict(BackendConfig, {"name": backend, "device": device, "precision": precision,
                                         **backend_kwargs})
        return cls(cfg, weights, bcfg)

    def warmup(self, iterations: int = 1) -> None:
        image = np.zeros((self.input_hw[0], self.input_hw[1], 3), dtype=np.uint8)
        for _ in range(iterations):
            self.predict(image)

    # ----------------------------------------------------------------------------- pipeline steps
    @torch.inference_mode()
    def predict(self, image: np.ndarray | torch.Tensor, K: np.ndarray | None = None,
                on_maps: Callable[[FrameResult], None] | None = None,
                maps: Collection[str] | None = None, stuff_segments: str = "full") -> FrameResult:
        """``on_maps(maps)``, if given, is called with the dense maps (a FrameResult without
        segments) as soon as they are on the host: on the CPU before the per-segment statistics, so
        the node publishes the images meanwhile (on a GPU the statistics run on the device first;
        they are fast there).

        ``maps``: the dense maps the caller uses at the input resolution, of ``DENSE_MAPS`` (None =
        all). When the input was resized, the others are not made (None in the result) unless the
        statistics need them (``cpu_resolution: input`` on the CPU, or on a GPU) — the
        segments, the overlay and the 16UC1 image come from the network's map (``upsampling``), so
        a caller that only reads detections skips ~18 MB of maps per 1080p frame (and, on a GPU,
        their copy to the host).

        ``stuff_segments``: "full" (every statistic for stuff segments too), "no_depth" (stuff
        segments keep area, box and centroid; distance NaN, no 3D — enough for the overlay, which
        fills stuff by class) or "none" (things only). Stuff is most of the pixels: at 1080p on
        the CPU "none" takes the statistics from ~16 to ~3-5 ms."""
        check_rgb_image(image)
        K = check_intrinsics(K)
        wanted = DENSE_MAPS if maps is None else frozenset(maps)
        if not wanted <= DENSE_MAPS:
            raise ValueError(f"unknown maps {sorted(wanted - DENSE_MAPS)}; known: {', '.join(sorted(DENSE_MAPS))}")
        segments_cfg = self._segments_config(stuff_segments)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        height, width = image.shape[:2]
        tensor = _to_device(image, self.device)
        batch, (valid_h, valid_w) = letterbox_rgb(tensor, self.input_hw, self.cfg.model.pixel_mean)
        t1 = time.perf_counter()
        timings["preprocess"] = (t1 - t0) * 1e3

        outputs = self.backend(batch)
        self._sync()
        t2 = time.perf_counter()
        timings["network"] = (t2 - t1) * 1e3

        outputs = {k: v[..., :valid_h, :valid_w] for k, v in outputs.items()}
        pan = panoptic_postprocess(outputs["sem_logits"], outputs["center"], outputs["offset"], self.cfg.postprocess)
        panoptic_net = pan["panoptic_ids"][0]
        semantic_net = pan["semantic"][0]
        depth_net = outputs["depth"][0, 0]
        resized = (valid_h, valid_w) != (height, width)
        on_cpu = self.device.type == "cpu"
        upsampling = None  # how the id map was upsampled, for the consumers of the result
        if resized:
            rows = _nearest_index(valid_h, height, panoptic_net.device)
            cols = _nearest_index(valid_w, width, panoptic_net.device)
        if on_cpu:  # the maps go to the host anyway: resized there, ~3x faster than by torch
            small = {"panoptic": panoptic_net.to(torch.int32).numpy(), "semantic": semantic_net.to(torch.uint8).numpy(),
                     "depth": depth_net.float().numpy()}  # fmt: skip
            host = small
            if resized:
                upsampling = NearestUpsampling(small["panoptic"], rows.numpy(), cols.numpy())
                made = wanted  # statistics per input pixel (cpu_resolution "input") need the ids and depth
                if self.cfg.segments.cpu_resolution != "network":
                    made = wanted | {"panoptic", "depth"}
                host = upsample_maps_host(small, upsampling, made)
        elif resized:  # the statistics run on the full-resolution id and depth maps here
            panoptic_ids = panoptic_net[rows[:, None], cols[None, :]]
            semantic = semantic_net[rows[:, None], cols[None, :]] if "semantic" in wanted else None
            depth_m = F.interpolate(depth_net[None, None], size=(height, width), mode="bilinear",
                                    align_corners=False)[0, 0]
        else:
            panoptic_ids, semantic, depth_m = panoptic_net, semantic_net, depth_net
        self._sync()
        t3 = time.perf_counter()
        timings["postprocess"] = (t3 - t2) * 1e3

        scores = pan["scores"][0]
        if not on_cpu:  # the all-GPU path: statistics where the maps are
            device_maps = {"panoptic": panoptic_ids.to(torch.int32), "depth": depth_m.float()}
            if semantic is not None:
                device_maps["semantic"] = semantic.to(torch.uint8)
            if resized:  # only what the caller reads leaves the device
                device_maps = {k: v for k, v in device_maps.items() if k in wanted}
            segments = compute_segments_torch(panoptic_ids, depth_m, K=K, scores=scores, cfg=segments_cfg)
            t4 = time.perf_counter()
            timings["segments"] = (t4 - t3) * 1e3
            # async copies into reused pinned buffers, one wait; copied out before the next frame reuses them
            host = {k: v.copy() for k, v in self._stager.to_host(device_maps).items()}
            host = {k: host.get(k) for k in DENSE_MAPS}
            if resized:  # the network's id map is small (~0.5 MB at 256x455): the host-side overlay uses it
                upsampling = NearestUpsampling(
                    panoptic_net.to(torch.int32).cpu().numpy(), rows.cpu().numpy(), cols.cpu().numpy()
                )
            timings["to_host"] = (time.perf_counter() - t4) * 1e3
            if on_maps is not None:
                on_maps(FrameResult(host["panoptic"], host["semantic"], host["depth"], K=K, upsampling=upsampling))
        else:
            if on_maps is not None:
                on_maps(FrameResult(host["panoptic"], host["semantic"], host["depth"], K=K, upsampling=upsampling))
            t4 = time.perf_counter()
            timings["to_host"] = (t4 - t3) * 1e3
            if resized and self.cfg.segments.cpu_resolution == "network":  # weighted network pixels
                segments = compute_segments_upsampled(
                    small["panoptic"], small["depth"], upsampling.rows, upsampling.cols,
                    K=K, scores=scores, cfg=segments_cfg,
                )  # fmt: skip
            else:
                segments = compute_segments(host["panoptic"], host["depth"], K=K, scores=scores, cfg=segments_cfg)
            timings["segments"] = (time.perf_counter() - t4) * 1e3
        panoptic_np, semantic_np, depth_np = host["panoptic"], host["semantic"], host["depth"]
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(panoptic_ids=panoptic_np, semantic=semantic_np, depth_m=depth_np, segments=segments,
                           K=K, timings_ms=timings, upsampling=upsampling)

    def _segments_config(self, stuff_segments: str) -> SegmentsConfig:
        """The statistics' settings for one ``predict`` call (the model's, with stuff narrowed)."""
        cfg = self.cfg.segments
        if stuff_segments == "full":
            return cfg
        if stuff_segments == "no_depth":
            return replace(cfg, stuff_depth=False)
        if stuff_segments == "none":
            return replace(cfg, include_stuff=False)
        raise ValueError(f"stuff_segments must be one of {', '.join(STUFF_SEGMENTS)}, got {stuff_segments!r}")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def upsample_maps_host(maps: dict[str, np.ndarray], upsampling: NearestUpsampling,
                       names: Collection[str] = DENSE_MAPS) -> dict[str, np.ndarray | None]:
    """Network-resolution maps (panoptic int32, semantic uint8, depth float32) -> the maps named in
    ``names`` at the input resolution (the others None): ids nearest by ``upsampling``'s index,
    depth bilinear with half-pixel centres (as ``F.interpolate(..., align_corners=False)`` on the
    GPU path). At 1920x1080 all three take ~2 ms here instead of ~10 ms by torch."""
    size_wh = (int(upsampling.cols.size), int(upsampling.rows.size))
    return {
        "panoptic": upsampling.upsample(maps["panoptic"]) if "panoptic" in names else None,
        "semantic": upsampling.upsample(maps["semantic"]) if "semantic" in names else None,
        "depth": cv2.resize(np.ascontiguousarray(maps["depth"]), size_wh, interpolation=cv2.INTER_LINEAR)
        if "depth" in names
        else None,
    }


def _nearest_index(src: int, dst: int, device: torch.device) -> torch.Tensor:
    """Nearest-neighbour resize index (pixel centres): the source position of each of ``dst``
    output positions. Integer maps are resized as ``ids[rows[:, None], cols[None, :]]`` (exact ids,
    no interpolation between labels); the segment statistics use the same index."""
    return ((torch.arange(dst, device=device) + 0.5) * (src / dst)).long().clamp_(max=src - 1)
