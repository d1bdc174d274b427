"""Attention pictures: each object word's cross-attention as a heat map over the source frames.

"If your edit doesn't work, visualize the cross-attentions." The maps are the ones the edit computes
anyway (`VideoEditor.map_sink`: RAD's word maps at the steps RAD works on, at frame/32), so there is no
second pass. `MapStore` keeps them on disk while the edit runs, fp16 [steps, frames, words, h, w]
(overlapping windows averaged per frame), so memory stays flat in video length; afterwards one
streaming pass over the source frames draws

- the attention video (`--attention-video FILE`): as long as the source, one panel per word side by
  side: the word's map averaged over the recorded steps, normalised per frame, as a heat map over the
  frame, with the object's region outlined;
- one strip image per word, `<output stem>.attention-<word>.png` beside the output video: a few
  recorded steps (rows) x a few frames (columns), each map normalised on its own.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from longedit.atomic import atomic_write
from longedit.diskspace import VAE_SCALE, DiskNeed, video_bytes

STRIP_STEPS = 4  # rows of a strip (recorded steps, first and last included)
STRIP_FRAMES = 6  # columns of a strip (frames spread over the video)
STRIP_CELL = 128  # long side of a strip cell in pixels
MAP_DOWNSCALE = 4  # the stored maps are at latent/4 (`longedit.editor.MAP_SCALE`)
HEAT_ALPHA = 0.55
OUTLINE = (255, 255, 255)


def safe_word(word: str) -> str:
    """`word` with every character outside [A-Za-z0-9_-] replaced by '_' (for file names)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", word) or "_"


def strip_path(output: Path, word: str) -> Path:
    """Where the strip image of `word` goes: `<output stem>.attention-<word>.png` beside the output video."""
    output = Path(output)
    return output.with_name(f"{output.stem}.attention-{safe_word(word)}.png")


class MapStore:
    """Word maps of the recorded edit steps on disk (fp16 memmap [steps, frames, words, h, w]).

    `put` is the editor's `map_sink`: windows that overlap a frame are averaged (a per-cell count,
    uint8 memmap [steps, frames], reset when a step's first window arrives, so a resumed step is
    recorded afresh). Steps never recorded (before a resume of a run that kept no maps) have count 0.
    """

    def __init__(self, path: Path, steps: int, frames: int, words: int, grid: tuple[int, int], create: bool) -> None:
        self.path = Path(path)
        self.count_path = self.path.with_name(self.path.name + ".count")
        self.shape = (steps, frames, words, grid[0], grid[1])
        expected = int(np.prod(self.shape)) * 2
        fresh = create or not self.path.exists() or self.path.stat().st_size != expected or not self.count_path.exists()
        mode = "w+" if fresh else "r+"
        self.maps = np.memmap(self.path, dtype=np.float16, mode=mode, shape=self.shape)
        self.counts = np.memmap(self.count_path, dtype=np.uint8, mode=mode, shape=(steps, frames))

    def put(self, step: int, position: int, start: int, end: int, maps: torch.Tensor) -> None:
        """Record the maps [end - start, words, h, w] of window `position` at edit step `step`."""
        if step >= self.shape[0]:
            return
        if position == 0:
            self.counts[step] = 0
        new = maps.float().numpy()
        seen = self.counts[step, start:end].astype(np.float32)[:, None, None, None]
        old = self.maps[step, start:end].astype(np.float32)
        self.maps[step, start:end] = ((old * seen + new) / (seen + 1)).astype(np.float16)
        self.counts[step, start:end] += 1

    def recorded_steps(self) -> list[int]:
        """Steps whose maps cover every frame."""
        return [s for s in range(self.shape[0]) if bool(self.counts[s].all())]

    def close(self, delete: bool = False) -> None:
        self.maps.flush()
        self.counts.flush()
        del self.maps, self.counts
        if delete:
            self.path.unlink(missing_ok=True)
            self.count_path.unlink(missing_ok=True)


