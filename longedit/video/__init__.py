"""Streaming video I/O on PyAV: probe, frame-by-frame decode, atomic writers (H.264/H.265/ProRes/FFV1/VP9
or PNG frames: `codecs`) with untouched audio, ranges and frame folders as sources (`source`).

Nothing here holds a whole video in memory: `iter_frames` decodes one frame at a time and `VideoWriter`
encodes each frame as it arrives, so clip length is bounded by disk, not RAM. Every bad input (missing,
damaged or silent file, unwritable output, output == input) raises `UserError` with a one-line fix.

`probe` (size, frames, rate, timestamps), `decode` (`iter_frames`) and `encode` (`VideoWriter`) are
separate modules; the names below are the package's public API.
"""

from longedit.video.decode import iter_frames, processing_size
from longedit.video.encode import (
    CONTAINERS,
    VideoWriter,
    add_video_stream,
    check_output_path,
    container_format,
    crop_note,
    even_size,
    rgb_to_av_frame,
    time_base_for,
)
from longedit.video.frame_folder import open_writer
from longedit.video.probe import VideoInfo, probe
from longedit.video.source import open_source

__all__ = [
    "CONTAINERS",
    "VideoInfo",
    "VideoWriter",
    "add_video_stream",
    "check_output_path",
    "container_format",
    "crop_note",
    "even_size",
    "iter_frames",
    "open_source",
    "open_writer",
    "probe",
    "processing_size",
    "rgb_to_av_frame",
    "time_base_for",
]
