"""ConMIM's strong augmentation of the momentum branch, on the device, batched.

The authors (TencentARC/ConMIM ``DataAugmentationForConMIM``) give the momentum encoder's view
``RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p=0.8)``, ``RandomGrayscale(p=0.2)``, Gaussian
blur (p=0.1, radius 0.1-2 at 224 px) and solarisation (p=0.2), after the crop both views share.
Here every parameter is drawn per image on the CPU from a given generator (reproducible on any
device) and the operations run on the batch where it lives, on pixels in [0, 1].

Simplified: the four jitter operations run in a fixed order (torchvision permutes them), and hue
is rotated in YIQ space (torchvision goes through HSV); the blur radius is scaled by image size / 224.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
BLUR_SIGMA = (0.1, 2.0)  # Gaussian blur radius range at 224 px (ConMIM's GaussianBlur)


@dataclass
class StrongAugmentation:
    """Strengths and probabilities (``mim.strong_*``)."""

    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    gray_prob: float = 0.2
    blur_prob: float = 0.1
    solarize_prob: float = 0.2

    def params(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Per-image parameters ``[n, 9]``: brightness, contrast, saturation factors, hue shift (turns),
        jitter / grayscale / blur / solarise flags, blur sigma (at 224 px). Drawn on the CPU."""
        u = torch.rand(n, 9, generator=generator)
        b, c, s, h = self.jitter
        factors = [1 + (2 * u[:, i] - 1) * strength for i, strength in enumerate((b, c, s))]
        hue = (2 * u[:, 3] - 1) * h
        flags = [
            u[:, 4] < self.jitter_prob,
            u[:, 5] < self.gray_prob,
            u[:, 6] < self.blur_prob,
            u[:, 7] < self.solarize_prob,
        ]
        sigma = BLUR_SIGMA[0] + u[:, 8] * (BLUR_SIGMA[1] - BLUR_SIGMA[0])
        return torch.stack([*(f.clamp(min=0) for f in factors), hue, *(f.float() for f in flags), sigma], dim=1)

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply ``params`` (from ``self.params``) to images ``[B, C, H, W]`` in [0, 1]."""
        return strong_augment(x, params.to(x.device, x.dtype))


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None]


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``[B, 1, H, W]`` of RGB images (the image itself when single-channel)."""
    if x.shape[1] == 1:
        return x
    return sum(w * x[:, i : i + 1] for i, w in enumerate(_GRAY))


_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_FROM_YIQ = tuple(map(tuple, np.linalg.inv(np.array(_TO_YIQ)).tolist()))  # Python numbers: no host copy per step


def _mix(x: torch.Tensor, matrix: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """``matrix @ x`` over the channels of ``[B, 3, H, W]``, with the matrix as numbers in the code."""
    return torch.cat([sum(w * x[:, j : j + 1] for j, w in enumerate(row)) for row in matrix], dim=1)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma of RGB images by ``turns`` (fraction of a full turn) per image, in YIQ space."""
    if x.shape[1] != 3:
        return x
    yiq = _mix(x, _TO_YIQ)
    cos, sin = _per_image(torch.cos(2 * math.pi * turns)), _per_image(torch.sin(2 * math.pi * turns))
    i, q = yiq[:, 1:2], yiq[:, 2:3]
    yiq = torch.cat([yiq[:, :1], i * cos - q * sin, i * sin + q * cos], dim=1)
    return _mix(yiq, _FROM_YIQ)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (pixels) per image, reflect-padded."""
    b, c, h, w = x.shape
    radius = max(1, min(math.ceil(3 * BLUR_SIGMA[1] * h / 224), min(h, w) - 1))  # 3 sigma of the widest blur
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t[None] / sigma[:, None].clamp(min=1e-3)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, K]
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def strong_augment(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Colour jitter, grayscale, blur, solarise ``[B, C, H, W]`` images in [0, 1] with per-image ``params``
    ``[B, 9]``."""
    bright, contrast, sat, hue, jit, gray, blur, sol, sigma = params.unbind(1)
    j = _per_image(jit)
    y = (x * _per_image(bright)).clamp(0, 1)
    mean = grayscale(y).mean(dim=(1, 2, 3), keepdim=True)
    y = (mean + _per_image(contrast) * (y - mean)).clamp(0, 1)
    y = (grayscale(y) + _per_image(sat) * (y - grayscale(y))).clamp(0, 1)
    y = rotate_hue(y, hue).clamp(0, 1)
    x = j * y + (1 - j) * x
    g = _per_image(gray)
    x = g * grayscale(x).expand_as(x) + (1 - g) * x
    bl = _per_image(blur)
    x = bl * gaussian_blur(x, sigma * x.shape[-2] / 224) + (1 - bl) * x
    s = _per_image(sol)
    return s * torch.where(x >= 0.5, 1 - x, x) + (1 - s) * x
