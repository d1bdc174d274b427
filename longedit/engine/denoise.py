"""The windowed edit loop (RAD + IRJS) and the files it needs (FateZero maps, inversion trajectory)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from longedit.config import EditJob
from longedit.checkpoint import TRAJECTORY_NAME, RunState, Trajectory
from longedit.editor import StepStats, VideoEditor
from longedit.progress import JobProgress
from longedit.engine.keeper import StepKeeper, is_fresh
from longedit.rad_diagnostics import region_start, step_diagnostics
from longedit.sampling import SourceLevels, denoise


@contextlib.contextmanager
def loop_resources(job: EditJob, editor: VideoEditor, state: RunState, work_dir: Path | None, fusion_plan=None):
    """(FateZero fusion or None, inversion trajectory or None) for the loop; files without a work dir are removed."""
    fresh = is_fresh(state)
    fusion = trajectory = None
    try:
        if fusion_plan is not None:
            fusion = fusion_plan.attach(editor, create=fresh)
        if job.irjs and job.source_noise == "inversion":
            folder = work_dir if work_dir is not None else Path(job.output).resolve().parent
            name = TRAJECTORY_NAME if work_dir is not None else f".{Path(job.output).name}.{os.getpid()}.trajectory"
            folder.mkdir(parents=True, exist_ok=True)
            trajectory = Trajectory(folder / name, editor.schedule.steps, tuple(state.source.shape), create=fresh)
        yield fusion, trajectory
    finally:
        if trajectory is not None and work_dir is None:
            trajectory.path.unlink(missing_ok=True)
        if fusion is not None and work_dir is None:
            fusion.store.close(delete=True)


#: `on_step(index, timestep, latents, rad_loss, windows)` after each edit step, before its checkpoint and
#: stop check (so a hook that sets the stop event stops the run at that step); `LongEditPipeline`'s
#: `callback_on_step_end` is one.
StepHook = Callable[[int, int, torch.Tensor, "float | None", list], None]


def run_denoise(
    editor: VideoEditor, state: RunState, keeper: StepKeeper, masks, trajectory, tracker: JobProgress,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """The windowed edit loop (RAD + IRJS) from where the state is; records the per-step stats in the state."""
    if state.phase != "edit":
        return state.latents
    steps, windows, settings = editor.schedule.steps, state.windows, editor.settings
    source_at = SourceLevels(editor.schedule, state.source, settings.source_noise, settings.seed, trajectory)

    rad_steps = settings.guided_steps if settings.rad and editor.words and masks is not None else 0
    phase = {"name": "edit+rad" if state.step < rad_steps else "edit"}
    keeper.clock = time.perf_counter()
    tracker.start(phase["name"])

    def after_step(index: int, latents: torch.Tensor, stats: StepStats) -> None:
        state.attention.append(stats.share())
        state.losses.append(float(np.mean(stats.losses)) if stats.losses else None)
        state.refinements.append(stats.refinements)
        state.skipped_updates += stats.skipped_updates
        state.rad_diagnostics.extend([step_diagnostics(stats.rad)] if stats.rad else [])
        phase["name"] = "edit+rad" if index + 1 < rad_steps else "edit"
        keeper.lap("edit_s")
        if on_step is not None:
            on_step(index, int(editor.schedule.timesteps[index]), latents, state.losses[-1], windows)
        if index + 1 < steps:
            keeper.step_done("edit", index + 1, latents)

    latents = denoise(
        editor, region_start(state.latents, masks, settings, state.step), windows, masks,
        source_at if settings.irjs else None, start=state.step, callback=after_step, advance=lambda: tracker.advance(phase["name"]),
    )
    return latents
