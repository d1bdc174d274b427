"""Frame-by-frame decoding on PyAV (or decord): `iter_frames` yields one RGB frame at a time, seeking to
the keyframe before a start frame, so clip length is bounded by disk, not RAM.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator
from pathlib import Path

import av
import numpy as np

from longedit.errors import UserError
from longedit.video.probe import (
    VideoInfo, _check_input_file, _damaged, _decoded, _frame_packets, _open_input, _video_stream, display_rotation,
)

_REORDER_MARGIN = 32  # packets scanned past a seek target: H.264/HEVC reorder at most 16 frames
_BACKENDS = ("auto", "pyav", "decord")
_RESIZE_INTERPOLATION = "LANCZOS"


def _seek_target(container: av.container.InputContainer, stream: av.VideoStream, index: int) -> int | None:
    """pts of frame `index` (presentation order) by demuxing just far enough; -1 past the end, None if unknown."""
    pts: list[int] = []
    for packet in _frame_packets(container, stream):
        if packet.pts is None:
            return None
        pts.append(packet.pts)
        if len(pts) > index + _REORDER_MARGIN:
            break
    if len(pts) <= index:
        return -1
    return sorted(pts)[index]


def _seeked_frames(
    container: av.container.InputContainer, stream: av.VideoStream, target: int, path: Path
) -> Generator[av.VideoFrame, None, bool]:
    """Frames from pts `target` on, via a seek to the keyframe before it.

    Returns False, having yielded nothing, when the file cannot seek or the seek lands past the target.
    """
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        return False
    frames = _decoded(container, stream, path)
    for frame in frames:
        if frame.pts is None or frame.pts > target:
            return False
        if frame.pts == target:
            yield frame
            yield from frames
            return True
    return False


def _opened_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The video stream, set up for multi-threaded decoding."""
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    return stream


def _frames_from(path: Path, start: int) -> Iterator[av.VideoFrame]:
    """Decoded frames from frame `start` on: seeks to the keyframe before it when the file allows,
    else decodes from the beginning and drops the first `start` frames."""
    if start > 0:
        with _open_input(path) as container:
            stream = _opened_stream(container, path)
            target = _seek_target(container, stream, start)
            if target == -1:
                return
            if target is not None and (yield from _seeked_frames(container, stream, target, path)):
                return
    with _open_input(path) as container:
        stream = _opened_stream(container, path)
        for index, frame in enumerate(_decoded(container, stream, path)):
            if index >= start:
                yield frame


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """HxWx3 uint8 RGB as displayed (the display matrix's rotation applied), resized with Lanczos when `size`
    (width, height, displayed) differs from the frame."""
    turns = display_rotation(frame) // 90
    stored = None if size is None else (size[1], size[0]) if turns % 2 else size
    if stored is None or stored == (frame.width, frame.height):
        image = frame.to_ndarray(format="rgb24")
    else:
        image = frame.to_ndarray(format="rgb24", width=stored[0], height=stored[1], interpolation=_RESIZE_INTERPOLATION)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _iter_pyav(
    path: Path, size: tuple[int, int] | None, start: int, end: int | None, every: int = 1, strict: bool = False
) -> Iterator[np.ndarray]:
    """The PyAV decode loop behind `iter_frames`: source frames start, start + every, ... before `end`
    (the frames between are decoded, as the codec needs, but never converted). `strict`: fewer frames than
    `end` is a UserError."""
    index = start
    for offset, frame in enumerate(_frames_from(path, start)):
        if end is not None and index >= end:
            return
        if offset % every == 0:
            yield _to_rgb(frame, size)
        index += 1
    if strict and end is not None and index < end:
        raise _short_decode(path, index, end)


def _short_decode(path: Path, decoded: int, expected: int) -> UserError:
    """The error for a file whose packets promise more frames than decode (damaged data, a cut-short tail)."""
    return UserError(
        f"video '{path}' is damaged: only {decoded} of its {expected} frames decode",
        "copy or download it again, or re-encode it, e.g. `ffmpeg -i in out.mp4`",
    )


