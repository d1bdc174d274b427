"""Shared helpers of the tests/test_jobs*.py files (no tests here).

Fake runners have `run_edit`'s signature; subprocesses load them with the hidden `--runner
test_jobs_helpers:NAME` option (the tests put this folder on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

PROMPTS = {"source_prompt": "a man talking on a phone in a car", "prompt": "a robot talking on a phone in a car"}


def fake_report(job) -> dict:
    return {"output": str(job.output), "memory": {"peak_rss_bytes": 123 * 2**20, "peak_vram_bytes": None}}


def copy_runner(job, *, work_dir=None, progress=True, stop_event=None) -> dict:
    """Copies the input to the output after `LONGEDIT_FAKE_SLEEP` seconds; logs each run to `LONGEDIT_FAKE_LOG`."""
    time.sleep(float(os.environ.get("LONGEDIT_FAKE_SLEEP", "0.05")))
    log = os.environ.get("LONGEDIT_FAKE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:  # O_APPEND: whole lines from several processes
            handle.write(json.dumps({"job": Path(job.input).stem, "pid": os.getpid(), "prompt": job.prompt}) + "\n")
    partial = Path(job.output).with_suffix(".part")
    shutil.copyfile(job.input, partial)
    os.replace(partial, job.output)
    return fake_report(job)


def failing_runner(job, **kwargs) -> dict:
    raise RuntimeError(f"CUDA out of memory while editing {Path(job.input).name}")


def user_error_runner(job, **kwargs) -> dict:
    from longedit.errors import UserError

    raise UserError("the word 'dragon' is not in the prompt", "name a word of the edited prompt")


def wait_for_stop_runner(job, *, work_dir=None, progress=True, stop_event=None) -> dict:
    """Marks `work_dir/started`, waits for the stop event, then stops like the engine does."""
    from longedit.errors import JobInterrupted

    Path(work_dir, "started").write_text("yes")
    if not stop_event.wait(60):
        raise AssertionError("never asked to stop")
    raise JobInterrupted("stopped at edit step 1")


def recording_run_edit(job, **kwargs) -> dict:
    """`longedit.engine.run_edit` that also saves the frames it hands to the video encoder.

    They land in `<output>.frames.npy`, so a resume test can tell a difference in the engine's
    frames from one in the encoded file.
    """
    import numpy as np

    from longedit.video import frame_folder  # the engine's output writer comes from its `open_writer`

    frames: list = []
    base = frame_folder.VideoWriter

    class RecordingWriter(base):
        def write(self, frame):  # noqa: ANN001, ANN201
            frames.append(np.array(frame, copy=True))
            return super().write(frame)

    frame_folder.VideoWriter = RecordingWriter
    try:
        from longedit import engine

        report = engine.run_edit(job, **kwargs)
    finally:
        frame_folder.VideoWriter = base
    np.save(f"{job.output}.frames.npy", np.stack(frames))
    return report


def make_video(path: Path, frames: int = 4, seed: int = 0) -> Path:
    """A tiny H.264 clip (64x64)."""
    from longedit.samples import make_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    make_clip(path, frames=frames, width=64, height=64, fps=Fraction(24), seed=seed)
    return path


def write_job(path: Path, **keys) -> Path:
    """A job file with the test prompts, a box on 'robot', the tiny model and `keys` on top."""
    data = {
        "model": "tiny",
        "steps": 3,
        "size": 64,
        **PROMPTS,
        "objects": [{"word": "robot", "box": [8, 8, 40, 40]}],
        **keys,
    }
    data = {k: v for k, v in data.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def backdate(*paths: Path, seconds: float = 60.0) -> None:
    """Make files look old (the scanner still needs two scans)."""
    stamp = time.time() - seconds
    for path in paths:
        os.utime(path, (stamp, stamp))


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `longedit` subprocesses: this folder importable, quiet warnings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


def longedit_cmd(*args: str) -> list[str]:
    """argv that runs the `longedit` CLI with this interpreter."""
    return [sys.executable, "-c", "import sys; from longedit.cli import main; sys.exit(main())", *args]


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        longedit_cmd(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(**env), cwd=str(REPO)
    )


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_in_thread(target) -> tuple[threading.Thread, dict]:
    """Start `target()` in a thread; the returned dict gets 'result' or 'error'."""
    box: dict = {}

    def body() -> None:
        try:
            box["result"] = target()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            box["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box
