"""Usage errors of the CLI: click's usage line and one error line on stderr, exit 2, never a traceback.

typer 0.29 raises its own vendored click exceptions, which are not subclasses of `click.ClickException`;
a dependency upgrade once turned every usage error into a traceback with exit 1 (issue 12 item 1).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import typer

from longedit.cli import _click_exception, main

USAGE_ERRORS = [
    (["edt"], "Error: No such command 'edt'.", "Usage: longedit [OPTIONS] COMMAND"),
    (["edit", "clip.mp4", "--bogus"], "Error: No such option: --bogus", "Usage: longedit edit [OPTIONS]"),
    (["edit", "clip.mp4", "-o", "out.mp4", "--prompt", "a robot"], "Error: Missing option '--source-prompt'.", "Usage: longedit edit"),
    (["edit", "clip.mp4", "--steps", "ten"], "Error: Invalid value for '--steps':", "Usage: longedit edit"),
    (["status", "a", "b"], "Error: Got unexpected extra argument", "Usage: longedit status"),
    (["masks", "clip.mp4", "--frames", "x"], "Error: No such option: --frames", "Usage: longedit masks"),
]


@pytest.mark.parametrize(("argv", "error", "usage"), USAGE_ERRORS, ids=[" ".join(a) for a, _, _ in USAGE_ERRORS])
def test_usage_errors_print_the_usage_and_one_error_line_and_exit_2(argv, error, usage, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith(usage), err
    assert lines[-1].startswith(error), err
    assert len(lines) == 3 and "Traceback" not in err  # usage, "Try ... --help", the error
    assert list(tmp_path.iterdir()) == []


def test_no_command_prints_the_help(capsys):
    """click >= 8.2 (typer's vendored copy too): help on stderr, exit 2; click 8.1: help on stdout, exit 0."""
    code = main([])
    out, err = capsys.readouterr()
    shown = err if code == 2 else out
    assert code in (0, 2) and shown.startswith("Usage: longedit [OPTIONS] COMMAND") and "Commands:" in shown
    assert "Traceback" not in out + err


def test_help_still_exits_0(capsys):
    assert main(["edit", "--help"]) == 0
    assert "Usage: longedit edit" in capsys.readouterr().out


def test_the_caught_class_is_the_one_typer_raises():
    """Whatever click typer uses (its own or a vendored copy), its usage errors derive from the caught class."""
    caught = _click_exception()
    assert caught.__name__ == "ClickException" and issubclass(typer.BadParameter, caught)
    app = typer.Typer(add_completion=False)
    app.command()(lambda count: None)
    with pytest.raises(caught):
        app(["--bogus"], standalone_mode=False)


def test_a_usage_error_of_the_installed_script_is_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from longedit.cli import main; sys.exit(main())", "edit", "x.mp4", "--steps", "ten"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--steps'")


EDIT = ["--model", "tiny", "--steps", "2", "--size", "64", "--source-prompt", "a car on a road", "--prompt", "a red car on a road"]
JOB = "input: clip.mp4\noutput: out.mp4\nmodel: tiny\nsource_prompt: a car\nprompt: a red car\nwindow: 1000\n"
CATALOGUE = [  # issue 12's list, as a new user types it: (argv, usage error?, what the last line says)
    (["edt"], True, "Error: No such command 'edt'."),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--bogus"], True, "Error: No such option: --bogus"),
    (["edit", "clip.mp4", "-o", "out.mp4", "--prompt", "a car"], True, "Error: Missing option '--source-prompt'."),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--steps", "ten"], True, "Error: Invalid value for '--steps'"),
    (["edit", "missing.mp4", "-o", "out.mp4", *EDIT], False, "error: cannot read video 'missing.mp4': file does not exist"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "dragon=1,1,20,20"], False, "error: word 'dragon' is not in the prompt"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--window", "1"], True, "Error: Invalid value for '--window'"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--window", "1000"], True, "Error: Invalid value for '--window'"),
    (["run", "job.yaml"], False, "error: job file 'job.yaml': 'window' must be <= 32, got 1000 (use 4 to 32"),
    # issue 22: outputs that destroy inputs or each other, job files that write anywhere, late failures
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--report", "clip.mp4"], False, "error: the report 'clip.mp4' is the input video"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--report", "out.mp4"], False, "error: the report 'out.mp4' is the output video"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--report", "."], False, "error: the report '.' is a folder"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--work-dir", "job.yaml"], False, "error: --work-dir 'job.yaml' is a file"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--work-dir", "job.yaml/w"], False, "error: cannot create --work-dir 'job.yaml/w'"),
    (["validate", "clobber.yaml"], False, "error: the report '"),
    (["run", "clobber.yaml"], False, "error: the report '"),
    (["run", "escape.yaml"], False, "error: job file 'escape.yaml': 'output' points outside the job's folder"),
    (["validate", "escape.yaml"], False, "error: job file 'escape.yaml': 'output' points outside the job's folder"),
    (["run", "big.yaml"], False, "error: job file 'big.yaml' is over 64 KiB"),
    # issue 26: output codecs and ranges
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--codec", "prores"], False,
     "error: --codec prores cannot be written to a '.mp4' file"),
    (["edit", "clip.mp4", "-o", "out.mkv", *EDIT, "--object", "car=1,1,20,20", "--codec", "ffv1", "--crf", "5"], False,
     "error: --crf does not apply to --codec ffv1"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--start", "10", "--end", "5"], False,
     "error: --start 10 is not before --end 5"),
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--start", "0:00:09"], False,
     "error: --start 0:00:09 is at or past the end of the video"),
    # issue 22 family 7
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--preview", "-3"], False, "error: --preview -3: not a number of frames"),
    (["eval", "clip.mp4", "clip.mp4", "--prompt", "a red car", "--object", "dog=1,1,20,20", "--json", "e.json"], False,
     "error: word 'dog' is not in the prompt 'a red car'"),
]
JOB_FILES = {
    "job.yaml": JOB,
    "clobber.yaml": JOB.replace("window: 1000\n", "report: clip.mp4\n"),
    "escape.yaml": JOB.replace("output: out.mp4", "output: ../escaped.mp4").replace("window: 1000\n", ""),
    "big.yaml": JOB + "# " + "x" * 70_000 + "\n",
}


