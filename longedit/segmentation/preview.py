"""Preview frames: object masks blended over the source frame in one colour per object."""

from __future__ import annotations

import numpy as np

PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (255, 225, 25),
        (145, 30, 180),
        (70, 240, 240),
        (245, 130, 48),
        (240, 50, 230),
    ],
    dtype=np.float32,
)


def overlay(frame: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 [H, W, 3] with each mask of bool [n, H, W] tinted in its palette colour (later objects on top)."""
    out = frame.astype(np.float32)
    for index, mask in enumerate(masks):
        if mask.shape != frame.shape[:2]:
            raise ValueError(f"mask {index} is {mask.shape}, frame is {frame.shape[:2]}")
        colour = PALETTE[index % len(PALETTE)]
        out[mask] = out[mask] * (1 - alpha) + colour * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
