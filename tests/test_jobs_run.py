"""`longedit run` and `longedit watch` flags with a fake runner: validation first, work folders, exit codes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import typer
from test_jobs_helpers import cli_env, longedit_cmd, wait_for, write_job
from typer.testing import CliRunner

from longedit.commands import jobs as jobs_commands
from longedit.errors import UserError
from longedit.jobs.batch import WORK_FOLDER, work_dir_for
from longedit.jobs.jobfile import load_job

FAKE = ["--runner", "test_jobs_helpers:copy_runner"]


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    jobs_commands.register(app)
    return app


def _jobs(folder: Path, clip: Path, names: list[str], **keys) -> list[Path]:
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    return [write_job(folder / f"{name}.yaml", input="clip.mp4", output=f"out/{name}.mp4", **keys) for name in names]


def test_run_runs_each_job_and_cleans_its_work_folder(tmp_path, clip, app):
    files = _jobs(tmp_path, clip, ["a", "b"])
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["run", *map(str, files), *FAKE])
    assert result.exit_code == 0, result.output
    assert f"done a.yaml -> {tmp_path / 'out' / 'a.mp4'}" in result.output
    assert (tmp_path / "out" / "a.mp4").exists() and (tmp_path / "out" / "b.mp4").exists()
    assert not (tmp_path / "out" / WORK_FOLDER).exists()


def test_run_validates_every_job_file_before_running_any(tmp_path, clip, app):
    good, bad = _jobs(tmp_path, clip, ["good", "bad"])
    write_job(bad, input="clip.mp4", stepz=3)
    result = CliRunner().invoke(app, ["run", str(good), str(bad), *FAKE])
    assert isinstance(result.exception, UserError)
    assert f"job file '{bad}': unknown key 'stepz'" in str(result.exception)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_run_refuses_two_jobs_with_one_output(tmp_path, clip, app):
    a, b = _jobs(tmp_path, clip, ["a", "b"])
    write_job(b, input="clip.mp4", output="out/a.mp4")
    result = CliRunner().invoke(app, ["run", str(a), str(b), *FAKE])
    assert "both write" in str(result.exception)


def test_run_reports_failures_and_keeps_going(tmp_path, clip, app):
    files = _jobs(tmp_path, clip, ["a", "b"])
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["run", *map(str, files), "--runner", "test_jobs_helpers:failing_runner"])
    assert result.exit_code == 1
    assert "error: job 'a.yaml': CUDA out of memory" in result.output and "2 of 2 job(s) failed" in result.output
    job = load_job(files[0])
    assert work_dir_for(job, files[0], None).parent == tmp_path / "out" / WORK_FOLDER


def test_run_one_failing_job_raises_its_error(tmp_path, clip, app):
    (file,) = _jobs(tmp_path, clip, ["a"])
    result = CliRunner().invoke(app, ["run", str(file), "--runner", "test_jobs_helpers:user_error_runner"])
    assert isinstance(result.exception, UserError) and "dragon" in str(result.exception)


def test_work_dir_follows_the_settings(tmp_path, clip):
    (file,) = _jobs(tmp_path, clip, ["a"])
    job = load_job(file)
    same = work_dir_for(job, file, tmp_path / "w")
    assert same == work_dir_for(load_job(file), file, tmp_path / "w") and same.parent == tmp_path / "w"
    assert work_dir_for(job.model_copy(update={"seed": 1}), file, tmp_path / "w") != same


def test_run_sigterm_checkpoints_and_exits_0(tmp_path, clip):
    (file,) = _jobs(tmp_path, clip, ["a"])
    work = tmp_path / "work"
    process = subprocess.Popen(
        longedit_cmd("run", str(file), "--work-dir", str(work), "--runner", "test_jobs_helpers:wait_for_stop_runner"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: list(work.glob("a-*/started")) or process.poll() is not None, timeout=60, what="the runner")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "interrupted a.yaml: checkpoint saved; run the same command again to resume" in err
    assert len(list(work.glob("a-*/started"))) == 1  # the work folder is kept for the resume


def test_cli_errors_are_one_line(tmp_path, capsys):
    from longedit.cli import main

    # In this process (`main`): three CLI subprocesses paid the torch/diffusers import three times.
    assert main(["watch", str(tmp_path), "--address", "ray://x:10001", "--once"]) == 2
    assert capsys.readouterr().err.strip() == "error: --address is only used with --backend ray (add --backend ray or drop --address)"
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a watched folder" in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("runner", ["failing_runner", "user_error_runner"])
def test_a_failed_run_leaves_no_empty_work_folder(runner, tmp_path, clip, app):
    (file,) = _jobs(tmp_path, clip, ["a"])
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["run", str(file), "--runner", f"test_jobs_helpers:{runner}"])
    assert result.exit_code != 0
    assert list((tmp_path / "out").iterdir()) == []  # neither the job's folder nor .longedit-work/
    result = CliRunner().invoke(app, ["run", str(file), "--work-dir", str(tmp_path / "w"), "--runner", f"test_jobs_helpers:{runner}"])
    assert result.exit_code != 0 and list((tmp_path / "w").iterdir()) == []  # the given root stays, empty


def test_a_failed_run_keeps_its_checkpoints_for_the_rerun(tmp_path, clip):
    from longedit.jobs.batch import run_batch

    (file,) = _jobs(tmp_path, clip, ["a"])
    (tmp_path / "out").mkdir()

    def crash_after_a_checkpoint(job, *, work_dir=None, **kwargs):
        (work_dir / "checkpoint.pt").write_bytes(b"state")
        raise RuntimeError("CUDA out of memory")

    (result,) = run_batch([file], runner=crash_after_a_checkpoint, progress=False)
    assert result.status == "failed"
    assert (work_dir_for(result.job, file, None) / "checkpoint.pt").read_bytes() == b"state"
