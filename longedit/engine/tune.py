"""Optional: the Tune-A-Video model a job with `tune:` edits with (tuned once per clip, cached)."""

from __future__ import annotations

import threading
from pathlib import Path

from longedit.config import EditJob
from longedit.model_info import choose_size
from longedit.progress import PROGRESS_NAME, JobProgress, Phase


def tuned_model(
    job: EditJob, progress: bool, stop_event: threading.Event | None, progress_dir: Path | None = None
) -> str | None:
    """The Tune-A-Video folder a job with `tune:` edits with (cached per clip, base model and settings), else None.

    The cache is `tune.cache_dir` (`longedit run` and `watch` set it), else `.longedit-tuned` beside the output.
    While it tunes, the job's `progress.json` (in `progress_dir`) says so: phase `tune`, its share and ETA
    (`longedit status` shows them); the edit's own phases replace it when the edit starts.
    """
    if job.tune is None:
        return None
    from longedit.config import TUNED_CACHE_FOLDER
    from longedit.tune.cache import ensure_tuned_model

    settings = job.tune if job.tune.size is not None else job.tune.model_copy(update={"size": choose_size(job).short_side})
    cache = job.tune.cache_dir or Path(job.output).resolve().parent / f".longedit-{TUNED_CACHE_FOLDER}"
    tracker = None
    if progress_dir is not None:
        Path(progress_dir).mkdir(parents=True, exist_ok=True)
        tracker = JobProgress([Phase("tune", settings.steps, 1.0)], path=Path(progress_dir) / PROGRESS_NAME)
        tracker.start("tune")
    try:
        folder = ensure_tuned_model(
            Path(job.input), job.source_prompt, job.model, settings, cache, device=job.device,
            local_files_only=job.local_files_only, progress=progress, stop_event=stop_event,
            on_step=None if tracker is None else (lambda step, loss: tracker.advance("tune")),
        )
    finally:
        if tracker is not None:
            tracker.close()
    return str(folder)
