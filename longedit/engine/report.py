"""report.json: what was run, how long it took, what RAD and IRJS measured."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from longedit import atomic
from longedit.checkpoint import RunState
from longedit.config import EditJob
from longedit.editor import VideoEditor
from longedit.model_info import model_extras_report
from longedit.rad_diagnostics import rad_lever_report, rad_report_warnings, rad_summary
from longedit.source_range import media_report
from longedit.masks import ObjectMasks
from longedit.models import Backbone
from longedit.video import crop_note, even_size
from longedit.words import WordTokens
from longedit.engine.keeper import latent_checksum
from longedit.engine.prepare import Prepared


TINY_WARNING = "--model tiny is a random model for smoke runs: its output is not a meaningful edit"


def _peak_rss() -> int:
    from longedit.memory import peak_rss_bytes

    return peak_rss_bytes()


def _peak_vram(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def evaluate_after_edit(job: EditJob) -> dict | None:
    """`longedit eval` of the finished output when the job asks for it (`--eval`, `eval: true`), else None."""
    if not job.eval:
        return None
    from longedit.evaluation.job import evaluate_job

    return evaluate_job(job)


def build_report(
    job: EditJob, prepared: Prepared, backbone: Backbone, editor: VideoEditor, state: RunState, masks: ObjectMasks | None,
    words: list[WordTokens], latents: torch.Tensor, resumed_from: dict | None, started: float,
) -> dict:
    """report.json: what was run, how long it took, what RAD and IRJS measured."""
    info, size, windows, source = prepared.info, prepared.processed_size, state.windows, state.source
    outside = None
    if masks is not None:
        keep = 1 - masks.union()
        if float(keep.sum()) > 0:
            outside = float(((latents.float() - source.float()).abs() * keep).sum() / (keep.sum() * latents.shape[1]))
    total_s = time.perf_counter() - started
    settings = editor.settings
    warnings_list = prepared.notices + ([TINY_WARNING] if backbone.is_tiny else []) + rad_report_warnings(state.rad_diagnostics, settings)
    return {
        "input": str(job.input),
        "output": str(job.output),
        "frames": info.frames,
        "fps": float(info.fps),
        "fps_fraction": f"{info.fps.numerator}/{info.fps.denominator}",
        "duration_s": info.duration_s,
        "size": [info.width, info.height],
        "processed_size": list(size),
        "processing_size_choice": prepared.size_choice.to_report() if prepared.size_choice else None,
        "output_size": list(size if job.keep_size else even_size(info.width, info.height)),
        "output_cropped": None if job.keep_size else crop_note(info.width, info.height),
        "audio": info.has_audio,
        **media_report(job, info),
        "windows": [list(w) for w in windows],
        "window": {"length": windows[0][1] - windows[0][0], "stride": (windows[1][0] - windows[0][0]) if len(windows) > 1 else None, "reason": state.window_plan.reason, "planner": state.window_plan.to_report()},
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "model": job.model,
        "model_extras": model_extras_report(job),
        "tuned_model": backbone.name if job.tune is not None else None,
        "steps": editor.schedule.steps,
        "unet_forwards": editor.unet_forwards,
        "timing": {**{k: round(v, 3) for k, v in state.timing.items()}, "total_s": round(total_s, 3),
                   "frames_per_s": round(info.frames / max(total_s, 1e-9), 4)},
        "memory": {"peak_rss_bytes": _peak_rss(), "peak_vram_bytes": _peak_vram(backbone.device)},
        "rad": {
            "enabled": job.use_rad,
            "guided_steps": settings.guided_steps if job.use_rad else 0,
            "words": {w.word: list(w.indices) for w in words},
            "attention_in_mask": {w.word: [round(s[j], 6) for s in state.attention] for j, w in enumerate(words)},
            "loss": state.losses,
            "refinement_iterations": state.refinements,
            "skipped_updates": state.skipped_updates,
            "diagnostics": rad_summary(state.rad_diagnostics),
        },
        "irjs": {"enabled": job.irjs, "source_noise": job.source_noise, "background_latent_mae": outside},
        "background_paste": state.paste or {"enabled": False},
        "settings": effective_settings(job, editor, windows),
        "method": job.method,
        "backbone": backbone.kind,
        "fatezero": state.fatezero,
        "inversion": state.inversion,
        "masks": None if masks is None else {"summary": masks.area_summary()},
        "latent_checksum": latent_checksum(latents.float()),
        "resumed_from": resumed_from,
        "warnings": warnings_list,
        "eval": evaluate_after_edit(job),
    }


def effective_settings(job: EditJob, editor: VideoEditor, windows: list[tuple[int, int]]) -> dict:
    """Every effective loop setting, to compare a run with the official ReAtCo settings at a glance."""
    settings = editor.settings
    return {
        "method": job.method,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "inversion_prompt": job.effective_inversion_prompt,
        "rad": settings.rad,
        "rad_steps": settings.guided_steps if settings.rad else 0,
        "step_size": settings.step_size,
        "step_schedule": settings.step_schedule,
        "refine": settings.refine,
        "refinement_steps": {str(k): v for k, v in sorted(editor.refinement.items())},
        "topk_ratio": settings.topk_ratio,
        "attention_norm": settings.attention_norm,
        "smoothing": settings.smoothing,
        "token_mode": job.token_mode,
        "irjs": settings.irjs,
        "source_noise": settings.source_noise,
        "anchor": settings.anchor,
        "window": windows[0][1] - windows[0][0],
        "stride": (windows[1][0] - windows[0][0]) if len(windows) > 1 else None,
        "overlap_weights": settings.overlap_weights,
        "seed": settings.seed,
        **rad_lever_report(settings),
    }


def write_json_atomic(path: Path, data: dict) -> None:
    atomic.write_json(path, data, what="the report")
