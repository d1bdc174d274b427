"""Job files: YAML -> EditJob, relative paths, defaults, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_jobs_helpers import PROMPTS, write_job

from longedit.errors import UserError
from longedit.jobs.jobfile import load_job


def _error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_job(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_job_resolves_paths_relative_to_the_job_file(tmp_path, monkeypatch):
    folder = tmp_path / "jobs"
    job_file = write_job(
        folder / "clip.yaml", input="clip.mp4", output="out/clip-edited.mp4", report="r.json", masks="masks",
        objects=[{"word": "robot", "box": [40, 10, 150, 144]}, {"word": "phone", "masks": "m/phone"}],
    )
    monkeypatch.chdir(tmp_path)  # the current directory must not matter
    job = load_job(job_file)
    assert job.input == folder.resolve() / "clip.mp4"
    assert job.output == folder.resolve() / "out/clip-edited.mp4"
    assert job.report == folder.resolve() / "r.json"
    assert job.masks == folder.resolve() / "masks"
    assert job.objects[1].masks == folder.resolve() / "m/phone"
    assert job.objects[0].box == (40, 10, 150, 144)
    assert job.steps == 3 and job.model == "tiny" and job.prompt == PROMPTS["prompt"]


def test_keyframes_and_absolute_paths(tmp_path):
    video = tmp_path / "elsewhere" / "v.mov"
    job_file = write_job(
        tmp_path / "j.yaml", input=str(video), output=None,
        objects=[{"word": "robot", "keyframes": {0: [0, 0, 10, 10], 120: [5, 5, 20, 20]}}],
    )
    job = load_job(job_file)
    assert job.input == video
    assert job.output == tmp_path.resolve() / "j-edited.mov"  # default output keeps the container
    assert job.objects[0].keyframes == {0: (0, 0, 10, 10), 120: (5, 5, 20, 20)}


def test_input_defaults_to_the_same_stem_video(tmp_path):
    (tmp_path / "talk.mkv").write_bytes(b"x")
    job = load_job(write_job(tmp_path / "talk.yaml"))
    assert job.input == tmp_path.resolve() / "talk.mkv"
    assert job.output == tmp_path.resolve() / "talk-edited.mkv"


def test_missing_companion_video_is_a_clear_error(tmp_path):
    message = _error(write_job(tmp_path / "talk.yaml"))
    assert "no 'input'" in message and "talk." in message and "add 'input: PATH'" in message


def test_two_companion_videos_are_ambiguous(tmp_path):
    (tmp_path / "talk.mp4").write_bytes(b"x")
    (tmp_path / "talk.mov").write_bytes(b"x")
    assert "talk.mp4, talk.mov" in _error(write_job(tmp_path / "talk.yaml"))


def test_unknown_key_names_the_key_and_suggests_the_right_one(tmp_path):
    job_file = write_job(tmp_path / "x.yaml", input="a.mp4", steps=None, stepz=3)
    message = _error(job_file)
    assert f"job file '{job_file}': unknown key 'stepz'" in message
    assert "did you mean 'steps'?" in message and "known keys: input, output, source_prompt" in message


def test_unknown_key_inside_an_object(tmp_path):
    message = _error(write_job(tmp_path / "x.yaml", input="a.mp4", objects=[{"word": "robot", "boz": [1, 2, 3, 4]}]))
    assert "unknown key 'boz' in objects[0]" in message and "did you mean 'box'?" in message


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"steps": "many"}, "'steps' must be an integer, got text of 4 characters"),
        ({"steps": 2.5}, "'steps' must be an integer"),
        ({"steps": 0}, "'steps' must be >= 1, got 0"),
        ({"guidance": "high"}, "'guidance' must be a number"),
        ({"rad": "maybe"}, "'rad' must be true or false"),
        ({"preset": "slow"}, "'preset' must be one of 'paper' or 'fast'"),
        ({"prompt": None}, "missing key 'prompt'"),
        ({"objects": [{"word": "robot", "box": [1, 2, 3]}]}, "'objects[0].box' must be four numbers"),
        ({"objects": [{"word": "robot", "box": [1, 2, 3, 4], "keyframes": {0: [1, 2, 3, 4]}}]}, "give either box or keyframes"),
        ({"objects": "robot"}, "'objects' must be a list"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(tmp_path, keys, expected):
    message = _error(write_job(tmp_path / "x.yaml", input="a.mp4", **keys))
    assert expected in message, message


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("input: a.mp4\nprompt: [unclosed\nsteps: 3\n")
    message = _error(path)
    assert "is not valid YAML at line" in message


@pytest.mark.parametrize(("text", "expected"), [("", "is empty"), ("- a\n- b\n", "must be a mapping")])
def test_empty_or_non_mapping_job_file(tmp_path, text, expected):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert expected in _error(path)


def test_missing_job_file(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.yaml")
