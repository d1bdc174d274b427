"""The runner: one edit job through the stages, end to end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from longedit import atomic, diskspace
from longedit.config import EditJob, as_run
from longedit import checkpoint
from longedit.editor import VideoEditor
from longedit.models import load_backbone, resolve_device
from longedit.windows import plan_windows
from longedit.engine.cache import shared_inversion
from longedit.engine.denoise import loop_resources, run_denoise
from longedit.engine.invert import run_inversion
from longedit.engine.keeper import StepKeeper, job_fingerprint
from longedit.engine.masks import restore_or_build_masks
from longedit.engine.pictures import draw_attention_pictures, picture_store
from longedit.engine.plan import latent_grid, loop_settings, plan_fusion_for, plan_run_windows
from longedit.engine.prepare import DISK_FIX, disk_needs, prepare, resolve_words
from longedit.engine.preview import first_frames, preview_frames
from longedit.engine.progress import job_progress
from longedit.engine.report import build_report, write_json_atomic
from longedit.engine.source import start_state
from longedit.engine.tune import tuned_model
from longedit.engine.write import write_video


def run_edit(
    job: EditJob,
    *,
    work_dir: Path | None = None,
    progress: bool = True,
    stop_event: threading.Event | None = None,
) -> dict:
    """Run one edit job; returns the report (also written to job.report). See module docstring.

    A preview (`job.preview`) edits the first frames only (`preview_frames`) into its own files, and
    never checkpoints (it takes minutes): `work_dir` then only gets its `progress.json`.
    """
    started = time.perf_counter()
    job = as_run(job)
    prepared = prepare(job)
    progress_dir = Path(work_dir) if work_dir is not None else None
    work_dir = None if job.preview else progress_dir  # a preview keeps no checkpoint, only its progress file
    for target in (job.output, job.report):  # partials of killed runs of this job: garbage, and disk space
        if target is not None:
            atomic.remove_stale_temps(target)
    needs = disk_needs(job, prepared, work_dir)
    diskspace.check_free_space(needs, DISK_FIX)  # before the model loads and the video is decoded
    device = resolve_device(job.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tuned = tuned_model(job, progress, stop_event, progress_dir)
    backbone = load_backbone(tuned or job.model, job.device, job.dtype, job.local_files_only, backbone=job.backbone)
    words = resolve_words(backbone.tokenizer, job, prepared)
    settings = loop_settings(job, device)
    state = checkpoint.load(work_dir, job_fingerprint(job, prepared.info))
    resumed_from = None if state is None else {"phase": state.phase, "step": state.step}
    if state is None:  # a resumed job keeps its windows, whatever memory is free now
        windows, window_plan = plan_run_windows(job, prepared, backbone, words, settings)
    else:
        windows, window_plan = state.windows, state.window_plan
    source_frames = prepared.info.frames
    if job.preview:
        prepared = first_frames(prepared, preview_frames(job, window_plan))
        windows = plan_windows(prepared.info.frames, window_plan.length, window_plan.stride)
    fusion_plan = plan_fusion_for(job, backbone, state, windows, latent_grid(prepared, backbone), work_dir, needs)
    tracker = job_progress(job, prepared, windows, bool(words), state, progress_dir, progress)
    if state is None:
        state = start_state(job, prepared, backbone, windows, window_plan, work_dir, tracker, stop_event)
    masks = restore_or_build_masks(job, prepared, backbone, state, tracker)
    editor = VideoEditor(
        backbone, settings, job.source_prompt, job.prompt, words,
        inversion_prompt="" if job.effective_inversion_prompt == "empty" else None,
    )
    editor.unet_forwards = state.unet_forwards
    keeper = StepKeeper(state, work_dir, stop_event, job.checkpoint_every)
    keeper.editor = editor
    try:
        with (
            loop_resources(job, editor, state, work_dir, fusion_plan) as (fusion, trajectory),
            picture_store(job, editor, state, work_dir, prepared, backbone) as store,
        ):
            shared = shared_inversion(job, prepared, backbone, editor, state, trajectory is not None)
            latents = run_inversion(editor, state, keeper, trajectory, tracker, shared)
            latents = run_denoise(editor, state, keeper, masks, trajectory, tracker)
            if fusion is not None:
                state.fatezero = fusion.report(prepared.info.frames)
            keeper.save("decode", editor.schedule.steps, latents)
            if fusion is not None:  # the decode phase never needs the maps again
                fusion.store.close(delete=True)
            keeper.clock = time.perf_counter()
            tracker.start("encode")
            state.paste = write_video(
                backbone, latents, prepared.info, job, prepared.processed_size, lambda: tracker.advance("encode"), masks
            )
            keeper.lap("encode_s")
            pictures = draw_attention_pictures(job, prepared, store, masks, words, tracker)
    finally:
        tracker.close()
    report = build_report(job, prepared, backbone, editor, state, masks, words, latents, resumed_from, started)
    report["attention_pictures"] = pictures
    report["preview"] = {"frames": prepared.info.frames, "source_frames": source_frames} if job.preview else None
    if job.report is not None:
        write_json_atomic(Path(job.report), report)
    return report