@pytest.mark.parametrize(("argv", "usage", "last"), CATALOGUE, ids=[" ".join(a[:2] + a[-2:]) for a, _, _ in CATALOGUE])
def test_the_issue_catalogue_ends_with_one_line_and_exit_2_and_writes_nothing(argv, usage, last, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    for name, text in JOB_FILES.items():
        (tmp_path / name).write_text(text)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and "Traceback" not in err
    assert lines[-1].startswith(last), err
    assert len(lines) == (3 if usage else 1) and (not usage or lines[0].startswith("Usage: longedit"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, the input untouched
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name == "escaped.mp4") == []


def _cut_video(folder, clip) -> None:
    """A copy that stopped at half its bytes; its header (written first) still declares every frame."""
    from longedit.samples import make_clip
    from longedit.video import VideoWriter, iter_frames, probe

    clip = make_clip(folder / "src.mkv", frames=48, width=64, height=48).path
    info = probe(clip)
    with VideoWriter(folder / "whole.mp4", info.width, info.height, info.fps) as writer:
        for frame in iter_frames(clip):
            writer.write(frame)
    data = (folder / "whole.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "whole.mp4").unlink()
    clip.unlink()


def _watched(folder, ledger: bytes) -> None:
    (folder / "wf" / "inbox").mkdir(parents=True)
    (folder / "wf" / "inbox" / "job.yaml").write_text(JOB)
    (folder / "wf" / "ledger.sqlite").write_bytes(ledger)


def _malformed_ledger(folder, clip) -> None:
    """A real ledger whose second page was overwritten (SQLite: 'database disk image is malformed')."""
    from longedit.jobs.ledger import Ledger

    _watched(folder, b"")
    ledger = Ledger(folder / "wf" / "ledger.sqlite")
    for index in range(40):
        ledger.transition(f"job{index}", "queued", name=f"job{index}", detail="x" * 200)
    data = bytearray((folder / "wf" / "ledger.sqlite").read_bytes())
    data[4096:8192] = b"\xff" * 4096
    (folder / "wf" / "ledger.sqlite").write_bytes(bytes(data))


def _foreign_ledger(folder, clip) -> None:
    """A SQLite file of some other program under the ledger's name."""
    import sqlite3

    _watched(folder, b"")
    with contextlib.closing(sqlite3.connect(folder / "wf" / "ledger.sqlite")) as conn:
        conn.execute("CREATE TABLE jobs (x)")
        conn.commit()


DAMAGED = [  # issue 22 family 4: damaged media and state, refused with one line and exit 2, nothing changed
    ("cut video", _cut_video, ["edit", "cut.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20"],
     "error: video 'cut.mp4' is cut short (its index points past the end of the file; "),
    ("status, ledger not a database", lambda folder, clip: _watched(folder, bytes(range(256)) * 20), ["status", "wf"],
     "error: the ledger 'wf/ledger.sqlite' is damaged or not a ledger (file is not a database) (move it aside"),
    ("watch, ledger not a database", lambda folder, clip: _watched(folder, bytes(range(256)) * 20), ["watch", "wf", "--once"],
     "error: the ledger '"),
    ("status, foreign SQLite file", _foreign_ledger, ["status", "wf"],
     "error: the ledger 'wf/ledger.sqlite' is damaged or not a ledger (no such column: queued_at)"),
    ("status, malformed ledger", _malformed_ledger, ["status", "wf", "--json"],
     "error: the ledger 'wf/ledger.sqlite' is damaged or not a ledger (database disk image is malformed)"),
]


@pytest.mark.parametrize(("setup", "argv", "last"), [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_media_and_state_end_with_one_line_and_exit_2_and_change_nothing(setup, argv, last, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path, clip)
    capsys.readouterr()
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(last), err
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before  # the job stays in inbox
