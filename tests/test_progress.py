"""One progress measure per job: ETA arithmetic on a fake clock, the engine's phases end to end on the
tiny model, and `longedit status` showing a running job's progress and ETA."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from test_jobs_helpers import make_video, wait_for, write_job

from longedit.progress import PROGRESS_NAME, JobProgress, Phase, format_duration, read_progress_file, remaining_eta


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tracker(clock: FakeClock, **kwargs) -> JobProgress:
    return JobProgress([Phase("a", 10, 1.0), Phase("b", 5, 4.0), Phase("none", 0, 9.0)], clock=clock, **kwargs)


def test_eta_uses_each_phase_rate_and_the_measured_speed_for_phases_not_started():
    clock = FakeClock()
    tracker = _tracker(clock)
    assert tracker.eta_s() is None  # nothing measured yet
    assert tracker.fraction() == 0.0
    tracker.start("a")
    for _ in range(5):
        clock.now += 2.0
        tracker.advance("a")
    # a: 2 s per unit measured; b not started: 4 prior units x 2 s per prior unit = 8 s per unit
    assert tracker.eta_s() == pytest.approx(5 * 2 + 5 * 8)
    assert tracker.fraction() == pytest.approx(10 / (10 * 2 + 5 * 8))
    clock.now = 20.0
    tracker.advance("a", 5)
    clock.now = 30.0  # 10 s between phases are booked to neither
    tracker.start("b")
    clock.now = 33.0
    tracker.advance("b")
    assert tracker.eta_s() == pytest.approx(4 * 3.0)  # b's own rate now
    assert tracker.fraction() == pytest.approx((20 + 3) / (20 + 5 * 3))
    assert "none" not in tracker.phases  # a phase without units is left out
    tracker.advance("none")  # and booking to it is harmless
    clock.now = 40.0
    tracker.finish("b")
    assert tracker.fraction() == 1.0 and tracker.eta_s() == 0.0


def test_a_resumed_job_is_seeded_with_the_work_already_done():
    clock = FakeClock()
    tracker = _tracker(clock)
    tracker.seed("a", 10, 50.0)
    assert tracker.eta_s() == pytest.approx(5 * 4 * 5.0)  # b from a's speed: 5 s per prior unit
    assert tracker.fraction() == pytest.approx(50 / (50 + 100))


def test_progress_file_is_written_at_phase_changes_and_at_most_every_interval(tmp_path):
    clock = FakeClock()
    wall = lambda: 1000.0 + clock.now  # noqa: E731
    tracker = _tracker(clock, path=tmp_path / PROGRESS_NAME, wall=wall, write_every=1.0, preview=True)
    tracker.start("a")
    first = read_progress_file(tmp_path)
    assert first["phase"] == "a" and first["fraction"] == 0.0 and first["eta_s"] is None and first["preview"] is True
    clock.now = 0.5
    tracker.advance("a")
    assert read_progress_file(tmp_path) == first  # within the interval: not rewritten
    clock.now = 1.5
    tracker.advance("a")
    data = read_progress_file(tmp_path)
    assert data["phases"][0] == {"name": "a", "done": 2.0, "total": 10}
    assert data["eta_s"] == pytest.approx(8 * 0.75 + 5 * 4 * 0.75, abs=0.1) and data["updated_at"] == 1001.5
    assert remaining_eta(data, now=1001.5 + 5) == pytest.approx(data["eta_s"] - 5)
    assert remaining_eta(data, now=1001.5 + 10_000) == 0.0
    tracker.close()
    (tmp_path / PROGRESS_NAME).write_text("{not json")
    assert read_progress_file(tmp_path) is None and read_progress_file(tmp_path / "missing") is None


def test_format_duration():
    assert [format_duration(s) for s in (None, 0, 59.6, 61, 3600 * 2 + 5)] == ["-", "0:00", "1:00", "1:01", "2:00:05"]


def test_seed_progress_books_a_checkpoint_by_phase():
    from types import SimpleNamespace

    from longedit.config import EditJob
    from longedit.engine import job_phases, seed_progress

    job = EditJob(input="a.mp4", output="b.mp4", source_prompt="a car", prompt="a robot", steps=6)
    windows = [(0, 4), (2, 6)]
    tracker = JobProgress(job_phases(job, 6, windows, has_words=True, tracking=False))
    assert {n: p.total for n, p in tracker.phases.items()} == {
        "decode": 6, "inversion": 12, "edit+rad": 6, "edit": 6, "encode": 6,
    }
    state = SimpleNamespace(phase="edit", step=4, masks=None, timing={"decode_s": 1.0, "inversion_s": 6.0, "edit_s": 13.0})
    seed_progress(tracker, state, steps=6, windows=2, frames=6)
    done = {n: (p.done, round(p.seconds, 6)) for n, p in tracker.phases.items()}
    # 3 RAD steps (5 prior units each) and 1 plain step (2) share the 13 s of editing: 15/17 and 2/17
    assert done == {"decode": (6, 1.0), "inversion": (12, 6.0), "edit+rad": (6, round(13 * 15 / 17, 6)),
                    "edit": (2, round(13 * 2 / 17, 6)), "encode": (0, 0.0)}


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("progress") / "clip.mp4", frames=6)


@pytest.mark.slow
def test_edit_counts_every_phase_into_one_bar_and_the_progress_file(small_clip, tmp_path, capsys):
    from longedit.engine import run_edit
    from longedit.jobs.jobfile import load_job

    job = load_job(write_job(tmp_path / "job.yaml", input=str(small_clip), output="out.mp4", steps=4, window=4, preset="fast"))
    run_edit(job, work_dir=tmp_path / "work", progress=True)
    data = read_progress_file(tmp_path / "work")
    assert data["fraction"] == 1.0 and data["eta_s"] == 0.0 and data["preview"] is False
    # 6 frames, windows [0,4) [2,6), 4 steps of which the first 2 are RAD steps
    assert data["phases"] == [
        {"name": "decode", "done": 6, "total": 6}, {"name": "inversion", "done": 8, "total": 8},
        {"name": "edit+rad", "done": 4, "total": 4}, {"name": "edit", "done": 4, "total": 4},
        {"name": "encode", "done": 6, "total": 6},
    ]
    err = capsys.readouterr().err
    bars = [line for line in err.replace("\r", "\n").splitlines() if "%|" in line]
    assert bars and all("| job: " in line for line in bars), err  # one bar for the whole job, none per phase
    assert "| job: inversion" in err and "ETA" in err and bars[-1].startswith("100%|")


def test_status_shows_a_running_jobs_progress_and_eta(small_clip, tmp_path, monkeypatch):
    """A real tiny edit, held just before it writes the video: status shows its share done and an ETA."""
    from longedit import engine
    from longedit.jobs.executor import LocalExecutor
    from longedit.jobs.status import collect_status, format_table
    from longedit.jobs.watcher import WatchOptions, Watcher

    inbox = tmp_path / "inbox"
    write_job(inbox / "clip.yaml", input=str(small_clip), steps=4, window=4, preset="fast")
    reached, release = threading.Event(), threading.Event()
    original = engine.runner.write_video

    def held_write_video(*args):
        reached.set()
        assert release.wait(120), "never released"
        return original(*args)

    monkeypatch.setattr(engine.runner, "write_video", held_write_video)
    watcher = Watcher(tmp_path, LocalExecutor(engine.run_edit), WatchOptions(once=True, settle=0.05, poll=0.05))
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        assert reached.wait(180), "the edit never reached the encode phase"
        (job,) = wait_for(lambda: [j for j in collect_status(tmp_path)["jobs"] if j.get("progress") is not None],
                          timeout=30, what="progress in status")
        assert job["state"] == "running" and job["phase"] in ("edit", "encode")
        assert 0.5 < job["progress"] < 1.0 and job["eta_s"] is not None and job["eta_s"] >= 0
        line = format_table(collect_status(tmp_path)).splitlines()[2]
        assert line.split()[:3] == ["running", "clip", "1"]
        assert f"{100 * job['progress']:.0f}%" in line and ":" in line.split()[5]  # PROGRESS, phase, ETA as M:SS
    finally:
        release.set()
        thread.join(180)
    assert watcher.outcomes == {"done": ["clip"]}
    report = json.loads((tmp_path / "done" / "clip" / "report.json").read_text())
    assert report["frames"] == 6


def test_live_progress_reads_the_file_and_ages_its_eta(tmp_path):
    from longedit.jobs.status import _live_progress

    work = tmp_path / "work"
    work.mkdir()
    (work / PROGRESS_NAME).write_text(json.dumps({"fraction": 0.25, "eta_s": 100.0, "phase": "edit", "updated_at": 50.0}))
    assert _live_progress(work, now=80.0) == {"progress": 0.25, "phase": "edit", "eta_s": 70.0, "preview": False}
    assert _live_progress(tmp_path, now=80.0) == {}
