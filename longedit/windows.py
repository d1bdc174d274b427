"""Overlapping temporal windows (Gen-L-Video co-denoising) and the weights that merge them."""

from __future__ import annotations

import torch


def plan_windows(frames: int, length: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Windows [start, end) of `length` frames every `stride` frames, the last aligned to the video's end.

    Unlike Gen-L-Video, the tail is never dropped: every frame lies in at least one window.
    With length >= frames there is one window, which is exactly the single-window algorithm.
    """
    if frames < 1:
        raise ValueError("a video needs at least one frame")
    if length < 1:
        raise ValueError("window length must be at least 1")
    length = min(length, frames)
    stride = max(1, min(stride or max(1, length // 2), length))
    starts = list(range(0, frames - length + 1, stride))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    return [(start, start + length) for start in starts]


def window_weights(length: int, mode: str = "uniform") -> torch.Tensor:
    """Per-frame merge weights of one window: `uniform` (Gen-L-Video) or `pyramid` (FreeNoise-like)."""
    if mode == "uniform":
        return torch.ones(length)
    if mode == "pyramid":
        position = torch.arange(length, dtype=torch.float32)
        return torch.minimum(position + 1, length - position)
    raise ValueError(f"unknown overlap weighting '{mode}' (use uniform or pyramid)")


class WindowMerger:
    """Accumulates per-window predictions of overlapping frames into their weighted average."""

    def __init__(self, like: torch.Tensor, mode: str = "uniform") -> None:
        self.total = torch.zeros_like(like, dtype=torch.float32)
        self.weight = torch.zeros(like.shape[0], dtype=torch.float32)
        self.mode = mode

    def add(self, start: int, prediction: torch.Tensor) -> None:
        length = prediction.shape[0]
        weights = window_weights(length, self.mode)
        shape = (length,) + (1,) * (prediction.dim() - 1)
        self.total[start : start + length] += prediction.float().cpu() * weights.view(shape)
        self.weight[start : start + length] += weights

    def result(self, dtype: torch.dtype) -> torch.Tensor:
        if bool((self.weight == 0).any()):
            raise RuntimeError("some frames were not covered by any window")
        shape = (-1,) + (1,) * (self.total.dim() - 1)
        return (self.total / self.weight.view(shape)).to(dtype)
