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

import numpy as np
import torch

from .config import ConfigError, from_dict, load_yaml
from .maps import DENSE_MAPS, nearest_index, upsample_maps_device, upsample_maps_host
from .model import ModelConfig, build_model
from .postprocess import PostprocessConfig, panoptic_postprocess
from .preprocess import letterbox_rgb
from .results import FrameResult, NearestUpsampling
from .runtime import BackendConfig, create_backend, resolve_backend_name
from .runtime.gpu_pipeline import PinnedStager
from .segments import (
    SegmentsConfig,
    check_intrinsics,
    compute_segments,
    compute_segments_torch,
    compute_segments_upsampled,
)
from .weights import load_model_weights

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
DEFAULT_CONFIG = DEFAULT_MODEL_DIR / "model.yaml"
DEFAULT_WEIGHTS = DEFAULT_MODEL_DIR / "model.safetensors"
log = logging.getLogger(__name__)

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


def check_maps(maps: Collection[str] | None) -> frozenset[str]:
    """The dense maps a caller asked for (None = all of ``DENSE_MAPS``)."""
    wanted = DENSE_MAPS if maps is None else frozenset(maps)
    if not wanted <= DENSE_MAPS:
        raise ValueError(f"unknown maps {sorted(wanted - DENSE_MAPS)}; known: {', '.join(sorted(DENSE_MAPS))}")
    return wanted


@dataclass
class NetworkMaps:
    """The post-processed frame at the network resolution, letterbox padding cropped off."""

    panoptic: torch.Tensor  # int32 [h, w]
    semantic: torch.Tensor  # uint8 [h, w]
    depth: torch.Tensor  # float [h, w], metres
    scores: dict[int, float]  # panoptic id -> score

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.panoptic.shape[0]), int(self.panoptic.shape[1])


