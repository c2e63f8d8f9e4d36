"""Bad inputs and settings get a clear error naming what was wrong, in every statistics path."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_depthlab_core.config import ConfigError, from_dict
from panoptic_depthlab_core.segments import SegmentsConfig, compute_segments


def test_segments_bad_input_raises_clear_errors():
    ids = np.zeros((4, 4), np.int32)
    depth = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="panoptic_ids must be a 2-D"):
        compute_segments(np.zeros((1, 4, 4), np.int32), depth)
    with pytest.raises(ValueError, match="integer dtype"):
        compute_segments(ids.astype(np.float32), depth)
    with pytest.raises(ValueError, match="depth_m must have the shape"):
        compute_segments(ids, np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="float map"):
        compute_segments(ids, np.ones((4, 4), np.uint16))
    with pytest.raises(ValueError, match="3x3"):
        compute_segments(ids, depth, K=np.eye(3)[:2])
    with pytest.raises(ValueError, match="non-finite"):
        compute_segments(ids, depth, K=np.array([[500, 0, 1], [0, np.nan, 1], [0, 0, 1]]))
    with pytest.raises(ValueError, match="focal"):
        compute_segments(ids, depth, K=np.diag([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="numpy array"):
        compute_segments([[0, 0]], None)
    with pytest.raises(ValueError, match="distance_statistic"):
        SegmentsConfig(distance_statistic="max")
    with pytest.raises(ValueError, match="trim_fraction"):
        SegmentsConfig(trim_fraction=0.5)
    with pytest.raises(ConfigError):
        from_dict(SegmentsConfig, {"distance_statistic": "p90"})
    assert from_dict(SegmentsConfig, {"extent_percentiles": [10, 90]}).extent_percentiles == (10.0, 90.0)
