"""Bad or conflicting input to `longedit edit` fails with one line and exit 2 before any long work
(decode, model load), and an interrupted edit says what it left behind (issue 12 items 3-6 and 8)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longedit import engine
from longedit.cli import main
from longedit.config import ObjectSpec
from longedit.errors import UserError
from longedit.samples import make_clip
from longedit.segmentation.mask_folder import check_mask_folders, check_mask_size

BASE = ["--model", "tiny", "--quiet", "--source-prompt", "a man in a car", "--prompt", "a robot in a car",
        "--steps", "1", "--size", "64"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("checks") / "clip.mp4", frames=4, width=64, height=48).path


@pytest.fixture
def no_long_work(monkeypatch):
    """Any decode of the whole video or model load fails the test: the error must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the input was checked")

    monkeypatch.setattr(engine.runner, "load_backbone", forbidden)
    monkeypatch.setattr(engine.source, "encode_video", forbidden)


def _masks(folder: Path, word: str, size: tuple[int, int], frames: int = 4) -> Path:
    (folder / word).mkdir(parents=True)
    for index in range(frames):
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(folder / word / f"{index:06d}.png")
    return folder


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(["edit", *args, *BASE])
    return code, capsys.readouterr().err


CASES = {
    "object without a box": (["--object", "robot"], "object 'robot' has no region"),
    "word not in the prompt": (["--object", "dragon=1,1,20,20"], "word 'dragon' is not in the prompt"),
    "masks folder without word folders": (["--masks", "{empty}"], "has no word sub-folders"),
    "masks ignored by boxes": (["--masks", "{masks}", "--object", "robot=1,1,20,20"], "would be ignored: every --object has a box"),
    "masks of another aspect ratio": (["--masks", "{square}"], "are 64x64 but the video is 64x48 (another aspect ratio)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_region_input_fails_before_any_long_work(case, clip, tmp_path, capsys, no_long_work):
    empty = tmp_path / "empty"
    empty.mkdir()
    folders = {"empty": str(empty), "masks": str(_masks(tmp_path / "m", "robot", (64, 48))),
               "square": str(_masks(tmp_path / "sq", "robot", (64, 64)))}
    extra, message = CASES[case]
    out = tmp_path / "out.mp4"
    code, err = _run(capsys, str(clip), "-o", str(out), *[a.format(**folders) for a in extra])
    assert code == 2, err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("window", ["1", "3", "33", "1000"])
def test_window_outside_the_documented_range_is_a_usage_error(window, clip, tmp_path, capsys):
    code, err = _run(capsys, str(clip), "-o", str(tmp_path / "o.mp4"), "--object", "robot=1,1,20,20", "--window", window)
    assert code == 2 and "Invalid value for '--window'" in err and "Traceback" not in err


def test_masks_of_another_size_but_the_same_shape_are_scaled_with_a_warning(tmp_path):
    _masks(tmp_path, "robot", (128, 96), frames=1)
    assert check_mask_size(tmp_path, "robot", 128, 96) is None
    notice = check_mask_size(tmp_path, "robot", 64, 48)
    assert notice == f"masks in '{tmp_path / 'robot'}' are 128x96, the video is 64x48: scaling the masks to the video"
    obj = ObjectSpec(word="robot", masks=tmp_path / "robot")
    with pytest.warns(UserWarning, match="scaling the masks to the video"):
        check_mask_folders([obj], 64, 48)
    with pytest.raises(UserError, match="another aspect ratio"):
        check_mask_folders([obj], 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_mask_folders([obj], 128, 96)  # same size: silent


def _edit_process(clip: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["edit", str(clip), "-o", str(out), "--object", "robot=1,1,20,20", *BASE[:-4], "--steps", "40", "--size", "64", *extra]
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from longedit.cli import main; sys.exit(main())", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a suite started in the background (`make test &`, nohup) passes SIGINT down as ignored, and Python then
        # never raises KeyboardInterrupt: the edit must see Ctrl-C as a terminal gives it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_edit_says_how_to_resume(sig, clip, tmp_path):
    work = tmp_path / "work"
    out = tmp_path / "out.mp4"
    process = _edit_process(clip, out, "--work-dir", str(work), "--checkpoint-every", "1")
    try:
        _wait_for(lambda: (work / "checkpoint.pt").exists() or process.poll() is not None)
        assert process.poll() is None, process.communicate()
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted; rerun the same command to resume (checkpoint in {work})"
    assert "Traceback" not in err and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_interrupted_edit_without_work_folder_says_nothing_was_written(clip, tmp_path, capsys, monkeypatch):
    def interrupted(job, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_edit", interrupted)
    code, err = _run(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--object", "robot=1,1,20,20")
    assert code == 130 and err == "interrupted; nothing written\n"
    assert list(tmp_path.iterdir()) == []


# --- issue 12: a repeated word, WORD#N, the window range of job files -------------------------------------

TWO_CARS = ["--model", "tiny", "--quiet", "--source-prompt", "a car behind a car", "--prompt", "a car behind a red car",
            "--steps", "1", "--size", "64"]


def test_a_repeated_word_is_named_before_the_long_work(clip, tmp_path, capsys, monkeypatch):
    def interrupted(job, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_edit", interrupted)
    code = main(["edit", str(clip), "-o", str(tmp_path / "out.mp4"), "--object", "car=1,1,20,20", *TWO_CARS])
    assert code == 130
    assert capsys.readouterr().err.splitlines() == [
        "warning: 'car' occurs twice in the prompt; using the first, write 'car#2' for the second",
        "interrupted; nothing written",
    ]
    code = main(["edit", str(clip), "-o", str(tmp_path / "out.mp4"), "--object", "car#2=1,1,20,20", *TWO_CARS])
    assert code == 130 and capsys.readouterr().err == "interrupted; nothing written\n"  # chosen: no notice


def test_an_occurrence_past_the_prompt_fails_with_one_line(clip, tmp_path, capsys, no_long_work):
    code = main(["edit", str(clip), "-o", str(tmp_path / "out.mp4"), "--object", "car#3=1,1,20,20", *TWO_CARS])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: 'car#3' asks for occurrence 3 of 'car', but the prompt has it twice (write 'car#1' to 'car#2')\n"
    assert list(tmp_path.iterdir()) == []


def _job_file(folder: Path, clip: Path, **keys) -> Path:
    import yaml

    data = {"input": str(clip), "output": "out.mp4", "model": "tiny", "steps": 1, "size": 64,
            "source_prompt": "a car behind a car", "prompt": "a car behind a red car", **keys}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("window", [1, 3, 33, 1000])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_job_file_window_outside_the_cli_range_fails_like_the_flag(window, command, clip, tmp_path, capsys, no_long_work):
    job = _job_file(tmp_path, clip, window=window, objects=[{"word": "car", "box": [1, 1, 20, 20]}])
    before = sorted(tmp_path.iterdir())
    assert main([command, str(job)]) == 2
    err = capsys.readouterr().err
    bound = ">= 4" if window < 4 else "<= 32"
    assert err == f"error: job file '{job}': 'window' must be {bound}, got {window} (use 4 to 32, as the --window flag)\n"
    assert sorted(tmp_path.iterdir()) == before


def test_the_cli_and_job_files_share_one_window_range():
    from longedit.commands.edit import WINDOW_MAX, WINDOW_MIN
    from longedit.config import EditJob, field_bounds
    from longedit.planner import MAX_WINDOW, MIN_WINDOW

    assert field_bounds("window") == (WINDOW_MIN, WINDOW_MAX) == (MIN_WINDOW, MAX_WINDOW) == (4, 32)
    assert field_bounds("feather") == (0, 256) and field_bounds("seed") == (None, None)
    EditJob(input="a.mp4", output="b.mp4", source_prompt="a", prompt="b", window=32)


def test_a_job_file_run_with_car_2_masks_and_a_clamped_window(clip, tmp_path, capsys):
    """A real (tiny) run: `word: car#2` takes its masks from masks/car#2/ and the second 'car' column;
    window 16 on a 4-frame clip becomes one window of 4, with a notice on stderr and in the report."""
    _masks(tmp_path / "masks", "car#2", (64, 48))
    job = _job_file(tmp_path, clip, window=16, masks="masks", report="report.json", objects=[{"word": "car#2"}])
    assert main(["run", "--quiet", str(job)]) == 0
    err = capsys.readouterr().err
    assert "warning: job.yaml: window 16 > 4 frames: using one window of 4" in err.splitlines()
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["windows"] == [[0, 4]]
    assert "window 16 > 4 frames: using one window of 4" in report["warnings"]
    from longedit.random_models import build_tiny_tokenizer

    ids = build_tiny_tokenizer()("a car behind a red car").input_ids
    car = build_tiny_tokenizer()("car", add_special_tokens=False).input_ids[0]
    assert report["rad"]["words"] == {"car#2": [[i for i, t in enumerate(ids) if t == car][1]]}
    assert report["masks"]["summary"] and (tmp_path / "out.mp4").exists()
