"""`--preview [N]`: the first frames at the job's settings into `<stem>.preview.*` with attention pictures,
bad input failing first; `preview: true` in job files; `watch --preview-first` into previews/NAME/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_jobs_helpers import run_cli, write_job

from longedit import engine
from longedit.cli import main
from longedit.commands.edit import optional_preview_value
from longedit.jobs.ledger import Ledger
from longedit.samples import make_clip
from longedit.video import probe

SOURCE, PROMPT = "a red square on a road", "a yellow duck on a road"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """11 frames with audio: a preview of one 4-frame window is a third of it."""
    return make_clip(tmp_path_factory.mktemp("preview") / "clip.mp4", frames=11, width=64, height=64, audio=True).path


def _args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--source-prompt", SOURCE, "--prompt", PROMPT,
            "--steps", "2", "--size", "64", "--window", "4", "--preset", "fast", *extra]


def test_preview_flag_takes_an_optional_number():
    assert optional_preview_value(["edit", "a.mp4", "--preview", "-o", "b.mp4"]) == [
        "edit", "a.mp4", "--preview", "window", "-o", "b.mp4"]
    assert optional_preview_value(["edit", "a.mp4", "--preview"]) == ["edit", "a.mp4", "--preview", "window"]
    assert optional_preview_value(["edit", "a.mp4", "--preview", "12"]) == ["edit", "a.mp4", "--preview", "12"]
    assert optional_preview_value(["edit", "--preview=3"]) == ["edit", "--preview=3"]
    assert optional_preview_value(["edit", "--preview", "-3", "-o", "b.mp4"]) == ["edit", "--preview", "-3", "-o", "b.mp4"]
    assert optional_preview_value(["status", "--preview"]) == ["status", "--preview"]


@pytest.mark.slow
def test_preview_edits_one_window_into_its_own_files(clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert main(_args(clip, out, "--object", "duck=10,10,50,40", "--preview", "--report", str(tmp_path / "r.json"))) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.preview.attention-duck.png", "out.preview.attention.mp4", "out.preview.json", "out.preview.mp4"]
    source, preview = probe(clip), probe(tmp_path / "out.preview.mp4")
    assert preview.frames == 4 and preview.timestamps == source.timestamps[:4] and preview.has_audio
    assert probe(tmp_path / "out.preview.attention.mp4").frames == 4
    report = json.loads((tmp_path / "out.preview.json").read_text())
    assert report["preview"] == {"frames": 4, "source_frames": 11}
    assert report["windows"] == [[0, 4]] and report["output"] == str(tmp_path / "out.preview.mp4")
    assert report["settings"]["steps"] == 2 and report["settings"]["window"] == 4  # the job's own settings
    assert report["attention_pictures"] == {"video": "out.preview.attention.mp4",
                                            "strips": {"duck": "out.preview.attention-duck.png"}}


@pytest.mark.slow
def test_preview_of_n_frames(clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert main(_args(clip, out, "--object", "duck=10,10,50,40", "--preview", "6")) == 0
    report = json.loads((tmp_path / "out.preview.json").read_text())
    assert report["preview"] == {"frames": 6, "source_frames": 11} and report["windows"] == [[0, 4], [2, 6]]
    assert probe(tmp_path / "out.preview.mp4").frames == 6 and not out.exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--object", "robot=10,10,50,40", "--preview"], "word 'robot' is not in the prompt"),
        (["--object", "duck=10,10,50,40@40", "--preview"], "past the end of the video"),  # checked on the whole video
        (["--object", "duck=10,10,50,40", "--preview", "0"], "--preview 0"),
        (["--object", "duck=10,10,50,40", "--preview", "-3"], "error: --preview -3: not a number of frames"),  # was "No such option"
        (["--preview", "1.5", "--object", "duck=10,10,50,40"], "error: --preview 1.5: not a number of frames"),
    ],
)
def test_bad_preview_fails_first_and_writes_nothing(clip, tmp_path, capsys, monkeypatch, extra, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the input was checked")

    monkeypatch.setattr(engine.runner, "load_backbone", forbidden)
    code = main(_args(clip, tmp_path / "out.mp4", *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_preview_key_of_a_job_file_is_checked(clip, tmp_path, capsys):
    write_job(tmp_path / "job.yaml", input=str(clip), preview=-1)
    code = main(["validate", str(tmp_path / "job.yaml")])  # in this process: a CLI subprocess paid the imports again
    assert code == 2 and "preview must be true (one window) or a number of frames" in capsys.readouterr().err
    write_job(tmp_path / "ok.yaml", input=str(clip), output="clip-edited.mp4", preview=True)
    code = main(["validate", str(tmp_path / "ok.yaml")])
    assert code == 0 and f"output: {tmp_path / 'clip-edited.preview.mp4'}" in capsys.readouterr().out


@pytest.mark.slow
def test_watch_preview_first_previews_each_new_job_then_runs_it(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=64, height=64).path
    inbox = tmp_path / "inbox"
    write_job(inbox / "good.yaml", input=str(clip), steps=2, window=4, preset="fast")
    write_job(inbox / "bad.yaml", input=str(clip), steps=2, window=4, objects=[{"word": "dragon", "box": [8, 8, 40, 40]}])
    result = run_cli("watch", str(tmp_path), "--once", "--settle", "0.1", "--poll", "0.1", "--preview-first")
    assert result.returncode == 0, result.stderr
    preview = tmp_path / "previews" / "good"
    assert sorted(p.name for p in preview.iterdir()) == [
        "good-edited.preview.attention-robot.png", "good-edited.preview.attention.mp4", "good-edited.preview.json",
        "good-edited.preview.mp4"]
    assert probe(preview / "good-edited.preview.mp4").frames == 4
    assert probe(tmp_path / "done" / "good" / "good-edited.mp4").frames == 6  # then the whole job
    assert json.loads((tmp_path / "done" / "good" / "report.json").read_text())["preview"] is None
    error = json.loads((tmp_path / "failed" / "bad" / "error.json").read_text())
    assert error["message"].startswith("preview: word 'dragon' is not in the prompt") and error["attempts"] == 0
    ledger = Ledger(tmp_path / "ledger.sqlite")
    rows = {row["name"]: row for row in ledger.jobs()}
    details = [e["detail"] for e in ledger.events(rows["good"]["id"])]
    assert any(d.startswith("previewing into") for d in details) and rows["good"]["attempts"] == 1
