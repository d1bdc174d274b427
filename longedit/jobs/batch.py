"""`longedit run`: run job files directly (no watched folder), one after another or as Ray tasks.

All job files are read and validated before the first edit starts, so a typo in the tenth job of a
night's batch is reported at once, not after nine hours.

Each job checkpoints into its own work folder, `WORK_DIR/<stem>-<hash of the job's settings>/`
(default `WORK_DIR`: `.longedit-work/` beside the job's output). Running the same command again after
a crash or a SIGTERM resumes from the last checkpoint; changing the job's settings starts afresh
(the hash changes). The work folder is deleted when the job succeeds, and when it fails or stops
before its first checkpoint (an empty folder). Jobs with `tune:` share the tuned models in
`WORK_DIR/tuned/` (content-addressed: one tuning per clip, base model and settings).

Jobs share their DDIM inversions through `WORK_DIR/inversion-cache/` (`longedit.inversion_cache`):
several prompts on one clip invert it once, in this run or a later one. It stays after the run,
capped at each job's `cache_size` (least recently used entries go); `--no-cache` turns it off.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from longedit.config import CACHE_FIELDS, CACHE_FOLDER, TUNED_CACHE_FOLDER, EditJob
from longedit.errors import UserError
from longedit.jobs.confine import check_own_outputs, check_write_places, record_outputs
from longedit.jobs.jobfile import load_job
from longedit.jobs.executor import make_executor
from longedit.jobs.outcome import attempt_outcome

WORK_FOLDER = ".longedit-work"


@dataclass
class BatchResult:
    """How one job file of a batch ended."""

    job_file: Path
    job: EditJob
    status: Literal["done", "failed", "interrupted", "skipped"]
    seconds: float = 0.0
    report: dict[str, Any] | None = None
    error: BaseException | None = None


def work_dir_for(job: EditJob, job_file: Path, work_root: Path | None) -> Path:
    """The checkpoint folder of `job`: stable across runs of the same settings, new when they change."""
    key = hashlib.sha256(job.model_dump_json(exclude=set(CACHE_FIELDS)).encode()).hexdigest()[:12]
    return work_root_for(job, work_root) / f"{job_file.stem}-{key}"


def work_root_for(job: EditJob, work_root: Path | None) -> Path:
    """The folder holding the job's work folder and the shared inversion cache."""
    return work_root if work_root is not None else job.output.parent / WORK_FOLDER


def load_batch(paths: Sequence[Path], output_roots: Sequence[Path] = ()) -> list[tuple[Path, EditJob]]:
    """Validate every job file, its outputs in its folder or an `output_roots` one and not over a file
    `run` did not write (`longedit.jobs.confine`); refuse two jobs that write the same output."""
    jobs = [(Path(p), load_job(p)) for p in paths]
    for path, job in jobs:
        check_write_places(job, path.parent, str(path), output_roots=output_roots)
        check_own_outputs(job, path.parent, str(path))
    seen: dict[Path, Path] = {}
    for path, job in jobs:
        other = seen.get(job.output)
        if other is not None:
            raise UserError(
                f"job files '{other}' and '{path}' both write '{job.output}'", "give each job its own output"
            )
        seen[job.output] = path
    return jobs


def _cleanup(work_dir: Path, work_root: Path | None, keep_checkpoints: bool = False) -> None:
    """Drop a job's work folder (only when empty with `keep_checkpoints`: a failed job's checkpoints let
    a rerun resume, an empty folder is just litter), and our default root when no other job uses it."""
    if keep_checkpoints:
        try:
            work_dir.rmdir()
        except OSError:
            return  # checkpoints inside (or already gone)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    if work_root is None:
        try:
            work_dir.parent.rmdir()
        except OSError:
            pass


def run_batch(
    paths: Sequence[Path],
    *,
    backend: Literal["local", "ray"] = "local",
    work_root: Path | None = None,
    address: str | None = None,
    runner: str | Callable[..., dict[str, Any]] | None = None,
    stop_event: threading.Event | None = None,
    progress: bool = True,
    on_result: Callable[[BatchResult], None] | None = None,
    cache: bool = True,
    output_roots: Sequence[Path] = (),
) -> list[BatchResult]:
    """Run the job files; returns one result per file, in order. Never raises for a job's own failure.

    `cache`: share inversions in `WORK_ROOT/inversion-cache` (a job's own `cache_dir` wins); False: none.
    `output_roots`: folders besides each job file's own where its outputs may go (`--output-root`).
    """
    jobs = [
        (path, job.with_inversion_cache(work_root_for(job, work_root) / CACHE_FOLDER if cache else None))
        for path, job in load_batch(paths, output_roots)
    ]
    stop_event = stop_event or threading.Event()
    execute = make_executor(backend, runner, address=address, progress=progress)
    workers = len(jobs) if execute.remote else 1
    record_lock = threading.Lock()  # jobs of one folder share its output record

    def one(path: Path, job: EditJob) -> BatchResult:
        if stop_event.is_set():
            return BatchResult(path, job, "skipped")
        work_dir = work_dir_for(job, path, work_root)
        job = job.with_tune_cache(work_dir.parent / TUNED_CACHE_FOLDER)  # shared by the batch's jobs
        started = time.time()
        try:
            report = execute(job, work_dir, stop_event)
        except Exception as error:  # no retries here: run the same command again to resume
            status = "interrupted" if attempt_outcome(error) == "interrupted" else "failed"
            _cleanup(work_dir, work_root, keep_checkpoints=True)
            result = BatchResult(path, job, status, time.time() - started, error=error)
        else:
            _cleanup(work_dir, work_root)
            with record_lock:
                try:
                    record_outputs(job, path.parent)
                except (OSError, UserError):
                    pass  # unrecorded outputs only make a rerun refuse to replace them
            result = BatchResult(path, job, "done", time.time() - started, report=report)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="longedit-run") as pool:
        return list(pool.map(lambda item: one(*item), jobs))
