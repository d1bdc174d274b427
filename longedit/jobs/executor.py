"""One job executor for `longedit run` and `longedit watch`: where an attempt runs, and what its end means.

An `Executor` runs one attempt of an edit, `executor(job, work_dir, stop_event) -> report`, in this
process (`LocalExecutor`) or as a Ray task (`longedit.jobs.ray_backend.RayExecutor`); `make_executor`
is the one switch between them. Both raise `JobInterrupted` when the attempt stopped at a checkpoint.

What an attempt's exception means (interrupted, failed at once, or worth a retry) is decided in one
place, `longedit.jobs.outcome.attempt_outcome`, which `run`, `watch` and the Ray task all call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from longedit.config import EditJob
from longedit.errors import UserError
from longedit.jobs.outcome import attempt_outcome
from longedit.jobs.runner import resolve_runner

__all__ = ["Executor", "LocalExecutor", "attempt_outcome", "make_executor"]


class Executor(Protocol):
    """Runs one attempt of a job and returns its report; raises `JobInterrupted` on a clean stop.

    remote: attempts run elsewhere (a cluster queues them), so a caller may submit all jobs at once.
    """

    remote: bool

    def __call__(self, job: EditJob, work_dir: Path, stop_event: threading.Event) -> dict[str, Any]: ...

    def default_workers(self) -> int:
        """How many attempts to run at once when the user does not say."""
        ...


class LocalExecutor:
    """Runs an attempt in this process with a runner (`run_edit` or a test double)."""

    remote = False

    def __init__(self, runner: Callable[..., dict[str, Any]], *, progress: bool = False) -> None:
        self.runner = runner
        self.progress = progress

    def __call__(self, job: EditJob, work_dir: Path, stop_event: threading.Event) -> dict[str, Any]:
        work_dir.mkdir(parents=True, exist_ok=True)
        return self.runner(job, work_dir=work_dir, progress=self.progress, stop_event=stop_event)

    def default_workers(self) -> int:
        return 1


def make_executor(
    backend: str,
    runner: str | Callable[..., dict[str, Any]] | None = None,
    *,
    address: str | None = None,
    progress: bool = False,
) -> Executor:
    """The executor of `backend` (`local` or `ray`) around `runner` (None: the engine's `run_edit`)."""
    if backend == "ray":
        from longedit.jobs.ray_backend import RayExecutor

        return RayExecutor(runner, address=address)
    if backend != "local":
        raise UserError(f"unknown backend '{backend}'", "use --backend local or --backend ray")
    if address:
        raise UserError("--address is only used with --backend ray", "add --backend ray or drop --address")
    return LocalExecutor(resolve_runner(runner), progress=progress)
