"""Tuned models of jobs, content-addressed: several prompts on one clip share one tuning.

`CACHE/<key>/` is a finished Tune-A-Video folder, where the key hashes the clip's bytes, the base model,
the source prompt and the tuning settings (`longedit.tune.trainer.tune_key`); it is published by one
rename, so a folder that exists is complete. While a worker tunes, it holds `CACHE/.<key>.lock` (`filelock`),
and its checkpoints are in `CACHE/.<key>.work/`: another worker (thread or process) that needs the same
model waits for the lock and then finds the folder; a worker stopped mid-tuning leaves the checkpoints,
and whoever tunes that key next resumes them. Where the lock does not reach (hosts without a shared lock
manager) two workers may both tune; the first rename wins and the other uses its folder.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from longedit.config import TuneSettings
from longedit.errors import JobInterrupted
from longedit.tune.trainer import TUNE_INFO, file_sha256, resolved_settings, tune_clip, tune_key

KEY_LENGTH = 24


@contextlib.contextmanager
def _locked(path: Path, stop_event: threading.Event | None, poll: float = 0.5) -> Iterator[None]:
    """Hold an exclusive file lock on `path` (`filelock`: flock on POSIX, msvcrt on Windows), polling so that a
    stop request ends the wait."""
    lock = FileLock(path)
    while True:
        try:
            lock.acquire(timeout=poll)
            break
        except Timeout:
            if stop_event is not None and stop_event.is_set():
                raise JobInterrupted("stopped while waiting for another worker's tuning of this clip") from None
    try:
        yield
    finally:
        lock.release()


def ensure_tuned_model(
    clip: Path,
    prompt: str,
    model: str,
    settings: TuneSettings,
    cache_dir: Path,
    *,
    device: str = "auto",
    local_files_only: bool = False,
    progress: bool = True,
    stop_event: threading.Event | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """The tuned model folder for this clip and base model: from the cache, or tuned now and cached.
    `on_step(step, loss)` after every training step (for a job's progress file)."""
    settings = resolved_settings(settings)
    clip_sha = file_sha256(Path(clip))
    key = tune_key(clip_sha, model, prompt, settings)[:KEY_LENGTH]
    cache_dir = Path(cache_dir)
    folder = cache_dir / key
    if (folder / TUNE_INFO).is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{key}.lock", stop_event):
        if not (folder / TUNE_INFO).is_file():
            tune_clip(
                Path(clip), prompt, folder, settings, model=model, work_dir=cache_dir / f".{key}.work", device=device,
                local_files_only=local_files_only, progress=progress, stop_event=stop_event, exist_ok=True,
                clip_sha256=clip_sha, on_step=on_step,
            )
    return folder
