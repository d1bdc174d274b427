"""Output codecs (`--codec`, `--pix-fmt`, `--crf`), PNG frame folders and their one-line errors, probed with PyAV."""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from longedit.cli import main
from longedit.config import EditJob
from longedit.errors import UserError
from longedit.samples import make_clip
from longedit.video import codecs, iter_frames, open_writer, probe
from longedit.video.frame_folder import FrameFolderWriter


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """12 frames, 64x48, 24 fps, with an AAC tone."""
    return make_clip(tmp_path_factory.mktemp("media") / "src.mp4", frames=12, width=64, height=48, audio=True).path


def write_all(source: Path, output: Path, **format_args) -> None:
    info = probe(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # webm: "re-encoding the audio to Opus"
        with open_writer(output, info.width, info.height, info.fps, timestamps=info.timestamps, audio_source=source,
                         **format_args) as writer:
            for frame in iter_frames(source):
                writer.write(frame)


def streams(path: Path) -> tuple[str, str, int, list[str]]:
    """(video codec, pixel format, decoded frame count, audio codecs) as PyAV reads the file."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = [s.codec_context.name for s in container.streams.audio]
        frames = sum(1 for _ in container.decode(video))
        return video.codec_context.name, video.codec_context.pix_fmt, frames, audio


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("out.mp4", {}, ("h264", "yuv420p", "aac")),
        ("out.mp4", {"codec": "h264", "pix_fmt": "yuv420p10le", "crf": 10}, ("h264", "yuv420p10le", "aac")),
        ("out.mkv", {"codec": "h265", "pix_fmt": "yuv420p10le"}, ("hevc", "yuv420p10le", "aac")),
        ("out.mov", {"codec": "prores"}, ("prores", "yuv422p10le", "aac")),
        ("out.mov", {"codec": "prores", "pix_fmt": "yuv444p10le"}, ("prores", "yuv444p", "aac")),  # decoded as 444p12le
        ("out.mkv", {"codec": "ffv1"}, ("ffv1", "yuv444p", "aac")),
        ("out.webm", {}, ("vp9", "yuv420p", "opus")),
    ],
)
def test_each_codec_writes_what_it_says(source, tmp_path, name, args, expected):
    output = tmp_path / name
    write_all(source, output, **args)
    codec, pix_fmt, frames, audio = streams(output)
    assert codec == expected[0] and pix_fmt.startswith(expected[1]) and frames == 12 and audio == [expected[2]]
    written, original = probe(output), probe(source)
    assert written.timestamps == pytest.approx(original.timestamps, abs=1e-3)  # timing kept
    assert np.abs(next(iter_frames(output)).astype(int) - next(iter_frames(source)).astype(int)).mean() < 6
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left


def test_png_writes_a_numbered_folder_with_the_audio_beside(source, tmp_path):
    output = tmp_path / "frames"
    write_all(source, output, codec="png")
    names = sorted(p.name for p in output.iterdir())
    assert names == [f"{i:06d}.png" for i in range(12)] + ["audio.m4a", "timing.json"]
    first = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(output / "000000.png"))
    assert first.shape == (48, 64, 3) and np.abs(first.astype(int) - next(iter_frames(source)).astype(int)).max() == 0
    timing = json.loads((output / "timing.json").read_text())
    assert timing["fps"] == "24/1" and timing["timestamps_s"][1] == pytest.approx(1 / 24)
    with av.open(str(output / "audio.m4a")) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        assert float(container.duration / 1e6) == pytest.approx(0.5, abs=0.05)  # the frames' span
    write_all(source, output, codec="png")  # a second write replaces our own folder
    assert len(list(output.glob("*.png"))) == 12 and [p.name for p in tmp_path.iterdir()] == ["frames"]


def test_png_refuses_a_folder_with_other_files_and_cleans_up_on_failure(source, tmp_path):
    output = tmp_path / "frames"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        FrameFolderWriter(output, 64, 48, Fraction(24))
    writer = FrameFolderWriter(tmp_path / "other", 64, 48, Fraction(24))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


@pytest.mark.parametrize(
    ("source_fmt", "args", "noted"),
    [("yuv444p", {}, "--pix-fmt yuv444p"), ("yuv420p10le", {}, "--pix-fmt yuv420p10le"),
     ("yuv444p", {"pix_fmt": "yuv444p"}, None), ("yuv420p", {}, None), ("yuv444p10le", {"codec": "prores"}, "--pix-fmt yuv444p10le")],
)
def test_a_richer_source_written_8_bit_420_gets_a_note(tmp_path, source_fmt, args, noted):
    suffix = ".mov" if args.get("codec") == "prores" else ".mp4"
    note = codecs.pixel_format_note(source_fmt, codecs.output_format(tmp_path / f"o{suffix}", **args))
    assert (note is None) if noted is None else (noted in note and source_fmt in note)


def _yuv444_clip(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv444p"
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * index, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame.reformat(format="yuv444p")))
        container.mux(stream.encode(None))
    return path


def test_the_note_reaches_the_job_warnings(tmp_path):
    from longedit.engine import prepare

    clip = _yuv444_clip(tmp_path / "full.mp4")
    job = dict(input=clip, source_prompt="a red square", prompt="a blue square", model="tiny", size=64)
    assert any("--pix-fmt yuv444p" in n for n in prepare(EditJob(output=tmp_path / "a.mp4", **job)).notices)
    assert not any("pix-fmt" in n for n in prepare(EditJob(output=tmp_path / "b.mp4", pix_fmt="yuv444p", **job)).notices)


def edit_args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--source-prompt", "a red square",
            "--prompt", "a yellow duck", "--steps", "1", "--size", "64", "--object", "duck=5,5,30,30", *extra]


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("out.mp4", ["--codec", "prores"], "--codec prores cannot be written to a '.mp4' file"),
        ("out.webm", ["--codec", "h264"], "--codec h264 cannot be written to a '.webm' file"),
        ("out.mov", ["--codec", "prores", "--crf", "10"], "--crf does not apply to --codec prores"),
        ("out.mp4", ["--crf", "60"], "--crf 60 is outside 0..51"),
        ("out.mp4", ["--pix-fmt", "yuv411p"], "cannot write --pix-fmt yuv411p"),
        ("out.mp4", ["--codec", "png"], "writes a folder of numbered frames"),
        ("out.mp4", ["--codec", "theora"], "codec"),
    ],
)
def test_bad_output_settings_are_one_line_exit_2_nothing_written(source, tmp_path, capsys, name, extra, message):
    code = main(edit_args(source, tmp_path / name, *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_encoder_is_refused_before_any_work(source, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(codecs, "has_encoder", lambda name: name != "prores_ks")
    code = main(edit_args(source, tmp_path / "out.mov", "--codec", "prores"))
    err = capsys.readouterr().err
    assert code == 2 and "needs the FFmpeg encoder 'prores_ks', which this PyAV build lacks" in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_png_output_of_an_edit(source, tmp_path, capsys):
    out = tmp_path / "edited"
    assert main(edit_args(source, out, "--codec", "png", "--report", str(tmp_path / "r.json"))) == 0
    assert sorted(p.name for p in out.iterdir())[-3:] == ["000011.png", "audio.m4a", "timing.json"]
    assert json.loads((tmp_path / "r.json").read_text())["output_format"] == "png rgb24 frames"
    assert "png rgb24 frames" in capsys.readouterr().out


def test_the_disk_check_counts_bigger_codecs_bigger(source, tmp_path):
    from longedit.engine import disk_needs, prepare

    def needed(output: str, **args) -> int:
        job = EditJob(input=source, output=tmp_path / output, source_prompt="a", prompt="b", model="tiny", size=64, **args)
        return disk_needs(job, prepare(job), None)[0].nbytes

    h264, prores, png = needed("a.mp4"), needed("a.mov", codec="prores"), needed("frames", codec="png")
    assert h264 < prores < png and png >= 12 * 64 * 48 * 3  # PNG: up to the raw RGB size
