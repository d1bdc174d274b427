"""The source's audio in an output: stream-copied untouched when the container can hold it, else re-encoded
(AAC; Opus for WebM), trimmed to the written video's time span. Used by `VideoWriter` and the PNG frame folder.
"""

from __future__ import annotations

import io
import math
import warnings
from fractions import Fraction
from pathlib import Path

import av

from longedit.errors import UserError
from longedit.video.probe import _open_input, _video_stream

#: Re-encoding target per muxer when the source's codec cannot be copied (AAC elsewhere).
_REENCODE = {"webm": "libopus"}
_LABEL = {"aac": "AAC", "libopus": "Opus"}


class AudioPump:
    """Copies (or transcodes) the audio track of a source file into the output, interleaved by time.

    Packets are shifted so that source time `shift_s` after its first video frame becomes output time 0;
    packets that end before 0 are dropped (but the last one is kept as decoder pre-roll) and so are those
    that start after the written video ends. Payload bytes are never changed when the output container
    can hold the codec; otherwise the track is re-encoded to AAC with a warning.
    """

    def __init__(
        self, source: Path, output: av.container.OutputContainer, fmt: str, target: Path, shift_s: float
    ) -> None:
        self._input = av.open(str(source), mode="r")
        try:
            self._in = self._input.streams.audio[0]
            self._offset_s = _video_start_s(self._input) + Fraction(shift_s)
            self._fmt = fmt
            self._copy = can_stream_copy(fmt, self._in)
            self._out = self._add_output_stream(output, target)
        except BaseException:
            self._input.close()
            raise
        self._output = output
        self._packets = self._input.demux(self._in)
        self._pending: av.Packet | None = None
        self._preroll: av.Packet | None = None
        self._done = False

    def _add_output_stream(self, output: av.container.OutputContainer, target: Path) -> av.AudioStream:
        """A stream-copy stream, or an AAC encoder (with a warning) when the container cannot hold the codec."""
        if self._copy:
            return output.add_stream_from_template(self._in)
        name = self._in.codec_context.name
        encoder = _REENCODE.get(self._fmt, "aac")
        # stacklevel: warn -> here -> AudioPump.__init__ -> VideoWriter.__init__ -> caller
        warnings.warn(
            f"'{target.name}' cannot hold {name} audio; re-encoding the audio to {_LABEL.get(encoder, encoder)}",
            RuntimeWarning, stacklevel=5,
        )
        rates = av.codec.Codec(encoder, "w").audio_rates
        rate = self._in.codec_context.sample_rate
        rate = rate if not rates or rate in rates else max(rates)
        stream = output.add_stream(encoder, rate=rate)
        stream.layout = self._in.codec_context.layout
        self._resampler = av.AudioResampler(format=stream.codec_context.format, layout=stream.layout, rate=rate)
        return stream

    def _next_packet(self) -> av.Packet | None:
        """The next audio packet with timestamps, moved onto the output clock; None at the end."""
        if self._pending is not None:
            packet, self._pending = self._pending, None
            return packet
        for packet in self._packets:
            if packet.size > 0 and packet.pts is not None and packet.dts is not None:
                offset = round(self._offset_s / packet.time_base)
                packet.pts -= offset
                packet.dts -= offset
                return packet
        return None

    def pump(self, until_s: float, end_s: float = math.inf) -> None:
        """Write the audio packets that start before `until_s` (and before the video's end `end_s`)."""
        while not self._done:
            packet = self._next_packet()
            if packet is None or float(packet.pts * packet.time_base) >= end_s:
                self._done = True
                return
            if float(packet.pts * packet.time_base) > until_s:
                self._pending = packet
                return
            if float((packet.pts + (packet.duration or 0)) * packet.time_base) <= 0:
                self._preroll = packet
                continue
            if self._preroll is not None:
                self._write(self._preroll)
                self._preroll = None
            self._write(packet)

    def _write(self, packet: av.Packet) -> None:
        """Mux one packet untouched, or decode and re-encode it."""
        if self._copy:
            packet.stream = self._out
            self._output.mux(packet)
            return
        for frame in self._in.codec_context.decode(packet):
            self._encode(frame)

    def _encode(self, frame: av.AudioFrame | None) -> None:
        """Resample one decoded frame (None: flush) to the encoder's format and rate, encode and mux it."""
        for resampled in self._resampler.resample(frame):
            resampled.pts = None  # the encoder numbers its own samples
            self._output.mux(self._out.encode(resampled))

    def finish(self, end_s: float) -> None:
        """Write the remaining audio up to the end of the video and flush the AAC encoder."""
        self.pump(math.inf, end_s)
        if not self._copy:
            self._encode(None)
            self._output.mux(self._out.encode(None))

    def close(self) -> None:
        """Close the source file."""
        self._input.close()


def _video_start_s(container: av.container.InputContainer) -> Fraction:
    """Source time of the first video frame (0 for audio-only files)."""
    try:
        video = _video_stream(container, Path(container.name))
    except UserError:  # audio-only source (possibly with a cover image)
        return Fraction(0)
    return Fraction(video.start_time * video.time_base) if video.start_time is not None else Fraction(0)


def can_stream_copy(fmt: str, stream: av.AudioStream) -> bool:
    """Whether muxer `fmt` accepts `stream`'s codec as is (tries writing a header in memory)."""
    try:
        with av.open(io.BytesIO(), mode="w", format=fmt) as trial:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
    except (av.FFmpegError, ValueError):
        return False
    return True


def has_audio(path: Path) -> bool:
    """Whether `path` can be opened and has an audio stream."""
    with _open_input(path) as container:
        return bool(container.streams.audio)
