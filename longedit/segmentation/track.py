"""`track_masks`: boxes in, one boolean mask per object per frame out, for a video of any length.

Each object is seeded by its first keyframe box (`box` counts as a keyframe at frame 0); later keyframes
are extra box prompts on their frames. A seed on frame k > 0 is tracked both ways: a backward pass runs
over the reversed range [k, 0] (decoded `chunk` frames at a time, so memory stays bounded), its masks
are spilled to a temporary folder (packed bits) and merged with the forward pass, which then streams
frames in order and yields as it goes. The video is never held in memory, only one chunk of SAM2 state.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from longedit.config import Box, ObjectSpec
from longedit.errors import UserError

if TYPE_CHECKING:
    from longedit.video.probe import VideoInfo
from longedit.segmentation.backends import load_backend
from longedit.segmentation.postprocess import logits_to_masks, postprocess
from longedit.segmentation.tracker import Prompt, StreamStep, TrackerBackend, track_stream

DEFAULT_CHUNK = 64
REVERSE_BLOCK = 32  # frames decoded per seek in the backward pass (held in memory, at work size)


@dataclass(frozen=True)
class ObjectSeed:
    """One tracked object: its id in the tracker (order + 1), its first keyframe, all keyframe boxes."""

    obj_id: int
    word: str
    first: int
    boxes: dict[int, Box]


def object_seeds(objects: Sequence[ObjectSpec]) -> list[ObjectSeed]:
    """Seeds from `ObjectSpec`s (box or keyframes); an object without a box cannot be tracked."""
    seeds = []
    for index, obj in enumerate(objects):
        boxes = obj.keyframe_boxes()
        if not boxes:
            raise UserError(
                f"object '{obj.word}' has no box to start tracking from",
                f"give one as --object {obj.word}=x0,y0,x1,y1[@FRAME]",
            )
        seeds.append(ObjectSeed(obj_id=index + 1, word=obj.word, first=min(boxes), boxes=boxes))
    return seeds


def _scale_box(box: Box, source: tuple[int, int], work: tuple[int, int]) -> tuple[float, float, float, float]:
    """Source pixels -> work-space pixels (frames are decoded stretched to the work size)."""
    sx, sy = work[0] / source[0], work[1] / source[1]
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def reversed_frames(
    path: Path, size: tuple[int, int] | None, start: int, stop: int, block: int
) -> Iterator[np.ndarray]:
    """Frames stop-1, stop-2, ..., start, decoded `block` frames at a time (one seek per block)."""
    from longedit.video import iter_frames

    end = stop
    while end > start:
        begin = max(start, end - block)
        frames = list(iter_frames(path, size=size, start=begin, end=end))
        if len(frames) != end - begin:
            raise UserError(
                f"could decode only {begin + len(frames)} frames of '{path}'", "the file may be damaged; re-encode it"
            )
        yield from reversed(frames)
        end = begin


class MaskSpill:
    """Masks of the backward pass parked on disk until the forward pass reaches them.

    Packed to bits and zlib-compressed: mostly-empty masks take a few hundred bytes per frame.
    """

    def __init__(self, folder: Path, shape: tuple[int, ...]) -> None:
        self.folder = folder
        self.shape = shape

    def put(self, frame: int, masks: np.ndarray) -> None:
        np.savez_compressed(self.folder / f"{frame:08d}.npz", bits=np.packbits(masks, axis=None))

    def pop(self, frame: int) -> np.ndarray:
        path = self.folder / f"{frame:08d}.npz"
        with np.load(path) as stored:
            bits = stored["bits"]
        path.unlink()
        return np.unpackbits(bits, count=math.prod(self.shape)).astype(bool).reshape(self.shape)


def _merge(masks: np.ndarray, step: StreamStep, frame: int, keep, work: tuple[int, int], out: tuple[int, int]) -> None:
    """Write the step's masks of the objects `keep(seed_index, frame)` accepts into `masks` (in place)."""
    if not step.obj_ids:
        return
    decoded = logits_to_masks(step.logits, work, out)
    for obj_id, mask in zip(step.obj_ids, decoded):
        if keep(obj_id - 1, frame):
            masks[obj_id - 1] = mask


