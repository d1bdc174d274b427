"""Run edit attempts as Ray tasks: one task per attempt, one GPU per task when the cluster has GPUs.

The claim/ledger rules do not change: the driver (`longedit watch --backend ray` or `longedit run
--backend ray`) claims job folders, records transitions and moves folders; only the edit itself runs
in the task. Retries are the driver's (`--max-attempts`), not Ray's (`max_retries=0`), so every
attempt, including one lost to a dead Ray worker or node, is counted in the ledger.

A stop request reaches a running task through a `STOP` file in the job's work folder (the task
polls it and sets the engine's stop event), so the task checkpoints and returns "interrupted"; the
driver raises `JobInterrupted` for it. A task's error comes back as `RemoteJobError` (with
`user_error` set for a `UserError`, which `longedit.jobs.outcome.attempt_outcome` never retries).
Paths are passed as they are: the watched folder, the inputs and the outputs must be on storage
every node sees at the same path (a shared filesystem), which the checkpoints need anyway.

Ray is optional (`pip install longedit[ray]`) and imported only when this backend is used.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longedit.config import EditJob
from longedit.errors import JobInterrupted, UserError
from longedit.jobs.outcome import attempt_outcome, is_user_error
from longedit.jobs.runner import resolve_runner

STOP_NAME = "STOP"


class RemoteJobError(RuntimeError):
    """An attempt that failed inside a Ray task; carries the remote traceback and whether it was a UserError."""

    def __init__(self, message: str, *, type_name: str, remote_traceback: str | None, user_error: bool) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        self.user_error = user_error


def import_ray() -> Any:
    """The `ray` module, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "the Ray backend needs the 'ray' package, which is not installed", "pip install longedit[ray]"
        ) from None
    return ray


def _run_attempt(job: EditJob, work_dir: str, runner_spec: Any, poll: float = 0.5) -> dict[str, Any]:
    """Body of the Ray task: run one attempt and describe how it ended (never raises for job errors)."""
    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stop_event = threading.Event()
    finished = threading.Event()

    def watch_stop_file() -> None:
        while not finished.wait(poll):
            if (folder / STOP_NAME).exists():
                stop_event.set()
                return

    if (folder / STOP_NAME).exists():
        stop_event.set()
    watcher = threading.Thread(target=watch_stop_file, daemon=True)
    watcher.start()
    try:
        runner = resolve_runner(runner_spec)
        report = runner(job, work_dir=folder, progress=False, stop_event=stop_event)
        return {"status": "done", "report": report}
    except Exception as error:
        return {
            "status": "interrupted" if attempt_outcome(error) == "interrupted" else "error",
            "message": str(error) or type(error).__name__,
            "type": type(error).__name__,
            "traceback": traceback.format_exc(),
            "user_error": is_user_error(error),
        }
    finally:
        finished.set()


class RayExecutor:
    """An `Executor` that runs each attempt as a Ray task and waits for it in the calling thread."""

    remote = True

    def __init__(
        self,
        runner: str | Callable[..., dict[str, Any]] | None = None,
        *,
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
        poll: float = 0.5,
    ) -> None:
        ray = import_ray()
        self._ray = ray
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": True, **(init_kwargs or {})}
            if address:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except ConnectionError as error:
                raise UserError(f"cannot connect to Ray at '{address}': {error}", "check --address (ray status)") from None
        self.gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self.runner = runner
        self.poll = poll
        self._task = ray.remote(_run_attempt).options(num_gpus=self.gpus, max_retries=0)

    def default_workers(self) -> int:
        """How many attempts the cluster can run at once: its GPUs, or 1 without GPUs."""
        return max(1, int(self._ray.cluster_resources().get("GPU", 0))) if self.gpus else 1

    def __call__(self, job: EditJob, work_dir: Path, stop_event: threading.Event) -> dict[str, Any]:
        ray = self._ray
        work_dir.mkdir(parents=True, exist_ok=True)
        stop_file = work_dir / STOP_NAME
        stop_file.unlink(missing_ok=True)
        ref = self._task.remote(job, str(work_dir), self.runner, self.poll)
        while True:
            ready, _ = ray.wait([ref], timeout=self.poll)
            if ready:
                break
            if stop_event.is_set() and not stop_file.exists():
                stop_file.touch()
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:  # worker or node died, task cancelled, ...
            raise RemoteJobError(
                f"Ray task failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                type_name=type(error).__name__, remote_traceback=str(error), user_error=False,
            ) from None
        finally:
            stop_file.unlink(missing_ok=True)
        if result["status"] == "done":
            return result["report"]
        if result["status"] == "interrupted":
            raise JobInterrupted(result["message"])
        user_error = bool(result["user_error"])
        raise RemoteJobError(
            result["message"] if user_error else f"{result['type']}: {result['message']}",
            type_name=result["type"], remote_traceback=result["traceback"], user_error=user_error,
        )
