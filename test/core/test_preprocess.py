"""letterbox_rgb: aspect kept, padding with the mean, and the uint8 fast path matching float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_depthlab_core.preprocess import DEFAULT_PAD_RGB, letterbox_rgb


def _smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random pixels blurred a little, so resampling sees real gradients and edges."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.integers(0, 256, (1, 3, max(2, h // 4), max(2, w // 4))).astype(np.float32))
    fine = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    noisy = fine + torch.from_numpy(rng.normal(0, 20, (1, 3, h, w)).astype(np.float32))
    return noisy.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def _float_reference(image: np.ndarray, valid_hw: tuple[int, int]) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=valid_hw, mode="bilinear", align_corners=False, antialias=True)


@pytest.mark.parametrize(
    "shape, net_hw",
    [((1080, 1920), (512, 1024)), ((375, 1242), (128, 256)), ((77, 33), (128, 256)), ((40, 60), (96, 160))],
)
def test_uint8_resampling_is_within_one_grey_level_of_float32(shape, net_hw) -> None:
    image = _smooth_image(*shape)
    batch, (vh, vw) = letterbox_rgb(image, net_hw)
    reference = _float_reference(image, (vh, vw))
    diff = (batch[:, :, :vh, :vw] - reference).abs()
    assert diff.max().item() <= 1.01  # fixed-point weights + rounding to integers
    assert diff.mean().item() < 0.5
    # a float image takes the float32 path itself: exactly the reference
    as_float = letterbox_rgb(torch.from_numpy(image).float(), net_hw)[0]
    torch.testing.assert_close(as_float[:, :, :vh, :vw], reference, rtol=0, atol=1e-4)


def test_aspect_kept_and_padding_is_the_mean() -> None:
    image = _smooth_image(300, 400)
    batch, (vh, vw) = letterbox_rgb(image, (128, 256))
    assert batch.shape == (1, 3, 128, 256) and batch.dtype == torch.float32
    assert (vh, vw) == (128, 171)
    pad = torch.tensor(DEFAULT_PAD_RGB).view(3, 1)
    assert torch.equal(batch[0, :, :, vw:].reshape(3, -1), pad.expand(3, 128 * (256 - vw)))


def test_same_size_is_not_resampled() -> None:
    image = _smooth_image(64, 128)
    batch, valid = letterbox_rgb(image, (64, 128))
    assert valid == (64, 128)
    assert torch.equal(batch[0], torch.from_numpy(image).permute(2, 0, 1).float())


def test_not_rgb_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        letterbox_rgb(np.zeros((4, 4), np.uint8), (32, 64))
