"""Issue 22 families 1 and 6: no path a job writes destroys an input or another of its outputs, a bad work
folder or report path fails before any work, and a run that fails late leaves nothing behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longedit import attention_pictures, diskspace, engine, output_paths
from longedit.config import as_run
from longedit.engine import runner, source as source_stage
from longedit.cli import main
from longedit.config import EditJob
from longedit.editor import MAP_SCALE
from longedit.errors import UserError
from longedit.samples import make_clip

BASE = ["--model", "tiny", "--quiet", "--source-prompt", "a man in a car", "--prompt", "a robot in a car",
        "--steps", "1", "--size", "64"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("paths") / "clip.mp4", frames=4, width=64, height=48).path.read_bytes()


@pytest.fixture
def clip(tmp_path, source) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(source)
    return path


@pytest.fixture
def no_long_work(monkeypatch):
    """Any model load or decode of the whole video fails the test: the error must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the paths were checked")

    monkeypatch.setattr(runner, "load_backbone", forbidden)
    monkeypatch.setattr(source_stage, "encode_video", forbidden)


def _edit(capsys, clip: Path, *args: str) -> tuple[int, str]:
    code = main(["edit", str(clip), *args, *BASE])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def _masks(folder: Path, word: str) -> Path:
    (folder / word).mkdir(parents=True)
    for index in range(4):
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(folder / word / f"{index:06d}.png")
    return folder


def _case_paths(tmp_path: Path, clip: Path) -> dict[str, str]:
    (tmp_path / "link.json").symlink_to(clip)
    os.link(clip, tmp_path / "hard.json")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "afile").write_text("x")
    _masks(tmp_path / "masks", "robot")
    return {"tmp": str(tmp_path), "clip": str(clip)}


DESTROYING = {  # flags -> what the one line says
    "report = input": (["-o", "{tmp}/out.mp4", "--report", "{clip}"], "the report '{clip}' is the input video"),
    "report = output": (["-o", "{tmp}/out.mp4", "--report", "{tmp}/out.mp4"], "the report '{tmp}/out.mp4' is the output video"),
    "report links to the input": (["-o", "{tmp}/out.mp4", "--report", "{tmp}/link.json"], "is the input video"),
    "report is a hard link of the input": (["-o", "{tmp}/out.mp4", "--report", "{tmp}/hard.json"], "is the input video"),
    "attention video = report": (["-o", "{tmp}/out.mp4", "--object", "robot=1,1,20,20", "--report", "{tmp}/a.mp4",
                                  "--attention-video", "{tmp}/a.mp4"], "the attention video '{tmp}/a.mp4' is the report"),
    "output inside the masks folder": (["-o", "{tmp}/masks/robot/out.mp4", "--masks", "{tmp}/masks"], "lies inside the --masks folder"),
    "report is a folder": (["-o", "{tmp}/out.mp4", "--report", "{tmp}/folder.json"], "the report '{tmp}/folder.json' is a folder"),
    "work dir is a file": (["-o", "{tmp}/out.mp4", "--work-dir", "{tmp}/afile"], "--work-dir '{tmp}/afile' is a file"),
    "work dir under a file": (["-o", "{tmp}/out.mp4", "--work-dir", "{tmp}/afile/w"], "cannot create --work-dir '{tmp}/afile/w'"),
    "work dir holds the input": (["-o", "{tmp}/sub/out.mp4", "--work-dir", "{tmp}"], "--work-dir '{tmp}' holds the input video"),
    "work dir is the output": (["-o", "{tmp}/out.mp4", "--work-dir", "{tmp}/out.mp4"], "holds the output video"),
}


@pytest.mark.parametrize("case", list(DESTROYING))
def test_a_path_that_would_destroy_an_input_or_output_fails_first(case, clip, tmp_path, capsys, no_long_work):
    values = _case_paths(tmp_path, clip)
    (tmp_path / "sub").mkdir()
    flags, message = DESTROYING[case]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, err = _edit(capsys, clip, *[f.format(**values) for f in flags])
    assert code == 2, err
    assert err.startswith("error: ") and message.format(**values) in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written, input intact


