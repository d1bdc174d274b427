"""Jobs with `tune:`: the job-file key, the content-addressed cache of tuned models (one tuning per clip,
base model and settings, safe under concurrent workers) and a batch of two prompts sharing one tuning."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from test_jobs_helpers import copy_runner, write_job

from longedit.atomic import atomic_folder
from longedit.config import TuneSettings
from longedit.errors import JobInterrupted, UserError
from longedit.jobs.jobfile import load_job
from longedit.tune import cache
from longedit.tune.trainer import TUNE_INFO


# ------------------------------------------------------------------------------------ job files
def test_the_tune_key_of_a_job_file(tmp_path, clip):
    job = load_job(write_job(tmp_path / "a.yaml", input=str(clip), tune={"steps": 3, "frames": 4, "cache_dir": "cache"}))
    assert (job.tune.steps, job.tune.frames, job.tune.lr, job.tune.trainable) == (3, 4, 3e-5, ["attn1.to_q", "attn2.to_q", "attn_temp"])
    assert job.tune.cache_dir == tmp_path / "cache"  # relative to the job file, as inputs are
    assert load_job(write_job(tmp_path / "b.yaml", input=str(clip), tune=True)).tune == TuneSettings()
    assert load_job(write_job(tmp_path / "c.yaml", input=str(clip), tune=False)).tune is None
    assert load_job(write_job(tmp_path / "d.yaml", input=str(clip))).tune is None


@pytest.mark.parametrize(
    ("tune", "extra", "message"),
    [
        ({"stepz": 3}, {}, r"unknown key 'stepz' in tune \(did you mean 'steps'\? known keys: steps, lr, frames"),
        ({"optimizer": "sgd"}, {}, r"'tune.optimizer' must be one of 'adamw' or 'adamw8bit'"),
        ({"steps": 3}, {"backbone": "sd"}, r"tune: makes a Tune-A-Video model, so backbone must be auto or tuneavideo, not sd"),
    ],
    ids=["typo", "optimizer", "backbone"],
)
def test_bad_tune_keys_are_one_line_errors(tmp_path, clip, tune, extra, message):
    with pytest.raises(UserError, match=message):
        load_job(write_job(tmp_path / "a.yaml", input=str(clip), tune=tune, **extra))


def test_the_cache_folder_is_not_part_of_what_the_job_depends_on(tmp_path, clip):
    from longedit.jobs.batch import work_dir_for

    job = load_job(write_job(tmp_path / "a.yaml", input=str(clip), tune={"steps": 3}))
    cached = job.with_tune_cache(tmp_path / "tuned")
    assert cached.tune.cache_dir == tmp_path / "tuned" and job.tune.cache_dir is None
    assert work_dir_for(cached, tmp_path / "a.yaml", tmp_path) == work_dir_for(job, tmp_path / "a.yaml", tmp_path)
    assert cached.with_tune_cache(tmp_path / "other").tune.cache_dir == tmp_path / "tuned"  # its own cache stays


def test_watch_hands_its_jobs_the_watched_folders_cache(tmp_path, clip):
    from longedit.jobs.executor import LocalExecutor
    from longedit.jobs.spool import Spool
    from longedit.jobs.watcher import WatchOptions, Watcher
    from longedit.jobs.worker import RetryPolicy

    spool = Spool(tmp_path).create()
    (spool.inbox / "tuned-job.mp4").write_bytes(clip.read_bytes())
    write_job(spool.inbox / "tuned-job.yaml", tune={"steps": 2})
    seen = []

    def runner(job, **kwargs):
        seen.append(job.tune.cache_dir)
        return copy_runner(job, **kwargs)

    options = WatchOptions(once=True, settle=0.05, poll=0.05, heartbeat=0.05, policy=RetryPolicy(max_attempts=1, retry_delay=0))
    assert Watcher(tmp_path, LocalExecutor(runner), options).run() == {"done": ["tuned-job"]}
    assert seen == [tmp_path.absolute() / "tuned"]


# ------------------------------------------------------------------------------------ the cache
class FakeTuning:
    """Stands in for `tune_clip`: publishes a folder with a tune_info after `seconds`, counts calls."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, clip, prompt, output, settings, *, work_dir, exist_ok, stop_event=None, **kwargs) -> dict:
        with self.lock:
            self.calls.append(Path(output))
        time.sleep(self.seconds)
        with atomic_folder(output) as temp:
            (temp / TUNE_INFO).write_text(json.dumps({"prompt": prompt, "steps": settings.steps}))
        return {}


