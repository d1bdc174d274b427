"""What a job edits: a video file or a folder of numbered frames, cut to `--start`/`--end` and thinned by `--every`.

`open_source` returns a `VideoInfo` whose frames, timestamps and rate are those of the range only (its frame 0
is source frame `first_frame`); `iter_frames(info)` decodes just that range, seeking to it. Timestamps stay on
the source's clock (the writer rebases them to 0 and cuts the audio to the same span).

Positions (`parse_position`) are source frame numbers (`120`) or times (`00:01:02.5`, `1:02.5`, `62.5s`); the
end is exclusive: `--start 10 --end 20` edits source frames 10..19.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path

from longedit.errors import UserError
from longedit.video.probe import VideoInfo, probe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_TIME_RE = re.compile(r"^(?:(?:(?P<h>\d+):)?(?P<m>\d+):)?(?P<s>\d+(?:\.\d*)?)(?P<unit>s)?$")
_EPSILON_S = 1e-6


def parse_position(value: str | int | None, what: str) -> int | float | None:
    """A frame number (int) or a time in seconds (float) from `120`, `00:01:02.5`, `1:02.5` or `62.5s`."""
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 0:
            raise UserError(f"--{what} {value} is negative", "frames count from 0")
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    match = _TIME_RE.match(text)
    if match is None or (":" not in text and not match["unit"]):
        raise UserError(f"cannot read --{what} '{value}'", "give a frame number (120) or a time (00:01:02.5 or 62.5s)")
    return int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + float(match["s"])


def _frame_index(position: int | float, timestamps: tuple[float, ...]) -> int:
    """The first frame at or after `position` (a frame number is itself; a time: the first frame shown then)."""
    if isinstance(position, int):
        return position
    return next((i for i, t in enumerate(timestamps) if t >= position - _EPSILON_S), len(timestamps))


def _is_frame_source(path: Path) -> bool:
    return path.is_dir() or "%" in path.name


def _numbered_files(path: Path) -> list[Path]:
    """The frames of a folder (numbered .png/.jpg, in number order) or of a `%06d.png`-style pattern."""
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and re.search(r"\d+$", p.stem)]
        if not files:
            raise UserError(f"folder '{path}' holds no numbered frames", "give a folder of 000000.png, 000001.png, ... (or .jpg)")
        files.sort(key=lambda p: (int(re.search(r"(\d+)$", p.stem).group(1)), p.name))
        return files
    spec = re.search(r"%0?\d*d", path.name)
    if spec is None or not path.parent.is_dir():
        raise UserError(f"no frames match '{path}'", "give a folder, or a pattern like frames/%06d.png that names existing files")
    matcher = re.compile(f"^{re.escape(path.name[: spec.start()])}(?P<n>\\d+){re.escape(path.name[spec.end():])}$")
    named = [(matcher.match(p.name), p) for p in path.parent.iterdir()]
    files = [p for m, p in sorted(((m, p) for m, p in named if m), key=lambda mp: int(mp[0]["n"]))]
    if not files:
        raise UserError(f"no frames match '{path}'", "give a pattern like frames/%06d.png that names existing files")
    return files


def probe_frames(path: Path, fps: Fraction | None) -> VideoInfo:
    """VideoInfo of a numbered frame folder or pattern, at `fps` (required: images carry no rate)."""
    if fps is None:
        raise UserError(f"'{path}' is a folder of frames, which carries no frame rate", "give --fps, e.g. --fps 24")
    files = _numbered_files(path)
    from PIL import Image, UnidentifiedImageError

    sizes = set()
    for file in files:  # headers only: a damaged or odd-sized frame fails now, not after the model loaded
        try:
            with Image.open(file) as image:
                sizes.add(image.size)
                mode = image.mode
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"cannot read frame '{file}': {error}", "check that the frames are PNG or JPEG images") from None
        if len(sizes) > 1:
            raise UserError(f"frame '{file}' is {image.size[0]}x{image.size[1]}, the frames before it {files[0].name}... are not",
                            "give frames of one size")
    width, height = sizes.pop()
    return VideoInfo(
        path=path, width=width, height=height, frames=len(files), fps=Fraction(fps), duration_s=float(len(files) / fps),
        timestamps=tuple(float(i / fps) for i in range(len(files))), has_audio=False, codec="images",
        pix_fmt="rgb48be" if mode.startswith("I;16") else "rgb24", image_files=tuple(files),
    )


def cut(
    info: VideoInfo, start: int | float | None, end: int | float | None, every: int, shown: tuple = (None, None)
) -> VideoInfo:
    """`info` cut to source frames [start, end) taking every `every`-th; its frames/timestamps/rate are the range's.
    `shown`: start and end as the user wrote them, for the messages."""
    start_text, end_text = (shown[0] or start), (shown[1] or end)
    if every < 1:
        raise UserError(f"--every {every} is below 1", "give --every 1 (every frame), 2 (every other), ...")
    first = _frame_index(start, info.timestamps) if start is not None else 0
    stop = min(_frame_index(end, info.timestamps), info.frames) if end is not None else info.frames
    if first >= info.frames:
        raise UserError(f"--start {start_text} is at or past the end of the video ({info.frames} frames, {info.duration_s:.3f} s)",
                        f"give a start below frame {info.frames}")
    if stop <= first:
        raise UserError(f"--start {start_text} is not before --end {end_text}", "give a start before the end (the end is exclusive)")
    if first == 0 and stop == info.frames and every == 1:
        return info
    picked = range(first, stop, every)
    fps = info.fps / every
    timestamps = tuple(info.timestamps[i] for i in picked)
    files = tuple(info.image_files[i] for i in picked) if info.image_files else ()
    return dataclasses.replace(
        info, frames=len(picked), fps=fps, duration_s=float(len(picked) / fps), timestamps=timestamps,
        first_frame=info.first_frame + first * info.every, every=info.every * every, source_frames=info.source_frames,
        image_files=files,
    )


def open_source(
    path: str | Path, start: str | int | None = None, end: str | int | None = None, every: int = 1,
    fps: float | Fraction | None = None,
) -> VideoInfo:
    """The VideoInfo a job edits (see the module docstring); every bad value is a one-line UserError."""
    path = Path(path)
    start_at, end_at = parse_position(start, "start"), parse_position(end, "end")
    if isinstance(start_at, type(end_at)) and start_at is not None and end_at <= start_at:
        raise UserError(f"--start {start} is not before --end {end}", "give a start before the end (the end is exclusive)")
    rate = None if fps is None else Fraction(fps).limit_denominator(1001)
    if _is_frame_source(path):
        info = probe_frames(path, rate)
    else:
        if fps is not None:
            raise UserError("--fps is for a folder of frames; a video has its own rate", "drop --fps (use --every N to thin the frames)")
        info = probe(path)
    info = dataclasses.replace(info, source_frames=info.frames)
    return cut(info, start_at, end_at, every, (start, end))


def range_key(info: VideoInfo) -> dict | None:
    """What the range adds to a cache key (None for the whole source at every frame, as before ranges existed)."""
    if info.first_frame == 0 and info.every == 1 and info.frames == (info.source_frames or info.frames):
        return None
    return {"first_frame": info.first_frame, "every": info.every, "frames": info.frames}
