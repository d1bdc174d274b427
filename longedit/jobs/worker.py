"""Run one claimed job folder to its end: done/, failed/, or released for a later resume.

The processor owns the job folder while it runs: it loads the job file, runs attempts through an
executor (`longedit.jobs.executor`: in this process, or as a Ray task), records every transition in
the ledger and moves the folder. What an attempt's error means is
`longedit.jobs.outcome.attempt_outcome`. Rules:

- the engine checkpoints into `processing/NAME/work/`, so a new attempt (after an error, a crash or
  a SIGTERM) resumes where the last checkpoint left off;
- a `UserError` (bad job file, unreadable video, word not in the prompt...) fails the job at once:
  retrying cannot fix it;
- any other error is retried (after `retry_delay` seconds) until `max_attempts` attempts were made;
  attempts lost to a dead worker count too, so a job that kills its worker cannot loop forever;
- a stop request (SIGTERM) checkpoints, releases the claim and leaves the folder in processing/
  (not counted as an attempt);
- `report.json` is written before the move to done/, so a crash in between is finished on restart
  without running the edit again;
- with `preview_first`, a job that has not run an attempt yet is first previewed (`preview: true`, one
  window with attention pictures) into previews/NAME/; a bad job (`UserError`) fails there, before the
  full run; any other preview error is logged and the full job runs anyway.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from longedit.atomic import remove_foreign_temps
from longedit.config import EditJob, as_run, preview_job
from longedit.errors import UserError
from longedit.jobs import confine
from longedit.jobs.jobfile import load_job, read_job_mapping
from longedit.jobs.ledger import Ledger
from longedit.jobs.progress import CheckpointProgress
from longedit.jobs.executor import Executor
from longedit.jobs.outcome import attempt_outcome
from longedit.jobs.runner import peak_memory
from longedit.jobs.spool import ERROR_NAME, REPORT_NAME, JobFolder, Spool, finish, read_json, write_json_atomic

log = logging.getLogger("longedit.jobs")

Outcome = Literal["done", "failed", "interrupted", "lost"]


def _default_check_input(job: EditJob) -> None:
    from longedit.video import open_source

    open_source(job.input, job.start, job.end, job.every, job.fps)  # a video, a range of it or a frame folder


@dataclass
class RetryPolicy:
    """How often and how fast failed attempts are retried."""

    max_attempts: int = 3
    retry_delay: float = 10.0


class JobProcessor:
    """Processes claimed job folders of one spool; safe to call from several threads at once."""

    def __init__(
        self,
        spool: Spool,
        ledger: Ledger,
        execute: Executor,
        policy: RetryPolicy | None = None,
        check_input: Callable[[EditJob], None] = _default_check_input,
        inversion_cache: Path | None = None,
        preview_first: bool = False,
        output_roots: Sequence[Path] = (),
    ) -> None:
        self.spool = spool
        self.output_roots = tuple(output_roots)  # folders outside a job's own where its outputs may go (--output-root)
        self.inversion_cache = inversion_cache  # shared by the jobs (a job's own cache_dir wins); None: off
        self.ledger = ledger
        self.execute = execute
        self.policy = policy or RetryPolicy()
        self.check_input = check_input
        self.preview_first = preview_first

    # ------------------------------------------------------------------------------------ helpers

    def load(self, job: JobFolder, first_attempt: bool = False) -> EditJob:
        """The job's EditJob: inputs relative to the inbox it came from, outputs inside its folder, tuned
        models (`tune:`) in the watched folder's shared cache. What the job may read and write is checked
        (`longedit.jobs.confine`); before its `first_attempt` none of its outputs may exist."""
        job.adopt_companion()
        label = job.meta["job_file"]
        confine.check_link(job.job_file, self.spool.root, f"job file '{label}'")
        data = read_job_mapping(job.job_file, label)
        companion = job.companion() if data.get("input") in (None, "") else None
        edit = load_job(job.job_file, base_dir=job.inbox, output_dir=job.folder, companion=companion, label=label)
        confine.check_write_places(edit, job.folder, label, output_roots=self.output_roots, cache_roots=[self.spool.root])
        confine.check_watch_job(edit, job.folder, self.spool.root, label, first_attempt=first_attempt)
        return edit.with_tune_cache(self.spool.tuned).with_inversion_cache(self.inversion_cache)

    def heartbeat(self, job: JobFolder) -> None:
        """Touch the claim and copy the latest checkpoint step into the ledger (called periodically)."""
        job.claim.heartbeat()
        progress = job.progress.read() if job.progress is not None else None
        if progress is not None:
            try:
                self.ledger.progress(job.job_id, *progress)
            except Exception as error:  # a busy ledger must not kill the heartbeat
                log.debug("progress update failed: %s", error)

    # ---------------------------------------------------------------------------------- main path

    def process(self, job: JobFolder, stop_event: threading.Event, *, taken_over: str | None = None) -> Outcome:
        """Run `job` until it is done, failed, or stopped; returns which."""
        owner = job.claim.owner.label()
        row = self.ledger.job(job.job_id)
        if row is None:
            self.ledger.transition(
                job.job_id, "queued", name=job.name, job_file=str(job.job_file), folder=str(job.folder),
                owner=owner, detail="claimed from inbox",
            )
        elif row["state"] == "running":
            self.ledger.transition(
                job.job_id, "interrupted", folder=str(job.folder), owner=owner,
                detail=f"attempt {row['attempts']} lost: {taken_over or 'worker gone'}",
            )
        else:
            self.ledger.update(job.job_id, folder=str(job.folder), owner=owner)

        if (job.folder / REPORT_NAME).exists():  # finished, but its worker died before moving it
            return self._done(job, read_json(job.folder / REPORT_NAME) or {}, note="finished by a previous worker")

        last_error: dict[str, Any] | None = read_json(job.folder / ERROR_NAME)
        while True:
            row = self.ledger.job(job.job_id) or {}
            attempts = int(row.get("attempts") or 0)
            if stop_event.is_set():
                return self._release(job, "stopped before the attempt started", attempts_delta=0)
            if attempts >= self.policy.max_attempts:
                message = f"gave up after {attempts} attempt(s)"
                if last_error or row.get("error"):
                    message += f"; last error: {(last_error or {}).get('message') or row.get('error')}"
                elif taken_over:
                    message += f"; the last one was lost ({taken_over}): was the worker killed, e.g. out of memory?"
                return self._failed(job, message, last_error, exc_type="TooManyAttempts")
            try:
                edit = self.load(job, first_attempt=attempts == 0)
                self.check_input(edit)
            except UserError as error:
                return self._failed(job, str(error), None, exc_type="UserError", tb=traceback.format_exc())

            if self.preview_first and attempts == 0 and not edit.preview:
                outcome = self._preview(job, edit, stop_event, owner)
                if outcome is not None:
                    return outcome
            started = time.time()
            job.progress = CheckpointProgress(job.work_dir, edit.steps)
            attempt = self.ledger.transition(
                job.job_id, "running", attempts_delta=1, owner=owner, input=str(edit.input), output=str(edit.output),
                started_at=row.get("started_at") or started, total=2 * edit.steps,
                detail=f"attempt started by {owner}",
            )
            log.info("%s: attempt %d/%d started (%s)", job.name, attempt, self.policy.max_attempts, owner)
            try:
                report = self.execute(edit, job.work_dir, stop_event)
            except Exception as error:
                self.ledger.add_run_seconds(job.job_id, time.time() - started)
                outcome = attempt_outcome(error)
                if outcome == "interrupted":
                    return self._release(job, f"stopped at a checkpoint ({error})", attempts_delta=-1)
                last_error = self._error_record(error, attempt)
                write_json_atomic(job.folder / ERROR_NAME, last_error)
                if outcome == "failed":
                    return self._failed(job, str(error), last_error, exc_type=last_error["type"])
                log.warning("%s: attempt %d failed: %s", job.name, attempt, last_error["message"])
                if attempt < self.policy.max_attempts:
                    self.ledger.transition(
                        job.job_id, "queued", error=last_error["message"],
                        detail=f"attempt {attempt} failed: {last_error['message']}; retrying in "
                        f"{self.policy.retry_delay:g} s",
                    )
                    if stop_event.wait(self.policy.retry_delay):
                        return self._release(job, "stopped while waiting to retry", attempts_delta=0)
                continue
            self.ledger.add_run_seconds(job.job_id, time.time() - started)
            return self._done(job, _pictures_relative_to(report, edit, job.folder))

    def _preview(self, job: JobFolder, edit: EditJob, stop_event: threading.Event, owner: str) -> Outcome | None:
        """Preview `edit` into previews/NAME/ unless done before; an outcome ends the job, None goes on to the full run."""
        folder = self.spool.previews / job.name
        preview = edit.model_copy(update={"preview": True, "output": folder / Path(edit.output).name, "report": None,
                                          "attention_video": None})
        if preview_job(preview).report.exists():
            return None
        folder.mkdir(parents=True, exist_ok=True)
        self.ledger.transition(job.job_id, "running", owner=owner, detail=f"previewing into {folder}")
        log.info("%s: previewing into %s", job.name, folder)
        try:
            self.execute(preview, job.work_dir, stop_event)
        except Exception as error:
            outcome = attempt_outcome(error)
            if outcome == "interrupted":
                return self._release(job, f"stopped during the preview ({error})", attempts_delta=0)
            if outcome == "failed":
                return self._failed(job, f"preview: {error}", None, exc_type=type(error).__name__, tb=traceback.format_exc())
            log.warning("%s: the preview failed (%s); running the job anyway", job.name, error)
        return None

    # -------------------------------------------------------------------------------------- endings

    @staticmethod
    def _error_record(error: BaseException, attempt: int) -> dict[str, Any]:
        return {
            "message": str(error) or type(error).__name__,
            "type": getattr(error, "type_name", None) or type(error).__name__,
            "traceback": getattr(error, "remote_traceback", None)
            or "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            "attempt": attempt,
            "at": time.time(),
        }

    def _release(self, job: JobFolder, reason: str, *, attempts_delta: int) -> Outcome:
        self.ledger.transition(job.job_id, "interrupted", attempts_delta=attempts_delta, detail=f"{reason}; resumable")
        job.claim.release(reason)
        log.info("%s: %s; left in processing/ to resume", job.name, reason)
        return "interrupted"

    def _done(self, job: JobFolder, report: dict[str, Any], note: str = "") -> Outcome:
        if not job.claim.still_held():
            log.warning("%s: lost the claim before finishing; another worker owns it now", job.name)
            return "lost"
        write_json_atomic(job.folder / REPORT_NAME, report)
        shutil.rmtree(job.work_dir, ignore_errors=True)
        remove_foreign_temps(job.folder)  # partials of killed attempts never reach done/
        (job.folder / ERROR_NAME).unlink(missing_ok=True)  # errors of earlier, retried attempts
        row = self.ledger.job(job.job_id) or {}
        before = job.folder
        target = finish(job, self.spool.done)
        output = row.get("output") or report.get("output")
        if output and Path(output).is_relative_to(before):  # the default output moved with its folder
            output = str(target / Path(output).relative_to(before))
            if report.get("output"):
                report = {**report, "output": output}
                write_json_atomic(target / REPORT_NAME, report)
        rss_mb, vram_mb = peak_memory(report)
        self.ledger.transition(
            job.job_id, "done", folder=str(target), output=output, finished_at=time.time(), peak_rss_mb=rss_mb,
            peak_vram_mb=vram_mb, report=_json(report), error=None, step=row.get("total") or row.get("step"),
            detail=note or "finished",
        )
        log.info("%s: done -> %s", job.name, target)
        return "done"

    def _failed(
        self, job: JobFolder, message: str, record: dict[str, Any] | None, *, exc_type: str, tb: str | None = None
    ) -> Outcome:
        if not job.claim.still_held():
            log.warning("%s: lost the claim before failing it; another worker owns it now", job.name)
            return "lost"
        row = self.ledger.job(job.job_id) or {}
        error = {
            "job": job.name,
            "id": job.job_id,
            "message": message,
            "type": exc_type,
            "traceback": tb or (record or {}).get("traceback"),
            "attempts": int(row.get("attempts") or 0),
            "max_attempts": self.policy.max_attempts,
            "claimed_at": job.meta.get("claimed_at"),
            "started_at": row.get("started_at"),
            "failed_at": time.time(),
            "history": [
                {k: e[k] for k in ("at", "state", "attempt", "owner", "detail")}
                for e in self.ledger.events(job.job_id)
            ],
        }
        write_json_atomic(job.folder / ERROR_NAME, error)
        remove_foreign_temps(job.folder)
        target = finish(job, self.spool.failed)
        self.ledger.transition(job.job_id, "failed", folder=str(target), finished_at=time.time(), error=message,
                               detail=message)
        log.error("%s: failed -> %s: %s", job.name, target, message)
        return "failed"


def _pictures_relative_to(report: dict[str, Any], edit: EditJob, folder: Path) -> dict[str, Any]:
    """The report with its attention picture paths relative to `folder`, where its report.json goes."""
    entry = report.get("attention_pictures")
    if not isinstance(entry, dict):
        return report
    from longedit.attention_pictures import rebased, report_base

    ran = as_run(edit)
    return {**report, "attention_pictures": rebased(entry, report_base(ran.report, ran.output), folder)}


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, default=str)
