"""Inputs: `--start`/`--end`/`--every` ranges, folders of numbered frames, and rotated (phone) videos."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from longedit.cli import main
from longedit.config import ObjectSpec
from longedit.errors import UserError
from longedit.inversion_cache import cache_key, key_parts
from longedit.masks import box_at
from longedit.samples import make_clip
from longedit.segmentation.mask_folder import load_mask_folder
from longedit.source_range import objects_in_range
from longedit.video import iter_frames, open_source, probe
from longedit.video.source import parse_position


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """24 frames, 64x48, 24 fps, with an AAC tone."""
    return make_clip(tmp_path_factory.mktemp("inputs") / "clip.mp4", frames=24, width=64, height=48, audio=True).path


def edit_args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--source-prompt", "a red square",
            "--prompt", "a yellow duck", "--steps", "1", "--size", "64", *extra]


@pytest.mark.parametrize(
    ("text", "expected"), [("120", 120), ("00:01:02.5", 62.5), ("1:02.5", 62.5), ("62.5s", 62.5), (7, 7), (None, None)]
)
def test_positions_are_frames_or_times(text, expected):
    assert parse_position(text, "start") == expected


def test_a_range_decodes_just_its_frames_with_the_source_timestamps(clip):
    full = list(iter_frames(clip))
    info = open_source(clip, start="00:00:00.25", end=20, every=3)  # 0.25 s = frame 6; frames 6, 9, ..., 18
    assert (info.frames, info.fps, info.first_frame, info.every) == (5, Fraction(8), 6, 3)
    assert info.timestamps == pytest.approx([6 / 24, 9 / 24, 12 / 24, 15 / 24, 18 / 24])
    frames = list(iter_frames(info))
    assert len(frames) == 5 and all(np.array_equal(a, full[k]) for a, k in zip(frames, (6, 9, 12, 15, 18)))
    assert [np.array_equal(a, full[k]) for a, k in zip(iter_frames(info, start=2, end=4), (12, 15))] == [True, True]


def test_an_edited_range_covers_that_range_with_its_audio(clip, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    code = main(edit_args(clip, out, "--start", "4", "--end", "0:00:00.75", "--every", "2", "--report", str(report),
                          "--object", "duck=5,5,30,30"))
    assert code == 0
    edited = probe(out)
    assert (edited.frames, edited.fps) == (7, Fraction(12))  # source frames 4, 6, ..., 16 (0.75 s = frame 18)
    assert edited.timestamps == pytest.approx([i / 12 for i in range(7)], abs=1e-3)
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        packets = [p for p in container.demux(audio) if p.size]
        end = float((packets[-1].pts + packets[-1].duration) * audio.time_base)
    assert end == pytest.approx(7 / 12, abs=0.05)  # the audio of the range only: 4/24 .. 18/24 s
    assert json.loads(report.read_text())["range"] == {
        "start_frame": 4, "end_frame": 17, "every": 2, "source_frames": 24, "start_s": pytest.approx(4 / 24)}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", "10", "--end", "5"], "--start 10 is not before --end 5"),
        (["--start", "0:00:00.5", "--end", "0:00:00.25"], "is not before --end"),
        (["--start", "24"], "at or past the end of the video (24 frames"),
        (["--start", "1.5"], "cannot read --start '1.5'"),
        (["--every", "0"], "every"),
        (["--fps", "12"], "--fps is for a folder of frames"),
        (["--start", "4", "--eval"], "--eval compares the output with the whole source"),
    ],
)
def test_bad_ranges_are_one_line_exit_2_nothing_written(clip, tmp_path, capsys, extra, message):
    code = main(edit_args(clip, tmp_path / "out.mp4", "--object", "duck=5,5,30,30", *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_keyframes_and_mask_folders_count_source_frames(tmp_path):
    info = open_source(make_clip(tmp_path / "c.mp4", frames=12, width=64, height=48).path, start=4, end=11, every=2)
    duck = ObjectSpec(word="duck", keyframes={0: (0, 0, 10, 10), 8: (20, 0, 30, 10)})
    moved = objects_in_range([duck], info)[0].keyframes  # range frames 0..3 are source frames 4, 6, 8, 10
    assert moved == {0: box_at(duck.keyframes, 4), 2: (20, 0, 30, 10), 3: (20, 0, 30, 10)}
    for frame in range(12):
        folder = tmp_path / "masks" / "duck"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 64), 255 if frame % 4 == 0 else 0, np.uint8)).save(folder / f"{frame:06d}.png")
    masks = list(load_mask_folder(tmp_path / "masks", "duck", info.frames, None, info.first_frame, info.every))
    assert [bool(m.all()) for m in masks] == [True, False, True, False]  # source frames 4, 6, 8, 10


def test_the_inversion_cache_keys_on_the_range(tiny_backbone, clip):
    from longedit.editor import LoopSettings, VideoEditor

    editor = VideoEditor(tiny_backbone, LoopSettings(steps=2), "a", "b", [], inversion_prompt="")

    def key(info) -> str:
        return cache_key(key_parts(video=info, processed_size=(64, 64), frames=info.frames, backbone=tiny_backbone,
                                   editor=editor, windows=[(0, info.frames)], inversion_prompt="", trajectory=False))

    whole = key(open_source(clip))
    assert whole == cache_key(key_parts(video=clip, processed_size=(64, 64), frames=24, backbone=tiny_backbone,
                                        editor=editor, windows=[(0, 24)], inversion_prompt="", trajectory=False))
    assert len({whole, key(open_source(clip, start=0, end=8)), key(open_source(clip, start=8, end=16)),
                key(open_source(clip, start=0, end=16, every=2))}) == 4


# ---------------------------------------------------------------------------------------- frame folders
@pytest.fixture
def frame_folder(clip, tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(iter_frames(clip, end=10)):
        Image.fromarray(frame).save(folder / (f"{index:06d}.png" if index % 2 else f"{index:06d}.jpg"), quality=95)
    (folder / "notes.txt").write_text("not a frame")
    return folder


def test_a_folder_of_frames_is_read_in_number_order(frame_folder):
    info = open_source(frame_folder, fps=12)
    assert (info.frames, info.fps, info.width, info.height, info.has_audio) == (10, Fraction(12), 64, 48, False)
    assert [p.name for p in info.image_files[:3]] == ["000000.jpg", "000001.png", "000002.jpg"]
    pngs = open_source(frame_folder / "%06d.png", fps=12, every=2)
    assert [p.name for p in pngs.image_files] == ["000001.png", "000005.png", "000009.png"]
    assert len(list(iter_frames(pngs))) == 3
    with pytest.raises(UserError, match="give --fps"):
        open_source(frame_folder)


def test_an_edit_of_a_frame_folder(frame_folder, tmp_path):
    out = tmp_path / "out.mp4"
    assert main(edit_args(frame_folder, out, "--fps", "12", "--start", "2", "--object", "duck=5,5,30,30")) == 0
    edited = probe(out)
    assert (edited.frames, edited.fps, edited.has_audio) == (8, Fraction(12), False)


# ---------------------------------------------------------------------------------------- rotation
def rotated_clip(path: Path, degrees: int) -> Path:
    """A 64x32 stored clip, white in its stored left columns, whose display matrix rotates it by `degrees`."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)
        for index in range(6):
            image = np.full((32, 64, 3), 60, np.uint8)
            image[:, :8] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_a_rotated_video_is_probed_and_decoded_as_displayed(tmp_path):
    info = probe(rotated_clip(tmp_path / "phone.mp4", -90))
    assert (info.width, info.height, info.rotation) == (32, 64, 270)
    frame = next(iter_frames(info.path))
    assert frame.shape == (64, 32, 3)
    assert frame[:6].mean() > 240 and frame[10:].mean() < 80  # -90: turned clockwise, the stored left is on top
    assert next(iter_frames(info.path, size=(16, 32))).shape == (32, 16, 3)