class StepClock:
    """Milliseconds per step of one frame (``FrameResult.timings_ms``), the device synchronised at
    every step so that asynchronous GPU work is charged to the step that queued it."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._start = self._last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, step: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.timings[step] = (now - self._last) * 1e3
        self._last = now

    def finish(self) -> dict[str, float]:
        self.timings["total"] = (time.perf_counter() - self._start) * 1e3
        return self.timings


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

    # ----------------------------------------------------------------------------- the frame
    @torch.inference_mode()
    def predict(self, image: np.ndarray | torch.Tensor, K: np.ndarray | None = None,
                on_maps: Callable[[FrameResult], None] | None = None,
                maps: Collection[str] | None = None, stuff_segments: str = "full") -> FrameResult:
        """One frame: preprocess -> network -> post-process -> maps at the input size -> segments.

        ``on_maps(maps)``, if given, is called with the dense maps (a FrameResult without
        segments) as soon as they are on the host: on the CPU before the per-segment statistics, so
        the node publishes the images meanwhile (on a GPU the statistics run on the device first;
        they are fast there).

        ``maps``: the dense maps the caller uses at the input resolution, of ``DENSE_MAPS`` (None =
        all). When the input was resized, the others are not made (None in the result) unless the
        statistics need them (``cpu_resolution: input`` on the CPU, or on a GPU) — the
        segments, the overlay and the 16UC1 image come from the network's map (``upsampling``), so
        a caller that only reads detections skips the full-resolution maps (and, on a GPU, their
        copy to the host).

        ``stuff_segments``: "full" (every statistic for stuff segments too), "no_depth" (stuff
        segments keep area, box and centroid; distance NaN, no 3D — enough for the overlay, which
        fills stuff by class) or "none" (things only). Stuff is most of the pixels, and its
        statistics most of their time."""
        check_rgb_image(image)
        K = check_intrinsics(K)
        wanted = check_maps(maps)
        segments_cfg = self._segments_config(stuff_segments)
        input_hw = (int(image.shape[0]), int(image.shape[1]))
        clock = StepClock(self._sync)
        batch, valid_hw = self._preprocess(image)
        clock.lap("preprocess")
        outputs = self.backend(batch)
        clock.lap("network")
        net = self._postprocess(outputs, valid_hw)
        if self.device.type == "cpu":
            return self._finish_on_host(net, input_hw, wanted, K, segments_cfg, on_maps, clock)
        return self._finish_on_device(net, input_hw, wanted, K, segments_cfg, on_maps, clock)

    def _preprocess(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The letterboxed network input [1,3,H,W] on the backend's device and its valid (h, w)."""
        return letterbox_rgb(_to_device(image, self.device), self.input_hw, self.cfg.model.pixel_mean)

    def _postprocess(self, outputs: dict[str, torch.Tensor], valid_hw: tuple[int, int]) -> NetworkMaps:
        """Panoptic post-processing of the three heads, the letterbox padding cropped off first."""
        valid_h, valid_w = valid_hw
        outputs = {k: v[..., :valid_h, :valid_w] for k, v in outputs.items()}
        pan = panoptic_postprocess(outputs["sem_logits"], outputs["center"], outputs["offset"], self.cfg.postprocess)
        return NetworkMaps(panoptic=pan["panoptic_ids"][0], semantic=pan["semantic"][0],
                           depth=outputs["depth"][0, 0], scores=pan["scores"][0])  # fmt: skip

    def _finish_on_host(self, net: NetworkMaps, input_hw: tuple[int, int], wanted: frozenset[str],
                        K: np.ndarray | None, segments_cfg: SegmentsConfig,
                        on_maps: Callable[[FrameResult], None] | None, clock: StepClock) -> FrameResult:
        """CPU: the maps are resized on the host (they go there anyway), handed to ``on_maps``, and
        the statistics run after that, on the network's pixels or the input's (``cpu_resolution``)."""
        small = {"panoptic": net.panoptic.to(torch.int32).numpy(), "semantic": net.semantic.to(torch.uint8).numpy(),
                 "depth": net.depth.float().numpy()}  # fmt: skip
        host, upsampling = small, None
        by_network_pixels = self.cfg.segments.cpu_resolution == "network"
        if net.size_hw != input_hw:
            rows, cols = nearest_index(net.size_hw[0], input_hw[0]), nearest_index(net.size_hw[1], input_hw[1])
            upsampling = NearestUpsampling(small["panoptic"], rows.numpy(), cols.numpy())
            # statistics per input pixel need the full-resolution ids and depth whatever the caller reads
            made = wanted if by_network_pixels else wanted | {"panoptic", "depth"}
            host = upsample_maps_host(small, upsampling, made)
        clock.lap("postprocess")
        if on_maps is not None:
            on_maps(FrameResult(host["panoptic"], host["semantic"], host["depth"], K=K, upsampling=upsampling))
        clock.lap("to_host")
        if upsampling is not None and by_network_pixels:  # network pixels weighted by their input pixels
            segments = compute_segments_upsampled(
                small["panoptic"], small["depth"], upsampling.rows, upsampling.cols,
                K=K, scores=net.scores, cfg=segments_cfg,
            )  # fmt: skip
        else:
            segments = compute_segments(host["panoptic"], host["depth"], K=K, scores=net.scores, cfg=segments_cfg)
        clock.lap("segments")
        return FrameResult(panoptic_ids=host["panoptic"], semantic=host["semantic"], depth_m=host["depth"],
                           segments=segments, K=K, timings_ms=clock.finish(), upsampling=upsampling)  # fmt: skip

    def _finish_on_device(self, net: NetworkMaps, input_hw: tuple[int, int], wanted: frozenset[str],
                          K: np.ndarray | None, segments_cfg: SegmentsConfig,
                          on_maps: Callable[[FrameResult], None] | None, clock: StepClock) -> FrameResult:
        """GPU: the maps are resized and the statistics run where the maps are; then only the maps
        the caller reads go to the host (one wait), and ``on_maps`` gets them."""
        device_maps = {"panoptic": net.panoptic, "semantic": net.semantic, "depth": net.depth}
        resized = net.size_hw != input_hw
        if resized:
            rows = nearest_index(net.size_hw[0], input_hw[0], self.device)
            cols = nearest_index(net.size_hw[1], input_hw[1], self.device)
            # the statistics need the full-resolution ids and depth; semantic only if the caller reads it
            device_maps = upsample_maps_device(device_maps, rows, cols, wanted | {"panoptic", "depth"})
        clock.lap("postprocess")
        segments = compute_segments_torch(device_maps["panoptic"], device_maps["depth"], K=K, scores=net.scores,
                                          cfg=segments_cfg)  # fmt: skip
        clock.lap("segments")
        dtypes = {"panoptic": torch.int32, "semantic": torch.uint8, "depth": torch.float32}
        to_copy = {k: v.to(dtypes[k]) for k, v in device_maps.items() if v is not None and (k in wanted or not resized)}
        # async copies into reused pinned buffers, one wait; copied out before the next frame reuses them
        copied = {k: v.copy() for k, v in self._stager.to_host(to_copy).items()}
        host = {k: copied.get(k) for k in DENSE_MAPS}
        upsampling = None
        if resized:  # the network's id map is small: the host-side overlay works on it
            upsampling = NearestUpsampling(net.panoptic.to(torch.int32).cpu().numpy(), rows.cpu().numpy(),
                                           cols.cpu().numpy())  # fmt: skip
        clock.lap("to_host")
        if on_maps is not None:
            on_maps(FrameResult(host["panoptic"], host["semantic"], host["depth"], K=K, upsampling=upsampling))
        return FrameResult(panoptic_ids=host["panoptic"], semantic=host["semantic"], depth_m=host["depth"],
                           segments=segments, K=K, timings_ms=clock.finish(), upsampling=upsampling)  # fmt: skip

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
