"""Is a video file whole? What its container declares against what it holds, without decoding (issue 22).

A file cut short (a copy that stopped half-way) often still opens and decodes its first part, so without
this check it would be edited to its first seconds and reported as done. Two checks, both cheap:

- the demuxer's index (MP4/MOV sample tables) must not point past the end of the file;
- the end time the header declares (the MP4/MOV track's duration, the Matroska/WebM segment's, the AVI
  header's) must be reached by the packets found, within `max(0.15 s, 2.5 frames)`; audio or subtitles
  that outlast the video count when the declared time is the whole file's.

Durations of other containers (raw streams, MPEG-TS, PS) are ffmpeg's estimates, not declarations, and a
WebM from a browser's recorder declares none: those files cannot be checked and `check_complete` returns a
note saying so instead.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from longedit.errors import UserError

#: Containers whose header declares the duration (ffmpeg format names are comma-separated aliases).
_DECLARING_FORMATS = {"mov", "mp4", "matroska", "webm", "avi"}
_MIN_TOLERANCE_S = 0.15
_TOLERANCE_FRAMES = 2.5


def _declares_duration(container: av.container.InputContainer) -> bool:
    return bool(_DECLARING_FORMATS & set(container.format.name.split(",")))


def _index_end(stream: av.VideoStream) -> int:
    """One past the last byte the demuxer's index points at (0 without an index)."""
    entries = stream.index_entries
    return max((entry.pos + entry.size for entry in entries if entry.pos >= 0), default=0)


def _declared_end(container: av.container.InputContainer, stream: av.VideoStream, first_pts: int) -> tuple[float, bool] | None:
    """(end time in seconds the header declares, whether it is the whole file's), or None."""
    if not _declares_duration(container):
        return None
    if stream.duration:
        start = stream.start_time if stream.start_time is not None else first_pts
        return float((start + stream.duration) * stream.time_base), False
    if container.duration:
        start = container.start_time or 0
        return (start + container.duration) / av.time_base, True
    return None


def _other_streams_end(open_input: Callable, stream_index: int) -> float:
    """The latest end time (seconds) of any packet outside the video stream (audio that outlasts the video)."""
    end = 0.0
    with open_input() as container:
        others = [s for s in container.streams if s.index != stream_index and s.type in ("audio", "subtitle")]
        if not others:
            return end
        try:
            for packet in container.demux(*others):
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        except av.FFmpegError:
            pass  # a damaged tail: what was found so far is what is there
    return end


def check_complete(
    path: Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    pts: list[int],
    last_duration: int,
    fps: Fraction,
    open_input: Callable,
) -> str | None:
    """UserError when the file at `path` is cut short; a note when its container declares nothing to check
    against; None when it is whole. `pts` (sorted) and `last_duration` are what `probe` demuxed;
    `open_input()` opens the file afresh (only needed when other streams may outlast the video)."""
    declared_frames = stream.frames or None  # the header's count (MP4/MOV, AVI); 0 when it gives none
    if _index_end(stream) > path.stat().st_size:
        raise _cut_short(path, len(pts), declared_frames, "its index points past the end of the file")
    declared = _declared_end(container, stream, pts[0])
    if declared is None:
        return (f"'{path.name}': its container ({container.format.name.split(',')[0]}) declares no length, so a "
                "file cut short (e.g. an unfinished copy) cannot be detected")
    declared_end, whole_file = declared
    time_base = stream.time_base
    frame_s = 1 / float(fps) if fps else 0.0
    found_end = float((pts[-1] + last_duration) * time_base) if last_duration else float(pts[-1] * time_base) + frame_s
    tolerance = max(_MIN_TOLERANCE_S, _TOLERANCE_FRAMES * frame_s)
    if found_end + tolerance < declared_end and whole_file:
        found_end = max(found_end, _other_streams_end(open_input, stream.index))
    if found_end + tolerance < declared_end:
        reason = f"its header declares {declared_end:.2f} s but the file ends at {found_end:.2f} s"
        raise _cut_short(path, len(pts), declared_frames, reason)
    return None


def _cut_short(path: Path, found: int, declared: int | None, reason: str) -> UserError:
    frames = f"{found} of {declared} frames" if declared and declared > found else f"{found} frames"
    return UserError(
        f"video '{path}' is cut short ({reason}; {frames} are there)",
        "copy or download it again; if only its header is wrong, rewrite it with `ffmpeg -i IN -c copy OUT`",
    )