def test_a_rotated_video_is_edited_upright_with_boxes_in_displayed_pixels(tmp_path):
    source, out = rotated_clip(tmp_path / "phone.mp4", -90), tmp_path / "out.mp4"
    # y up to 60 lies inside the 32x64 displayed frame but outside the stored 64x32 one
    assert main(edit_args(source, out, "--object", "duck=4,40,28,60")) == 0
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height, frame.rotation) == (32, 64, 0)  # written upright, no matrix left
    upright = next(iter_frames(out))
    assert upright[:6].mean() > 200 and upright[10:36].mean() < 100  # the white band still on top


def test_job_files_read_times_as_times_not_base_60_numbers(tmp_path):
    from longedit.jobs.jobfile import load_job

    job_file = tmp_path / "shot.yaml"
    job_file.write_text("input: clip.mp4\nsource_prompt: a cat\nprompt: a dog\nmodel: tiny\n"
                        "start: 1:02\nend: 00:01:10.5\nevery: 2\ncodec: prores\npix_fmt: yuv444p10le\n")
    job = load_job(job_file)
    assert (job.start, job.end, job.every, job.codec, job.pix_fmt) == ("1:02", "00:01:10.5", 2, "prores", "yuv444p10le")
    assert parse_position(job.start, "start") == 62.0 and parse_position(job.end, "end") == 70.5


def test_masks_of_a_rotated_video_are_in_displayed_pixels(tmp_path):
    from longedit.config import EditJob
    from longedit.engine import prepare

    source = rotated_clip(tmp_path / "phone.mp4", -90)
    for name, size in (("upright", (32, 64)), ("stored", (64, 32))):
        (tmp_path / name / "duck").mkdir(parents=True)
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(tmp_path / name / "duck" / "000000.png")
    job = {"input": source, "output": tmp_path / "o.mp4", "source_prompt": "a cat", "prompt": "a duck", "model": "tiny"}
    prepare(EditJob(**job, objects=[{"word": "duck", "masks": tmp_path / "upright" / "duck"}]))
    with pytest.raises(UserError, match="are 64x32 but the video is 32x64"):
        prepare(EditJob(**job, objects=[{"word": "duck", "masks": tmp_path / "stored" / "duck"}]))


def test_a_range_needs_only_its_own_mask_files(tmp_path):
    from longedit.config import EditJob
    from longedit.engine import prepare

    source = make_clip(tmp_path / "c.mp4", frames=12, width=64, height=48).path
    (tmp_path / "masks" / "duck").mkdir(parents=True)
    for frame in (4, 6, 8):
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "masks" / "duck" / f"{frame:06d}.png")
    job = {"input": source, "output": tmp_path / "o.mp4", "source_prompt": "a cat", "prompt": "a duck", "model": "tiny",
           "objects": [{"word": "duck", "masks": tmp_path / "masks" / "duck"}]}
    assert prepare(EditJob(**job, start=4, end=9, every=2)).info.frames == 3
    with pytest.raises(UserError, match="has no 000000.png"):
        prepare(EditJob(**job))
