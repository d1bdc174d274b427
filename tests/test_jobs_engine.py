"""End to end with the real engine (tiny model, 64x64 clip): kill -9 and SIGTERM mid-edit, then resume.

A resumed job must give the same final latents (the report's checksum) and the same decoded frames as
an uninterrupted run of the same job: exactly where the engine hands them to the encoder
(`recording_run_edit`), and exactly again after decoding the two encoded files.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_jobs_helpers import cli_env, longedit_cmd, make_video, recording_run_edit, run_cli, wait_for, write_job

from longedit.jobs.claim import read_latest
from longedit.jobs.jobfile import load_job
from longedit.jobs.ledger import Ledger
from longedit.jobs.progress import CheckpointProgress
from longedit.jobs.status import collect_status

pytestmark = pytest.mark.slow

JOB = {"steps": 3, "checkpoint_every": 1, "size": 64}
RUNNER = ("--runner", "test_jobs_helpers:recording_run_edit")


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run of the job: its video, report and decoded frames."""
    folder = tmp_path_factory.mktemp("reference")
    clip = make_video(folder / "clip.mp4", frames=4)
    job = load_job(write_job(folder / "clip.yaml", input="clip.mp4", output="reference.mp4", **JOB))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = recording_run_edit(job, progress=False)
    return {
        "clip": clip,
        "report": report,
        "engine_frames": np.load(folder / "reference.mp4.frames.npy"),
        "frames": _frames(folder / "reference.mp4"),
    }


def _watched_job(root: Path, reference: dict) -> Path:
    """DIR/inbox/clip.yaml + clip.mp4 (companion), the same job as the reference run."""
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    shutil.copyfile(reference["clip"], inbox / "clip.mp4")
    write_job(inbox / "clip.yaml", **JOB)
    return root / "processing" / "clip" / "work" / "checkpoint.pt"


