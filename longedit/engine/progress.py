"""The job's one progress measure: phases, their prior costs, the seed from a checkpoint."""

from __future__ import annotations

from pathlib import Path

from longedit.config import EditJob
from longedit.checkpoint import RunState
from longedit.progress import PROGRESS_NAME, JobProgress, Phase
from longedit.engine.prepare import Prepared


# Prior cost per unit of each phase, in frame-forwards (one UNet forward of one frame); they only set the
# ratios between phases until those are measured (longedit.progress). A RAD step per window: the
# conditional forward and its backward (~3) plus the guided forward of 2 x the frames.
DECODE_COST, TRACK_COST, ENCODE_COST, PICTURES_COST = 0.5, 1.0, 1.0, 0.2
INVERSION_COST, RAD_COST, EDIT_COST = 1.0, 5.0, 2.0


def job_phases(job: EditJob, frames: int, windows: list[tuple[int, int]], has_words: bool, tracking: bool) -> list[Phase]:
    """The phases of a job for its progress: units (frames, window-steps) and prior costs per unit."""
    length = max(end - start for start, end in windows)
    steps, count = job.steps, len(windows)
    rad_steps = min(job.guided_steps, steps) if job.use_rad and has_words else 0
    return [
        Phase("decode", frames, DECODE_COST),
        Phase("masks", frames if tracking else 0, TRACK_COST),
        Phase("inversion", steps * count, INVERSION_COST * length),
        Phase("edit+rad", rad_steps * count, RAD_COST * length),
        Phase("edit", (steps - rad_steps) * count, EDIT_COST * length),
        Phase("encode", frames, ENCODE_COST),
        Phase("pictures", frames if job.wants_attention_pictures and has_words else 0, PICTURES_COST),
    ]


def job_progress(
    job: EditJob, prepared: Prepared, windows, has_words: bool, state: RunState | None, work_dir: Path | None, bar: bool
) -> JobProgress:
    """The job's one progress measure (bar, ETA, `progress.json` in the work folder), seeded from a checkpoint."""
    frames = prepared.info.frames
    tracking = any(o.track == "sam2" for o in prepared.objects)
    phases = job_phases(job, frames, windows, has_words, tracking)
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    path = None if work_dir is None else work_dir / PROGRESS_NAME
    tracker = JobProgress(phases, path=path, bar=bar, preview=bool(job.preview))
    if state is not None:
        seed_progress(tracker, state, job.steps, len(windows), frames)
    return tracker


def seed_progress(tracker: JobProgress, state: RunState, steps: int, windows: int, frames: int) -> None:
    """Book the work a resumed run's checkpoint holds (units and the time they took)."""
    timing = state.timing
    tracker.seed("decode", frames, timing.get("decode_s", 0.0))
    if state.masks is not None:
        tracker.seed("masks", frames, 0.0)
    inverted = state.step if state.phase == "inversion" else steps
    tracker.seed("inversion", inverted * windows, timing.get("inversion_s", 0.0))
    edited = {"inversion": 0, "edit": state.step}.get(state.phase, steps)
    rad = tracker.phases.get("edit+rad")
    rad_steps = 0 if rad is None else round(rad.total / windows)
    rad_done, plain_done = min(edited, rad_steps), max(0, edited - rad_steps)
    weight_rad = rad_done * RAD_COST
    share = weight_rad / (weight_rad + plain_done * EDIT_COST) if edited else 0.0
    tracker.seed("edit+rad", rad_done * windows, timing.get("edit_s", 0.0) * share)
    tracker.seed("edit", plain_done * windows, timing.get("edit_s", 0.0) * (1 - share))
