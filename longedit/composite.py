"""Pixel-space background paste: the source's own pixels outside the object regions, with a feathered edge.

IRJS keeps the background latents equal to the source's, but the VAE round trip still changes those
pixels (blur, colour drift, flicker). After decoding, `composite` puts the source frame back wherever
`feathered_alpha` is 0: exactly the source there, exactly the edit inside the regions, and a ramp of
`feather` pixels outside each region's edge. `BackgroundMeter` measures the background PSNR of the
decoded edit against the source (what the paste removes) frame by frame, streaming.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def feathered_alpha(region: torch.Tensor, size: tuple[int, int], feather: int) -> np.ndarray:
    """Weight of the edit, [H, W, 1] float32 in [0, 1], for a region mask [h, w] (any resolution, 1 = object).

    The region is upsampled (nearest) to `size` (width, height), grown by `feather` pixels and box-blurred
    over a (2 feather + 1) window: 1 on the whole region, 0 beyond `2 * feather` pixels from it.
    """
    width, height = size
    mask = F.interpolate(region.float()[None, None], size=(height, width), mode="nearest")
    if feather > 0:
        grown = F.max_pool2d(mask, 2 * feather + 1, stride=1, padding=feather)
        mask = F.avg_pool2d(grown, 2 * feather + 1, stride=1, padding=feather, count_include_pad=False)
    return mask[0, 0].clamp(0, 1).numpy()[..., None].astype(np.float32)


def composite(edited: np.ndarray, source: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """edited * alpha + source * (1 - alpha) for uint8 RGB frames [H, W, 3]; exact where alpha is 0 or 1."""
    mixed = edited.astype(np.float32) * alpha + source.astype(np.float32) * (1 - alpha)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class BackgroundMeter:
    """PSNR (dB, 8-bit) of frames against the source where the edit's weight is 0, per frame and mean."""

    def __init__(self) -> None:
        self.per_frame: list[float | None] = []

    def add(self, frame: np.ndarray, source: np.ndarray, alpha: np.ndarray) -> None:
        outside = alpha[..., 0] == 0
        if not outside.any():
            self.per_frame.append(None)
            return
        error = (frame[outside].astype(np.float64) - source[outside].astype(np.float64)) ** 2
        mse = float(error.mean())
        self.per_frame.append(None if mse == 0 else 10 * math.log10(255.0**2 / mse))

    def mean(self) -> float | None:
        """Mean over the frames with a background and a difference (None when every such frame is exact)."""
        values = [v for v in self.per_frame if v is not None]
        return round(sum(values) / len(values), 3) if values else None
