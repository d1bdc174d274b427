"""The runner: one edit job through the stages, end to end - what the CLI, `run`/`watch`, Ray, `demo` and
`LongEditPipeline` all call (`run_edit`, or `run_stages` for the pipeline, which streams the frames itself)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from longedit import checkpoint, output_paths
from longedit.config import EditJob, as_run
from longedit.masks import ObjectMasks
from longedit.models import Backbone, load_backbone, resolve_device
from longedit.engine.cache import shared_inversion
from longedit.engine.denoise import StepHook, loop_resources, run_denoise
from longedit.engine.invert import run_inversion
from longedit.engine.keeper import StepKeeper, job_fingerprint
from longedit.engine.masks import restore_or_build_masks
from longedit.engine.pictures import MAPS_NAME, draw_attention_pictures, picture_store
from longedit.engine.plan import build_editor, latent_grid, loop_settings, plan_fusion_for, plan_run
from longedit.engine.prepare import Prepared, check_disk, prepare, resolve_words
from longedit.engine.progress import job_progress
from longedit.engine.report import build_report, write_json_atomic
from longedit.engine.source import start_state
from longedit.engine.tune import tuned_model
from longedit.engine.write import write_video


@dataclass
class EditRun:
    """A finished run: the job as run, what was edited, the model, masks and final latents, and the report."""

    job: EditJob
    prepared: Prepared
    backbone: Backbone
    masks: ObjectMasks | None
    latents: torch.Tensor
    report: dict


def run_edit(
    job: EditJob, *, work_dir: Path | None = None, progress: bool = True, stop_event: threading.Event | None = None,
) -> dict:
    """Run one edit job; returns the report (also written to job.report). See the package docstring.

    A preview (`job.preview`) edits the first frames only (`preview_frames`) into its own files, and
    never checkpoints (it takes minutes): `work_dir` then only gets its `progress.json`.
    """
    return run_stages(job, work_dir=work_dir, progress=progress, stop_event=stop_event).report


@output_paths.removed_on_failure  # a failed run leaves no output, pictures or report behind
def run_stages(
    job: EditJob, *, work_dir: Path | None = None, progress: bool = True, stop_event: threading.Event | None = None,
    backbone: Backbone | None = None, on_step: StepHook | None = None, write: bool = True,
) -> EditRun:
    """prepare -> plan -> masks -> invert -> denoise -> write -> report. `backbone`: a model already loaded
    for `job.model` (not loaded again; a job that tunes loads its tuned one); `on_step`: a hook after each edit
    step (`run_denoise`); `write=False` leaves the output file and the attention pictures to the caller."""
    started, job = time.perf_counter(), as_run(job)
    prepared = prepare(job, work_dir)
    progress_dir = Path(work_dir) if work_dir is not None else None
    work_dir = None if job.preview else progress_dir  # a preview keeps no checkpoint, only its progress file
    needs = check_disk(job, prepared, work_dir)
    device = resolve_device(job.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tuned = tuned_model(job, progress, stop_event, progress_dir)
    if tuned is not None or backbone is None:
        backbone = load_backbone(
            tuned or job.model, job.device, job.dtype, job.local_files_only, backbone=job.backbone,
            checkpoint_config=None if tuned else job.checkpoint_config, loras=job.lora, vae=job.vae,
        )
    words, settings = resolve_words(backbone.tokenizer, job, prepared), loop_settings(job, device)
    state = checkpoint.load(work_dir, job_fingerprint(job, prepared.info), prepared.notices)
    resumed_from = None if state is None else {"phase": state.phase, "step": state.step}
    source_frames = prepared.info.frames
    prepared, windows, window_plan = plan_run(job, prepared, backbone, words, settings, state)
    fusion_plan = plan_fusion_for(job, backbone, state, windows, latent_grid(prepared, backbone), work_dir, needs)
    tracker = job_progress(job, prepared, windows, bool(words), state, progress_dir, progress)
    if state is None:
        state = start_state(job, prepared, backbone, windows, window_plan, work_dir, tracker, stop_event)
    masks = restore_or_build_masks(job, prepared, backbone, state, tracker)
    editor = build_editor(job, backbone, settings, words, state)
    keeper = StepKeeper(state, work_dir, stop_event, job.checkpoint_every)
    keeper.editor = editor
    try:
        with (
            loop_resources(job, editor, state, work_dir, fusion_plan) as (fusion, trajectory),
            picture_store(job, editor, state, work_dir, prepared, backbone) as store,
        ):
            shared = shared_inversion(job, prepared, backbone, editor, state, trajectory is not None)
            latents = run_inversion(editor, state, keeper, trajectory, tracker, shared)
            latents = run_denoise(editor, state, keeper, masks, trajectory, tracker, on_step)
            if fusion is not None:
                state.fatezero = fusion.report(prepared.info.frames)
            keeper.save("decode", editor.schedule.steps, latents)
            if fusion is not None:  # the decode phase never needs the maps again
                fusion.store.close(delete=True)
            keeper.clock = time.perf_counter()
            if write:
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
    if write:  # done: nothing left to resume
        checkpoint.remove_run_state(work_dir, also=(MAPS_NAME, f"{MAPS_NAME}.count"))
    return EditRun(job, prepared, backbone, masks, latents, report)
