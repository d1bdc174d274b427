"""Streaming video I/O: probe, iter_frames, processing_size, VideoWriter, check_output_path, make_clip."""

from __future__ import annotations

import importlib.util
import itertools
import os
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from longedit import video
from longedit.errors import UserError
from longedit.samples import make_clip, make_tone
from longedit.video import VideoWriter, check_output_path, iter_frames, probe, processing_size


def audio_packets(path: Path) -> list[bytes]:
    """Payload bytes of every audio packet, in file order."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def rewrite(source: Path, output: Path, **kwargs: object) -> video.VideoInfo:
    """Decode `source` frame by frame into a VideoWriter with its timestamps and audio; probe the result."""
    info = probe(source)
    with VideoWriter(output, info.width, info.height, info.fps, timestamps=info.timestamps, **kwargs) as writer:
        for frame in iter_frames(source):
            writer.write(frame)
    assert writer.frames_written == info.frames
    return probe(output)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_one_line(error: pytest.ExceptionInfo[UserError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


# ----------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("suffix", "fps", "audio"),
    [(".mp4", Fraction(30000, 1001), True), (".mkv", Fraction(24), False), (".mov", Fraction(25), True)],
)
def test_round_trip_keeps_count_rate_duration_and_audio_bytes(clip_factory, tmp_path, suffix, fps, audio):
    clip = clip_factory(f"src{suffix}", frames=40, width=96, height=64, fps=fps, audio=audio)
    source = probe(clip.path)
    assert (source.width, source.height, source.frames, source.fps) == (96, 64, 40, fps)
    assert source.has_audio is audio and source.codec == "h264" and not source.is_vfr
    assert source.duration_s == pytest.approx(40 / fps)

    out = rewrite(clip.path, tmp_path / f"out{suffix}", audio_source=clip.path)

    assert (out.width, out.height, out.frames, out.fps) == (96, 64, 40, fps)
    assert out.duration_s == pytest.approx(source.duration_s, abs=1e-3)
    assert out.has_audio is audio
    if audio:
        assert audio_packets(out.path) == audio_packets(clip.path)  # stream copy: payload untouched
    for a, b in zip(iter_frames(clip.path), iter_frames(out.path), strict=True):
        assert mean_abs_diff(a, b) < 3.0
    assert sorted(os.listdir(tmp_path)) == sorted([f"src{suffix}", f"out{suffix}"])  # no temp file left


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # .webm is VP9 + Opus: tests/test_media_outputs.py
def test_constant_rate_writer_with_audio_only_source(clip_factory, tmp_path, suffix):
    clip = clip_factory(frames=12, width=64, height=64)
    tone = make_tone(tmp_path / "tone.mkv", duration_s=1.0)
    with VideoWriter(tmp_path / f"out{suffix}", 64, 64, Fraction(30000, 1001), audio_source=tone) as writer:
        for frame in iter_frames(clip.path):
            writer.write(frame)
    out = probe(tmp_path / f"out{suffix}")
    assert (out.frames, out.fps, out.has_audio) == (12, Fraction(30000, 1001), True)
    assert out.timestamps[5] == pytest.approx(5 * 1001 / 30000, abs=1e-3)
    copied = audio_packets(out.path)
    assert copied == audio_packets(tone)[: len(copied)] and len(copied) < len(audio_packets(tone))  # cut at 0.4 s


@pytest.mark.parametrize("size", [(64, 48), (1280, 720)])
def test_colours_survive_encode_and_decode(tmp_path, size):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:, : size[0] // 2] = (200, 100, 30)
    image[:, size[0] // 2 :] = (20, 160, 220)
    with VideoWriter(tmp_path / "c.mp4", *size, Fraction(24)) as writer:
        writer.write(image)
    decoded = next(iter_frames(tmp_path / "c.mp4"))
    assert np.abs(decoded[4:-4, 4 : size[0] // 2 - 4].astype(int) - (200, 100, 30)).max() <= 4
    assert np.abs(decoded[4:-4, size[0] // 2 + 4 : -4].astype(int) - (20, 160, 220)).max() <= 4


def test_vfr_timestamps_survive_round_trip(clip_factory, tmp_path):
    clip = clip_factory("vfr.mp4", frames=21, width=64, height=64, vfr=True, audio=True)
    source = probe(clip.path)
    gaps = np.diff(source.timestamps)
    assert source.is_vfr
    assert gaps[0::2] == pytest.approx(1 / 24, abs=1e-3) and gaps[1::2] == pytest.approx(2 / 24, abs=1e-3)

    for suffix in (".mp4", ".mkv"):
        out = rewrite(clip.path, tmp_path / f"out{suffix}", audio_source=clip.path)
        assert out.frames == 21 and out.is_vfr and out.has_audio
        assert np.abs(np.subtract(out.timestamps, source.timestamps)).max() <= 1e-3
        assert out.fps == pytest.approx(float(source.fps), rel=1e-3)
        assert out.duration_s == pytest.approx(source.duration_s, abs=2 / 24)


def test_partial_write_trims_audio_to_the_written_frames(clip_factory, tmp_path):
    clip = clip_factory(frames=48, width=64, height=64, audio=True)
    info = probe(clip.path)
    with VideoWriter(tmp_path / "part.mp4", 64, 64, info.fps, timestamps=info.timestamps[24:], audio_source=clip.path) as w:
        for frame in iter_frames(clip.path, start=24):
            w.write(frame)
    out = probe(tmp_path / "part.mp4")
    assert out.frames == 24 and out.timestamps[0] == 0.0 and out.has_audio
    with av.open(str(out.path)) as container:
        audio = container.streams.audio[0]
        packets = [p for p in container.demux(audio) if p.size]
        end = float((packets[-1].pts + packets[-1].duration) * audio.time_base)
    assert out.duration_s - 0.05 <= end <= out.duration_s + 0.05
    assert set(map(bytes, packets)) <= set(audio_packets(clip.path))  # a subset, still untouched


def test_audio_codec_the_container_cannot_hold_is_reencoded_with_a_warning(clip_factory, tmp_path):
    opus = tmp_path / "opus.mkv"
    with av.open(str(opus), "w") as container:  # Opus cannot go into .mov
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        for start in range(0, 48000, 960):
            samples = np.sin(np.arange(start, start + 960, dtype=np.float32) * 0.05)[None] * 0.2
            frame = av.AudioFrame.from_ndarray(samples.astype(np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    clip = clip_factory(frames=12, width=64, height=64)
    with pytest.warns(RuntimeWarning, match="re-encoding the audio to AAC"):
        out = rewrite(clip.path, tmp_path / "out.mov", audio_source=opus)
    with av.open(str(out.path)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"


# ----------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("size", "short_side", "expected"),
    [
        ((640, 272), 512, (1216, 512)),
        ((176, 144), 512, (640, 512)),
        ((1280, 720), 512, (896, 512)),
        ((720, 1280), 512, (512, 896)),
        ((175, 143), 512, (640, 512)),
        ((512, 512), 512, (512, 512)),
        ((1280, 720), 100, (256, 128)),
        ((64, 2000), 10, (64, 1984)),
    ],
)
def test_processing_size_is_multiple_of_64_and_keeps_aspect(size, short_side, expected):
    width, height = processing_size(*size, short_side=short_side)
    assert (width, height) == expected
    assert width % 64 == 0 and height % 64 == 0 and min(width, height) >= 64
    assert abs(width / height - size[0] / size[1]) <= 64 / min(width, height)


@pytest.mark.parametrize("source_size", [(175, 143), (640, 272), (176, 144), (1280, 720)])
def test_odd_and_common_sizes_through_resize_and_writer(tmp_path, source_size):
    width, height = source_size
    clip = make_clip(tmp_path / "src.mp4", frames=3, width=width, height=height)
    info = probe(clip.path)
    assert (info.width, info.height, info.frames) == (width, height, 3)
    assert next(iter_frames(clip.path)).shape == (height, width, 3)

    target = processing_size(width, height, short_side=128)
    frames = list(iter_frames(clip.path, size=target))
    assert all(f.shape == (target[1], target[0], 3) for f in frames)
    with VideoWriter(tmp_path / "sd.mp4", *target, info.fps) as writer:
        for frame in frames:
            writer.write(frame)
    assert (probe(tmp_path / "sd.mp4").width, probe(tmp_path / "sd.mp4").height) == target

    original = list(iter_frames(clip.path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer = VideoWriter(tmp_path / "same.mp4", width, height, info.fps, timestamps=info.timestamps)
    cropped = [str(w.message) for w in caught if "needs even sizes" in str(w.message)]
    assert cropped == ([] if width % 2 == 0 and height % 2 == 0 else [
        f"'same.mp4': cropped {width}x{height} -> {width - width % 2}x{height - height % 2} (H.264 4:2:0 needs even sizes)"
    ])
    with writer:
        for frame in original:
            writer.write(frame)
    out = probe(tmp_path / "same.mp4")
    assert (out.width, out.height) == (width - width % 2, height - height % 2)  # odd side: last column/row cropped
    decoded = next(iter_frames(out.path))
    assert mean_abs_diff(decoded, original[0][: out.height, : out.width]) < 3.0


# ----------------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(("name", "vfr"), [("cfr.mp4", False), ("cfr.mkv", False), ("vfr.mp4", True)])
def test_start_end_slices_match_full_decode(clip_factory, name, vfr):
    clip = clip_factory(name, frames=100, width=64, height=48, vfr=vfr)  # a keyframe every 24 frames
    full = list(iter_frames(clip.path))
    assert len(full) == probe(clip.path).frames == 100
    for start, end in [(0, 3), (5, 9), (24, 30), (30, 31), (47, 60), (95, 100), (98, None), (60, 200), (10, 10)]:
        part = list(iter_frames(clip.path, start=start, end=end))
        expected = full[start:end]
        assert len(part) == len(expected), (start, end)
        assert all(np.array_equal(a, b) for a, b in zip(part, expected)), (start, end)
    assert list(iter_frames(clip.path, start=100)) == [] and list(iter_frames(clip.path, start=150)) == []


def test_raw_stream_without_timestamps_is_counted_by_decoding(tmp_path):
    raw = tmp_path / "raw.h264"  # Annex B elementary stream: no pts, cannot seek
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe(raw)
    assert (info.frames, info.fps, info.is_vfr) == (30, 25, False)
    assert info.completeness_note == "'raw.h264': its container (h264) declares no length, so a file cut short (e.g. an unfinished copy) cannot be detected"
    full = list(iter_frames(raw))
    part = list(iter_frames(raw, start=10, end=20))
    assert len(full) == 30 and all(np.array_equal(a, b) for a, b in zip(full[10:20], part, strict=True))


def test_resize_gives_requested_shape(clip_factory):
    clip = clip_factory(frames=2, width=96, height=64)
    assert [f.shape for f in iter_frames(clip.path, size=(40, 30))] == [(30, 40, 3)] * 2
    frame = next(iter_frames(clip.path, size=(192, 128)))
    assert frame.dtype == np.uint8 and frame.shape == (128, 192, 3)


class _CountingContainer:
    """Wraps an input container and counts the packets demuxed and frames decoded through it."""

    def __init__(self, container, counts: dict[str, int]) -> None:
        self._container, self._counts = container, counts

    def __getattr__(self, name: str):
        return getattr(self._container, name)

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            self._counts["packets"] += 1
            yield packet

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            self._counts["frames"] += 1
            yield frame


def test_frames_are_decoded_lazily(long_clip, monkeypatch):
    counts = {"packets": 0, "frames": 0, "opened": 0}
    real_open = av.open

    def counting_open(*args, **kwargs):
        counts["opened"] += 1
        return _CountingContainer(real_open(*args, **kwargs), counts)

    monkeypatch.setattr(av, "open", counting_open)
    frames = iter_frames(long_clip.path)
    assert counts["opened"] == 0  # nothing is opened or decoded before the first next()
    first = list(itertools.islice(frames, 3))
    assert len(first) == 3 and counts["opened"] == 1
    assert counts["frames"] < 50 and counts["packets"] < 50  # of 1,000
    frames.close()

    counts.update(packets=0, frames=0)
    assert len(list(itertools.islice(iter_frames(long_clip.path, start=900), 2))) == 2
    assert counts["frames"] < 100  # seeks to the keyframe before 900 instead of decoding 900 frames


def test_make_clip_is_fast_and_boxes_follow_the_object(long_clip, tmp_path):
    info = probe(long_clip.path)
    assert (info.frames, info.fps, info.width) == (1000, 24, 64)

    clip = make_clip(tmp_path / "box.mp4", frames=10, width=128, height=96, seed=3)
    assert len(clip.boxes) == 10 and clip.boxes[-1][0] > clip.boxes[0][0]  # moves left to right
    for (x0, y0, x1, y1), frame in zip(clip.boxes, iter_frames(clip.path), strict=True):
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96
        assert (x1 - x0, y1 - y0) == (round(128 * 0.35), round(96 * 0.35))
        inside = frame[y0 + 8 : y1 - 8, x0 + 8 : x1 - 8].reshape(-1, 3).astype(float)
        assert inside.std(axis=0).max() < 4  # solid colour inside the box
        outside = np.ones(frame.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.abs(frame[outside].mean(0) - inside.mean(0)).max() > 30  # stands out from the background


# ----------------------------------------------------------------------------------------- bad input


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError) as error:
        probe(tmp_path / "nope.mp4")
    assert_one_line(error, "nope.mp4", "does not exist", "check the path")
    with pytest.raises(UserError) as error:
        iter_frames(tmp_path / "nope.mp4")
    assert_one_line(error, "does not exist")
    with pytest.raises(UserError) as error:
        probe(tmp_path)
    assert_one_line(error, "directory")


def test_corrupt_truncated_and_empty_files(long_clip, tmp_path):
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    data = long_clip.path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    (tmp_path / "empty.mkv").write_bytes(b"")
    for name in ("random.mp4", "cut.mp4", "empty.mkv"):
        with pytest.raises(UserError) as error:
            probe(tmp_path / name)
        assert_one_line(error, name, "not a readable video file")
        with pytest.raises(UserError):
            next(iter_frames(tmp_path / name))


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm"])
def test_a_file_cut_at_half_its_bytes_is_refused_not_read_as_a_short_video(clip_factory, tmp_path, suffix):
    """Issue 22: a half-copied file whose header survived (moov first, or Matroska) opened and decoded its
    first part: it was edited to 17 of 80 frames with exit 0. Its header or index declares more."""
    source = clip_factory("src.mkv", frames=48, width=64, height=48)
    whole = rewrite(source.path, tmp_path / f"whole{suffix}")  # the writer puts the header first (+faststart)
    assert (whole.frames, whole.completeness_note) == (48, None)
    data = whole.path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as error:
        probe(cut)
    assert_one_line(error, f"video '{cut}' is cut short", "frames are there", "copy or download it again")
    if suffix in (".mp4", ".mov"):
        assert "its index points past the end of the file" in str(error.value) and " of 48 frames" in str(error.value)
    else:
        assert "its header declares 2.00 s but the file ends at" in str(error.value)


def test_audio_that_outlasts_the_video_is_not_taken_for_a_cut(clip_factory, tmp_path):
    clip = clip_factory("v.mkv", frames=12, width=64, height=48)
    tone = make_tone(tmp_path / "tone.mkv", duration_s=2.0)
    with av.open(str(clip.path)) as video_in, av.open(str(tone), "r") as audio_in, av.open(str(tmp_path / "long.mkv"), "w") as out:
        video = out.add_stream_from_template(video_in.streams.video[0])
        audio = out.add_stream_from_template(audio_in.streams.audio[0])
        for packet in video_in.demux(video_in.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
        for packet in audio_in.demux(audio_in.streams.audio[0]):
            if packet.size:
                packet.stream = audio
                out.mux(packet)
    info = probe(tmp_path / "long.mkv")
    assert info.frames == 12 and info.completeness_note is None


def test_strict_decoding_refuses_a_file_that_decodes_fewer_frames_than_promised(clip_factory):
    clip = clip_factory(frames=6, width=64, height=48)
    assert len(list(iter_frames(clip.path, end=6, strict=True))) == 6
    assert len(list(iter_frames(clip.path, end=9))) == 6  # not strict: `end` is only a bound
    with pytest.raises(UserError) as error:
        list(iter_frames(clip.path, end=9, strict=True))
    assert_one_line(error, "is damaged: only 6 of its 9 frames decode")


def test_audio_only_and_zero_frame_files(tmp_path):
    make_tone(tmp_path / "tone.mp4", duration_s=0.5)
    with pytest.raises(UserError) as error:
        probe(tmp_path / "tone.mp4")
    assert_one_line(error, "no video stream", "only audio")

    with av.open(str(tmp_path / "zero.mov"), "w") as container:  # header with a video track but no frame
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(UserError) as error:
        probe(tmp_path / "zero.mov")
    assert_one_line(error, "zero.mov")


def test_backend_and_range_errors(clip_factory):
    clip = clip_factory(frames=2, width=64, height=64)
    with pytest.raises(UserError, match="unknown video backend"):
        iter_frames(clip.path, backend="opencv")
    with pytest.raises(UserError, match="start"):
        iter_frames(clip.path, start=5, end=2)
    if importlib.util.find_spec("decord") is None:
        with pytest.raises(UserError, match="decord is not installed"):
            iter_frames(clip.path, backend="decord")


def test_writer_rejects_bad_destinations(clip_factory, tmp_path):
    clip = clip_factory(frames=2, width=64, height=64, audio=True)
    before = clip.path.read_bytes()
    with pytest.raises(UserError) as error:
        VideoWriter(tmp_path / "missing" / "out.mp4", 64, 64, Fraction(24))
    assert_one_line(error, "does not exist")
    with pytest.raises(UserError, match="unsupported file type"):
        VideoWriter(tmp_path / "out.avi", 64, 64, Fraction(24))
    with pytest.raises(UserError, match="same file as the audio source"):
        VideoWriter(clip.path, 64, 64, Fraction(24), audio_source=clip.path)
    with pytest.raises(UserError, match="does not exist"):
        VideoWriter(tmp_path / "out.mp4", 64, 64, Fraction(24), audio_source=tmp_path / "gone.mp4")
    assert clip.path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_check_output_path(clip_factory, tmp_path):
    clip = clip_factory(frames=2, width=64, height=64)
    os.link(clip.path, tmp_path / "hardlink.mp4")
    for same in (clip.path, tmp_path / "." / "clip.mp4", tmp_path / "hardlink.mp4"):
        with pytest.raises(UserError) as error:
            check_output_path(same, clip.path)
        assert_one_line(error, "is the input video")
    with pytest.raises(UserError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.mp4", clip.path)
    with pytest.raises(UserError, match="unsupported file type"):
        check_output_path(tmp_path / "out.gif", clip.path)
    check_output_path(tmp_path / "out.mkv", clip.path)  # fine: new file, existing folder


def test_exception_inside_writer_leaves_no_file(tmp_path):
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "out.mp4", 64, 64, Fraction(24)) as writer:
            writer.write(frame)
            assert any(name.endswith(".part") for name in os.listdir(tmp_path))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []

    (tmp_path / "keep.mp4").write_bytes(b"previous result")
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(tmp_path / "keep.mp4", 64, 64, Fraction(24)) as writer:
            writer.write(frame[:32])
    assert (tmp_path / "keep.mp4").read_bytes() == b"previous result"  # never half-overwritten

    writer = VideoWriter(tmp_path / "aborted.mp4", 64, 64, Fraction(24))
    writer.write(frame)
    writer.abort()
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", 64, 64, Fraction(24)):
            pass
    assert os.listdir(tmp_path) == ["keep.mp4"]


def test_writer_rejects_tiny_frames_and_bad_rates(tmp_path):
    with pytest.raises(UserError) as error:
        VideoWriter(tmp_path / "x.mp4", 1, 1, Fraction(24))
    assert_one_line(error, "at least 2x2")
    with pytest.raises(UserError, match="positive fps"):
        VideoWriter(tmp_path / "x.mp4", 64, 64, Fraction(0))
    assert os.listdir(tmp_path) == []


def test_writer_is_deterministic(tmp_path):
    """Identical frames give identical files: resumed jobs are compared byte for byte downstream."""
    rng = np.random.default_rng(0)
    frames = [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(5)]
    outputs = []
    for name in ("a.mp4", "b.mp4"):
        with VideoWriter(tmp_path / name, 64, 48, Fraction(24)) as writer:
            for frame in frames:
                writer.write(frame)
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
