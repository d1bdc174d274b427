"""The one job executor of `run` and `watch`: what an attempt's error means, and that a UserError never costs a retry."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_jobs_helpers import write_job

from longedit.errors import JobInterrupted, UserError
from longedit.jobs.batch import run_batch
from longedit.jobs.executor import LocalExecutor, make_executor
from longedit.jobs.ledger import Ledger
from longedit.jobs.outcome import attempt_outcome
from longedit.jobs.ray_backend import RemoteJobError
from longedit.jobs.spool import Spool
from longedit.jobs.watcher import WatchOptions, Watcher
from longedit.jobs.worker import RetryPolicy


@pytest.mark.parametrize(
    "error, outcome",
    [
        (JobInterrupted("stopped at edit step 2"), "interrupted"),
        (UserError("the word 'robot' is not in the prompt", "name a word of --prompt"), "failed"),
        (RemoteJobError("bad word", type_name="UserError", remote_traceback="tb", user_error=True), "failed"),
        (RemoteJobError("ActorDiedError", type_name="ActorDiedError", remote_traceback="tb", user_error=False), "retry"),
        (RuntimeError("CUDA out of memory"), "retry"),
    ],
)
def test_attempt_outcome(error, outcome):
    assert attempt_outcome(error) == outcome


def test_make_executor_checks_the_backend_and_address():
    with pytest.raises(UserError, match="unknown backend 'slurm'"):
        make_executor("slurm")
    with pytest.raises(UserError, match="--address is only used with --backend ray"):
        make_executor("local", address="ray://head:10001")
    executor = make_executor("local", "test_jobs_helpers:copy_runner", progress=True)
    assert isinstance(executor, LocalExecutor) and executor.progress and executor.default_workers() == 1
    assert not executor.remote


def test_local_executor_makes_the_work_folder_and_passes_the_stop_event(tmp_path):
    seen = {}

    def runner(job, *, work_dir, progress, stop_event):
        seen.update(work_dir=work_dir, exists=work_dir.is_dir(), progress=progress, stop=stop_event)
        return {"ok": True}

    stop = threading.Event()
    assert LocalExecutor(runner)("job", tmp_path / "w" / "a", stop) == {"ok": True}
    assert seen == {"work_dir": tmp_path / "w" / "a", "exists": True, "progress": False, "stop": stop}


def _counting_user_error_runner(calls: list):
    def runner(job, **kwargs):
        calls.append(Path(job.input).name)
        raise UserError("the word 'robot' is not in the prompt", "name a word of --prompt")

    return runner


def test_run_fails_a_user_error_at_once_and_keeps_going(tmp_path, clip):
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    files = [write_job(tmp_path / f"{n}.yaml", input="clip.mp4", output=f"out/{n}.mp4") for n in ("a", "b")]
    (tmp_path / "out").mkdir()
    calls: list = []
    results = run_batch(files, runner=_counting_user_error_runner(calls), progress=False)
    assert [r.status for r in results] == ["failed", "failed"]
    assert calls == ["clip.mp4", "clip.mp4"]  # one attempt per job, no retry
    assert all(isinstance(r.error, UserError) and "'robot' is not in the prompt" in str(r.error) for r in results)


def test_run_reports_an_interruption_as_interrupted(tmp_path, clip):
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    file = write_job(tmp_path / "a.yaml", input="clip.mp4", output="out/a.mp4")
    (tmp_path / "out").mkdir()

    def runner(job, **kwargs):
        raise JobInterrupted("stopped at edit step 1")

    (result,) = run_batch([file], runner=runner, progress=False)
    assert result.status == "interrupted" and isinstance(result.error, JobInterrupted)


class RemoteUserErrorExecutor:
    """An executor whose attempts fail the way a Ray task reports a UserError."""

    remote = True

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, job, work_dir, stop_event):
        self.calls += 1
        raise RemoteJobError("the word 'dragon' is not in the prompt", type_name="UserError",
                             remote_traceback="Traceback ...", user_error=True)

    def default_workers(self) -> int:
        return 1


def test_watch_fails_a_remote_user_error_after_one_attempt(tmp_path, clip):
    spool = Spool(tmp_path).create()
    (spool.inbox / "word.mp4").write_bytes(clip.read_bytes())
    write_job(spool.inbox / "word.yaml")
    execute = RemoteUserErrorExecutor()
    options = WatchOptions(once=True, settle=0.05, poll=0.05, corrupt_after=0.2, heartbeat=0.05,
                           policy=RetryPolicy(max_attempts=3, retry_delay=0))
    assert Watcher(tmp_path, execute, options).run() == {"failed": ["word"]}
    assert execute.calls == 1
    (row,) = Ledger(spool.ledger_path).jobs()
    assert row["state"] == "failed" and row["attempts"] == 1
    assert row["error"].startswith("the word 'dragon' is not in the prompt")
