"""How far a running job is, read from its work folder (the engine's latest checkpoint).

The heartbeat copies this into the ledger, so `longedit status` shows `step/total` for running jobs
without a channel between the engine and the watcher: it also works for Ray tasks on other machines,
as long as the work folder is on shared storage.

The engine's checkpoint (`longedit.checkpoint`) records its phase (`inversion`, `edit`, `decode`) and step;
`read_progress` opens it memory-mapped, so only the small pickled header is read, not the latents. Progress counts
both denoising loops: inversion steps, then edit steps, out of 2 x steps. `total` is only known from
the job, so the caller passes the number of steps.
"""

from __future__ import annotations

from pathlib import Path

_PHASE_OFFSET = {"inversion": 0, "edit": 1, "decode": 2}


class CheckpointProgress:
    """Reads (step, total) from a work folder, re-reading the checkpoint only when it changed."""

    def __init__(self, work_dir: Path, steps: int) -> None:
        self.work_dir = work_dir
        self.steps = steps
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the checkpoint last read
        self._value: tuple[int, int] | None = None

    def read(self) -> tuple[int, int] | None:
        """(step, total) of the newest checkpoint, None when there is none (or it cannot be read)."""
        from longedit.checkpoint import CHECKPOINT_NAME, read_progress  # torch: imported only when needed

        path = self.work_dir / CHECKPOINT_NAME
        try:
            stat = path.stat()
        except OSError:
            return self._value
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self._seen:
            return self._value
        self._seen = key
        progress = read_progress(self.work_dir)
        if progress is None:  # replaced while reading, or not a checkpoint: keep the last value
            return self._value
        phase, step = progress
        total = 2 * self.steps
        self._value = (min(total, _PHASE_OFFSET[phase] * self.steps + step), total)
        return self._value
