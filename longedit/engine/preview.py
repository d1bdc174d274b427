"""Optional: a preview edits the first frames only (one window, or `preview: N`)."""

from __future__ import annotations

import dataclasses

from longedit.config import EditJob
from longedit.planner import WindowPlan
from longedit.engine.prepare import Prepared


def preview_frames(job: EditJob, plan: WindowPlan) -> int:
    """How many first frames a preview edits: `preview: N`, or one window of the job's plan (`preview: true`)."""
    return plan.length if job.preview is True else int(job.preview)


def first_frames(prepared: Prepared, frames: int) -> Prepared:
    """`prepared` cut to its first `frames` frames (at most the video's): what a preview decodes, edits and writes."""
    info = prepared.info
    frames = max(1, min(frames, info.frames))
    clipped = dataclasses.replace(
        info, frames=frames, timestamps=info.timestamps[:frames], duration_s=float(frames / info.fps),
    )
    return dataclasses.replace(prepared, info=clipped)
