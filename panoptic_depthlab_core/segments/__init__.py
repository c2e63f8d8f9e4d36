"""Per-segment facts from a panoptic id map and a metric depth map: area, box, depth statistics, 3D.

Three implementations of the same statistics, one per place the maps can be:
- ``numpy_stats.compute_segments``: every pixel of host maps (numpy arrays or tensors);
- ``torch_stats.compute_segments_torch``: every pixel, computed where the tensors are (a GPU);
- ``network_resolution.compute_segments_upsampled``: the network's pixels, each weighted by the
  input pixels it covers, for maps upsampled by nearest neighbour (the CPU default).
They share ``config.SegmentsConfig``, the input checks (``checks``), which pixels are read
(``pixels``) and the conversion to ``Segment`` objects (``assemble``).

Definitions (the same in every implementation):
- Depth statistics only use pixels with valid depth (finite, within [min_depth_m, max_depth_m]);
  with ``stuff_depth`` off, only things get them.
- ``distance_m`` is the configured statistic of the z-depth (metres along the optical axis),
  defaulting to the median, which is robust at object borders where the depth of the background
  bleeds in.
- Quantiles (median, p10, extent percentiles) interpolate linearly between order statistics
  (``numpy.percentile``'s default); the trimmed mean cuts ``int(trim_fraction * n)`` values from each
  end (``scipy.stats.trim_mean``).
- With intrinsics K, ``position_xyz_m`` is the ray through the mean pixel (u, v) of the valid-depth
  pixels scaled to z = distance_m: x = (u - cx) / fx * z, y = (v - cy) / fy * z (optical frame: x right,
  y down, z forward; pixel centres at integer coordinates, as in ROS CameraInfo). ``extent_xyz_m`` is
  the per-axis spread (high minus low extent percentile) of the back-projected valid pixels; x and y
  are ordered as float32 keys, so extents carry a relative error below 1e-7.
"""

from .checks import check_intrinsics
from .config import DistanceStatistic, SegmentsConfig
from .network_resolution import compute_segments_upsampled, nearest_blocks
from .numpy_stats import compute_segments
from .torch_stats import compute_segments_torch

__all__ = [
    "DistanceStatistic",
    "SegmentsConfig",
    "check_intrinsics",
    "compute_segments",
    "compute_segments_torch",
    "compute_segments_upsampled",
    "nearest_blocks",
]
