"""Pure functions on boolean masks: dilation in pixels, box-ify, minimum area, and logits -> masks.

Masks are numpy bool arrays [..., H, W]; every function treats each [H, W] slice on its own and
returns a new array (inputs are never modified).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _shift(mask: np.ndarray, offset: int, axis: int) -> np.ndarray:
    """`mask` moved by `offset` pixels along `axis`, zero-filled (no wrap-around)."""
    out = np.zeros_like(mask)
    n = mask.shape[axis]
    if abs(offset) >= n:
        return out
    src = [slice(None)] * mask.ndim
    dst = [slice(None)] * mask.ndim
    if offset >= 0:
        src[axis], dst[axis] = slice(0, n - offset), slice(offset, n)
    else:
        src[axis], dst[axis] = slice(-offset, n), slice(0, n + offset)
    out[tuple(dst)] = mask[tuple(src)]
    return out


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow each mask by `pixels` with a Euclidean disk: a pixel is set if an input pixel lies within `pixels`.

    The disk is split into horizontal runs (half-width floor(sqrt(r^2 - dy^2)) at row offset dy), so the
    cost is O(r * H * W) boolean ops instead of O(r^2 * H * W).
    """
    mask = np.asarray(mask, dtype=bool)
    if pixels < 0:
        raise ValueError(f"dilation must be >= 0 pixels, got {pixels}")
    if pixels == 0 or not mask.any():
        return mask.copy()
    r = int(pixels)
    rows = {dy: math.isqrt(r * r - dy * dy) for dy in range(-r, r + 1)}
    horizontal = [mask]  # horizontal[w]: dilated by a 1 x (2w+1) run
    for _ in range(max(rows.values())):
        prev = horizontal[-1]
        horizontal.append(prev | _shift(prev, 1, -1) | _shift(prev, -1, -1))
    out = np.zeros_like(mask)
    for dy, half_width in rows.items():
        out |= _shift(horizontal[half_width], dy, -2)
    return out


def boxify(mask: np.ndarray) -> np.ndarray:
    """Each mask replaced by its filled bounding box; an empty mask stays empty."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros_like(mask)
    flat_in = mask.reshape(-1, *mask.shape[-2:])
    flat_out = out.reshape(-1, *mask.shape[-2:])
    for single, target in zip(flat_in, flat_out):
        rows = np.flatnonzero(single.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(single.any(axis=0))
        target[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return out


def drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Masks with fewer than `min_area` pixels become empty (tracker noise, a sliver of a leaving object)."""
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 0:
        return mask.copy()
    areas = mask.sum(axis=(-2, -1), keepdims=True)
    return mask & (areas >= min_area)


def postprocess(mask: np.ndarray, *, dilate_px: int = 0, box_masks: bool = False, min_area: int = 0) -> np.ndarray:
    """The `--min-area`, `--box-masks`, `--dilate` chain, in that order (noise is dropped before it can grow)."""
    out = drop_small(mask, min_area)
    if box_masks:
        out = boxify(out)
    if dilate_px:
        out = dilate(out, dilate_px)
    return out


def logits_to_masks(logits: torch.Tensor, work_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """Mask logits [n, h, w] -> bool [n, H, W] at `out_size` (width, height), thresholded at 0.

    Like transformers' `post_process_masks`: bilinear to the model's work size first, then to the
    output size, so results do not depend on the low-res grid of the decoder.
    """
    x = logits.detach().float().unsqueeze(0) if logits.dim() == 3 else logits.detach().float()
    if x.shape[0] != 1:
        raise ValueError(f"expected logits [n, h, w], got {tuple(logits.shape)}")
    if x.shape[1] == 0:
        return np.zeros((0, out_size[1], out_size[0]), dtype=bool)
    work_hw = (work_size[1], work_size[0])
    out_hw = (out_size[1], out_size[0])
    if tuple(x.shape[-2:]) != work_hw:
        x = F.interpolate(x, size=work_hw, mode="bilinear", align_corners=False)
    if tuple(x.shape[-2:]) != out_hw:
        x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)
    return (x[0] > 0).cpu().numpy()
