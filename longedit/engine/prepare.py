"""Check a job before any model work: input, output, prompts, regions, words, disk needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


from longedit import atomic, attention_pictures, diskspace, output_paths
from longedit.config import EditJob, ObjectSpec, as_run
from longedit.diskspace import DiskNeed
from longedit.errors import UserError
from longedit.model_info import SizeChoice, check_model_inputs
from longedit.models import resolve_device
from longedit.planner import parse_size
from longedit.source_range import check_range_options, media_notices, objects_in_range, validate_in_source
from longedit.video import VideoInfo, check_output_path, even_size, open_source, processing_size
from longedit.video.codecs import output_format
from longedit.video.frame_folder import check_output
from longedit.words import WordTokens, word_tokens


@dataclass
class Prepared:
    """What preflight learned about a job before any model work."""

    info: VideoInfo
    objects: list[ObjectSpec]
    processed_size: tuple[int, int]
    notices: list[str]
    size_choice: SizeChoice | None = None  # the processing short side and why (longedit.model_info)


def _check_prompts(job: EditJob) -> None:
    if not job.source_prompt.strip() or not job.prompt.strip():
        raise UserError("the source prompt and the edited prompt must not be empty", "pass --source-prompt and --prompt")


def prepare(job: EditJob, work_dir: Path | None = None) -> Prepared:
    """Check input, output and regions against the video; no model is loaded."""
    _check_prompts(job)
    info = open_source(job.input, job.start, job.end, job.every, job.fps)
    output_paths.check_job_paths(job, work_dir)  # nothing written destroys an input or another output
    out_format = check_output(job.output, job.input, job.codec, job.pix_fmt, job.crf)
    if job.report is not None:
        report_dir = Path(job.report).expanduser().resolve().parent
        if not report_dir.is_dir() or not os.access(report_dir, os.W_OK):
            raise UserError(f"cannot write the report to '{job.report}': folder missing or not writable", "pick another --report path")
    if job.vram is not None:
        parse_size(job.vram)  # a bad --vram fails before the model loads
    if job.tune is not None:  # a package or device the tuning needs is missing: say so before any work
        from longedit.tune.optim import check_request

        check_request(job.tune, resolve_device(job.device))
    _check_cache(job)
    objects = job.resolved_objects()
    validate_in_source(objects, info)  # keyframes are source frames; boxes displayed (upright) pixels
    objects = objects_in_range(objects, info)
    check_range_options(job, info)
    for obj in objects:
        if obj.masks is not None and not Path(obj.masks).is_dir():
            raise UserError(f"mask folder '{obj.masks}' for '{obj.word}' does not exist", "give --masks DIR holding DIR/WORD/000000.png ...")
    from longedit.segmentation.mask_folder import check_mask_folders

    check_mask_folders(objects, info.width, info.height, info.first_frame)  # another aspect ratio fails; another size is scaled
    check_attention_pictures(job, objects)
    notices = media_notices(info, out_format)
    if info.completeness_note:  # e.g. a raw stream: not checkable
        notices.append(info.completeness_note)
    if job.window is not None and job.window > info.frames:
        notices.append(f"window {job.window} > {info.frames} frames: using one window of {info.frames}")
    if job.method == "reatco" and (job.rad or job.irjs) and not objects:
        notices.append("no --object given: RAD and IRJS have nothing to act on; the whole frame follows the prompt")
    choice = check_model_inputs(job)  # LoRA/VAE files, a model longedit can edit with, its native size
    notices.extend([choice.warning] if choice.warning else [])
    size = processing_size(info.width, info.height, choice.short_side)
    return Prepared(info=info, objects=objects, processed_size=size, notices=notices, size_choice=choice)


def _check_cache(job: EditJob) -> None:
    """A cache folder that is a file, or a cap that is not a size, fails before any work."""
    try:
        parse_size(job.cache_size)
    except UserError:
        raise UserError(f"cannot read the cache size '{job.cache_size}'", "write it like 20GB, 500MB or 2GiB") from None
    if job.cache_dir is not None and Path(job.cache_dir).exists() and not Path(job.cache_dir).is_dir():
        raise UserError(f"cache folder '{job.cache_dir}' is a file", "give --cache-dir a folder; it is created when missing")


DISK_FIX = "free some space, or write -o / --work-dir to a larger disk"


def disk_needs(job: EditJob, prepared: Prepared, work_dir: Path | None) -> list[DiskNeed]:
    """What the run will write, where (`longedit.diskspace`): output video, checkpoints, inversion trajectory.

    A resumed run's work folder already holds part of it, which is not counted again.
    """
    info, size = prepared.info, prepared.processed_size
    out_size = size if job.keep_size else even_size(info.width, info.height)
    output_folder = Path(job.output).expanduser().absolute().parent
    bits = output_format(job.output, job.codec, job.pix_fmt, job.crf).bits_per_pixel  # ProRes, FFV1, PNG: bigger
    needs = [DiskNeed("the output video", output_folder, diskspace.video_bytes(info.frames, out_size, info.duration_s, info.has_audio, bits))]
    trajectory = diskspace.latent_bytes(info.frames, size, 2) * job.steps if job.irjs and job.source_noise == "inversion" else 0
    if work_dir is not None:
        written = sum(p.stat().st_size for p in Path(work_dir).rglob("*") if p.is_file()) if Path(work_dir).is_dir() else 0
        checkpoints = diskspace.checkpoint_bytes(info.frames, size, len(prepared.objects)) + trajectory
        needs.append(DiskNeed("the checkpoint folder", Path(work_dir), checkpoints - written))
    elif trajectory:
        needs.append(DiskNeed("the inversion trajectory", output_folder, trajectory))
    needs += attention_pictures.disk_needs(job, info.frames, size, len(prepared.objects), work_dir)
    return needs


def check_disk(job: EditJob, prepared: Prepared, work_dir: Path | None) -> list[DiskNeed]:
    """Remove the partials of killed runs of this job (garbage, and disk space), then check the free space
    for what the run will write, before the model loads and the video is decoded; returns the needs."""
    for target in (job.output, job.report):
        if target is not None:
            atomic.remove_stale_temps(target)
    needs = disk_needs(job, prepared, work_dir)
    diskspace.check_free_space(needs, DISK_FIX)
    return needs


def resolve_words(tokenizer, job: EditJob, prepared: Prepared) -> list[WordTokens]:
    """The token columns of each object's word; a word's notice (e.g. it occurs twice) joins the job's notices."""
    words = [word_tokens(tokenizer, job.prompt, obj.word, job.token_mode) for obj in prepared.objects]
    prepared.notices.extend(w.notice for w in words if w.notice and w.notice not in prepared.notices)
    return words


def check_attention_pictures(job: EditJob, objects: list[ObjectSpec]) -> None:
    """The attention pictures need an object word, and a video path that is neither the input nor the output."""
    if not job.wants_attention_pictures:
        return
    if not objects:
        raise UserError("attention pictures show the object words' attention, but no object is given",
                        "add --object WORD=x0,y0,x1,y1 (or drop --attention-video / --attention-strips)")
    if job.attention_video is not None:
        video = Path(job.attention_video)
        if video.expanduser().resolve() == Path(job.output).expanduser().resolve():
            raise UserError(f"--attention-video '{video}' is the output video", "give the attention video its own name")
        check_output_path(video, Path(job.input))
