"""The Panoptic-DepthLab network (detectron2-exact Panoptic-DeepLab + a metric depth decoder)."""

from ..config import from_dict, load_yaml
from .config import ModelConfig
from .panoptic_depthlab import OUTPUT_NAMES, PanopticDepthLab, build_model, check_images

__all__ = ["ModelConfig", "OUTPUT_NAMES", "PanopticDepthLab", "build_model", "check_images", "load_model_config"]


def load_model_config(path) -> ModelConfig:
    """Read a model YAML (either the bare model section or a file with a top-level ``model:`` key)."""
    data = load_yaml(path)
    if "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    return from_dict(ModelConfig, data, "model")
