"""Tracker interface and chunked tracking: any video length with bounded memory.

A backend tracks one *chunk*: it is given anchor frames (frames with prompts that seed the chunk, their
outputs are discarded) and then a stream of frames, each with the prompts that arrive on it, and yields
mask logits per frame. SAM2's inference state grows with every frame it sees, so `track_stream` never
lets one session see more than `chunk` frames: at each chunk boundary the session is dropped and a new
one is seeded from each object's last non-empty mask (its *anchor*: the frame and the mask on it; an
object whose mask is empty on the chunk's last frame, e.g. it left the view, keeps its older anchor so
it can be re-found when it comes back). Positions are indices in the stream given to `track_stream`,
which may be a reversed range of the video (backward tracking).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from longedit.segmentation.postprocess import logits_to_masks

BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class Prompt:
    """A prompt for one object on one frame: a box or a mask, in work-space pixels (see `work_size`)."""

    obj_id: int
    box: BoxXYXY | None = None
    mask: np.ndarray | None = None  # bool [h, w]

    def __post_init__(self) -> None:
        if (self.box is None) == (self.mask is None):
            raise ValueError("a prompt is either a box or a mask")

    @property
    def kind(self) -> Literal["box", "mask"]:
        return "box" if self.box is not None else "mask"


@dataclass
class AnchorFrame:
    """A frame re-fed at the start of a chunk with the prompts that seed it (its output is discarded)."""

    position: int
    frame: np.ndarray
    prompts: list[Prompt]


@dataclass
class ChunkStep:
    """What a backend yields per streamed frame: logits [n, h, w] for `obj_ids`, in order.

    float32, left on the backend's device so that upsampling to the output size happens there too.
    """

    obj_ids: list[int]
    logits: torch.Tensor


class TrackerBackend(Protocol):
    """A video object tracker that can be driven one chunk at a time."""

    name: str
    work_size: tuple[int, int]  # (width, height) frames should be decoded at; prompts are in these pixels

    def track_chunk(
        self, anchors: Sequence[AnchorFrame], frames: Iterable[tuple[np.ndarray, list[Prompt]]]
    ) -> Iterator[ChunkStep]:
        """Seed a fresh session with `anchors`, then yield one step per item of `frames`, in order."""
        ...


@dataclass
class StreamStep:
    """One frame of a tracked stream: logits for the objects active on it (none before the first prompt)."""

    position: int
    obj_ids: list[int]
    logits: torch.Tensor | None
    chunk: int  # index of the chunk (session) that produced it; -1 before the first prompt


@dataclass(frozen=True)
class Reseed:
    """How a chunk was seeded: obj_id -> (position of its anchor frame, "mask" or "box")."""

    chunk: int
    position: int  # stream position of the chunk's first new frame
    anchors: dict[int, tuple[int, str]]


@dataclass
class _Anchor:
    position: int
    frame: np.ndarray
    prompt: Prompt


@dataclass
class StreamState:
    """Explicit state of a chunked tracking run: active objects and what the next chunk is seeded from.

    Its size is bounded by the number of objects (one anchor frame each), never by the stream length.
    """

    chunk_size: int
    chunk_index: int = -1
    active: list[int] = field(default_factory=list)
    anchors: dict[int, _Anchor] = field(default_factory=dict)
    last_reseed: Reseed | None = None
    reseed_count: int = 0

    def anchor_frames(self) -> list[AnchorFrame]:
        """Anchors of the active objects grouped by frame, oldest first (the order SAM2 expects)."""
        by_position: dict[int, AnchorFrame] = {}
        for obj_id in self.active:
            anchor = self.anchors[obj_id]
            group = by_position.setdefault(anchor.position, AnchorFrame(anchor.position, anchor.frame, []))
            group.prompts.append(anchor.prompt)
        return [by_position[p] for p in sorted(by_position)]

    def start_chunk(self, position: int) -> list[AnchorFrame]:
        """Open the next chunk at `position`; returns its anchor frames and records the reseed."""
        self.chunk_index += 1
        anchors = self.anchor_frames()
        if self.chunk_index > 0:
            self.reseed_count += 1
            self.last_reseed = Reseed(
                chunk=self.chunk_index,
                position=position,
                anchors={p.obj_id: (a.position, p.kind) for a in anchors for p in a.prompts},
            )
        return anchors

    def add_prompts(self, position: int, frame: np.ndarray, prompts: Sequence[Prompt]) -> None:
        """Prompts given on a frame start new objects and become their anchors until a mask replaces them."""
        for prompt in prompts:
            if prompt.obj_id not in self.anchors:
                self.active.append(prompt.obj_id)
            self.anchors[prompt.obj_id] = _Anchor(position, frame, prompt)

    def update(self, position: int, frame: np.ndarray, step: ChunkStep, work_size: tuple[int, int]) -> None:
        """A non-empty mask on this frame becomes the object's anchor for the next chunk."""
        if not step.obj_ids:
            return
        masks = logits_to_masks(step.logits, work_size, work_size)
        for obj_id, mask in zip(step.obj_ids, masks):
            if mask.any():
                self.anchors[obj_id] = _Anchor(position, frame, Prompt(obj_id, mask=mask))


def _chunk_feed(
    first: tuple[int, np.ndarray],
    stream: Iterator[tuple[int, np.ndarray]],
    size: int,
    prompts: Mapping[int, Sequence[Prompt]],
    state: StreamState,
    pending: deque,
) -> Iterator[tuple[np.ndarray, list[Prompt]]]:
    """Up to `size` frames for one chunk, starting with `first`; never reads past the chunk's end."""
    item: tuple[int, np.ndarray] | None = first
    for count in range(size):
        if count:
            item = next(stream, None)
        if item is None:
            return
        position, frame = item
        here = list(prompts.get(position, ()))
        state.add_prompts(position, frame, here)
        pending.append((position, frame))
        yield frame, here


def track_stream(
    backend: TrackerBackend,
    frames: Iterable[np.ndarray],
    prompts: Mapping[int, Sequence[Prompt]],
    *,
    chunk: int = 64,
    state: StreamState | None = None,
) -> Iterator[StreamStep]:
    """Track objects through `frames` (work-size RGB uint8), at most `chunk` frames per backend session.

    `prompts` maps stream positions to prompts; an object joins the tracking at its first prompt.
    Frames before any prompt yield empty steps. Pass a `state` to inspect reseeding from outside.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    state = state if state is not None else StreamState(chunk_size=chunk)
    stream = enumerate(frames)
    first: tuple[int, np.ndarray] | None = None
    for position, frame in stream:
        if prompts.get(position):
            first = (position, frame)
            break
        yield StreamStep(position, [], None, -1)
    pending: deque[tuple[int, np.ndarray]] = deque()
    while first is not None:
        anchors = state.start_chunk(first[0])
        feed = _chunk_feed(first, stream, chunk, prompts, state, pending)
        for step in backend.track_chunk(anchors, feed):
            position, frame = pending.popleft()
            state.update(position, frame, step, backend.work_size)
            yield StreamStep(position, list(step.obj_ids), step.logits, state.chunk_index)
        if pending:
            raise RuntimeError(f"tracker backend '{backend.name}' gave fewer steps than frames")
        first = next(stream, None)
