"""The watch loop: find complete jobs in the inbox and free jobs in processing/, run them on N workers.

Each pass of the loop
1. collects finished workers;
2. takes over processing/ folders nobody holds (dead owner, stale heartbeat, released on SIGTERM)
   and resumes them from their checkpoints (they were started before anything in the inbox);
3. scans the inbox and claims the ready job files while workers are free;
4. sleeps until a watchdog event, a finished worker, or `poll` seconds (a job that is still
   settling shortens the sleep to the settle time). watchdog events are only hints: the periodic
   rescan is what guarantees progress on network shares, which send no events.

With `once`, the loop ends when no job is running, ready, or still settling (a file being written
is waited for; one that waits for its input video is left for a later run).

A stop request (SIGTERM/SIGINT in the CLI) stops claiming, lets every running job checkpoint and
release its claim, and returns; the jobs resume on the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from longedit.jobs.claim import Owner
from longedit.jobs.ledger import Ledger
from longedit.jobs.scanner import InboxScanner
from longedit.jobs.spool import JobFolder, Spool, adopt_folder, claim_from_inbox, free_folders
from longedit.jobs.executor import Executor
from longedit.jobs.worker import JobProcessor, Outcome, RetryPolicy

log = logging.getLogger("longedit.jobs")


@dataclass
class WatchOptions:
    """Knobs of the watch loop (the `longedit watch` flags)."""

    workers: int = 1
    poll: float = 10.0
    settle: float = 2.0
    corrupt_after: float | None = None  # default: 3 x settle
    once: bool = False
    stale_after: float = 120.0
    heartbeat: float = 5.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    cache: bool = True  # share inversions in DIR/inversion-cache (--no-cache: off)
    preview_first: bool = False  # preview each new job into previews/NAME/ before running it
    output_roots: tuple[Path, ...] = ()  # folders besides a job's own where its outputs may go (--output-root)


class Watcher:
    """Processes the jobs of one watched folder until stopped (or until idle with `once`)."""

    def __init__(
        self,
        root: Path,
        execute: Executor,
        options: WatchOptions | None = None,
        *,
        probe: Callable[[Path], None] | None = None,
    ) -> None:
        self.options = options or WatchOptions()
        self.spool = Spool(Path(root).absolute()).create()
        self.ledger = Ledger(self.spool.ledger_path)
        self.processor = JobProcessor(
            self.spool, self.ledger, execute, self.options.policy, preview_first=self.options.preview_first,
            inversion_cache=self.spool.inversion_cache if self.options.cache else None,
            output_roots=self.options.output_roots,
        )
        scanner_kwargs = {"probe": probe} if probe is not None else {}
        self.scanner = InboxScanner(
            self.spool, settle=self.options.settle, corrupt_after=self.options.corrupt_after, **scanner_kwargs
        )
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._active: dict[Future, JobFolder] = {}
        self._active_lock = threading.Lock()  # the heartbeat thread reads _active
        self._reported: dict[Path, str] = {}
        self.outcomes: dict[str, list[str]] = {}

    def request_stop(self) -> None:
        """Stop claiming; running jobs checkpoint and release (safe from a signal handler)."""
        self.stop_event.set()
        self._wake.set()

    # ------------------------------------------------------------------------------------- loop

    def run(self) -> dict[str, list[str]]:
        """Run until stopped (or idle with `once`); returns job names by outcome."""
        options = self.options
        pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="longedit-job")
        observer = None if options.once else self._start_observer()
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(beat_stop,), name="longedit-heartbeat", daemon=True)
        beat.start()
        log.info("watching %s with %d worker(s)%s", self.spool.root, options.workers, " (once)" if options.once else "")
        try:
            while not self.stop_event.is_set():
                self._reap()
                settling = self._fill(pool)
                if options.once and not self._active and settling == 0:
                    break
                timeout = options.poll
                if settling or options.once:
                    timeout = min(timeout, max(options.settle / 2, 0.05))
                self._wake.wait(timeout)
                self._wake.clear()
        finally:
            if self.stop_event.is_set() and self._active:
                log.info("stopping: %d running job(s) will checkpoint and stay resumable", len(self._active))
            pool.shutdown(wait=True)
            self._reap()
            beat_stop.set()
            beat.join()
            if observer is not None:
                _stop_observer(observer)
        return self.outcomes

    def _fill(self, pool: ThreadPoolExecutor) -> int:
        """Claim work while workers are free; returns how many jobs are waiting for a worker or to settle."""
        free = self.options.workers - len(self._active)
        pending = 0
        for folder, record, reason in free_folders(self.spool, self.options.stale_after):
            if self.stop_event.is_set():
                return pending
            if free <= 0:
                pending += 1
                continue
            job = adopt_folder(self.spool, folder, record, Owner.current(), reason)
            if job is not None:
                log.info("%s: resuming (%s)", job.name, reason)
                self._submit(pool, job, reason)
                free -= 1
        for entry in self.scanner.scan():
            if self.stop_event.is_set():
                return pending
            if entry.state == "settling":
                pending += 1
                continue
            if entry.state == "waiting":
                if self._reported.get(entry.job_file) != entry.reason:
                    log.warning("%s: waiting: %s", entry.job_file.name, entry.reason)
                    self._reported[entry.job_file] = entry.reason
                continue
            if free <= 0:
                pending += 1
                continue
            job = claim_from_inbox(self.spool, entry.job_file, Owner.current(), entry.companion)
            if job is not None:
                self._reported.pop(entry.job_file, None)
                log.info("%s: claimed (%s)", job.name, entry.reason)
                self._submit(pool, job, None)
                free -= 1
        return pending

    def _submit(self, pool: ThreadPoolExecutor, job: JobFolder, taken_over: str | None) -> None:
        future = pool.submit(self._process, job, taken_over)
        with self._active_lock:
            self._active[future] = job
        future.add_done_callback(lambda _: self._wake.set())

    def _process(self, job: JobFolder, taken_over: str | None) -> Outcome:
        try:
            return self.processor.process(job, self.stop_event, taken_over=taken_over)
        except Exception:
            # A bug or a broken disk in the machinery itself. The claim stays held by this process, so
            # the job is not retried in a tight loop; the next watcher start resumes it.
            log.exception("%s: internal error while processing; it resumes on the next start", job.name)
            return "interrupted"

    def _reap(self) -> None:
        with self._active_lock:
            finished = [(f, self._active.pop(f)) for f in list(self._active) if f.done()]
        for future, job in finished:
            self.outcomes.setdefault(future.result(), []).append(job.name)

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.options.heartbeat):
            with self._active_lock:
                running = list(self._active.values())
            for job in running:
                self.processor.heartbeat(job)

    def _start_observer(self):
        """A watchdog observer on the inbox that wakes the loop; None if watchdog cannot watch here."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        wake = self._wake

        class _Hint(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog's signature
                wake.set()

        observer = Observer()
        try:
            observer.schedule(_Hint(), str(self.spool.inbox), recursive=False)
            observer.start()
        except Exception as error:  # inotify limits, unsupported filesystem: polling still works
            log.warning("file events unavailable (%s); rescanning every %g s", error, self.options.poll)
            return None
        return observer


def _stop_observer(observer) -> None:  # noqa: ANN001 - a watchdog Observer
    """Stop the watchdog thread, muting its harmless 'called when the thread is inactive' race report."""
    quiet = logging.getLogger("watchdog.observers.inotify")

    def drop_inactive(record: logging.LogRecord) -> bool:
        return "thread is inactive" not in record.getMessage()

    quiet.addFilter(drop_inactive)
    try:
        observer.stop()
        observer.join(timeout=5)
    finally:
        quiet.removeFilter(drop_inactive)
