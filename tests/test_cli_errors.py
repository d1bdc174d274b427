"""Usage errors of the CLI: click's usage line and one error line on stderr, exit 2, never a traceback.

typer 0.29 raises its own vendored click exceptions, which are not subclasses of `click.ClickException`;
a dependency upgrade once turned every usage error into a traceback with exit 1 (issue 12 item 1).
"""

from __future__ import annotations

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
    # issue 22 family 7
    (["edit", "clip.mp4", "-o", "out.mp4", *EDIT, "--object", "car=1,1,20,20", "--preview", "-3"], False, "error: --preview -3: not a number of frames"),
    (["eval", "clip.mp4", "clip.mp4", "--prompt", "a red car", "--object", "dog=1,1,20,20", "--json", "e.json"], False,
     "error: word 'dog' is not in the prompt 'a red car'"),
]


@pytest.mark.parametrize(("argv", "usage", "last"), CATALOGUE, ids=[" ".join(a[:2] + a[-2:]) for a, _, _ in CATALOGUE])
def test_the_issue_catalogue_ends_with_one_line_and_exit_2_and_writes_nothing(argv, usage, last, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "job.yaml").write_text(JOB)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and "Traceback" not in err
    assert lines[-1].startswith(last), err
    assert len(lines) == (3 if usage else 1) and (not usage or lines[0].startswith("Usage: longedit"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "job.yaml"]
