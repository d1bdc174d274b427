"""`--codec png`: a folder of numbered RGB PNG frames (000000.png, ...) plus the source's audio as its own file
and `timing.json` (fps and each frame's time), written under a hidden temp name and renamed into place.

`open_writer` picks this writer or `VideoWriter` from the output format; both take frames one at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from longedit.atomic import disk_error
from longedit.errors import UserError
from longedit.video.audio import AudioPump, can_stream_copy, has_audio
from longedit.video.codecs import OutputFormat, output_format
from longedit.video.encode import VideoWriter, _same_file, check_output_path, crop_note, even_size

FRAME_NAME = "{:06d}.png"
TIMING_NAME = "timing.json"
AUDIO_STEM = "audio"
_AUDIO_CONTAINERS = (("m4a", "mp4"), ("mka", "matroska"))  # copied into the first that holds the codec


def _is_our_folder(folder: Path) -> bool:
    """Whether an existing output folder holds only what this writer writes (so replacing it loses nothing else)."""
    names = {p.name for p in folder.iterdir()}
    ours = {TIMING_NAME, *(f"{AUDIO_STEM}.{ext}" for ext, _ in _AUDIO_CONTAINERS)}
    return all(n in ours or (n.endswith(".png") and n[:-4].isdigit()) for n in names)


def check_frame_folder(path: Path) -> None:
    """UserError unless `path` can become the frame folder: its parent writable, and no foreign folder or a file there."""
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write frames '{path}': folder '{parent}' is missing or not writable", "pick another output folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot write frames into '{path}': it is a file", "give --codec png a folder name")
    if path.is_dir() and not _is_our_folder(path):
        raise UserError(f"cannot write frames into '{path}': the folder holds other files", "give a new or empty folder name")


class FrameFolderWriter:
    """Writes RGB frames as `NNNNNN.png` into a hidden temp folder; `close()` renames it onto `path`.

    The audio (trimmed to the frames' time span, as in `VideoWriter`) goes to `audio.m4a` (or `.mka` when
    MP4 cannot hold the codec); `timing.json` keeps the frame rate and per-frame times (VFR survives).
    """

    def __init__(
        self, path: str | Path, width: int, height: int, fps: Fraction, timestamps: Sequence[float] | None = None,
        audio_source: str | Path | None = None, warn_crop: bool = True,
    ) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), Fraction(fps)
        check_frame_folder(self.path)
        self.output_format: OutputFormat = output_format(self.path, "png")
        if warn_crop and crop_note(self.width, self.height):  # the same even size as the videos, so all outputs agree
            warnings.warn(f"'{self.path.name}': {crop_note(self.width, self.height)}", UserWarning, stacklevel=2)
        self._size = even_size(self.width, self.height)
        first = float(timestamps[0]) if timestamps else 0.0
        self._times = None if timestamps is None else [float(t) - first for t in timestamps]
        self._shift = first
        self._audio_source = audio_source
        self._frames = 0
        self._closed = False
        self._temp = self.path.parent / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        try:
            self._temp.mkdir()
        except OSError as error:
            raise disk_error(error, "frames", self.path) or error from error

    @property
    def frames_written(self) -> int:
        return self._frames

    def write(self, frame: np.ndarray) -> None:
        """Write one HxWx3 uint8 RGB frame as the next numbered PNG."""
        if self._closed:
            raise ValueError(f"frame writer for '{self.path}' is closed")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise ValueError(f"expected a uint8 array of shape {(self.height, self.width, 3)}")
        image = np.ascontiguousarray(frame[: self._size[1], : self._size[0]])
        try:
            av.VideoFrame.from_ndarray(image, format="rgb24").to_image().save(self._temp / FRAME_NAME.format(self._frames))
        except OSError as error:
            self._fail(error)
        self._frames += 1

    def _end_s(self) -> float:
        """End of the written frames in source-relative seconds (last frame + one nominal frame)."""
        last = self._times[self._frames - 1] if self._times else (self._frames - 1) / self.fps
        return float(last + 1 / self.fps)

    def _write_audio(self) -> None:
        """The source's audio over the frames' span, copied into the first container that can hold it."""
        source = self._audio_source
        if source is None or not Path(source).is_file() or not has_audio(Path(source)):
            return
        with av.open(str(source)) as probe_container:
            stream = probe_container.streams.audio[0]
            ext, fmt = next(((e, f) for e, f in _AUDIO_CONTAINERS if can_stream_copy(f, stream)), _AUDIO_CONTAINERS[-1])
        target = self._temp / f"{AUDIO_STEM}.{ext}"
        with av.open(str(target), mode="w", format=fmt) as container:
            pump = AudioPump(Path(source), container, fmt, target, self._shift)
            try:
                container.start_encoding()
                pump.finish(self._end_s())
            finally:
                pump.close()

    def close(self) -> None:
        """Write the audio and timing, then rename the temp folder onto the output (replacing an earlier one)."""
        if self._closed:
            return
        if self._frames == 0:
            self.abort()
            raise ValueError(f"no frames were written to '{self.path}'; nothing was saved")
        try:
            self._write_audio()
            timing = {"fps": f"{self.fps.numerator}/{self.fps.denominator}", "frames": self._frames,
                      "timestamps_s": self._times[: self._frames] if self._times else None}
            (self._temp / TIMING_NAME).write_text(json.dumps(timing, indent=1))
            self._publish()
        except OSError as error:
            self._fail(error)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def _publish(self) -> None:
        """Rename into place; an earlier output of ours is moved aside first and removed after."""
        old = None
        if self.path.exists():
            check_frame_folder(self.path)
            old = self.path.parent / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old"
            os.rename(self.path, old)
        os.rename(self._temp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _fail(self, error: OSError) -> None:
        self.abort()
        raise disk_error(error, "frames", self.path) or error from error

    def abort(self) -> None:
        """Remove the temp folder; the output is left untouched."""
        self._closed = True
        shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self) -> FrameFolderWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_writer(
    path: str | Path, width: int, height: int, fps: Fraction, *, timestamps: Sequence[float] | None = None,
    audio_source: str | Path | None = None, codec: str | None = None, pix_fmt: str | None = None,
    crf: int | None = None, warn_crop: bool = True,
) -> VideoWriter | FrameFolderWriter:
    """The writer for an output: a PNG frame folder for `codec='png'`, else a `VideoWriter`. A frame-folder
    source (no audio of its own) is no audio source."""
    if audio_source is not None and not Path(audio_source).is_file():
        audio_source = None
    if codec == "png":
        return FrameFolderWriter(path, width, height, fps, timestamps, audio_source, warn_crop)
    return VideoWriter(path, width, height, fps, timestamps=timestamps, audio_source=audio_source, crf=crf,
                       codec=codec, pix_fmt=pix_fmt, warn_crop=warn_crop)


def check_output(
    output: str | Path, input: str | Path, codec: str | None = None, pix_fmt: str | None = None,  # noqa: A002
    crf: int | None = None,
) -> OutputFormat:
    """The checked output format of a job's output (a video file, or a frame folder for `codec='png'`):
    a one-line UserError for an output that is the input, cannot be written, or a codec/container/pixel
    format/CRF that do not go together."""
    output, input = Path(output), Path(input)
    fmt = output_format(output, codec, pix_fmt, crf)
    if not fmt.folder:
        check_output_path(output, input)
        return fmt
    if _same_file(output, input) or input.resolve().is_relative_to(output.resolve()):
        raise UserError(f"output '{output}' is (or holds) the input", "write the frames to a new folder; the input is never overwritten")
    check_frame_folder(output)
    return fmt