def test_a_read_only_work_folder_fails_before_any_work(clip, tmp_path, capsys, no_long_work, monkeypatch):
    """A read-only disk refuses the probe file even for root (os.access does not see every case)."""

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(output_paths.tempfile, "TemporaryFile", read_only)
    code, err = _edit(capsys, clip, "-o", str(tmp_path / "out.mp4"), "--work-dir", str(tmp_path / "w"))
    assert code == 2 and "cannot write checkpoints into --work-dir" in err and "read-only" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_validate_refuses_a_job_file_whose_report_is_its_input(clip, tmp_path, capsys):
    (tmp_path / "job.yaml").write_text("input: clip.mp4\nreport: clip.mp4\nmodel: tiny\nsource_prompt: a car\nprompt: a red car\n")
    original = clip.read_bytes()
    for command in (["validate"], ["run", "--quiet"]):
        assert main([*command, str(tmp_path / "job.yaml")]) == 2
        assert capsys.readouterr().err == f"error: the report '{clip}' is the input video '{clip}' (give every output its own new name; inputs are never overwritten)\n"
    assert clip.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "job.yaml"]


def test_a_preview_checks_its_own_files(clip, tmp_path):
    """A preview writes <stem>.preview.json: a report path the preview would clobber is the input here."""
    preview_input = tmp_path / "out.preview.json"
    preview_input.write_bytes(clip.read_bytes())
    job = EditJob(input=preview_input, output=tmp_path / "out.mp4", source_prompt="a", prompt="b", preview=True)
    with pytest.raises(UserError, match="the report .* is the input video"):
        output_paths.check_job_paths(as_run(job))
    output_paths.check_job_paths(job.model_copy(update={"preview": False}))  # the full job writes no .json


# --- family 6: the attention pictures in the free-space check, nothing left after a late failure ----------


def test_the_attention_pictures_count_in_the_free_space_check(clip, tmp_path, capsys, no_long_work, monkeypatch):
    job = EditJob(input=clip, output=tmp_path / "out.mp4", source_prompt="a man in a car", prompt="a robot in a car",
                  model="tiny", steps=1, size=64, objects=[{"word": "robot", "box": [1, 1, 20, 20]}])
    pictures = job.model_copy(update={"attention_video": tmp_path / "att.mp4"})
    prepared = engine.prepare(pictures)
    plain = sum(n.nbytes for n in engine.disk_needs(job, prepared, None))
    needs = {n.what: n.nbytes for n in engine.disk_needs(pictures, prepared, None)}
    assert {"the attention maps", "the attention video", "the attention strips"} <= set(needs)
    size = prepared.processed_size
    assert needs["the attention maps"] >= 1 * 4 * (size[0] // 8 // MAP_SCALE) * (size[1] // 8 // MAP_SCALE) * 2
    assert attention_pictures.MAP_DOWNSCALE == MAP_SCALE
    free = plain + 1  # room for the output, not for the pictures
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda path: type("U", (), {"free": free})())
    code, err = _edit(capsys, clip, "-o", str(tmp_path / "out.mp4"), "--object", "robot=1,1,20,20",
                      "--attention-video", str(tmp_path / "att.mp4"))
    assert code == 2 and err.startswith("error: not enough disk space") and "the attention video needs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_disk_that_fills_during_the_attention_pictures_leaves_no_output(clip, tmp_path, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(attention_pictures, "strip_image", full_disk)  # after the output and the attention video
    out, video, report = tmp_path / "out.mp4", tmp_path / "att.mp4", tmp_path / "report.json"
    code, err = _edit(capsys, clip, "-o", str(out), "--object", "robot=1,1,20,20", "--attention-video", str(video),
                      "--report", str(report))
    assert code == 2 and "no space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no output, pictures, report or temp files


def test_a_failed_run_keeps_the_files_it_did_not_touch(clip, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    out.write_bytes(b"an older output")
    job = EditJob(input=clip, output=out, report=report, source_prompt="a", prompt="b")

    @output_paths.removed_on_failure
    def fails_after_the_report(job):
        report.write_text("{}")
        raise RuntimeError("late failure")

    with pytest.raises(RuntimeError):
        fails_after_the_report(job)
    assert out.read_bytes() == b"an older output" and not report.exists()