def _track(
    path: Path,
    frames: int,
    source_size: tuple[int, int],
    seeds: list[ObjectSeed],
    backend: TrackerBackend,
    out_size: tuple[int, int],
    chunk: int,
    dilate: int,
    box_masks: bool,
    min_area: int,
    progress: bool,
) -> Iterator[np.ndarray]:
    from longedit.video import iter_frames

    work = backend.work_size
    shape = (len(seeds), out_size[1], out_size[0])
    scale = math.sqrt((out_size[0] * out_size[1]) / (source_size[0] * source_size[1]))
    dilate_out = round(dilate * scale)
    min_area_out = round(min_area * scale * scale)
    first = [s.first for s in seeds]
    backward = [s for s in seeds if s.first > 0]
    back_from = max((s.first for s in backward), default=0)
    start = min(first)
    total = (back_from + 1 if backward else 0) + (frames - start)

    def finish(masks: np.ndarray) -> np.ndarray:
        return postprocess(masks, dilate_px=dilate_out, box_masks=box_masks, min_area=min_area_out)

    with tempfile.TemporaryDirectory(prefix="longedit-masks-") as tmp, tqdm(
        total=total, disable=not progress, desc="tracking", unit="frame", leave=False
    ) as bar:
        spill = MaskSpill(Path(tmp), shape)
        if backward:
            back_prompts: dict[int, list[Prompt]] = {}
            for seed in backward:
                box = _scale_box(seed.boxes[seed.first], source_size, work)
                back_prompts.setdefault(back_from - seed.first, []).append(Prompt(seed.obj_id, box=box))
            stream = reversed_frames(path, work, 0, back_from + 1, min(chunk, REVERSE_BLOCK))
            for step in track_stream(backend, stream, back_prompts, chunk=chunk):
                frame = back_from - step.position
                if frame < back_from:
                    masks = np.zeros(shape, dtype=bool)
                    _merge(masks, step, frame, lambda j, f: f < first[j], work, out_size)
                    spill.put(frame, masks)
                bar.update()
        for frame in range(start):
            yield finish(spill.pop(frame))
        prompts: dict[int, list[Prompt]] = {}
        for seed in seeds:
            for key, box in seed.boxes.items():
                prompts.setdefault(key - start, []).append(Prompt(seed.obj_id, box=_scale_box(box, source_size, work)))
        produced = start
        for step in track_stream(backend, iter_frames(path, size=work, start=start), prompts, chunk=chunk):
            frame = start + step.position
            masks = spill.pop(frame) if frame < back_from else np.zeros(shape, dtype=bool)
            _merge(masks, step, frame, lambda j, f: f >= first[j], work, out_size)
            bar.update()
            produced += 1
            yield finish(masks)
        if produced != frames:
            raise UserError(
                f"could decode only {produced} of {frames} frames of '{path}'", "the file may be damaged; re-encode it"
            )


def track_masks(
    video_path: str | Path | VideoInfo,
    objects: list[ObjectSpec],
    *,
    model: str = "facebook/sam2.1-hiera-tiny",
    out_size: tuple[int, int] | None = None,
    device: str = "auto",
    chunk: int = DEFAULT_CHUNK,
    dilate: int = 0,
    box_masks: bool = False,
    min_area: int = 0,
    local_files_only: bool = False,
    progress: bool = True,
    backend: TrackerBackend | None = None,
) -> Iterator[np.ndarray]:
    """Track each object's box through the video; yields bool [n_objects, H, W] per frame, in order.

    H, W are `out_size` (width, height) if given, else the source size; objects keep the given order.
    `dilate` and `min_area` are in source pixels (scaled with `out_size`). Everything that can be
    checked up front (video, boxes, keyframes, model) is checked before this returns, so a bad input
    raises UserError here rather than on the first frame. `backend` reuses an already loaded tracker.
    """
    from longedit.masks import validate_objects
    from longedit.video import VideoInfo, probe

    if chunk < 1:
        raise UserError(f"--chunk {chunk} is too small", "track at least 1 frame per chunk (default 64)")
    if dilate < 0 or min_area < 0:
        raise UserError("--dilate and --min-area must be >= 0", "give pixels, e.g. --dilate 8")
    if not objects:
        raise UserError("no object to track", "give at least one --object WORD=x0,y0,x1,y1")
    seeds = object_seeds(objects)
    info = video_path if isinstance(video_path, VideoInfo) else probe(video_path)  # a VideoInfo: a range or frame folder
    validate_objects(list(objects), info.width, info.height, info.frames)
    size = (info.width, info.height) if out_size is None else (int(out_size[0]), int(out_size[1]))
    if min(size) < 1:
        raise UserError(f"bad mask size {size}", "give (width, height) of at least 1 pixel")
    if backend is None:
        backend = load_backend(model, device=device, local_files_only=local_files_only)
    source = (info.width, info.height)
    return _track(
        info, info.frames, source, seeds, backend, size, chunk, dilate, box_masks, min_area, progress
    )
