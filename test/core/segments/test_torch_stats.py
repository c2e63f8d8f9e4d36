"""The segment statistics computed where the tensors are (the all-GPU pipeline) equal the numpy ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segments_reference import assert_same_segments, random_scene

from panoptic_depthlab_core.segments import SegmentsConfig, compute_segments, compute_segments_torch


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("with_k", [False, True])
@pytest.mark.parametrize("statistic", ["median", "mean", "trimmed_mean", "p10"])
def test_torch_segments_equal_numpy_segments(seed, with_k, statistic):
    ids, depth = random_scene(seed)
    K = np.array([[80.0, 0, 45], [0, 80.0, 30], [0, 0, 1]]) if with_k else None
    cfg = SegmentsConfig(distance_statistic=statistic)
    scores = {13001: 0.9, 0: 1.0}
    want = compute_segments(ids, depth, K=K, scores=scores, cfg=cfg)
    got = compute_segments_torch(torch.from_numpy(ids), torch.from_numpy(depth), K=K, scores=scores, cfg=cfg)
    assert len(want) > 5
    assert_same_segments(got, want)


def test_torch_segments_things_only_no_depth_and_empty():
    ids, depth = random_scene(3)
    cfg = SegmentsConfig(include_stuff=False)
    assert_same_segments(compute_segments_torch(torch.from_numpy(ids), None, cfg=cfg),
                          compute_segments(ids, None, cfg=cfg))  # fmt: skip
    void = torch.full((10, 12), -1, dtype=torch.int32)
    assert compute_segments_torch(void, torch.zeros(10, 12)) == []
    with pytest.raises(ValueError, match="integer"):
        compute_segments_torch(torch.zeros(10, 12), None)
    with pytest.raises(ValueError, match="shape"):
        compute_segments_torch(torch.zeros(10, 12, dtype=torch.int32), torch.zeros(10, 11))


def test_torch_segments_on_cuda_equal_numpy():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available: the on-device segment statistics need an NVIDIA GPU")
    ids, depth = random_scene(4, 540, 960)
    K = np.array([[800.0, 0, 480], [0, 800.0, 270], [0, 0, 1]])
    want = compute_segments(ids, depth, K=K)
    got = compute_segments_torch(torch.from_numpy(ids).cuda(), torch.from_numpy(depth).cuda(), K=K)
    assert [s.id for s in got] == [s.id for s in want]
    for a, b in zip(got, want, strict=True):
        assert a.area == b.area and a.bbox_xywh == b.bbox_xywh
        np.testing.assert_allclose(a.distance_m, b.distance_m, rtol=1e-6)
        np.testing.assert_allclose(a.position_xyz_m, b.position_xyz_m, rtol=1e-5, atol=1e-6)
