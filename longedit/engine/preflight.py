"""`longedit validate` / `edit`'s first look at a job: what `prepare` checks, the words (tokenizer only), and
for a GPU job planned on a machine without one, the window a simulation picks."""

from __future__ import annotations

from pathlib import Path

import torch

from longedit.config import EditJob, as_run
from longedit.models import load_tokenizer
from longedit.engine.plan import loop_settings
from longedit.engine.prepare import prepare, resolve_words


def preflight(job: EditJob, work_dir: Path | None = None) -> dict:
    """Validate a job without running the diffusion model: video, output, words (tokenizer), boxes, work folder."""
    job = as_run(job)
    prepared = prepare(job, work_dir)
    tokenizer = load_tokenizer(job.model, job.local_files_only, job.checkpoint_config)
    words = resolve_words(tokenizer, job, prepared)
    info = prepared.info
    summary = {
        "input": str(job.input),
        "frames": info.frames,
        "fps": float(info.fps),
        "size": [info.width, info.height],
        "processed_size": list(prepared.processed_size),
        "processing_size_choice": prepared.size_choice.to_report(),
        "objects": {w.word: list(w.indices) for w in words},
        "model": job.model,
        "notices": list(prepared.notices),
        "output": str(job.output),
    }
    if job.vram is not None and job.device != "cpu" and not torch.cuda.is_available():  # a GPU job planned here
        from longedit.gpu_plan import plan_unseen_gpu

        summary["window"] = plan_unseen_gpu(job, loop_settings(job, torch.device("cuda")), words, info.frames, prepared.processed_size)
    return summary