def disk_needs(job, frames: int, size: tuple[int, int], words: int, work_dir: Path | None) -> list[DiskNeed]:
    """What the attention pictures of `job` (an `EditJob`) write, for the free-space check before the run:
    the map store (fp16 maps of at most every step, in the work folder or beside the output), the attention
    video (one panel per word at the processing `size`) and the strips (uncompressed bound). None without them."""
    if not job.wants_attention_pictures or words == 0:
        return []
    grid = (size[0] // VAE_SCALE // MAP_DOWNSCALE) * (size[1] // VAE_SCALE // MAP_DOWNSCALE)
    store = job.steps * frames * (words * max(grid, 1) * 2 + 1)
    output_folder = Path(job.output).expanduser().absolute().parent
    needs = [DiskNeed("the attention maps", Path(work_dir) if work_dir is not None else output_folder, store)]
    if job.attention_video is not None:
        video = video_bytes(frames, (size[0] * words, size[1]), 0.0, False)
        needs.append(DiskNeed("the attention video", Path(job.attention_video).expanduser().absolute().parent, video))
    strip = 3 * (STRIP_FRAMES + 1) * (STRIP_STEPS + 1) * STRIP_CELL * STRIP_CELL
    needs.append(DiskNeed("the attention strips", output_folder, words * strip))
    return needs


# -------------------------------------------------------------------------------------------- drawing
#: Google's polynomial fit of the Turbo colour map (Anton Mikhailov, "Turbo, An Improved Rainbow Colormap for
#: Visualization", Google AI blog 2019; GLSL approximation by Ruofei Du, Apache-2.0:
#: https://gist.github.com/mikhailov-work/0d177465a8151eb6ede1768d51d476c7): per channel, the coefficients
#: of 1, x, x^2, x^3, x^4, x^5. Used where matplotlib (which ships Turbo's exact table) is not installed.
TURBO_POLYNOMIAL = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])


