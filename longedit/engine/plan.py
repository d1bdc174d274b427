"""Plan the run: the loop settings, the windows (--window, the planner or the device default), FateZero's fusion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from longedit.backbones.adapters import adapter_for
from longedit.checkpoint import RunState
from longedit.config import EditJob
from longedit.diskspace import DiskNeed
from longedit.editor import LoopSettings, VideoEditor
from longedit.models import Backbone
from longedit.planner import Probe, WindowPlan, plan_window, probe_window_costs
from longedit.windows import plan_windows
from longedit.words import WordTokens
from longedit.engine.keeper import is_fresh
from longedit.engine.prepare import Prepared
from longedit.engine.preview import first_frames, preview_frames
from longedit.rad_diagnostics import rad_lever_settings


DEFAULT_WINDOW = {"cuda": 16, "cpu": 8}


def latent_grid(prepared: Prepared, backbone: Backbone) -> tuple[int, int]:
    """(width, height) of the latents."""
    size = prepared.processed_size
    return size[0] // backbone.vae_scale, size[1] // backbone.vae_scale


def loop_settings(job: EditJob, device: torch.device) -> LoopSettings:
    return LoopSettings(
        steps=job.steps, guidance=job.effective_guidance, rad=job.use_rad, guided_steps=min(job.guided_steps, job.steps),
        step_size=job.step_size, step_schedule=job.step_schedule, refine=job.use_refinement,
        topk_ratio=job.topk_ratio, attention_norm=job.attention_norm, smoothing=job.smoothing, irjs=job.irjs,
        source_noise=job.source_noise, anchor=job.anchor, overlap_weights=job.overlap_weights, seed=job.seed,
        gradient_checkpointing=device.type == "cuda", **rad_lever_settings(job),
    )


def choose_windows(
    job: EditJob, frames: int, device: torch.device, measure: Probe | None = None, native: int | None = None
) -> tuple[list[tuple[int, int]], WindowPlan]:
    """Windows of the run and the plan behind them: --window, else the window planner, else the device default.

    `measure(lengths)` measures the model for the planner (longedit.planner.probe_window_costs);
    it runs only when planning happens (a CUDA device, or --vram given). `native`: the backbone's own
    clip length (text-to-video: 16), the default instead of the device's.
    """
    plan = plan_window(
        frames=frames, device=device, window=job.window, stride=job.stride, vram=job.vram, probe=measure,
        default_length=DEFAULT_WINDOW.get(device.type, 8), native_length=native,
    )
    return plan_windows(frames, plan.length, plan.stride), plan


def plan_run_windows(
    job: EditJob, prepared: Prepared, backbone: Backbone, words: list[WordTokens], settings: LoopSettings
) -> tuple[list[tuple[int, int]], WindowPlan]:
    """(windows, plan) of a new run: --window, else the window planner (measuring the model), else the default."""
    grid = latent_grid(prepared, backbone)

    def probe_costs(lengths):
        return probe_window_costs(backbone, settings, job.source_prompt, job.prompt, words, grid[1], grid[0], lengths)

    native = adapter_for(backbone.kind).native_window
    return choose_windows(job, prepared.info.frames, backbone.device, probe_costs, native)


def plan_fusion_for(
    job: EditJob, backbone: Backbone, state: RunState | None, windows, grid, work_dir: Path | None,
    needs: Sequence[DiskNeed] = (),
):
    """FateZero's fusion plan (words, source mode, disk space with the run's other `needs`: checked before any
    long work), or None."""
    if not job.use_fusion or (state is not None and state.phase == "decode"):
        return None
    from longedit.fatezero import plan_fusion

    return plan_fusion(job, backbone, windows, grid, work_dir, fresh=state is None or is_fresh(state), also=needs)


def plan_run(
    job: EditJob, prepared: Prepared, backbone: Backbone, words: list[WordTokens], settings: LoopSettings,
    state: RunState | None,
) -> tuple[Prepared, list[tuple[int, int]], WindowPlan]:
    """(what is edited, windows, plan): a new run plans its windows, a resumed one keeps its checkpoint's
    (whatever memory is free now); a preview is cut to its first frames and windowed again."""
    if state is None:
        windows, window_plan = plan_run_windows(job, prepared, backbone, words, settings)
    else:
        windows, window_plan = state.windows, state.window_plan
    if job.preview:
        prepared = first_frames(prepared, preview_frames(job, window_plan))
        windows = plan_windows(prepared.info.frames, window_plan.length, window_plan.stride)
    return prepared, windows, window_plan


def build_editor(job: EditJob, backbone: Backbone, settings: LoopSettings, words: list[WordTokens], state: RunState
) -> VideoEditor:
    """The windowed ReAtCo loop for the job, its UNet forward count carried on from a checkpoint."""
    editor = VideoEditor(
        backbone, settings, job.source_prompt, job.prompt, words,
        inversion_prompt="" if job.effective_inversion_prompt == "empty" else None,
    )
    editor.unet_forwards = state.unet_forwards
    return editor
