"""Probing video files on PyAV: size, exact frame count, rate and per-frame timestamps, without decoding it all.

Also the reading helpers the decoder shares: opening a file, finding its video stream, demuxing and
decoding with FFmpeg errors turned into `UserError` with a one-line fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from longedit.errors import UserError
from longedit.video.complete import check_complete

_VFR_TOLERANCE_S = 1e-3  # timestamps further than this from an even grid make a clip VFR
_STANDARD_RATES = tuple(Fraction(n, 1001) for n in (24000, 30000, 48000, 60000, 120000))


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video file; timestamps are per frame, in presentation order."""

    path: Path
    width: int
    height: int
    frames: int
    fps: Fraction
    duration_s: float
    timestamps: tuple[float, ...]
    has_audio: bool
    codec: str
    completeness_note: str | None = None  # why the file could not be checked for being cut short (`complete`)
    pix_fmt: str = ""  # the source's pixel format, e.g. yuv420p, yuv444p10le
    rotation: int = 0  # the display rotation the source asks for (degrees); frames are decoded upright
    first_frame: int = 0  # source frame of this info's frame 0 (`longedit.video.source`: --start)
    every: int = 1  # source frames per frame (--every)
    source_frames: int = 0  # frames of the whole source (0: not cut)
    image_files: tuple[Path, ...] = ()  # a folder of numbered frames: its files, in order

    @property
    def is_vfr(self) -> bool:
        """True when the frames are not evenly spaced in time (tolerance 1 ms)."""
        if self.frames < 3:
            return False
        step = (self.timestamps[-1] - self.timestamps[0]) / (self.frames - 1)
        return any(abs(t - i * step) > _VFR_TOLERANCE_S for i, t in enumerate(self.timestamps))




def _check_input_file(path: str | Path, what: str = "video") -> Path:
    """Path of an existing regular file, else a UserError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"cannot read {what} '{path}': file does not exist", "check the path")
    if path.is_dir():
        raise UserError(f"cannot read {what} '{path}': it is a directory", "give a video file inside it")
    if not os.access(path, os.R_OK):
        raise UserError(f"cannot read {what} '{path}': permission denied", "check the file permissions")
    return path


def _damaged(path: Path, error: Exception) -> UserError:
    """The UserError for a file FFmpeg cannot parse or decode."""
    if isinstance(error, av.EOFError):
        reason = "it ends too early (empty or cut short)"
    else:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return UserError(
        f"cannot read video '{path}': not a readable video file: {reason}",
        "check that it is a complete, undamaged video; re-encode it, e.g. `ffmpeg -i in out.mp4`",
    )


@contextmanager
def _open_input(path: Path) -> Iterator[av.container.InputContainer]:
    """Open a media file for reading; FFmpeg errors on open become UserError."""
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise _damaged(path, error) from error
    try:
        yield container
    finally:
        container.close()


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first real video stream (cover images are skipped), or a UserError when there is none."""
    stills = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
    for stream in container.streams.video:
        if not stream.disposition & stills:
            return stream
    kinds = ", ".join(sorted({s.type for s in container.streams}))
    contents = f"only {kinds}" if kinds else "no streams at all"
    raise UserError(
        f"cannot read video '{path}': it has no video stream ({contents})", "give a file with a video track"
    )


def _frame_packets(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.Packet]:
    """Demux the packets that carry a frame (skips the empty flush packet and discarded packets)."""
    for packet in container.demux(stream):
        if packet.size > 0 and not packet.is_discard:
            yield packet


def _scan_timestamps(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path
) -> tuple[list[int], int] | None:
    """All frame pts (sorted, stream time base) and the last frame's duration, by demuxing (no decoding).

    None when the container stores no pts (raw .h264 streams, some AVIs): the caller decodes instead.
    """
    pts: list[int] = []
    max_pts = last_duration = 0
    try:
        for packet in _frame_packets(container, stream):
            if packet.pts is None:
                return None
            if not pts or packet.pts > max_pts:
                max_pts, last_duration = packet.pts, packet.duration or 0
            pts.append(packet.pts)
    except av.FFmpegError as error:
        raise _damaged(path, error) from error
    pts.sort()
    return pts, last_duration