def heat_colors(values: np.ndarray) -> np.ndarray:
    """The Turbo colour map of values in [0, 1] -> uint8 RGB: a perceptually ordered rainbow (dark blue, cyan,
    green, yellow, red) without jet's false bands; matplotlib's table when installed, else Google's fit."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    try:
        from matplotlib import colormaps

        rgb = colormaps["turbo"](x)[..., :3]
    except ImportError:
        powers = x[..., None] ** np.arange(6)
        rgb = np.clip(powers @ TURBO_POLYNOMIAL.T, 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def normalised(attention: np.ndarray) -> np.ndarray:
    """A map divided by its maximum (all zeros stay zeros)."""
    attention = np.asarray(attention, dtype=np.float32)
    peak = float(attention.max()) if attention.size else 0.0
    return attention / peak if peak > 0 else np.zeros_like(attention)


def outline(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel inner border of a bool mask [H, W]."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(frame: np.ndarray, attention: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    """`frame` [H, W, 3] under the normalised `attention` [h, w] as a heat map, `region` [h', w'] outlined."""
    height, width = frame.shape[:2]
    heat = Image.fromarray((normalised(attention) * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    colors = heat_colors(np.asarray(heat, dtype=np.float32) / 255)
    picture = (frame.astype(np.float32) * (1 - HEAT_ALPHA) + colors.astype(np.float32) * HEAT_ALPHA).astype(np.uint8)
    if region is not None:
        big = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127
        picture[outline(big)] = OUTLINE
    return picture


def _label(image: Image.Image, xy: tuple[int, int], text: str) -> None:
    draw = ImageDraw.Draw(image)
    draw.text((xy[0] + 1, xy[1] + 1), text, fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 255))


def video_frame(frame: np.ndarray, maps: np.ndarray, regions: np.ndarray | None, words: list[str]) -> np.ndarray:
    """One frame of the attention video: a panel per word (maps [J, h, w], regions [J, h', w'] or None)."""
    panels = []
    for j, word in enumerate(words):
        panel = Image.fromarray(overlay(frame, maps[j], None if regions is None else regions[j]))
        _label(panel, (3, 2), word)
        panels.append(np.asarray(panel))
    return np.concatenate(panels, axis=1)


def spread(count: int, available: list[int]) -> list[int]:
    """Up to `count` entries of `available` evenly spread, first and last included."""
    if len(available) <= count:
        return list(available)
    picks = np.linspace(0, len(available) - 1, count).round().astype(int)
    return [available[i] for i in picks]


def strip_image(cells: dict[tuple[int, int], np.ndarray], steps: list[int], frames: list[int]) -> Image.Image:
    """The strip of one word: `cells[(step, frame)]` RGB pictures in rows of steps, columns of frames."""
    cell_h, cell_w = next(iter(cells.values())).shape[:2]
    left, top = 52, 14
    image = Image.new("RGB", (left + cell_w * len(frames), top + cell_h * len(steps)), (24, 24, 24))
    for col, frame in enumerate(frames):
        _label(image, (left + col * cell_w + 3, 1), f"frame {frame}")
    for row, step in enumerate(steps):
        _label(image, (3, top + row * cell_h + cell_h // 2 - 5), f"step {step}")
        for col, frame in enumerate(frames):
            image.paste(Image.fromarray(cells[(step, frame)]), (left + col * cell_w, top + row * cell_h))
    return image


def _cell_size(size: tuple[int, int]) -> tuple[int, int]:
    scale = STRIP_CELL / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def render(
    store: MapStore,
    frames: Iterable[np.ndarray],
    regions: torch.Tensor | None,
    words: list[str],
    writer_for: Callable[[int, int], contextlib.AbstractContextManager] | None,
    strips: dict[str, Path],
    advance: Callable[[], None] | None = None,
) -> list[int]:
    """Draw the attention video (through `writer_for(width, height)`, a `VideoWriter` context; None: no
    video) and the strips (`strips`: word -> path) from the stored maps, in one pass over the source
    `frames` (RGB at the processing size) and the object `regions` (bool [F, J, h, w] at any resolution).
    Returns the steps shown; no steps recorded (no object, or a resumed run that kept no maps) draws nothing."""
    steps = store.recorded_steps()
    if not steps:
        return []
    total = store.shape[1]
    strip_steps, strip_frames = spread(STRIP_STEPS, steps), spread(STRIP_FRAMES, list(range(total)))
    cells: list[dict[tuple[int, int], np.ndarray]] = [{} for _ in words]
    last_needed = total - 1 if writer_for is not None else strip_frames[-1]
    with contextlib.ExitStack() as stack:  # the video is published only when every frame was written
        writer = None
        for index, frame in enumerate(frames):
            if index > last_needed:
                break
            masks = None if regions is None else regions[index].numpy()
            if writer_for is not None:
                mean = store.maps[steps, index].astype(np.float32).mean(axis=0)
                picture = video_frame(frame, mean, masks, words)
                if writer is None:
                    writer = stack.enter_context(writer_for(picture.shape[1], picture.shape[0]))
                writer.write(picture)
            if index in strip_frames:
                small = np.asarray(Image.fromarray(frame).resize(_cell_size(frame.shape[1::-1]), Image.BILINEAR))
                for step in strip_steps:
                    maps = store.maps[step, index].astype(np.float32)
                    for j in range(len(words)):
                        cells[j][(step, index)] = overlay(small, maps[j], None if masks is None else masks[j])
            if advance is not None:
                advance()
    for j, word in enumerate(words):
        with atomic_write(strips[word], "wb", what="the attention strip") as handle:
            strip_image(cells[j], strip_steps, strip_frames).save(handle, format="PNG")
    return steps


def report_base(report: Path | None, output: Path) -> Path:
    """The folder the report's picture paths are relative to: the report's, else the output's (where a
    caller that writes the report itself, e.g. `longedit watch`, usually puts it)."""
    return Path(report if report is not None else output).resolve().parent


def rebased(entry: dict, old_base: Path, new_base: Path) -> dict:
    """An `attention_pictures` entry with its paths relative to `new_base` instead of `old_base`."""

    def move(path: str) -> str:
        return os.path.relpath((Path(old_base) / path).resolve(), Path(new_base).resolve())

    return {"video": None if entry.get("video") is None else move(entry["video"]),
            "strips": {word: move(path) for word, path in (entry.get("strips") or {}).items()}}


def report_entry(video: Path | None, strips: dict[str, Path], base: Path) -> dict:
    """The report's `attention_pictures`: paths relative to `base` (the report's folder)."""

    def relative(path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), Path(base).resolve())

    return {"video": None if video is None else relative(video), "strips": {w: relative(p) for w, p in strips.items()}}
