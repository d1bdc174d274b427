"""Per-frame object masks: from boxes, keyframed boxes, mask folders or a tracker, at latent resolution.

Masks of the whole video are kept on the host at latent resolution (H/8 x W/8 bits per object and
frame: 4 KB for 512x512), never at pixel resolution. RAD uses them at map resolution (H/32), IRJS at
latent resolution (max-pooled so objects are fully covered).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from longedit.config import Box, ObjectSpec
from longedit.errors import UserError


def validate_box(box: Box, width: int, height: int, word: str, frame: int = 0) -> None:
    """A box must be non-empty and lie inside the source frame (pixels, x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    where = f"box {list(box)} of '{word}'" + (f" at frame {frame}" if frame else "")
    if x1 <= x0 or y1 <= y0:
        raise UserError(f"{where} is empty", "write it as x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise UserError(
            f"{where} lies outside the {width}x{height} frame",
            f"keep 0 <= x <= {width} and 0 <= y <= {height}, in source pixels",
        )


def validate_objects(objects: list[ObjectSpec], width: int, height: int, frames: int) -> None:
    """Check every object's region (box, keyframes, tracking) against the video before any work starts
    (mask folders are checked by the engine's `prepare`, which reads their first file)."""
    for obj in objects:
        if obj.box is None and obj.keyframes is None and obj.masks is None and obj.track is None:
            raise UserError(
                f"object '{obj.word}' has no region", "give a box WORD=x0,y0,x1,y1, keyframes, --masks DIR or --track sam2"
            )
        for frame, box in obj.keyframe_boxes().items():
            if frame >= frames:
                raise UserError(
                    f"keyframe {frame} of '{obj.word}' is past the end of the video ({frames} frames)",
                    f"use frames 0..{frames - 1}",
                )
            validate_box(box, width, height, obj.word, frame)


def box_at(keyframes: dict[int, Box], frame: int) -> Box:
    """Box at `frame`: linear interpolation between keyframes, held before the first and after the last."""
    frames = sorted(keyframes)
    if frame <= frames[0]:
        return keyframes[frames[0]]
    if frame >= frames[-1]:
        return keyframes[frames[-1]]
    right = next(f for f in frames if f >= frame)
    left = max(f for f in frames if f <= frame)
    if left == right:
        return keyframes[left]
    t = (frame - left) / (right - left)
    a, b = keyframes[left], keyframes[right]
    return tuple(a[i] + t * (b[i] - a[i]) for i in range(4))  # type: ignore[return-value]


def box_to_grid(box: Box, source_size: tuple[int, int], grid_size: tuple[int, int]) -> torch.Tensor:
    """Bool [h, w] grid covering a source-pixel box (cells it touches count: objects fully covered)."""
    (src_w, src_h), (grid_w, grid_h) = source_size, grid_size
    x0 = math.floor(box[0] * grid_w / src_w)
    y0 = math.floor(box[1] * grid_h / src_h)
    x1 = max(x0 + 1, math.ceil(box[2] * grid_w / src_w))
    y1 = max(y0 + 1, math.ceil(box[3] * grid_h / src_h))
    grid = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    grid[max(0, y0) : min(grid_h, y1), max(0, x0) : min(grid_w, x1)] = True
    return grid


def pixel_mask_to_grid(mask: np.ndarray | torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Bool [h, w] grid: a cell is on when any pixel of it is on (max-pooling, objects fully covered)."""
    tensor = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None, None]
    grid_w, grid_h = grid_size
    return F.adaptive_max_pool2d(tensor, (grid_h, grid_w))[0, 0] > 0


def dilate(masks: torch.Tensor, cells: int) -> torch.Tensor:
    """Grow bool masks [..., h, w] by `cells` in every direction."""
    if cells <= 0:
        return masks
    shape = masks.shape
    flat = masks.reshape(-1, 1, *shape[-2:]).float()
    grown = F.max_pool2d(flat, kernel_size=2 * cells + 1, stride=1, padding=cells)
    return (grown > 0).reshape(shape)


@dataclass
class ObjectMasks:
    """Masks of every object in every frame at latent resolution: bool [frames, objects, h, w]."""

    words: list[str]
    latent: torch.Tensor
    sources: list[str]

    @property
    def frames(self) -> int:
        return self.latent.shape[0]

    def union(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Float [F, 1, h, w]: 1 where any object is (the region IRJS lets change)."""
        return self.latent[start:end].any(dim=1, keepdim=True).float()

    def at_map_resolution(self, start: int, end: int, factor: int) -> torch.Tensor:
        """Float [F, J, h/factor, w/factor] masks for RAD: cells at least half covered.

        A frame where the object is present but thinner than a map cell falls back to
        any-coverage, so a small object never silently loses its RAD term.
        """
        latent = self.latent[start:end].float()
        frames, objects, h, w = latent.shape
        flat = latent.reshape(frames * objects, 1, h, w)
        mean = F.avg_pool2d(flat, factor)
        half = mean >= 0.5
        present = mean > 0
        empty_half = ~half.flatten(1).any(dim=1)
        half = torch.where(empty_half[:, None, None, None], present, half)  # no data-dependent indexing
        return half.float().reshape(frames, objects, h // factor, w // factor)

    def area_summary(self) -> dict[str, dict[str, float]]:
        """Per object: min/mean/max share of the frame covered, and frames where it is empty."""
        summary = {}
        for j, word in enumerate(self.words):
            share = self.latent[:, j].float().mean(dim=(1, 2))
            summary[word] = {
                "source": self.sources[j],
                "min_share": round(float(share.min()), 4),
                "mean_share": round(float(share.mean()), 4),
                "max_share": round(float(share.max()), 4),
                "empty_frames": int((share == 0).sum()),
            }
        return summary


def masks_from_boxes(
    obj: ObjectSpec, frames: int, source_size: tuple[int, int], grid_size: tuple[int, int]
) -> torch.Tensor:
    """Bool [frames, h, w] from a box or keyframed boxes."""
    keyframes = obj.keyframe_boxes()
    return torch.stack([box_to_grid(box_at(keyframes, f), source_size, grid_size) for f in range(frames)])


def masks_from_frames(per_frame: Iterable[np.ndarray], frames: int, grid_size: tuple[int, int], what: str) -> torch.Tensor:
    """Bool [frames, h, w] from a stream of pixel masks (one per frame)."""
    grids = []
    for mask in per_frame:
        grids.append(pixel_mask_to_grid(mask, grid_size))
        if len(grids) == frames:
            break
    if len(grids) != frames:
        raise UserError(f"{what} gave masks for {len(grids)} of {frames} frames", "give one mask per frame")
    return torch.stack(grids)


def build_object_masks(
    objects: list[ObjectSpec],
    frames: int,
    source_size: tuple[int, int],
    grid_size: tuple[int, int],
    *,
    dilate_px: int = 0,
    folder_reader=None,
    tracker: Iterator[np.ndarray] | None = None,
) -> ObjectMasks:
    """Masks for all objects at `grid_size` (latent resolution).

    folder_reader(folder, word, frames) yields pixel masks per frame; tracker yields one bool
    array [n_tracked, H, W] per frame for the objects with `track: sam2`, in their order.
    """
    columns: list[torch.Tensor | None] = [None] * len(objects)
    sources = []
    tracked = [j for j, obj in enumerate(objects) if obj.track == "sam2"]
    for j, obj in enumerate(objects):
        if obj.track == "sam2":
            sources.append("sam2")
        elif obj.masks is not None:
            if folder_reader is None:
                raise ValueError("a mask folder reader is needed for objects with masks")
            columns[j] = masks_from_frames(folder_reader(obj.masks, obj.word, frames), frames, grid_size, f"mask folder '{obj.masks}'")
            sources.append("folder")
        elif obj.keyframes is not None or obj.box is not None:
            columns[j] = masks_from_boxes(obj, frames, source_size, grid_size)
            sources.append("keyframes" if obj.keyframes is not None else "box")
        else:
            raise UserError(
                f"object '{obj.word}' has no region", "give a box (WORD=x0,y0,x1,y1), keyframes, --masks DIR or --track sam2"
            )
    if tracked:
        if tracker is None:
            raise ValueError("a tracker is needed for objects with track: sam2")
        per_object: list[list[torch.Tensor]] = [[] for _ in tracked]
        for count, frame_masks in enumerate(tracker):
            if count == frames:
                break
            for k in range(len(tracked)):
                per_object[k].append(pixel_mask_to_grid(frame_masks[k], grid_size))
        for k, j in enumerate(tracked):
            if len(per_object[k]) != frames:
                raise UserError(f"the tracker gave masks for {len(per_object[k])} of {frames} frames", "check the video")
            columns[j] = torch.stack(per_object[k])
    latent = torch.stack(columns, dim=1)  # type: ignore[arg-type]
    cells = math.ceil(dilate_px * grid_size[0] / source_size[0]) if dilate_px else 0
    return ObjectMasks(words=[o.word for o in objects], latent=dilate(latent, cells), sources=sources)
