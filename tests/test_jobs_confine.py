"""Issue 22 family 3: a job file writes only inside its folder (or an --output-root), never over a file it did
not create, never through a link out of the watched folder, and its errors never echo what it holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_jobs_helpers import copy_runner, write_job

from longedit.cli import main
from longedit.errors import UserError
from longedit.jobs.batch import load_batch
from longedit.jobs.executor import LocalExecutor
from longedit.jobs.html_report import write_html_report
from longedit.jobs.jobfile import MAX_JOB_FILE_BYTES, load_job
from longedit.jobs.spool import Spool
from longedit.jobs.watcher import WatchOptions, Watcher
from longedit.jobs.worker import RetryPolicy

SECRET = "TOPSECRET-7f3a9c"


def _watcher(root: Path, **options) -> Watcher:
    options = {"once": True, "settle": 0.05, "poll": 0.05, "corrupt_after": 0.2, "heartbeat": 0.05,
               "policy": RetryPolicy(max_attempts=2, retry_delay=0), **options}
    return Watcher(root, LocalExecutor(copy_runner), WatchOptions(**options))


def _error(root: Path, name: str) -> str:
    return json.loads((root / "failed" / name / "error.json").read_text())["message"]


def _tree(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


ESCAPES = {
    "output ../": {"output": "../escaped.mp4"},
    "output absolute": {"output": "{outside}/escaped.mp4"},
    "report ../": {"report": "../../report.json"},
    "attention video absolute": {"attention_video": "{outside}/att.mp4"},
    "cache_dir ../": {"cache_dir": "../cache"},
    "tune cache absolute": {"tune": {"steps": 1, "cache_dir": "{outside}/tuned"}},
}


def _keys(case: str, outside: Path) -> dict:
    return json.loads(json.dumps(ESCAPES[case]).replace("{outside}", str(outside)))


@pytest.mark.parametrize("case", list(ESCAPES))
def test_run_and_validate_refuse_a_job_that_writes_outside_its_folder(case, clip, tmp_path, capsys):
    folder, outside = tmp_path / "jobs", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    job = write_job(folder / "job.yaml", input=str(clip), **_keys(case, outside))
    before = _tree(tmp_path)
    key = next(iter(ESCAPES[case])) if case != "tune cache absolute" else "tune.cache_dir"
    for command in ("run", "validate"):
        assert main([command, str(job)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: job file '{job}': '{key}' points outside the job's folder"), err
        assert str(outside) not in err and "../" not in err  # the key is named, not the value
    assert _tree(tmp_path) == before


def test_an_output_root_allows_the_operators_folder(clip, tmp_path):
    folder, outside = tmp_path / "jobs", tmp_path / "results"
    outside.mkdir()
    job = write_job(folder / "job.yaml", input=str(clip), output=str(outside / "a.mp4"), report="../results/a.json")
    with pytest.raises(UserError, match="'output' points outside"):
        load_batch([job])
    ((_, loaded),) = load_batch([job], output_roots=[outside])
    assert loaded.output == outside / "a.mp4" and loaded.report == (folder / "../results/a.json")
    assert main(["validate", "--output-root", str(outside), str(job)]) == 0


def test_watch_refuses_outputs_outside_the_jobs_folder_and_over_other_files(clip, tmp_path):
    root = tmp_path / "w"
    spool = Spool(root).create()
    victim = spool.done / "victim.mp4"
    victim.write_bytes(b"someone else's result")
    secret_place = tmp_path / "outside.mp4"
    write_job(spool.inbox / "escape.yaml", input=str(clip), output="../../done/victim.mp4")
    write_job(spool.inbox / "absolute.yaml", input=str(clip), output=str(secret_place))
    write_job(spool.inbox / "meta.yaml", input=str(clip), output="meta.json")
    write_job(spool.inbox / "own.yaml", input=str(clip), report="own.yaml")
    write_job(spool.inbox / "fine.yaml", input=str(clip), output="sub-name.mp4")

    outcomes = _watcher(root).run()

    assert sorted(outcomes["failed"]) == ["absolute", "escape", "meta", "own"] and outcomes["done"] == ["fine"]
    assert victim.read_bytes() == b"someone else's result" and not secret_place.exists()
    assert "'output' points outside the job's folder" in _error(root, "escape")
    assert "'output' points outside the job's folder" in _error(root, "absolute")
    assert "takes a name the watched folder uses itself" in _error(root, "meta")
    assert "the report would overwrite an existing file" in _error(root, "own")
    assert (spool.done / "fine" / "sub-name.mp4").read_bytes() == clip.read_bytes()


def test_watch_with_an_output_root_writes_there_but_never_over_an_existing_file(clip, tmp_path):
    root, results = tmp_path / "w", tmp_path / "results"
    results.mkdir()
    (results / "taken.mp4").write_bytes(b"kept")
    spool = Spool(root).create()
    write_job(spool.inbox / "new.yaml", input=str(clip), output=str(results / "new.mp4"))
    write_job(spool.inbox / "taken.yaml", input=str(clip), output=str(results / "taken.mp4"))

    outcomes = _watcher(root, output_roots=(results,)).run()

    assert outcomes["done"] == ["new"] and outcomes["failed"] == ["taken"]
    assert (results / "new.mp4").read_bytes() == clip.read_bytes() and (results / "taken.mp4").read_bytes() == b"kept"
    assert "the output video would overwrite an existing file" in _error(root, "taken")


def test_a_symlinked_job_file_is_refused_and_its_target_never_echoed(clip, tmp_path, capsys):
    secret = tmp_path / "secret.yaml"  # a YAML secret: read, it would fail with its keys and values in the message
    secret.write_text(f"prompt: {SECRET}\nsteps: {SECRET}\n{SECRET}: 1\n")
    root = tmp_path / "w"
    spool = Spool(root).create()
    (spool.inbox / "evil.yaml").symlink_to(secret)
    (spool.inbox / "evil.mp4").write_bytes(clip.read_bytes())

    outcomes = _watcher(root).run()

    assert outcomes["failed"] == ["evil"]
    assert _error(root, "evil") == ("job file 'evil.yaml' is a symbolic link out of the watched folder "
                                    "(copy the file into the watched folder instead of linking to it)")
    report = tmp_path / "morning.html"
    write_html_report(root, report)
    for path in [*root.rglob("*"), report]:
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path
    assert main(["status", str(root), "--json"]) == 0 and SECRET not in capsys.readouterr().out
    assert secret.read_text().startswith("prompt: ")


def test_an_input_linked_out_of_the_watched_folder_is_refused(clip, tmp_path):
    root = tmp_path / "w"
    spool = Spool(root).create()
    (spool.inbox / "linked.mp4").symlink_to(clip)  # the companion video is a link to a file outside
    write_job(spool.inbox / "linked.yaml")
    (spool.inbox / "named-link.mp4").symlink_to(clip)
    write_job(spool.inbox / "named.yaml", input="named-link.mp4")
    write_job(spool.inbox / "direct.yaml", input=str(clip))  # named outright: the operator's shared clips

    outcomes = _watcher(root).run()

    assert sorted(outcomes["failed"]) == ["linked", "named"] and outcomes["done"] == ["direct"]
    assert "the input video is a symbolic link out of the watched folder" in _error(root, "named")
    assert "the input video is a symbolic link out of the watched folder" in _error(root, "linked")


def test_a_job_file_over_the_size_limit_is_refused_unread(clip, tmp_path, capsys):
    big = write_job(tmp_path / "big.yaml", input=str(clip), prompt="a robot " + "x" * MAX_JOB_FILE_BYTES)
    assert main(["run", str(big)]) == 2
    assert capsys.readouterr().err == f"error: job file '{big}' is over 64 KiB (a job file holds a few keys; check it is the right file)\n"
    root = tmp_path / "w"
    spool = Spool(root).create()
    big.rename(spool.inbox / "big.yaml")
    assert _watcher(root).run()["failed"] == ["big"]
    assert "is over 64 KiB" in _error(root, "big")


def test_errors_about_a_job_file_name_keys_not_values(clip, tmp_path):
    for text, message in [
        (f"input: {clip}\nsource_prompt: a\nprompt: b\nsteps: {SECRET}\n", "'steps' must be an integer, got text of 16 characters"),
        (f"input: {clip}\nsource_prompt: a\nprompt: b\n{SECRET}: 1\n", "unknown key that is not a setting name"),
    ]:
        (tmp_path / "job.yaml").write_text(text)
        with pytest.raises(UserError, match=message) as error:
            load_job(tmp_path / "job.yaml")
        assert SECRET not in str(error.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("equalize", [SECRET], "equalize: cannot read text of 16 characters: write WORD=SCALE"),
    ("preview", SECRET, "preview must be true (one window) or a number of frames >= 1, not text of 16 characters"),
])
def test_a_validators_message_does_not_quote_the_value(key, value, message, clip, tmp_path):
    job = write_job(tmp_path / "job.yaml", input=str(clip), **{key: value})
    with pytest.raises(UserError, match=re.escape(message)) as error:
        load_job(job)
    assert SECRET not in str(error.value)


FAKE_RUN = ["run", "--quiet", "--runner", "test_jobs_helpers:copy_runner"]


@pytest.mark.parametrize("key", ["output", "report", "attention_video"])
def test_run_and_validate_refuse_a_job_over_a_file_longedit_did_not_write(key, clip, tmp_path, capsys):
    folder = tmp_path / "jobs"
    folder.mkdir()
    taken = folder / ("taken.mp4" if key != "report" else "taken.json")
    taken.write_bytes(b"somebody's own file")
    job = write_job(folder / "job.yaml", input=str(clip), **{key: taken.name})
    before = _tree(tmp_path)
    for command in (FAKE_RUN, ["validate"]):
        assert main([*command, str(job)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: job file '{job}': '{key}' names an existing file that longedit did not write")
        assert err.count("\n") == 1 and "taken" not in err  # one line; the key is named, not the value
    assert _tree(tmp_path) == before  # the file byte-identical, no record, no output


def test_a_rerun_replaces_its_own_output_but_not_one_edited_since(clip, tmp_path, capsys):
    folder = tmp_path / "jobs"
    job = write_job(folder / "job.yaml", input=str(clip), output="out/edited.mp4")
    output = folder / "out" / "edited.mp4"
    assert main([*FAKE_RUN, str(job)]) == 0
    first = output.stat()
    record = json.loads((folder / ".longedit-outputs.json").read_text())
    assert record == {"out/edited.mp4": {"size": first.st_size, "mtime_ns": first.st_mtime_ns}}

    assert main(["validate", str(job)]) == 0
    assert main([*FAKE_RUN, str(job)]) == 0  # its own output: replaced by a new file
    again = output.stat()
    assert again.st_ino != first.st_ino and output.read_bytes() == clip.read_bytes()
    capsys.readouterr()

    with output.open("ab") as handle:
        handle.write(b"a hand-made fix")
    edited = output.read_bytes()
    for command in (FAKE_RUN, ["validate"]):
        assert main([*command, str(job)]) == 2
        assert "'output' names an existing file that longedit did not write (or that was changed since)" in (
            capsys.readouterr().err)
    assert output.read_bytes() == edited
