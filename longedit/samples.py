"""Synthetic sample clips: a slowly panning textured background and one solid object moving across it.

Used by `longedit demo` (a built-in input that needs no download) and by the tests, which also use the
known per-frame object box as ground truth for masks and tracking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from longedit.errors import UserError
from longedit.video import add_video_stream, container_format, rgb_to_av_frame, time_base_for

_AUDIO_RATE = 44100
_AUDIO_CHUNK = 1024  # samples per AAC frame
_TONE_HZ = 440.0


@dataclass
class SampleClip:
    """A generated clip and the moving object's box (x0, y0, x1, y1; x1/y1 exclusive) in every frame."""

    path: Path
    boxes: list[tuple[int, int, int, int]]


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth muted texture: colour gradients plus a few low-frequency waves, uint8 HxWx3."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    image = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        a, b = rng.uniform(-40, 40, size=2)
        image[..., channel] = 120 + a * (u - 0.5) + b * (v - 0.5)
    for _ in range(3):
        angle, cycles, phase = rng.uniform(0, math.pi), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * cycles * (u * math.cos(angle) + v * math.sin(angle)) + phase)
        image += wave[..., None] * rng.uniform(-18, 18, size=3).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _rounded_mask(width: int, height: int) -> np.ndarray:
    """Boolean mask of a rounded rectangle filling a width x height box (so the box is tight)."""
    radius = max(1.0, 0.25 * min(width, height))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    dx = np.maximum(np.maximum(radius - x, x - (width - radius)), 0)
    dy = np.maximum(np.maximum(radius - y, y - (height - radius)), 0)
    return dx * dx + dy * dy <= radius * radius


def _object_color(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour that stands out from the muted background."""
    palette = np.array([[230, 40, 40], [40, 200, 60], [40, 80, 230], [240, 200, 30], [200, 40, 200]], np.uint8)
    return palette[rng.integers(len(palette))]


def _boxes(frames: int, width: int, height: int, box_w: int, box_h: int) -> list[tuple[int, int, int, int]]:
    """Eased left-to-right path with a gentle vertical wave, always fully inside the frame."""
    boxes = []
    for i in range(frames):
        s = i / (frames - 1) if frames > 1 else 0.0
        progress = 0.5 - 0.5 * math.cos(math.pi * s)
        x0 = round(progress * (width - box_w))
        y0 = round((height - box_h) * (0.5 + 0.35 * math.sin(2 * math.pi * s)))
        boxes.append((x0, y0, x0 + box_w, y0 + box_h))
    return boxes


def _frame_ticks(frames: int, fps: Fraction, vfr: bool, time_base: Fraction) -> list[int]:
    """pts of every frame: 1/fps apart, or alternating 1/fps and 2/fps gaps when `vfr`."""
    step = round(1 / (fps * time_base))
    pts, t = [], 0
    for i in range(frames):
        pts.append(t)
        t += step * (2 if vfr and i % 2 else 1)
    return pts


class _Tone:
    """A 440 Hz sine encoded to AAC chunk by chunk, so audio interleaves with the video."""

    def __init__(self, container: av.container.OutputContainer, total_s: float) -> None:
        self._stream = container.add_stream("aac", rate=_AUDIO_RATE)
        self._stream.layout = "mono"
        self._container = container
        self._total = round(total_s * _AUDIO_RATE)
        self._done = 0

    def _chunks(self, until: int) -> Iterator[av.AudioFrame]:
        """AudioFrames covering samples [done, until)."""
        while self._done < min(until, self._total):
            n = min(_AUDIO_CHUNK, self._total - self._done)
            t = (np.arange(self._done, self._done + n) / _AUDIO_RATE).astype(np.float64)
            samples = (0.2 * np.sin(2 * math.pi * _TONE_HZ * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = _AUDIO_RATE, self._done, Fraction(1, _AUDIO_RATE)
            self._done += n
            yield frame

    def encode_until(self, seconds: float) -> None:
        """Encode and mux the tone up to `seconds`."""
        until = self._total if math.isinf(seconds) else math.ceil(seconds * _AUDIO_RATE)
        for frame in self._chunks(until):
            self._container.mux(self._stream.encode(frame))

    def finish(self) -> None:
        """Encode the rest of the tone and flush the encoder."""
        self.encode_until(math.inf)
        self._container.mux(self._stream.encode(None))


def _check_args(frames: int, width: int, height: int, fps: Fraction, object_box_size: float) -> None:
    """UserError for sizes or rates no clip can have."""
    if frames < 1 or width < 2 or height < 2:
        raise UserError(f"cannot make a {frames}-frame {width}x{height} clip", "use at least 1 frame of 2x2 pixels")
    if fps <= 0 or not 0 < object_box_size <= 1:
        raise UserError(f"bad sample settings fps={fps}, object_box_size={object_box_size}", "use fps > 0 and 0 < size <= 1")


def _pix_fmt(width: int, height: int) -> str:
    """yuv420p, or yuv444p for odd sizes (4:2:0 needs even ones), so odd-sized test inputs can exist."""
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


def make_clip(
    path: str | Path,
    frames: int = 24,
    width: int = 256,
    height: int = 256,
    fps: Fraction = Fraction(24),
    audio: bool = False,
    vfr: bool = False,
    object_box_size: float = 0.35,
    seed: int = 0,
) -> SampleClip:
    """Write a synthetic H.264 clip (.mp4/.mov/.mkv) and return its path and per-frame object boxes.

    The object is a solid rounded rectangle of `object_box_size` times the frame size; the background
    pans slowly. `audio` adds an AAC sine tone as long as the video; `vfr` alternates 1/fps and 2/fps gaps.
    """
    path, fps = Path(path), Fraction(fps)
    _check_args(frames, width, height, fps, object_box_size)
    rng = np.random.default_rng(seed)
    pan_x, pan_y = max(4, width // 4), max(2, height // 8)
    texture = _background(width + pan_x, height + pan_y, rng)
    box_w, box_h = max(2, round(width * object_box_size)), max(2, round(height * object_box_size))
    mask, color = _rounded_mask(box_w, box_h), _object_color(rng)
    boxes = _boxes(frames, width, height, box_w, box_h)
    time_base = time_base_for(fps)
    ticks = _frame_ticks(frames, fps, vfr, time_base)
    try:
        with av.open(str(path), mode="w", format=container_format(path)) as container:
            pix_fmt = _pix_fmt(width, height)
            options = {"crf": "18", "preset": "veryfast", "g": str(max(1, round(fps)))}  # keyframe each second
            stream = add_video_stream(container, "libx264", (width, height), fps, pix_fmt, options)
            tone = _Tone(container, float((ticks[-1] + round(1 / (fps * time_base))) * time_base)) if audio else None
            for i, (x0, y0, x1, y1) in enumerate(boxes):
                s = i / (frames - 1) if frames > 1 else 0.0
                ox, oy = round(s * pan_x), round(s * pan_y)
                image = texture[oy : oy + height, ox : ox + width].copy()
                image[y0:y1, x0:x1][mask] = color
                frame = rgb_to_av_frame(image, pix_fmt, ticks[i], time_base)
                if tone is not None:
                    tone.encode_until(float(ticks[i] * time_base))
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
            if tone is not None:
                tone.finish()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return SampleClip(path=path, boxes=boxes)


def make_tone(path: str | Path, duration_s: float = 1.0) -> Path:
    """Write an audio-only AAC file (.mp4/.m4a-style container from the suffix) holding a sine tone."""
    path = Path(path)
    with av.open(str(path), mode="w", format=container_format(path)) as container:
        tone = _Tone(container, duration_s)
        tone.finish()
    return path
