"""A work folder holds what others can write (issue 22 families 2 and 4): a planted pickle there never runs,
and a checkpoint that was garbled but still loads is refused by its checksum; either way the job starts
afresh, says so in one line, and ends with the result of a run that was never interrupted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from longedit.checkpoint import CHECKPOINT_NAME
from longedit.cli import main
from longedit.config import EditJob
from longedit.engine import JobInterrupted, run_edit

SOURCE, PROMPT = "a man in a car", "a robot in a car"


class Payload:
    """Unpickling this runs `touch(marker)`: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": "x", "phase": "edit", "step": 1, "payload": Payload(marker)}, path)


class _StopAfter:
    """A stop event that reads as set from its (n+1)-th check on (stops a job at a chosen point)."""

    def __init__(self, checks: int) -> None:
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def _job(clip: Path, output: Path) -> EditJob:
    return EditJob(input=clip, output=output, source_prompt=SOURCE, prompt=PROMPT, model="tiny", device="cpu", steps=3,
                   size=64, window=4, stride=2, checkpoint_every=1, objects=[{"word": "robot", "box": (8, 8, 40, 40)}])


def test_a_planted_checkpoint_in_the_work_dir_never_runs_and_the_edit_starts_afresh(clip, tmp_path, capsys):
    work, marker, out = tmp_path / "work", tmp_path / "pwned", tmp_path / "out.mp4"
    plant(work / CHECKPOINT_NAME, marker)
    code = main(["edit", str(clip), "-o", str(out), "--work-dir", str(work), "--model", "tiny", "--steps", "2",
                 "--size", "64", "--source-prompt", SOURCE, "--prompt", PROMPT, "--object", "robot=8,8,40,40", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert not marker.exists() and out.is_file()
    said = [line for line in err.splitlines() if "checkpoint" in line]
    assert said == [f"warning: ignoring the checkpoint '{work / CHECKPOINT_NAME}': it holds more than tensors and plain "
                    "values (an older format, or not ours); not loaded; starting afresh"], err


@pytest.mark.slow
def test_a_garbled_but_loadable_checkpoint_is_not_resumed_into_a_wrong_result(clip, tmp_path):
    reference = run_edit(_job(clip, tmp_path / "ref.mp4"), progress=False)
    work = tmp_path / "work"
    with pytest.raises(JobInterrupted):
        run_edit(_job(clip, tmp_path / "out.mp4"), work_dir=work, progress=False, stop_event=_StopAfter(1))
    record = torch.load(work / CHECKPOINT_NAME, weights_only=False)  # our own file (any format): trusted here
    state = record.get("state", record)
    state["latents"] = state["latents"] + 0.5  # overwritten in place, the file still loads
    torch.save(record, work / CHECKPOINT_NAME)
    again = run_edit(_job(clip, tmp_path / "out.mp4"), work_dir=work, progress=False, stop_event=threading.Event())
    assert again["resumed_from"] is None
    assert [w for w in again["warnings"] if "checkpoint" in w] == [
        f"ignoring the checkpoint '{work / CHECKPOINT_NAME}': its contents do not match its checksum (damaged or "
        "modified); starting afresh"]
    assert again["latent_checksum"] == reference["latent_checksum"]


def test_a_watch_folder_job_with_a_planted_checkpoint_in_processing_runs_it_not(clip, tmp_path):
    """The watcher adopts processing/NAME/ of a dead worker: its planted work/checkpoint.pt is read by the
    heartbeat and by the engine, and runs in neither."""
    from test_jobs_watch import _orphan, _watcher

    from longedit import engine

    spool = _orphan(tmp_path, clip, "orphan", attempts=1)
    marker = tmp_path / "pwned"
    plant(spool.processing / "orphan" / "work" / CHECKPOINT_NAME, marker)
    assert _watcher(tmp_path, engine.run_edit).run() == {"done": ["orphan"]}
    assert not marker.exists()
    report = json.loads((spool.done / "orphan" / "report.json").read_text())
    assert report["resumed_from"] is None and any("ignoring the checkpoint" in w for w in report["warnings"])


# ------------------------------------------------------------------------------ the ledger and progress.json


def _status(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_zero_byte_ledger_is_read_as_empty_and_status_writes_nothing(tmp_path, capsys):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "ledger.sqlite").write_bytes(b"")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _status(capsys, str(tmp_path))
    assert code == 0 and err == "" and out.startswith(f"{tmp_path}: 0 queued, 0 running")
    assert (tmp_path / "ledger.sqlite").read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == before


def test_status_of_a_ledger_never_changes_its_bytes(tmp_path, capsys):
    from longedit.jobs.ledger import Ledger

    (tmp_path / "inbox").mkdir()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.transition("j1", "queued", name="first")
    del ledger
    before = (tmp_path / "ledger.sqlite").read_bytes()
    code, out, _ = _status(capsys, str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["counts"]["queued"] == 1
    assert (tmp_path / "ledger.sqlite").read_bytes() == before


def test_a_progress_file_with_wrong_types_is_shown_as_unreadable_not_a_crash(tmp_path, capsys):
    from longedit.jobs.ledger import Ledger
    from longedit.progress import PROGRESS_NAME

    folder = tmp_path / "processing" / "clip"
    (folder / "work").mkdir(parents=True)
    (tmp_path / "inbox").mkdir()
    (folder / "work" / PROGRESS_NAME).write_text(json.dumps({"fraction": "half", "eta_s": [1], "phase": 3}))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.transition("j1", "queued", name="clip", folder=str(folder))
    ledger.transition("j1", "running", attempts_delta=1)
    ledger.progress("j1", 2, 6)
    code, out, err = _status(capsys, str(tmp_path))
    assert code == 0 and "Traceback" not in err, err
    [row] = [line for line in out.splitlines() if line.startswith("running")]
    assert "2/6" in row and "its progress.json is unreadable ('fraction' is not a number from 0 to 1)" in row
    bad_files = [json.dumps(bad).encode() for bad in (
        {"fraction": 0.5, "eta_s": "soon"}, {"fraction": True}, {"fraction": 7}, [0.5], {"fraction": 0.5, "preview": "yes"},
    )] + [b'{"fraction": NaN}', b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000]  # NaN, not UTF-8, nested too deep
    for bad in bad_files:
        (folder / "work" / PROGRESS_NAME).write_bytes(bad)
        code, out, err = _status(capsys, str(tmp_path), "--json")
        assert code == 0 and "is unreadable" in json.loads(out)["jobs"][0]["note"], (bad[:40], err)


def test_a_half_copied_video_in_the_watch_inbox_fails_instead_of_being_edited_to_its_first_part(tmp_path):
    from test_jobs_helpers import write_job
    from test_jobs_watch import _watcher

    from longedit import engine
    from longedit.samples import make_clip
    from longedit.video import VideoWriter, iter_frames, probe

    source = make_clip(tmp_path / "src.mkv", frames=48, width=64, height=48).path
    whole = tmp_path / "whole.mp4"
    info = probe(source)
    with VideoWriter(whole, info.width, info.height, info.fps) as writer:  # header first, as phones and editors write
        for frame in iter_frames(source):
            writer.write(frame)
    inbox = tmp_path / "wf" / "inbox"
    inbox.mkdir(parents=True)
    data = whole.read_bytes()
    (inbox / "clip.mp4").write_bytes(data[: len(data) // 2])
    write_job(inbox / "clip.yaml")
    assert _watcher(tmp_path / "wf", engine.run_edit).run() == {"failed": ["clip"]}
    error = json.loads((tmp_path / "wf" / "failed" / "clip" / "error.json").read_text())
    assert "is cut short (its index points past the end of the file; " in error["message"]
    assert not list((tmp_path / "wf").rglob("*-edited.mp4"))