def _decode_timestamps(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> list[int]:
    """Frame pts by full decoding of a fresh container; frames without pts go on the nominal rate."""
    rate = stream.guessed_rate or stream.average_rate or Fraction(24)
    step = 1 / (Fraction(rate) * stream.time_base)
    pts: list[int] = []
    for index, frame in enumerate(_decoded(container, stream, path)):
        pts.append(frame.pts if frame.pts is not None else round(index * step))
    return sorted(pts)


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> av.VideoFrame:
    """Decode the first frame: proves the codec is supported and the data is decodable."""
    frame = next(_decoded(container, stream, path), None)
    if frame is None:
        raise UserError(f"cannot read video '{path}': it has no decodable frames", "check that the file is complete")
    return frame


def _snap_rate(estimate: Fraction, seconds: list[float], candidates: Sequence[Fraction | None], tick: float) -> Fraction:
    """The simplest nominal rate that puts every frame within 1 ms (or one tick) of its timestamp."""
    tolerance = max(_VFR_TOLERANCE_S, tick) + 1e-9
    for rate in [*candidates, *_STANDARD_RATES, Fraction(round(estimate))]:
        if rate and rate > 0 and all(abs(t - i / rate) <= tolerance for i, t in enumerate(seconds)):
            return Fraction(rate)
    return estimate.limit_denominator(1001)


def _rate_and_duration(pts: list[int], last_duration: int, stream: av.VideoStream) -> tuple[Fraction, float]:
    """Average frame rate (a clean Fraction such as 30000/1001 for constant-rate video) and duration."""
    time_base = stream.time_base
    nominal = [stream.average_rate, stream.guessed_rate, stream.base_rate]
    if len(pts) < 2:
        rate = next((Fraction(r) for r in nominal if r), Fraction(24))
        duration = float(last_duration * time_base) if last_duration else float(1 / rate)
        return rate, duration
    span = (pts[-1] - pts[0]) * time_base
    seconds = [float((p - pts[0]) * time_base) for p in pts]
    estimate = Fraction(len(pts) - 1) / span if span > 0 else Fraction(24)
    rate = _snap_rate(estimate, seconds, nominal, float(time_base))
    uneven = any(abs(t - i / rate) > _VFR_TOLERANCE_S + float(time_base) for i, t in enumerate(seconds))
    if not uneven:
        return rate, float(len(pts) / rate)
    last = last_duration * time_base if last_duration else span / (len(pts) - 1)
    return estimate.limit_denominator(1001), float(span + last)


def display_rotation(frame: av.VideoFrame) -> int:
    """The rotation (degrees counter-clockwise, a multiple of 90 in 0..270) a frame's display matrix asks for;
    phones store portrait video as landscape frames with -90 (= 270) here."""
    try:
        degrees = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return round(degrees / 90) % 4 * 90


def probe(path: str | Path) -> VideoInfo:
    """Read size (as displayed: a rotated phone video's width and height are swapped), exact frame count, rate and per-frame timestamps of a video without decoding it all.

    Frames are counted from the demuxed packets (stream.frames is unreliable or zero in many containers)
    and the first frame is decoded to prove the file is readable. A file cut short (its header or index
    declares more than it holds) is a UserError (`longedit.video.complete`).
    """
    path = _check_input_file(path)
    with _open_input(path) as container:  # each pass opens the file afresh: raw streams cannot seek
        stream = _video_stream(container, path)
        scanned = _scan_timestamps(container, stream, path)
    if scanned is None:
        with _open_input(path) as container:
            scanned = _decode_timestamps(container, _video_stream(container, path), path), 0
    pts, last_duration = scanned
    if not pts:
        raise UserError(f"cannot read video '{path}': it has zero frames", "check that the file is complete")
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        fps, duration = _rate_and_duration(pts, last_duration, stream)
        note = check_complete(path, container, stream, pts, last_duration, fps, lambda: _open_input(path))
        rotation = display_rotation(first)
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            frames=len(pts),
            fps=fps,
            duration_s=duration,
            timestamps=tuple(float((p - pts[0]) * stream.time_base) for p in pts),
            has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name,
            completeness_note=note,
            pix_fmt=first.format.name,
            rotation=rotation,
        )


def _decoded(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> Iterator[av.VideoFrame]:
    """Decode frames one at a time in presentation order; FFmpeg errors become UserError."""
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except (StopIteration, av.EOFError):
            return
        except av.FFmpegError as error:
            raise _damaged(path, error) from error
        yield frame
