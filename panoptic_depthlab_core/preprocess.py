"""Image -> network tensor: letterbox into the fixed network input size.

One function for every consumer (Predictor, INT8 calibration, benchmarks), so calibration data and
run-time inputs are prepared identically.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_PAD_RGB = (123.675, 116.28, 103.53)  # the normalisation mean: zero after normalising


def letterbox_rgb(
    image: np.ndarray | torch.Tensor,
    input_hw: tuple[int, int],
    pad_rgb: tuple[float, float, float] = DEFAULT_PAD_RGB,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 RGB [H, W, 3] -> float32 [1, 3, Hn, Wn] (aspect kept, bottom/right padding with
    ``pad_rgb``) and the valid (h, w) region inside it."""
    tensor = torch.as_tensor(image)
    if tensor.dim() != 3 or tensor.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {tuple(tensor.shape)}")
    height, width = tensor.shape[:2]
    net_h, net_w = input_hw
    scale = min(net_h / height, net_w / width)
    valid_h = max(1, min(net_h, round(height * scale)))
    valid_w = max(1, min(net_w, round(width * scale)))
    x = tensor.permute(2, 0, 1).unsqueeze(0)  # a channels-last view: no copy yet
    if (valid_h, valid_w) != (height, width):
        if x.dtype == torch.uint8 and x.device.type == "cpu":
            # resampled as uint8 (channels-last kernels, several times faster than float32 on a
            # CPU); within one grey level of the float32 result (rounded to integers)
            x = F.interpolate(x, size=(valid_h, valid_w), mode="bilinear", align_corners=False, antialias=True)
            x = x.float()
        else:
            x = F.interpolate(x.float(), size=(valid_h, valid_w), mode="bilinear", align_corners=False, antialias=True)
    else:
        x = x.float()
    canvas = torch.tensor(pad_rgb, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    canvas = canvas.expand(1, 3, net_h, net_w).clone()
    canvas[:, :, :valid_h, :valid_w] = x
    return canvas, (valid_h, valid_w)