def _iter_images(files: tuple[Path, ...], size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Frames of a numbered-image folder as HxWx3 uint8 RGB (Lanczos-resized to `size`), one file at a time."""
    from PIL import Image, UnidentifiedImageError

    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert("RGB")
                if size is not None and size != image.size:
                    image = image.resize(size, Image.LANCZOS)
                yield np.asarray(image)
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"cannot read frame '{file}': {error}", "check that the frames are PNG or JPEG images") from None


def _iter_range(
    info: VideoInfo, size: tuple[int, int] | None, start: int, end: int | None, backend: str, strict: bool = False
) -> Iterator[np.ndarray]:
    """Frames [start, end) of a (cut) VideoInfo: its range of the source, seeking to its first frame."""
    end = info.frames if end is None else min(end, info.frames)
    if info.image_files:
        return _iter_images(info.image_files[start:end], size)
    first = info.first_frame + start * info.every
    stop = info.first_frame + max(end - 1, start) * info.every + 1
    if _pick_backend(backend) == "decord":
        return itertools.islice(_iter_decord(info.path, size, first, stop, strict), 0, None, info.every)
    return _iter_pyav(info.path, size, first, stop, info.every, strict)


def _iter_decord(
    path: Path, size: tuple[int, int] | None, start: int, end: int | None, strict: bool = False
) -> Iterator[np.ndarray]:
    """The decord decode loop behind `iter_frames(backend="decord")` (decord resizes while decoding)."""
    import decord  # noqa: PLC0415 - optional extra, checked by the caller

    kwargs = {"width": size[0], "height": size[1]} if size else {}
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), **kwargs)
    except Exception as error:  # decord raises its own DECORDError
        raise _damaged(path, error) from error
    stop = len(reader) if end is None else min(end, len(reader))
    for index in range(start, stop):
        yield reader[index].asnumpy()
    if strict and end is not None and stop < end:
        raise _short_decode(path, stop, end)


def _check_range(start: int, end: int | None) -> None:
    """Reject negative or reversed frame ranges."""
    if start < 0 or (end is not None and end < start):
        raise UserError(f"bad frame range start={start}, end={end}", "use 0 <= start <= end")


def _check_size(size: tuple[int, int] | None) -> None:
    """Reject non-positive output sizes."""
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise UserError(f"bad frame size {size}", "give (width, height) with both at least 1")


def _pick_backend(backend: str) -> str:
    """'pyav' or 'decord'; UserError for unknown names or a missing decord."""
    if backend not in _BACKENDS:
        raise UserError(f"unknown video backend '{backend}'", f"use one of {', '.join(_BACKENDS)}")
    if backend != "decord":
        return "pyav"
    try:
        import decord  # noqa: F401, PLC0415
    except ImportError as error:
        raise UserError(
            "video backend 'decord' was requested but decord is not installed",
            "pip install 'longedit[decord]' or use backend 'pyav'",
        ) from error
    return "decord"


def iter_frames(
    path: str | Path | VideoInfo,
    size: tuple[int, int] | None = None,
    start: int = 0,
    end: int | None = None,
    backend: str = "auto",
    strict: bool = False,
) -> Iterator[np.ndarray]:
    """Yield frames [start, end) as HxWx3 uint8 RGB, decoded lazily one at a time.

    `size` is (width, height), as displayed: frames are decoded upright (a rotated phone video's display
    matrix is applied). Arguments and the file's existence are checked now; the file is opened on the first
    `next()`. A `start` > 0 seeks to the keyframe before it rather than decoding from frame 0. Given a
    `VideoInfo` from `longedit.video.source.open_source`, `start`/`end` count frames of its range (a frame
    folder or a cut of the source).
    `strict`: fewer than `end - start` frames is a UserError after the last one (`end` from `probe`: the
    file's packets promised frames that do not decode).
    """
    if isinstance(path, VideoInfo):
        _check_range(start, end)
        _check_size(size)
        return _iter_range(path, None if size is None else (int(size[0]), int(size[1])), start, end, backend, strict)
    path = _check_input_file(path)
    _check_range(start, end)
    _check_size(size)
    size = None if size is None else (int(size[0]), int(size[1]))
    if _pick_backend(backend) == "decord":
        return _iter_decord(path, size, start, end, strict)
    return _iter_pyav(path, size, start, end, strict=strict)


def processing_size(width: int, height: int, short_side: int = 512) -> tuple[int, int]:
    """Size (width, height) for Stable Diffusion: both multiples of 64, short side ~`short_side`, aspect kept.

    The short side becomes `short_side` rounded to a multiple of 64 (at least 64), the long side the
    multiple of 64 nearest the scaled length, e.g. (640, 272) -> (1216, 512), (1280, 720) -> (896, 512).
    """
    if width < 1 or height < 1:
        raise UserError(f"bad video size {width}x{height}", "the video must have at least one pixel")
    short = max(64, round(short_side / 64) * 64)
    scale = short / min(width, height)

    def snap(side: int) -> int:
        return short if side == min(width, height) else max(64, round(side * scale / 64) * 64)

    return snap(width), snap(height)
