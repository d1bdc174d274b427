"""One edit job end to end, as stages: prepare -> plan -> masks -> invert -> denoise -> write -> report.

Every stage streams or chunks (frames never all in RAM; latents of the whole video on the host).
With a work folder the loop checkpoints atomically every `checkpoint_every` steps and a later call
with the same job resumes from the checkpoint with bit-identical results on CPU.

Each stage is a module with one job (`prepare`, `preflight`, `plan`, `source`, `masks`, `cache`, `invert`, `denoise`,
`write`, `report`, and the optional `tune`, `preview`, `pictures`; `keeper` holds the state between steps,
`progress` the job's progress measure); `runner.run_edit` strings them together and is what the CLI,
`run`/`watch`, Ray, `demo` and `longedit.LongEditPipeline` call (the bench times `invert`/`denoise` alone). The names below are re-exported
so `from longedit.engine import run_edit, preflight, ...` keeps working; to replace a stage's helper in a
test, patch it in the stage module that uses it (e.g. `longedit.engine.runner.load_backbone`).
"""

from longedit.errors import JobInterrupted
from longedit.engine.cache import shared_inversion
from longedit.engine.denoise import loop_resources, run_denoise
from longedit.engine.invert import finish_inversion, run_inversion
from longedit.engine.keeper import StepKeeper, is_fresh, job_fingerprint, latent_checksum
from longedit.engine.masks import build_masks, restore_or_build_masks
from longedit.engine.pictures import MAPS_NAME, draw_attention_pictures, picture_store
from longedit.engine.plan import DEFAULT_WINDOW, build_editor, choose_windows, latent_grid, loop_settings, plan_fusion_for, plan_run, plan_run_windows
from longedit.engine.prepare import (
    DISK_FIX, Prepared, check_attention_pictures, check_disk, disk_needs, prepare, resolve_words,
)
from longedit.engine.preflight import preflight
from longedit.engine.preview import first_frames, preview_frames
from longedit.engine.progress import job_phases, job_progress, seed_progress
from longedit.engine.report import TINY_WARNING, build_report, effective_settings, evaluate_after_edit, write_json_atomic
from longedit.engine.runner import EditRun, run_edit, run_stages
from longedit.engine.source import VAE_CHUNK, encode_video, start_state
from longedit.engine.tune import tuned_model
from longedit.engine.write import decode_latents, edited_frames, output_size, write_video

__all__ = [
    "DEFAULT_WINDOW", "DISK_FIX", "EditRun", "MAPS_NAME", "TINY_WARNING", "VAE_CHUNK", "JobInterrupted", "Prepared", "StepKeeper",
    "build_editor", "build_masks", "build_report", "check_attention_pictures", "check_disk", "choose_windows", "decode_latents", "disk_needs",
    "draw_attention_pictures", "edited_frames", "effective_settings", "encode_video", "evaluate_after_edit", "finish_inversion",
    "first_frames", "is_fresh", "job_fingerprint", "job_phases", "job_progress", "latent_checksum", "latent_grid",
    "loop_resources", "loop_settings", "output_size", "picture_store", "plan_fusion_for", "plan_run", "plan_run_windows", "preflight", "prepare",
    "preview_frames", "resolve_words", "restore_or_build_masks", "run_denoise", "run_edit", "run_stages", "run_inversion",
    "seed_progress", "shared_inversion", "start_state", "tuned_model", "write_json_atomic", "write_video",
]