def test_one_tuning_per_clip_model_prompt_and_settings(tmp_path, clip, monkeypatch):
    fake = FakeTuning()
    monkeypatch.setattr(cache, "tune_clip", fake)
    settings = TuneSettings(steps=3)
    first = cache.ensure_tuned_model(clip, "a red square", "tiny", settings, tmp_path)
    assert cache.ensure_tuned_model(clip, "a red square", "tiny", settings.model_copy(update={"checkpoint_every": 7}), tmp_path) == first
    assert len(fake.calls) == 1 and (first / TUNE_INFO).is_file()
    others = [
        cache.ensure_tuned_model(clip, "a red square", "tiny", TuneSettings(steps=4), tmp_path),
        cache.ensure_tuned_model(clip, "a blue square", "tiny", settings, tmp_path),
        cache.ensure_tuned_model(clip, "a red square", "toy", settings, tmp_path),
        cache.ensure_tuned_model(clip, "a red square", "tiny", TuneSettings(steps=3, size=64), tmp_path),
    ]
    assert len({first, *others}) == 5 and len(fake.calls) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(p.name for p in {first, *others})


def test_the_key_follows_the_clip_bytes_not_its_name(tmp_path, clip, monkeypatch):
    monkeypatch.setattr(cache, "tune_clip", FakeTuning())
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())
    settings = TuneSettings(steps=3)
    assert cache.ensure_tuned_model(copy, "a", "tiny", settings, tmp_path / "c") == cache.ensure_tuned_model(clip, "a", "tiny", settings, tmp_path / "c")
    copy.write_bytes(clip.read_bytes() + b"\0")
    assert cache.ensure_tuned_model(copy, "a", "tiny", settings, tmp_path / "c") != cache.ensure_tuned_model(clip, "a", "tiny", settings, tmp_path / "c")


def test_concurrent_workers_wait_for_one_tuning(tmp_path, clip, monkeypatch):
    fake = FakeTuning(seconds=0.6)
    monkeypatch.setattr(cache, "tune_clip", fake)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.ensure_tuned_model(clip, "a", "tiny", TuneSettings(), tmp_path)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 3 and len(set(results)) == 1 and len(fake.calls) == 1


def test_a_stop_request_ends_the_wait_for_another_workers_tuning(tmp_path, clip, monkeypatch):
    fake = FakeTuning(seconds=2.0)
    monkeypatch.setattr(cache, "tune_clip", fake)
    worker = threading.Thread(target=cache.ensure_tuned_model, args=(clip, "a", "tiny", TuneSettings(), tmp_path))
    worker.start()
    while not fake.calls:
        time.sleep(0.01)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    with pytest.raises(JobInterrupted, match="another worker's tuning"):
        cache.ensure_tuned_model(clip, "a", "tiny", TuneSettings(), tmp_path, stop_event=stop)
    assert time.monotonic() - started < 1.5
    worker.join(timeout=30)


# ------------------------------------------------------------------------------------ a real batch
@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_two_prompts_on_one_clip_share_one_tuning(tmp_path, clip):
    from longedit.jobs.batch import run_batch

    tune = {"steps": 2, "frames": 4, "lr": 1e-3}
    jobs = [
        write_job(tmp_path / f"{name}.yaml", input=str(clip), steps=1, tune=tune, prompt=f"a {name} on a road",
                  objects=[{"word": name, "box": [8, 8, 40, 40]}], report=f"{name}.json")
        for name in ("robot", "duck")
    ]
    results = run_batch(jobs, work_root=tmp_path / "work", progress=False)
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    tuned = [p for p in (tmp_path / "work" / "tuned").iterdir() if not p.name.startswith(".")]
    assert len(tuned) == 1 and (tuned[0] / TUNE_INFO).is_file()
    info = json.loads((tuned[0] / TUNE_INFO).read_text())
    assert info["base_model"] == "tiny" and info["settings"]["steps"] == 2 and info["settings"]["size"] == 64
    for name in ("robot", "duck"):
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["backbone"] == "tuneavideo" and report["tuned_model"] == str(tuned[0]) and report["model"] == "tiny"
    assert not any(p.name.endswith(".work") for p in (tmp_path / "work" / "tuned").iterdir())


def test_validate_refuses_a_tuning_that_cannot_run_here_before_any_work(tmp_path, clip, capsys, monkeypatch):
    from longedit.cli import main
    from longedit.tune import optim

    monkeypatch.setattr(optim, "_installed", lambda name: False)
    path = write_job(tmp_path / "a.yaml", input=str(clip), tune={"optimizer": "adamw8bit"})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: --optimizer adamw8bit needs bitsandbytes, which is not installed "
        "(pip install 'longedit[quant]', or use --optimizer adamw)"
    )
