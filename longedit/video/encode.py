"""Atomic H.264 writing on PyAV: `VideoWriter` encodes each RGB frame as it arrives into a temp file
that is published only when writing succeeded, with the source's audio copied untouched.

Every unusable output (missing or unwritable folder, unsupported suffix, output == input, full disk)
raises `UserError` with a one-line fix.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from longedit.atomic import AtomicFile, remove_stale_temps
from longedit.errors import UserError
from longedit.video.audio import AudioPump, has_audio
from longedit.video.codecs import output_format
from longedit.video.probe import _check_input_file

#: Output suffix -> FFmpeg muxer (`.webm` holds VP9 with Opus audio: `longedit.video.codecs`).
CONTAINERS: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}

_MAX_TICKS_PER_S = 16 * 90000


def time_base_for(fps: Fraction) -> Fraction:
    """A time base in which every frame of `fps` and every 1/90000 s lands on an integer tick.

    E.g. 30000/1001 -> 1/90000 (a frame is 3003 ticks), 24 -> 1/90000, 60000/1001 -> 1/180000. Odd
    rates (e.g. a VFR average such as 4517/279) fall back to 1/90000, where frames are rounded to a tick.
    """
    ticks = math.lcm(90000, Fraction(fps).numerator)
    return Fraction(1, ticks if ticks <= _MAX_TICKS_PER_S else 90000)


def add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    size: tuple[int, int],
    fps: Fraction,
    pix_fmt: str,
    options: dict[str, str],
) -> av.VideoStream:
    """Video stream on `time_base_for(fps)`, tagged BT.709 limited range (what `rgb_to_av_frame` produces)."""
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    stream.time_base = stream.codec_context.time_base = time_base_for(fps)
    context = stream.codec_context
    context.colorspace, context.color_range = Colorspace.ITU709, ColorRange.MPEG
    context.color_primaries, context.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
    stream.options = options
    return stream


def rgb_to_av_frame(image: np.ndarray, pix_fmt: str, pts: int, time_base: Fraction) -> av.VideoFrame:
    """HxWx3 uint8 RGB -> YUV frame with BT.709 limited-range coefficients (players assume 709 for HD;
    swscale's default would be BT.601, shifting colours), stamped with `pts`."""
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
        format=pix_fmt, dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
    )
    frame.pts, frame.time_base = pts, time_base
    return frame


def container_format(path: Path) -> str:
    """FFmpeg muxer name for an output path, from its suffix; UserError for unsupported ones."""
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"cannot write video '{path}': unsupported file type '{path.suffix or '(none)'}'",
            f"name the output with one of {', '.join(CONTAINERS)}",
        )
    return fmt


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (resolved, or same inode when both exist)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output_folder(output: Path) -> None:
    """UserError unless the output's folder exists and is writable, and the output is not a folder."""
    parent = output.parent
    if not parent.is_dir():
        raise UserError(f"cannot write video '{output}': folder '{parent}' does not exist", "create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write video '{output}': folder '{parent}' is not writable", "pick another output folder")
    if output.is_dir():
        raise UserError(f"cannot write video '{output}': it is a directory", "give a file name such as out.mp4")


def check_output_path(output: Path, input: Path) -> None:  # noqa: A002 - name fixed by the shared API
    """UserError when `output` would overwrite `input`, cannot be created, or has an unsupported suffix."""
    output, input = Path(output), Path(input)
    if _same_file(output, input):
        raise UserError(f"output '{output}' is the input video", "write to a new file; the input is never overwritten")
    _check_output_folder(output)
    container_format(output)


