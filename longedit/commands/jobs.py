"""`longedit run`, `validate`, `watch`, `status`: job files, a watched folder, and its ledger.

See `longedit/jobs/__init__.py` for the watched folder's layout and rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from longedit.errors import UserError


class Backend(str, Enum):
    local = "local"
    ray = "ray"


OUTPUT_ROOT_HELP = (
    "A folder besides {own} where job files may write their output, report and attention video (repeatable); "
    "elsewhere, including ../ and absolute paths, is refused."
)
RUNNER_HELP = "module:function run instead of longedit.engine.run_edit (testing)."
CACHE_HELP = (
    "Share DDIM inversions between jobs (several prompts on one clip invert it once) in "
    "{where}/inversion-cache, capped by each job's cache_size [on]."
)


@contextlib.contextmanager
def graceful_stop(stop: Any) -> Iterator[None]:
    """SIGTERM/SIGINT call `stop()` once (jobs checkpoint and stay resumable).

    A second signal ends the process at once (the default action, also for SIGINT: a KeyboardInterrupt
    would wait for the worker threads); the jobs then resume from their last checkpoint.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: Any) -> None:
        print(
            f"{signal.Signals(signum).name}: finishing the current step and saving a checkpoint, then exiting "
            "(signal again to quit at once; a rerun resumes from the last checkpoint)",
            file=sys.stderr,
        )
        for sig in previous:
            signal.signal(sig, signal.SIG_DFL)
        stop()

    if threading.current_thread() is not threading.main_thread():  # e.g. called from a test thread
        yield
        return
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show the watcher's INFO log lines on stderr for the duration of a command."""
    logger = logging.getLogger("longedit.jobs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _preflight(job: Any) -> dict:
    from longedit.engine import preflight

    return preflight(job)


# ------------------------------------------------------------------------------------------ commands


def run(
    job_files: Annotated[list[Path], typer.Argument(help="Job files (YAML) to run, in order.")],
    backend: Annotated[Backend, typer.Option(help="local: one after another here; ray: all at once as Ray tasks.")] = Backend.local,
    work_dir: Annotated[Optional[Path], typer.Option(help="Folder for checkpoints (default: .longedit-work/ beside each output); rerunning resumes.")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (with --backend ray); default: start a local Ray.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Progress bars.")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help=CACHE_HELP.format(where="WORK_DIR"))] = True,
    output_root: Annotated[Optional[list[Path]], typer.Option(help=OUTPUT_ROOT_HELP.format(own="each job file's folder"))] = None,
    runner: Annotated[Optional[str], typer.Option(hidden=True, help=RUNNER_HELP)] = None,
) -> None:
    """Run job files. All are validated first; a SIGTERM checkpoints and exits 0 (run again to resume).

    Job file keys are the `longedit edit` flags in snake_case; paths are relative to the job file:

      input: clip.mp4
      output: clip-edited.mp4
      source_prompt: a man talking on a phone in a car
      prompt: a robot talking on a phone in a car
      objects:
        - word: robot
          box: [40, 10, 150, 144]
    """
    from longedit.jobs.batch import BatchResult, run_batch

    stop = threading.Event()

    def show(result: BatchResult) -> None:
        name = result.job_file.name
        if result.status == "done":
            typer.echo(f"done {name} -> {result.job.output} ({result.seconds:.1f} s)")
            for line in (result.report or {}).get("warnings", []):
                typer.echo(f"warning: {name}: {line}", err=True)
        elif result.status == "interrupted":
            typer.echo(f"interrupted {name}: checkpoint saved; run the same command again to resume", err=True)
        elif result.status == "failed" and len(job_files) > 1:
            typer.echo(f"error: job '{name}': {result.error}", err=True)

    with graceful_stop(stop.set):
        results = run_batch(
            job_files, backend=backend.value, work_root=work_dir, address=address, runner=runner,
            stop_event=stop, progress=progress, on_result=show, cache=cache, output_roots=output_root or (),
        )
    failed = [r for r in results if r.status == "failed"]
    if len(results) == 1 and failed:
        raise failed[0].error  # type: ignore[misc] - a UserError becomes the usual one-line error
    if failed:
        typer.echo(f"{len(failed)} of {len(results)} job(s) failed", err=True)
        raise SystemExit(1)


def validate(
    job_files: Annotated[list[Path], typer.Argument(help="Job files (YAML) to check.")],
    output_root: Annotated[Optional[list[Path]], typer.Option(help=OUTPUT_ROOT_HELP.format(own="each job file's folder"))] = None,
) -> None:
    """Check job files without running them: keys, video, where it writes (inside the job file's folder, never
    over an input or another output), words of the prompt, boxes, masks."""
    from longedit.jobs.batch import load_batch

    problems = 0
    for path in job_files:
        try:
            ((_, job),) = load_batch([path], output_root or ())
            summary = _preflight(job)
        except UserError as error:
            if len(job_files) == 1:
                raise
            typer.echo(f"error: {error}", err=True)
            problems += 1
            continue
        typer.echo(f"OK {path}")
        notices = summary.pop("notices", [])
        for key, value in summary.items():
            typer.echo(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
        for line in notices:
            typer.echo(f"  warning: {line}")
    if problems:
        raise SystemExit(UserError.exit_code)


def watch(
    folder: Annotated[Path, typer.Argument(help="Watched folder: DIR/inbox, processing, done, failed are created.")],
    workers: Annotated[Optional[int], typer.Option(min=1, help="Jobs at once (default: 1; with --backend ray: the cluster's GPUs).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Process what is there (waiting for files being written) and exit.")] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="Rescan every N seconds (file events are only hints).")] = 10.0,
    settle: Annotated[float, typer.Option(min=0.0, help="A file must keep its size and mtime this long before it is used.")] = 2.0,
    backend: Annotated[Backend, typer.Option(help="local: threads in this process; ray: Ray tasks (claims and ledger stay here).")] = Backend.local,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (with --backend ray); default: start a local Ray.")] = None,
    max_attempts: Annotated[int, typer.Option(min=1, help="A job whose attempts failed (or died) this often goes to failed/.")] = 3,
    retry_delay: Annotated[float, typer.Option(min=0.0, help="Seconds before retrying a failed attempt.")] = 10.0,
    stale_after: Annotated[float, typer.Option(min=1.0, help="A claim from another host without heartbeat this long is taken over.")] = 120.0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help=CACHE_HELP.format(where="FOLDER"))] = True,
    preview_first: Annotated[bool, typer.Option("--preview-first", help="Preview each new job (one window, attention pictures) into FOLDER/previews/NAME/ before running it; a bad job fails there.")] = False,
    output_root: Annotated[Optional[list[Path]], typer.Option(help=OUTPUT_ROOT_HELP.format(own="the job's own folder (done/NAME/)"))] = None,
    runner: Annotated[Optional[str], typer.Option(hidden=True, help=RUNNER_HELP)] = None,
) -> None:
    """Run every job dropped into FOLDER/inbox: NAME.yaml (+ NAME.mp4 when the job has no `input`).

    Results go to FOLDER/done/NAME/ (NAME-edited.mp4 unless the job names an output, report.json) or
    FOLDER/failed/NAME/ (error.json). Jobs of a killed watcher resume from their checkpoints on the
    next start; SIGTERM checkpoints the running jobs and exits 0. Progress: `longedit status FOLDER`.
    """
    from longedit.jobs.executor import make_executor
    from longedit.jobs.watcher import WatchOptions, Watcher
    from longedit.jobs.worker import RetryPolicy

    if folder.exists() and not folder.is_dir():
        raise UserError(f"'{folder}' is a file, not a folder", "give the folder to watch")
    execute = make_executor(backend.value, runner, address=address)
    workers = workers or execute.default_workers()
    options = WatchOptions(
        workers=workers, poll=poll, settle=settle, once=once, stale_after=stale_after,
        policy=RetryPolicy(max_attempts=max_attempts, retry_delay=retry_delay), cache=cache, preview_first=preview_first,
        output_roots=tuple(output_root or ()),
    )
    with _log_to_stderr():
        watcher = Watcher(folder, execute, options)
        with graceful_stop(watcher.request_stop):
            outcomes = watcher.run()
    summary = ", ".join(f"{len(names)} {outcome}" for outcome, names in sorted(outcomes.items())) or "no jobs"
    typer.echo(f"watch {folder}: {summary}")


def status(
    folder: Annotated[Path, typer.Argument(help="A watched folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    stale_after: Annotated[float, typer.Option(min=1.0, help="Heartbeat age that marks another host's job as stale.")] = 120.0,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write the morning report instead: one static HTML page (pictures inline) with each job's state, duration, settings, source | edited thumbnails, attention strips, metrics and errors with their fix.")] = None,
) -> None:
    """Show the jobs of a watched folder: queued, running (with progress), interrupted, done, failed."""
    from longedit.jobs.status import collect_status, format_table

    if html is not None:
        from longedit.jobs.html_report import write_html_report

        data = write_html_report(folder, html, stale_after=stale_after)
        counts = ", ".join(f"{n} {state}" for state, n in data["counts"].items() if n)
        typer.echo(f"wrote {html}: {len(data['jobs'])} job(s){': ' + counts if counts else ''}")
        return
    report = collect_status(folder, stale_after=stale_after)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        typer.echo(format_table(report))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command(no_args_is_help=True)(run)
    app.command(no_args_is_help=True)(validate)
    app.command(no_args_is_help=True)(watch)
    app.command(no_args_is_help=True)(status)
