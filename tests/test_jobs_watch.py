"""The watched folder with a fake runner: claiming, settling, retries, failures, stop/resume, status."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import typer
from test_jobs_helpers import (
    cli_env,
    copy_runner,
    longedit_cmd,
    run_in_thread,
    wait_for,
    write_job,
)
from typer.testing import CliRunner

from longedit.commands import jobs as jobs_commands
from longedit.errors import JobInterrupted, UserError
from longedit.jobs.claim import Owner
from longedit.jobs.executor import LocalExecutor
from longedit.jobs.ledger import Ledger
from longedit.jobs.spool import Spool, claim_from_inbox
from longedit.jobs.status import collect_status, format_table
from longedit.jobs.watcher import WatchOptions, Watcher
from longedit.jobs.worker import RetryPolicy


def _watcher(root: Path, runner=copy_runner, **options) -> Watcher:
    options = {"once": True, "settle": 0.05, "poll": 0.05, "corrupt_after": 0.2, "heartbeat": 0.05, **options}
    options.setdefault("policy", RetryPolicy(max_attempts=3, retry_delay=0))
    return Watcher(root, LocalExecutor(runner), WatchOptions(**options))


def _add_job(inbox: Path, name: str, clip: Path, companion: bool = True, **keys) -> Path:
    if companion:
        (inbox / f"{name}.mp4").write_bytes(clip.read_bytes())
    return write_job(inbox / f"{name}.yaml", **keys)


def _rows(root: Path) -> dict[str, dict]:
    return {row["name"]: row for row in Ledger(root / "ledger.sqlite").jobs()}


def _error_json(root: Path, name: str) -> dict:
    return json.loads((root / "failed" / name / "error.json").read_text())


def test_good_bad_and_corrupt_jobs_each_end_in_the_right_place(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "good", clip)
    shared = spool.inbox / "shared.mp4"
    shared.write_bytes(clip.read_bytes())
    _add_job(spool.inbox, "other", clip, companion=False, input="shared.mp4", output="custom.mp4")
    _add_job(spool.inbox, "typo", clip, companion=False, input="shared.mp4", stepz=3)
    (spool.inbox / "corrupt.mp4").write_bytes(os.urandom(5000))
    write_job(spool.inbox / "corrupt.yaml")
    original = clip.read_bytes()

    outcomes = _watcher(tmp_path).run()

    assert sorted(outcomes["done"]) == ["good", "other"] and sorted(outcomes["failed"]) == ["corrupt", "typo"]
    done = spool.done / "good"
    assert sorted(p.name for p in done.iterdir()) == ["good-edited.mp4", "good.mp4", "good.yaml", "meta.json", "report.json"]
    assert (done / "good.mp4").read_bytes() == original  # the input moved with its job, unchanged
    assert (done / "good-edited.mp4").read_bytes() == original  # what the fake runner wrote
    assert json.loads((done / "report.json").read_text())["output"] == str(done / "good-edited.mp4")
    assert (spool.done / "other" / "custom.mp4").exists()
    assert shared.read_bytes() == original  # a video named by `input:` stays where it is
    assert sorted(p.name for p in spool.inbox.iterdir()) == ["shared.mp4"]
    assert list(spool.processing.iterdir()) == []

    typo = _error_json(tmp_path, "typo")
    assert "job file 'typo.yaml': unknown key 'stepz'" in typo["message"] and "did you mean 'steps'?" in typo["message"]
    assert typo["type"] == "UserError" and typo["attempts"] == 0 and typo["traceback"]
    corrupt = _error_json(tmp_path, "corrupt")
    assert "cannot read video" in corrupt["message"] and corrupt["failed_at"] >= corrupt["claimed_at"]
    assert (spool.failed / "corrupt" / "corrupt.mp4").exists()  # kept for inspection

    rows = _rows(tmp_path)
    assert {n: r["state"] for n, r in rows.items()} == {"good": "done", "other": "done", "typo": "failed", "corrupt": "failed"}
    assert rows["good"]["attempts"] == 1 and rows["good"]["peak_rss_mb"] == 123
    assert rows["good"]["output"] == str(done / "good-edited.mp4")
    assert rows["good"]["finished_at"] >= rows["good"]["started_at"]


def test_typo_job_fails_at_once_even_when_its_input_is_missing(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "typo", clip, companion=False, input="not-copied-yet.mp4", stepz=3)

    outcomes = _watcher(tmp_path).run()

    assert outcomes["failed"] == ["typo"]
    assert "unknown key 'stepz'" in _error_json(tmp_path, "typo")["message"]


def test_two_watchers_in_threads_run_each_of_ten_jobs_once(tmp_path, clip, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("LONGEDIT_FAKE_LOG", str(log))
    monkeypatch.setenv("LONGEDIT_FAKE_SLEEP", "0.05")
    spool = Spool(tmp_path / "w").create()
    for i in range(10):
        _add_job(spool.inbox, f"job{i}", clip)
    watchers = [_watcher(spool.root, workers=2) for _ in range(2)]
    threads = [run_in_thread(w.run) for w in watchers]
    for thread, box in threads:
        thread.join(60)
        assert "error" not in box
    runs = [json.loads(line)["job"] for line in log.read_text().splitlines()]
    assert sorted(runs) == sorted(f"job{i}" for i in range(10))
    _assert_each_done_once(spool.root, 10)


def _assert_each_done_once(root: Path, count: int) -> None:
    ledger = Ledger(root / "ledger.sqlite")
    rows = ledger.jobs()
    assert sorted(r["name"] for r in rows) == sorted(f"job{i}" for i in range(count))
    assert all(r["state"] == "done" and r["attempts"] == 1 for r in rows)
    for row in rows:
        assert [e["state"] for e in ledger.events(row["id"])] == ["queued", "running", "done"]
    assert sorted(p.name for p in (root / "done").iterdir()) == sorted(f"job{i}" for i in range(count))


@pytest.mark.slow
def test_two_watch_processes_run_each_of_ten_jobs_once(tmp_path, clip):
    root = tmp_path / "w"
    spool = Spool(root).create()
    for i in range(10):
        _add_job(spool.inbox, f"job{i}", clip)
    log = tmp_path / "runs.jsonl"
    env = cli_env(LONGEDIT_FAKE_LOG=str(log), LONGEDIT_FAKE_SLEEP="0.2")
    args = ["watch", str(root), "--once", "--settle", "0.1", "--poll", "0.1", "--runner", "test_jobs_helpers:copy_runner"]
    procs = [subprocess.Popen(longedit_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["job"] for r in runs) == sorted(f"job{i}" for i in range(10))  # nothing ran twice
    _assert_each_done_once(root, 10)


def test_job_file_still_being_written_is_not_claimed(tmp_path, clip):
    spool = Spool(tmp_path).create()
    (spool.inbox / "slow.mp4").write_bytes(clip.read_bytes())
    lines = write_job(tmp_path / "full.yaml").read_text().splitlines(keepends=True)
    assert lines[-1].startswith("  ") and any(line.startswith("prompt:") for line in lines)
    job_file = spool.inbox / "slow.yaml"
    job_file.write_text("")
    seen_prompts: list[str] = []

    def runner(job, **kwargs):
        seen_prompts.append(job.prompt)
        return copy_runner(job, **kwargs)

    watcher = _watcher(tmp_path, runner, settle=0.3, poll=0.05)
    thread, box = run_in_thread(watcher.run)
    for line in lines:  # a slow writer: one line every 0.1 s (less than the settle time)
        time.sleep(0.1)
        with job_file.open("a") as handle:
            handle.write(line)
        assert not (spool.processing / "slow").exists() and not (spool.done / "slow").exists()
    thread.join(30)
    assert "error" not in box and box["result"] == {"done": ["slow"]}
    assert seen_prompts == ["a robot talking on a phone in a car"]


def test_part_video_is_not_picked_until_renamed(tmp_path, clip):
    spool = Spool(tmp_path).create()
    write_job(spool.inbox / "late.yaml")
    (spool.inbox / "late.mp4.part").write_bytes(clip.read_bytes()[:1000])
    assert _watcher(tmp_path).run() == {}  # --once: nothing complete to do
    assert sorted(p.name for p in spool.inbox.iterdir()) == ["late.mp4.part", "late.yaml"]
    status = collect_status(tmp_path)
    assert [(j["name"], j["state"]) for j in status["jobs"]] == [("late", "queued")]
    (spool.inbox / "late.mp4.part").write_bytes(clip.read_bytes())
    os.rename(spool.inbox / "late.mp4.part", spool.inbox / "late.mp4")
    assert _watcher(tmp_path).run() == {"done": ["late"]}


def _flaky(failures: int):
    calls = []

    def runner(job, **kwargs):
        calls.append(kwargs["work_dir"])
        if len(calls) <= failures:
            raise RuntimeError(f"CUDA out of memory (call {len(calls)})")
        return copy_runner(job, **kwargs)

    return runner, calls


def test_failed_attempts_are_retried_in_the_same_work_folder(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "flaky", clip)
    runner, calls = _flaky(2)
    assert _watcher(tmp_path, runner).run() == {"done": ["flaky"]}
    assert len(calls) == 3 and len(set(calls)) == 1 and calls[0].name == "work"
    row = _rows(tmp_path)["flaky"]
    assert row["attempts"] == 3 and row["state"] == "done" and row["error"] is None
    states = [e["state"] for e in Ledger(tmp_path / "ledger.sqlite").events(row["id"])]
    assert states == ["queued", "running", "queued", "running", "queued", "running", "done"]
    assert not (spool.done / "flaky" / "error.json").exists()


def test_job_gives_up_after_max_attempts(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "doomed", clip)
    runner, calls = _flaky(99)
    assert _watcher(tmp_path, runner, policy=RetryPolicy(max_attempts=2, retry_delay=0)).run() == {"failed": ["doomed"]}
    assert len(calls) == 2
    error = _error_json(tmp_path, "doomed")
    assert error["message"] == "gave up after 2 attempt(s); last error: CUDA out of memory (call 2)"
    assert error["attempts"] == 2 and "RuntimeError" in error["traceback"]
    assert [h["state"] for h in error["history"]] == ["queued", "running", "queued", "running"]


def test_user_error_fails_at_once(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "word", clip)
    calls = []

    def runner(job, **kwargs):
        calls.append(1)
        raise UserError("the word 'robot' is not in the prompt", "name a word of --prompt")

    assert _watcher(tmp_path, runner).run() == {"failed": ["word"]}
    assert len(calls) == 1
    assert _error_json(tmp_path, "word")["message"].startswith("the word 'robot' is not in the prompt")


def test_stop_releases_the_job_and_the_next_start_resumes_it(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "long", clip)
    started = threading.Event()
    seen_work_dirs = []

    def blocking(job, *, work_dir=None, progress=True, stop_event=None):
        seen_work_dirs.append(work_dir)
        (work_dir / "checkpoint.pt").write_bytes(b"not really")
        started.set()
        assert stop_event.wait(30)
        raise JobInterrupted("stopped at edit step 2")

    watcher = _watcher(tmp_path, blocking, once=False)
    thread, box = run_in_thread(watcher.run)
    assert started.wait(30)
    watcher.request_stop()
    thread.join(30)
    assert box["result"] == {"interrupted": ["long"]}
    folder = spool.processing / "long"
    assert (folder / "work" / "checkpoint.pt").exists()
    row = _rows(tmp_path)["long"]
    assert row["state"] == "interrupted" and row["attempts"] == 0  # a clean stop is not an attempt
    assert collect_status(tmp_path)["jobs"][0]["note"] == "resumes when a watcher starts"

    def finishing(job, *, work_dir=None, **kwargs):
        seen_work_dirs.append(work_dir)
        assert (work_dir / "checkpoint.pt").exists()  # resumes from the same work folder
        return copy_runner(job, work_dir=work_dir, **kwargs)

    assert _watcher(tmp_path, finishing).run() == {"done": ["long"]}
    assert seen_work_dirs[0] == folder / "work" and seen_work_dirs[1] == folder / "work"
    assert not (spool.done / "long" / "work").exists()  # checkpoints are dropped once done
    row = _rows(tmp_path)["long"]
    assert row["state"] == "done" and row["attempts"] == 1


def _dead_owner() -> Owner:
    child = subprocess.Popen(["true"])
    child.wait()
    return dataclasses.replace(Owner.current(), pid=child.pid)


def _orphan(tmp_path: Path, clip: Path, name: str, attempts: int) -> Spool:
    """A job whose worker died mid-run: claimed by a dead pid, `running` in the ledger."""
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, name, clip)
    job = claim_from_inbox(spool, spool.inbox / f"{name}.yaml", _dead_owner(), spool.inbox / f"{name}.mp4")
    ledger = Ledger(spool.ledger_path)
    ledger.transition(job.job_id, "queued", name=name, folder=str(job.folder))
    for _ in range(attempts):
        ledger.transition(job.job_id, "running", attempts_delta=1)
    return spool


def test_job_of_a_dead_worker_is_resumed_and_the_lost_attempt_counts(tmp_path, clip):
    spool = _orphan(tmp_path, clip, "orphan", attempts=1)
    status = collect_status(tmp_path)
    assert status["jobs"][0]["state"] == "running" and "is gone; resumes" in status["jobs"][0]["note"]
    assert _watcher(tmp_path).run() == {"done": ["orphan"]}
    row = _rows(tmp_path)["orphan"]
    assert row["attempts"] == 2
    events = Ledger(spool.ledger_path).events(row["id"])
    assert [e["state"] for e in events] == ["queued", "running", "interrupted", "running", "done"]
    assert "lost" in events[2]["detail"] and "is gone" in events[2]["detail"]


def test_job_that_keeps_killing_its_worker_goes_to_failed(tmp_path, clip):
    _orphan(tmp_path, clip, "killer", attempts=3)
    assert _watcher(tmp_path).run() == {"failed": ["killer"]}
    message = _error_json(tmp_path, "killer")["message"]
    assert message.startswith("gave up after 3 attempt(s); the last one was lost (owner ") and "is gone" in message


def test_job_finished_just_before_its_worker_died_is_not_run_again(tmp_path, clip):
    spool = _orphan(tmp_path, clip, "finished", attempts=1)
    (spool.processing / "finished" / "report.json").write_text(json.dumps({"output": "x", "memory": {}}))

    def must_not_run(job, **kwargs):
        raise AssertionError("ran again")

    assert _watcher(tmp_path, must_not_run).run() == {"done": ["finished"]}


def test_status_table_and_json(tmp_path, clip):
    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "good", clip)
    _add_job(spool.inbox, "typo", clip, stepz=3)
    _watcher(tmp_path).run()
    _orphan(tmp_path, clip, "orphan", attempts=1)
    write_job(spool.inbox / "waiting.yaml", input="later.mp4")
    Ledger(spool.ledger_path).update(_rows(tmp_path)["orphan"]["id"], step=3, total=6)

    app = typer.Typer()
    jobs_commands.register(app)
    table = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0] == f"{tmp_path}: 1 queued, 1 running, 0 interrupted, 1 done, 1 failed"
    assert lines[1].split() == ["STATE", "NAME", "ATTEMPTS", "PROGRESS", "ETA", "STARTED", "TIME", "PEAK", "MEM", "NOTE"]
    assert [line.split()[:2] for line in lines[2:]] == [["queued", "waiting"], ["running", "orphan"], ["done", "good"],
                                                        ["failed", "typo"]]
    assert "3/6" in lines[3] and "is gone" in lines[3]
    assert "123MB" in lines[4] and "good-edited.mp4" in lines[4]
    assert "unknown key 'stepz'" in lines[5]

    result = CliRunner().invoke(app, ["status", str(tmp_path), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["counts"] == {"queued": 1, "running": 1, "interrupted": 0, "done": 1, "failed": 1}
    by_name = {j["name"]: j for j in data["jobs"]}
    assert by_name["orphan"]["step"] == 3 and by_name["orphan"]["total"] == 6
    assert by_name["good"]["peak_rss_mb"] == 123 and by_name["typo"]["error"].startswith("job file 'typo.yaml'")
    assert format_table(data).splitlines()[0] == lines[0]


def test_status_of_a_folder_that_is_not_watched(tmp_path):
    with pytest.raises(UserError, match="is not a watched folder"):
        collect_status(tmp_path)


def test_heartbeat_copies_checkpoint_progress_into_the_ledger(tmp_path, clip):
    from longedit.statefile import save_state

    spool = Spool(tmp_path).create()
    _add_job(spool.inbox, "slow", clip)
    ledger = Ledger(spool.ledger_path)

    def checkpointing(job, *, work_dir=None, **kwargs):
        save_state(work_dir / "checkpoint.pt", {"phase": "edit", "step": 1}, what="the checkpoint")
        wait_for(lambda: (ledger.jobs()[0]["step"] or 0) == job.steps + 1, timeout=10, what="progress in the ledger")
        return copy_runner(job, work_dir=work_dir, **kwargs)

    assert _watcher(tmp_path, checkpointing).run() == {"done": ["slow"]}
    row = _rows(tmp_path)["slow"]
    assert (row["step"], row["total"]) == (6, 6)


def _partials_of_a_killed_attempt(folder: Path, pid: int) -> list[Path]:
    """What a worker killed mid-write leaves in a job folder: a partial video, report and store."""
    paths = [folder / f".orphan-edited.mp4.{pid}.0a1b2c3d.part", folder / f".report.json.{pid}.9f8e7d6c.tmp",
             folder / f".orphan-edited.mp4.{pid}.attention"]
    paths[0].write_bytes(b"half a video")
    paths[1].write_text("{")
    paths[2].mkdir()
    (paths[2] / "maps.f16").write_bytes(b"\0" * 64)
    return paths


@pytest.mark.parametrize("ending", ["done", "failed"])
def test_partials_of_a_killed_attempt_never_reach_done_or_failed(ending, tmp_path, clip):
    spool = _orphan(tmp_path, clip, "orphan", attempts=1)
    partials = _partials_of_a_killed_attempt(spool.processing / "orphan", _dead_owner().pid)

    def user_error(job, **kwargs):
        raise UserError("the word 'robot' is not in the prompt", "name a word of --prompt")

    assert _watcher(tmp_path, copy_runner if ending == "done" else user_error).run() == {ending: ["orphan"]}
    folder = tmp_path / ending / "orphan"
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    assert "orphan.mp4" in names and "orphan.yaml" in names and all(not p.exists() for p in partials)
    if ending == "done":
        assert (folder / "orphan-edited.mp4").read_bytes() == clip.read_bytes()


@pytest.mark.parametrize("problem", ["typo", "window", "yaml"])
def test_a_job_that_fails_on_its_job_file_takes_its_companion_video_out_of_the_inbox(problem, tmp_path, clip):
    spool = Spool(tmp_path).create()
    if problem == "yaml":
        (spool.inbox / "bad.yaml").write_text("steps: [\n")
    else:
        write_job(spool.inbox / "bad.yaml", **({"stepz": 3} if problem == "typo" else {"window": 1000}))
    (spool.inbox / "bad.mp4").write_bytes(clip.read_bytes())

    def must_not_run(job, **kwargs):
        raise AssertionError("a bad job file ran")

    assert _watcher(tmp_path, must_not_run).run() == {"failed": ["bad"]}
    assert list(spool.inbox.iterdir()) == []
    assert (spool.failed / "bad" / "bad.mp4").read_bytes() == clip.read_bytes()  # moved unchanged, for a re-queue
    message = _error_json(tmp_path, "bad")["message"]
    assert {"typo": "unknown key 'stepz'", "window": "'window' must be <= 32, got 1000",
            "yaml": "is not valid YAML"}[problem] in message