def _even(side: int) -> int:
    """The even size at or below `side` (yuv420p needs even width and height)."""
    return side - side % 2


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size a `width` x `height` video is written at: H.264 4:2:0 (yuv420p) stores chroma per 2x2 block
    and crops in 2-pixel steps, so an odd side loses its last column or row. (Exact odd sizes would need
    4:4:4, which many players and browsers do not decode.)"""
    return _even(width), _even(height)


def crop_note(width: int, height: int) -> str | None:
    """'cropped 145x177 -> 144x176 (H.264 4:2:0 needs even sizes)' for an odd size, None for an even one."""
    even = even_size(width, height)
    if even == (width, height):
        return None
    return f"cropped {width}x{height} -> {even[0]}x{even[1]} (H.264 4:2:0 needs even sizes)"


class VideoWriter:
    """Encode RGB frames (H.264/yuv420p CRF 18 unless `codec`, `pix_fmt`, `crf` say otherwise:
    `longedit.video.codecs`), atomically: the file appears only when writing succeeded.

    Frames go to a hidden `.{name}.{pid}.{random}.part` file next to the output (`longedit.atomic`),
    moved into place on a clean exit (`close()` or the end of a `with` block); on an exception or
    `abort()` it is deleted, and partial files of this output left by killed processes are removed
    when a new writer starts. A full or read-only disk is a one-line UserError. Odd
    widths/heights are encoded at the even size below (the last column/row is cropped, `even_size`) because
    yuv420p needs even sizes; a warning says so unless `warn_crop` is off. With `timestamps` (seconds, one per frame, e.g. `VideoInfo.timestamps`) they become
    the pts, so VFR and 30000/1001 timing survive exactly (rebased so the first frame is at 0); otherwise
    frames are spaced 1/fps apart. With `audio_source`, its audio track is stream-copied (re-encoded to
    AAC only when the container cannot hold it), trimmed to the time span of the written frames.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: Fraction,
        timestamps: Sequence[float] | None = None,
        audio_source: str | Path | None = None,
        crf: int | None = None,
        codec: str | None = None,
        warn_crop: bool = True,
        pix_fmt: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps)
        self._check_args(audio_source)
        if warn_crop:  # the engine says it in its summary line instead
            self._warn_if_cropped()
        self._format = container_format(self.path)
        self.output_format = output_format(self.path, codec, pix_fmt, crf)
        self._time_base = time_base_for(self.fps)
        self._pts = None if timestamps is None else self._timestamps_to_pts(timestamps)
        self._frames = 0
        self._last_pts = -1
        self._closed = False
        remove_stale_temps(self.path)
        self._file = AtomicFile(self.path, "video", suffix=".part")
        self._tmp = self._file.temp
        self._audio: AudioPump | None = None
        try:
            self._container = av.open(str(self._tmp), mode="w", format=self._format, options=self._muxer_options())
        except OSError as error:
            raise self._file.fail(error) from error
        try:
            self._stream = self._add_video_stream()
            if audio_source is not None and has_audio(Path(audio_source)):
                shift = 0.0 if timestamps is None else float(timestamps[0])
                self._audio = AudioPump(Path(audio_source), self._container, self._format, self.path, shift)
            self._container.start_encoding()  # creates the temp file and checks codec settings now
        except BaseException as error:
            self._abort_and_raise(error)

    # -- setup

    def _check_args(self, audio_source: str | Path | None) -> None:
        """UserError for an unusable output path or an audio source that is the output itself."""
        _check_output_folder(self.path)
        container_format(self.path)
        if audio_source is not None:
            source = _check_input_file(audio_source, what="audio source")
            if _same_file(self.path, source):
                raise UserError(
                    f"output '{self.path}' is the same file as the audio source", "write to a new file"
                )
        if self.width < 2 or self.height < 2:
            raise UserError(f"cannot write a {self.width}x{self.height} video", "frames must be at least 2x2 pixels")
        if self.fps <= 0:
            raise UserError(f"bad frame rate {self.fps}", "give a positive fps such as 24 or 30000/1001")

    def _warn_if_cropped(self) -> None:
        """Say so when an odd width or height loses its last column or row (yuv420p needs even sizes)."""
        note = crop_note(self.width, self.height)
        if note is not None:
            warnings.warn(f"'{self.path.name}': {note}", UserWarning, stacklevel=3)

    def _muxer_options(self) -> dict[str, str]:
        """MP4/MOV: put the index first so players can start before the whole file is read."""
        return {"movflags": "+faststart"} if self._format in ("mp4", "mov") else {}

    def _timestamps_to_pts(self, timestamps: Sequence[float]) -> list[int]:
        """Seconds -> strictly increasing integer ticks, rebased so the first frame is at 0."""
        if not timestamps:
            raise ValueError("timestamps is empty; pass None for a constant frame rate")
        first = timestamps[0]
        pts: list[int] = []
        for t in timestamps:
            tick = round((t - first) / self._time_base)
            pts.append(max(tick, pts[-1] + 1) if pts else tick)  # duplicates would be rejected by the muxer
        return pts

    def _add_video_stream(self) -> av.VideoStream:
        """The output stream (`self.output_format`: H.264 yuv420p CRF 18 by default) at the even size."""
        fmt = self.output_format
        size = even_size(self.width, self.height)
        stream = add_video_stream(self._container, fmt.encoder, size, self.fps, fmt.pix_fmt, dict(fmt.options))
        if fmt.codec == "h265" and self._format in ("mp4", "mov"):
            stream.codec_context.codec_tag = "hvc1"  # what Apple players and editors look for
        return stream

    # -- writing

    @property
    def frames_written(self) -> int:
        """Number of frames passed to `write` so far."""
        return self._frames

    def _next_pts(self) -> int:
        """pts of the frame about to be written."""
        if self._pts is None:
            return round(self._frames / self.fps / self._time_base)
        if self._frames >= len(self._pts):
            raise ValueError(f"frame {self._frames + 1} has no timestamp: only {len(self._pts)} were given")
        return self._pts[self._frames]

    def _frame_ticks(self) -> int:
        """Nominal length of one frame in ticks."""
        return max(1, round(1 / self.fps / self._time_base))

    def write(self, frame: np.ndarray) -> None:
        """Encode one HxWx3 uint8 RGB frame of shape (height, width, 3)."""
        if self._closed:
            raise ValueError(f"VideoWriter for '{self.path}' is closed")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"expected a uint8 array of shape {(self.height, self.width, 3)}, got {got}")
        image = np.ascontiguousarray(frame[: _even(self.height), : _even(self.width)])
        video_frame = rgb_to_av_frame(image, self.output_format.pix_fmt, self._next_pts(), self._time_base)
        self._last_pts = video_frame.pts
        try:
            self._mux(self._stream.encode(video_frame))
        except OSError as error:  # a full disk: the partial file goes, the error says so in one line
            self._abort_and_raise(error)
        self._frames += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        """Mux video packets, first letting the audio catch up to each packet's time."""
        for packet in packets:
            if self._audio is not None and packet.dts is not None:
                self._audio.pump(float(packet.dts * packet.time_base))
            self._container.mux(packet)

    def _end_s(self) -> float:
        """End time of the written video in seconds (last pts + one nominal frame)."""
        return float((self._last_pts + self._frame_ticks()) * self._time_base)

    # -- finishing

    def close(self) -> None:
        """Flush the encoder, finish the audio and move the file into place (no-op when already closed)."""
        if self._closed:
            return
        if self._frames == 0:
            self.abort()
            raise ValueError(f"no frames were written to '{self.path}'; nothing was saved")
        try:
            self._mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish(self._end_s())
            self._container.close()
            self._close_audio()
        except BaseException as error:
            self._abort_and_raise(error)
        self._closed = True
        self._file.commit()

    def _close_audio(self) -> None:
        """Close the audio source, if any."""
        if self._audio is not None:
            self._audio.close()
            self._audio = None

    def _abort_and_raise(self, error: BaseException) -> None:
        """Abort (the partial file goes) and raise: a disk error as one line, anything else as it was."""
        self.abort()
        if isinstance(error, OSError):
            raise self._file.fail(error) from error
        raise error

    def abort(self) -> None:
        """Stop writing and delete the temporary file; the final path is left untouched."""
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        self._close_audio()
        self._file.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
