"""The Ray backend against a local Ray instance (2 CPUs, no GPU), with fake runners run in Ray workers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from test_jobs_helpers import TESTS, make_video, run_in_thread, wait_for, write_job

from longedit.errors import UserError
from longedit.jobs.ledger import Ledger
from longedit.jobs.ray_backend import import_ray
from longedit.jobs.spool import Spool
from longedit.jobs.watcher import WatchOptions, Watcher
from longedit.jobs.worker import RetryPolicy


def test_missing_ray_is_a_user_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(UserError, match=r"pip install longedit\[ray\]"):
        import_ray()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    log = tmp_path_factory.mktemp("ray") / "runs.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "LONGEDIT_FAKE_LOG": str(log)}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        yield log
    finally:
        ray.shutdown()


def _watch(root: Path, runner: str, max_attempts: int = 3) -> dict:
    from longedit.jobs.ray_backend import RayExecutor

    execute = RayExecutor(runner)
    assert execute.gpus == 0  # CPU-only cluster: tasks ask for no GPU
    options = WatchOptions(
        workers=2, once=True, settle=0.05, poll=0.05, corrupt_after=0.2, heartbeat=0.1,
        policy=RetryPolicy(max_attempts=max_attempts, retry_delay=0),
    )
    return Watcher(root, execute, options).run()


@pytest.mark.slow
def test_ray_backend_runs_jobs_as_tasks_with_the_same_claim_and_ledger_rules(tmp_path, ray_cluster):
    clip = make_video(tmp_path / "clip.mp4")
    spool = Spool(tmp_path / "w").create()
    for i in range(4):
        (spool.inbox / f"job{i}.mp4").write_bytes(clip.read_bytes())
        write_job(spool.inbox / f"job{i}.yaml")
    (spool.inbox / "shared.mp4").write_bytes(clip.read_bytes())
    write_job(spool.inbox / "typo.yaml", input="shared.mp4", stepz=1)

    outcomes = _watch(spool.root, "test_jobs_helpers:copy_runner")

    assert sorted(outcomes["done"]) == [f"job{i}" for i in range(4)] and outcomes["failed"] == ["typo"]
    runs = [json.loads(line) for line in ray_cluster.read_text().splitlines()]
    assert sorted(r["job"] for r in runs) == [f"job{i}" for i in range(4)]  # each ran exactly once
    assert all(r["pid"] != os.getpid() for r in runs)  # in Ray workers, not in the driver
    ledger = Ledger(spool.ledger_path)
    for row in ledger.jobs():
        if row["name"] != "typo":
            assert row["state"] == "done" and row["attempts"] == 1 and row["peak_rss_mb"] == 123
            assert [e["state"] for e in ledger.events(row["id"])] == ["queued", "running", "done"]
            assert (spool.done / row["name"] / f"{row['name']}-edited.mp4").exists()


@pytest.mark.slow
def test_ray_task_errors_are_retried_then_failed_with_the_remote_traceback(tmp_path, ray_cluster):
    clip = make_video(tmp_path / "clip.mp4")
    spool = Spool(tmp_path / "w").create()
    (spool.inbox / "oom.mp4").write_bytes(clip.read_bytes())
    write_job(spool.inbox / "oom.yaml")

    assert _watch(spool.root, "test_jobs_helpers:failing_runner", max_attempts=2) == {"failed": ["oom"]}

    error = json.loads((spool.failed / "oom" / "error.json").read_text())
    assert error["message"] == "gave up after 2 attempt(s); last error: RuntimeError: CUDA out of memory while editing oom.mp4"
    assert error["attempts"] == 2 and "failing_runner" in error["traceback"]

    (spool.inbox / "word.mp4").write_bytes(clip.read_bytes())
    write_job(spool.inbox / "word.yaml")
    assert _watch(spool.root, "test_jobs_helpers:user_error_runner") == {"failed": ["word"]}
    error = json.loads((spool.failed / "word" / "error.json").read_text())
    assert error["message"].startswith("the word 'dragon' is not in the prompt") and error["type"] == "UserError"
    row = next(r for r in Ledger(spool.ledger_path).jobs() if r["name"] == "word")
    assert row["attempts"] == 1  # a user error is not retried


@pytest.mark.slow
def test_stop_reaches_the_running_ray_task_and_the_job_stays_resumable(tmp_path, ray_cluster):
    from longedit.jobs.claim import read_latest
    from longedit.jobs.ray_backend import RayExecutor

    clip = make_video(tmp_path / "clip.mp4")
    spool = Spool(tmp_path / "w").create()
    (spool.inbox / "long.mp4").write_bytes(clip.read_bytes())
    write_job(spool.inbox / "long.yaml")
    options = WatchOptions(once=False, settle=0.05, poll=0.05, heartbeat=0.1)
    watcher = Watcher(spool.root, RayExecutor("test_jobs_helpers:wait_for_stop_runner"), options)
    thread, box = run_in_thread(watcher.run)
    wait_for(lambda: (spool.processing / "long" / "work" / "started").exists(), timeout=60, what="the Ray task")
    watcher.request_stop()  # what SIGTERM does: the driver writes work/STOP, the task stops at a checkpoint
    thread.join(60)
    assert box.get("result") == {"interrupted": ["long"]}
    assert read_latest(spool.processing / "long").released
    (row,) = Ledger(spool.ledger_path).jobs()
    assert row["state"] == "interrupted" and row["attempts"] == 0