def _start_watch(root: Path, *extra: str) -> subprocess.Popen:
    args = ["watch", str(root), "--settle", "0.1", "--poll", "0.1", *RUNNER, *extra]
    return subprocess.Popen(longedit_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


MAX_ENCODER_MEAN_DIFFERENCE = 1.0  # levels of 255, mean over the decoded frames: the encoder's run-to-run noise


def _assert_same_as_reference(root: Path, reference: dict) -> dict:
    done = root / "done" / "clip"
    report = json.loads((done / "report.json").read_text())
    assert report["resumed_from"] is not None, "the second run started over instead of resuming"
    assert report["latent_checksum"] == reference["report"]["latent_checksum"]
    assert np.array_equal(np.load(done / "clip-edited.mp4.frames.npy"), reference["engine_frames"])
    frames = _frames(done / "clip-edited.mp4")
    assert frames.shape == reference["frames"].shape
    # The identity is the latents' and the engine's frames' (above). The written mp4 holds the same video, but not
    # always the same bytes: libx264 (threaded) was seen to encode the same frames otherwise with the other test
    # worker running (a clean-clone CI run here: up to 12 levels on a few % of values); a wrong resume moves far more.
    difference = np.abs(frames.astype(np.int16) - reference["frames"].astype(np.int16))
    assert difference.mean() < MAX_ENCODER_MEAN_DIFFERENCE, difference.mean()
    assert (done / "clip.mp4").read_bytes() == reference["clip"].read_bytes()  # input untouched
    assert not (done / "work").exists()
    return report


def test_kill_9_mid_edit_then_restart_resumes_to_the_identical_result(tmp_path, reference):
    checkpoint = _watched_job(tmp_path, reference)
    progress = CheckpointProgress(checkpoint.parent, JOB["steps"])

    def in_edit_loop() -> bool:  # past the inversion: the resume must restore latents *and* the RNG state
        step = progress.read()
        return bool(step and step[0] > JOB["steps"])

    process = _start_watch(tmp_path, "--once")
    try:
        wait_for(lambda: in_edit_loop() or process.poll() is not None, timeout=240, what="an edit-loop checkpoint")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (tmp_path / "done" / "clip").exists()
    assert (tmp_path / "processing" / "clip" / "clip.yaml").exists()
    assert not read_latest(tmp_path / "processing" / "clip").liveness(stale_after=3600)[0]
    status = collect_status(tmp_path)
    assert [(j["name"], j["state"]) for j in status["jobs"]] == [("clip", "running")]
    assert "is gone" in status["jobs"][0]["note"]

    restarted = run_cli("watch", str(tmp_path), "--once", "--settle", "0.1", "--poll", "0.1", *RUNNER, timeout=240)
    assert restarted.returncode == 0, restarted.stderr
    assert "resuming" in restarted.stderr
    report = _assert_same_as_reference(tmp_path, reference)
    assert report["resumed_from"]["phase"] == "edit" and report["resumed_from"]["step"] >= 1

    ledger = Ledger(tmp_path / "ledger.sqlite")
    (row,) = ledger.jobs()
    assert row["state"] == "done" and row["attempts"] == 2  # the killed attempt counts
    states = [e["state"] for e in ledger.events(row["id"])]
    assert states == ["queued", "running", "interrupted", "running", "done"]


def test_sigterm_mid_edit_exits_0_and_the_job_resumes(tmp_path, reference):
    checkpoint = _watched_job(tmp_path, reference)
    process = _start_watch(tmp_path)  # a long-running watcher, not --once
    try:
        wait_for(lambda: checkpoint.exists() or process.poll() is not None, timeout=240, what="the first checkpoint")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "SIGTERM" in err and "interrupted" in out
    folder = tmp_path / "processing" / "clip"
    record = read_latest(folder)
    assert record.released  # claimable right away, by any watcher
    (row,) = Ledger(tmp_path / "ledger.sqlite").jobs()
    assert row["state"] == "interrupted" and row["attempts"] == 0

    restarted = run_cli("watch", str(tmp_path), "--once", "--settle", "0.1", "--poll", "0.1", *RUNNER, timeout=240)
    assert restarted.returncode == 0, restarted.stderr
    _assert_same_as_reference(tmp_path, reference)
    (row,) = Ledger(tmp_path / "ledger.sqlite").jobs()
    assert row["state"] == "done" and row["attempts"] == 1 and row["peak_rss_mb"] > 0


def test_validate_checks_with_the_engine_and_prints_a_summary(tmp_path, reference, capsys):
    """In this process (`main`), not three CLI subprocesses: each paid the torch/diffusers import again."""
    from longedit.cli import main

    def validate(*files: Path) -> tuple[int, str, str]:
        code = main(["validate", *map(str, files)])
        out, err = capsys.readouterr()
        return code, out, err

    shutil.copyfile(reference["clip"], tmp_path / "clip.mp4")
    good = write_job(tmp_path / "good.yaml", input="clip.mp4", **JOB)
    typo = write_job(tmp_path / "typo.yaml", input="clip.mp4", stepz=3)
    word = write_job(tmp_path / "word.yaml", input="clip.mp4", objects=[{"word": "dragon", "box": [8, 8, 40, 40]}])
    box = write_job(tmp_path / "box.yaml", input="clip.mp4", objects=[{"word": "robot", "box": [8, 8, 400, 40]}])

    code, out, err = validate(good)
    assert code == 0, err
    assert out.splitlines()[0] == f"OK {good}"
    assert "  frames: 4" in out and '"robot"' in out

    code, out, err = validate(typo)
    assert code == 2 and out == ""
    assert err.startswith(f"error: job file '{typo}': unknown key 'stepz' (did you mean 'steps'? known keys:")
    assert len(err.strip().splitlines()) == 1

    code, out, err = validate(good, word, box)
    assert code == 2
    assert f"OK {good}" in out
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "dragon" in errors[0]
