"""Per-frame pixel regions of the edited objects, streamed: from boxes/keyframes or a mask folder.

Each frame yields bool [J, H, W] (one mask per object word), grown by `margin` pixels in every
direction (square dilation), so the background metrics skip the edit's halo.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from longedit.config import Box, ObjectSpec, parse_object_args
from longedit.errors import UserError
from longedit.masks import box_at, validate_objects


def resolve_objects(object_args: list[str], masks: Path | None) -> list[ObjectSpec]:
    """Objects from `--object` flags, with `--masks DIR` giving the region of words without a box.

    With `--masks DIR` and no `--object`, every sub-folder of DIR is a word (as `longedit edit`).
    """
    if masks is not None and not masks.is_dir():
        raise UserError(f"mask folder '{masks}' does not exist", "give --masks DIR made by `longedit masks`")
    if not object_args and masks is not None:
        object_args = sorted(p.name for p in masks.iterdir() if p.is_dir())
    if not object_args:
        raise UserError("no regions given", "give --object WORD=x0,y0,x1,y1[@FRAME] or --masks DIR")
    objects = []
    for obj in parse_object_args(object_args):
        if obj.box is None and obj.keyframes is None:
            if masks is None:
                raise UserError(f"object '{obj.word}' has no region", f"write --object {obj.word}=x0,y0,x1,y1 or give --masks DIR")
            obj = obj.model_copy(update={"masks": masks})
        objects.append(obj)
    return objects


def box_pixels(box: Box, margin: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel rectangle [x0, x1) x [y0, y1) covering `box` (every touched pixel), grown by `margin`."""
    x0 = max(0, math.floor(box[0]) - margin)
    y0 = max(0, math.floor(box[1]) - margin)
    x1 = min(width, math.ceil(box[2]) + margin)
    y1 = min(height, math.ceil(box[3]) + margin)
    return x0, y0, x1, y1


def dilate_pixels(mask: np.ndarray, margin: int) -> np.ndarray:
    """Grow a bool [H, W] mask by `margin` pixels (square structuring element)."""
    if margin <= 0:
        return mask
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    grown = F.max_pool2d(tensor, kernel_size=2 * margin + 1, stride=1, padding=margin)
    return grown[0, 0].numpy() > 0


def _object_masks(obj: ObjectSpec, frames: int, width: int, height: int, margin: int) -> Iterator[np.ndarray]:
    """Bool [H, W] per frame for one object; a mask folder is checked now, a missing frame when reached."""
    if obj.masks is not None:
        from longedit.segmentation.mask_folder import load_mask_folder

        masks = load_mask_folder(obj.masks, obj.word, frames, out_size=(width, height))
        return (dilate_pixels(mask, margin) for mask in masks)
    return _box_masks(obj, frames, width, height, margin)


def _box_masks(obj: ObjectSpec, frames: int, width: int, height: int, margin: int) -> Iterator[np.ndarray]:
    keyframes = obj.keyframe_boxes()
    for frame in range(frames):
        x0, y0, x1, y1 = box_pixels(box_at(keyframes, frame), margin, width, height)
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y1, x0:x1] = True
        yield mask


def iter_regions(objects: list[ObjectSpec], frames: int, width: int, height: int, margin: int = 0) -> Iterator[np.ndarray]:
    """Bool [J, H, W] per frame, objects in order; boxes and mask folders are checked on the call."""
    if margin < 0:
        raise UserError(f"--margin {margin} is negative", "give a margin of 0 or more pixels")
    validate_objects([o for o in objects if o.masks is None], width, height, frames)
    streams = [_object_masks(obj, frames, width, height, margin) for obj in objects]
    return _stacked(streams, frames)


def _stacked(streams: list[Iterator[np.ndarray]], frames: int) -> Iterator[np.ndarray]:
    for _ in range(frames):
        yield np.stack([next(stream) for stream in streams])
