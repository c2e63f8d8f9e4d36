"""Panoptic post-processing of the network outputs (centers, grouping, merge, scores)."""

from panoptic_depthlab_core.postprocess.panoptic import (
    PostprocessConfig,
    find_instance_centers,
    group_pixels,
    merge_semantic_and_instance,
    panoptic_postprocess,
    segment_scores,
)

__all__ = [
    "PostprocessConfig",
    "find_instance_centers",
    "group_pixels",
    "merge_semantic_and_instance",
    "panoptic_postprocess",
    "segment_scores",
]
