"""One edit job end to end: decode -> encode latents -> masks -> inversion -> edit -> decode -> encode.

Every stage streams or chunks (frames never all in RAM; latents of the whole video on the host).
With a work folder the loop checkpoints atomically every `checkpoint_every` steps and a later call
with the same job resumes from the checkpoint with bit-identical results on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longedit import atomic, attention_pictures, diskspace, latent_decode
from longedit.attention_pictures import MapStore
from longedit.backbones.adapters import adapter_for
from longedit.composite import BackgroundMeter, composite, feathered_alpha
from longedit.config import CACHE_FIELDS, EditJob, ObjectSpec, as_run
from longedit.diskspace import DiskNeed
from longedit import checkpoint
from longedit.checkpoint import TRAJECTORY_NAME, RunState, Trajectory
from longedit.editor import MAP_SCALE, LoopSettings, SourceLevels, StepStats, VideoEditor, denoise, invert
from longedit.errors import JobInterrupted, UserError
from longedit.inversion_cache import InversionCache, SharedInversion, cache_key, key_parts
from longedit.masks import ObjectMasks, build_object_masks, validate_objects
from longedit.models import Backbone, load_backbone, load_tokenizer, resolve_device
from longedit.planner import Probe, WindowPlan, parse_size, plan_window, probe_window_costs
from longedit.progress import PROGRESS_NAME, JobProgress, Phase
from longedit.video import (
    VideoInfo, VideoWriter, check_output_path, crop_note, even_size, iter_frames, probe, processing_size,
)
from longedit.windows import plan_windows
from longedit.words import WordTokens, word_tokens

VAE_CHUNK = 8
MAPS_NAME = "attention-maps.f16"
DEFAULT_WINDOW = {"cuda": 16, "cpu": 8}
TINY_WARNING = "--model tiny is a random model for smoke runs: its output is not a meaningful edit"


@dataclass
class Prepared:
    """What preflight learned about a job before any model work."""

    info: VideoInfo
    objects: list[ObjectSpec]
    processed_size: tuple[int, int]
    notices: list[str]


def _check_prompts(job: EditJob) -> None:
    if not job.source_prompt.strip() or not job.prompt.strip():
        raise UserError("the source prompt and the edited prompt must not be empty", "pass --source-prompt and --prompt")


def prepare(job: EditJob) -> Prepared:
    """Check input, output and regions against the video; no model is loaded."""
    _check_prompts(job)
    info = probe(job.input)
    check_output_path(Path(job.output), Path(job.input))
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
    validate_objects(objects, info.width, info.height, info.frames)
    for obj in objects:
        if obj.masks is not None and not Path(obj.masks).is_dir():
            raise UserError(f"mask folder '{obj.masks}' for '{obj.word}' does not exist", "give --masks DIR holding DIR/WORD/000000.png ...")
    from longedit.segmentation.mask_folder import check_mask_folders

    check_mask_folders(objects, info.width, info.height)  # another aspect ratio fails; another size is scaled
    check_attention_pictures(job, objects)
    notices = []
    if job.window is not None and job.window > info.frames:
        notices.append(f"window {job.window} > {info.frames} frames: using one window of {info.frames}")
    if job.method == "reatco" and (job.rad or job.irjs) and not objects:
        notices.append("no --object given: RAD and IRJS have nothing to act on; the whole frame follows the prompt")
    size = processing_size(info.width, info.height, job.size)
    return Prepared(info=info, objects=objects, processed_size=size, notices=notices)


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
    needs = [DiskNeed("the output video", output_folder, diskspace.video_bytes(info.frames, out_size, info.duration_s, info.has_audio))]
    trajectory = diskspace.latent_bytes(info.frames, size, 2) * job.steps if job.irjs and job.source_noise == "inversion" else 0
    if work_dir is not None:
        written = sum(p.stat().st_size for p in Path(work_dir).rglob("*") if p.is_file()) if Path(work_dir).is_dir() else 0
        checkpoints = diskspace.checkpoint_bytes(info.frames, size, len(prepared.objects)) + trajectory
        needs.append(DiskNeed("the checkpoint folder", Path(work_dir), checkpoints - written))
    elif trajectory:
        needs.append(DiskNeed("the inversion trajectory", output_folder, trajectory))
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


def preflight(job: EditJob) -> dict:
    """Validate a job without running the diffusion model: video, output, words (tokenizer), boxes."""
    job = as_run(job)
    prepared = prepare(job)
    tokenizer = load_tokenizer(job.model, job.local_files_only)
    words = resolve_words(tokenizer, job, prepared)
    info = prepared.info
    summary = {
        "input": str(job.input),
        "frames": info.frames,
        "fps": float(info.fps),
        "size": [info.width, info.height],
        "processed_size": list(prepared.processed_size),
        "objects": {w.word: list(w.indices) for w in words},
        "model": job.model,
        "notices": list(prepared.notices),
        "output": str(job.output),
    }
    if job.vram is not None and job.device != "cpu" and not torch.cuda.is_available():  # a GPU job planned here
        from longedit.gpu_plan import plan_unseen_gpu

        summary["window"] = plan_unseen_gpu(job, loop_settings(job, torch.device("cuda")), words, info.frames, prepared.processed_size)
    return summary


# ------------------------------------------------------------------------------------------ stages
def encode_video(
    backbone: Backbone,
    info: VideoInfo,
    size: tuple[int, int],
    advance: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
) -> torch.Tensor:
    """Stream-decode the first `info.frames` frames at the processing size and VAE-encode them in chunks
    -> host latents [F,4,h,w]; `advance()` after each frame.

    Checks `stop_event` between chunks so a stop request on a long video is honoured quickly.
    """
    vae = backbone.vae
    scale = vae.config.scaling_factor
    latents: list[torch.Tensor] = []
    chunk: list[np.ndarray] = []

    def flush() -> None:
        pixels = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 127.5 - 1
        pixels = pixels.to(device=backbone.device, dtype=next(vae.parameters()).dtype)
        with torch.no_grad():
            latents.append((vae.encode(pixels).latent_dist.mean * scale).float().cpu())
        chunk.clear()

    for frame in iter_frames(info.path, size=size, end=info.frames):
        chunk.append(frame)
        if len(chunk) == VAE_CHUNK:
            flush()
            if stop_event is not None and stop_event.is_set():
                raise JobInterrupted("stopped while encoding the source; nothing to resume yet")
        if advance is not None:
            advance()
    if chunk:
        flush()
    return torch.cat(latents)


def decode_latents(backbone: Backbone, latents: torch.Tensor) -> Iterator[np.ndarray]:
    """VAE-decode host latents in chunks, yielding RGB uint8 frames at the processing size (the same
    pixels in every run: resumed or not, any thread count; see longedit.latent_decode)."""
    return latent_decode.decode_latents(backbone.vae, latents, backbone.device, VAE_CHUNK)


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


def write_video(
    backbone: Backbone, latents: torch.Tensor, info: VideoInfo, job: EditJob, size: tuple[int, int],
    advance: Callable[[], None] | None = None, masks: ObjectMasks | None = None,
) -> dict | None:
    """Decode latents and stream them into the output file (atomic: temp name then rename), audio remuxed;
    `advance()` after each frame.

    With `masks` and the background paste on, each frame's background is the source's own pixels
    (`longedit.composite`); returns what the paste measured (None without it).
    """
    out_size = size if job.keep_size else (info.width, info.height)
    paste = masks is not None and job.use_background_paste
    sources = iter_frames(info.path, size=out_size, end=info.frames) if paste else None
    meter = BackgroundMeter()
    with VideoWriter(
        job.output, out_size[0], out_size[1], info.fps, timestamps=info.timestamps, audio_source=info.path,
        warn_crop=False,  # the report and the summary line say it (`output_cropped`)
    ) as writer:
        for index, frame in enumerate(decode_latents(backbone, latents)):
            frame = _resize(frame, out_size)
            if sources is not None:
                source = next(sources)
                alpha = feathered_alpha(masks.union(index, index + 1)[0, 0], out_size, job.feather)
                meter.add(frame, source, alpha)
                frame = composite(frame, source, alpha)
            writer.write(frame)
            if advance is not None:
                advance()
    if not paste:
        return None
    return {"enabled": True, "feather_px": job.feather, "decoded_background_psnr_db": meter.mean(),
            "written_background": "exact: the source's decoded pixels outside the regions and their feather"}


def _mask_reader(obj_folder: Path, word: str, frames: int, size: tuple[int, int]):
    from longedit.segmentation import load_mask_folder

    # `obj.masks` is DIR/WORD already; the folder reader takes DIR and WORD.
    return load_mask_folder(Path(obj_folder).parent, Path(obj_folder).name, frames, size)


def build_masks(
    job: EditJob, prepared: Prepared, grid: tuple[int, int], advance: Callable[[], None] | None = None
) -> ObjectMasks | None:
    """Object masks at latent resolution from boxes, mask folders or SAM2 tracking (`advance()` per tracked frame)."""
    objects = prepared.objects
    if not objects:
        return None
    info, size = prepared.info, prepared.processed_size
    tracker = None
    tracked = [o for o in objects if o.track == "sam2"]
    if tracked:
        from longedit.segmentation import track_masks

        tracker = track_masks(
            info.path, tracked, model=job.sam2_model, out_size=size, device=job.device, dilate=0,
            box_masks=job.box_masks, min_area=job.min_area, local_files_only=job.local_files_only, progress=False,
        )
        tracker = _counted(tracker, advance)
    source_size = (info.width, info.height)
    return build_object_masks(
        objects, info.frames, source_size, grid, dilate_px=job.mask_dilate,
        folder_reader=lambda folder, word, frames: _mask_reader(folder, word, frames, size), tracker=tracker,
    )


def _counted(items: Iterator, advance: Callable[[], None] | None) -> Iterator:
    """`items`, calling `advance()` after each."""
    for item in items:
        yield item
        if advance is not None:
            advance()


# ------------------------------------------------------------------------------------ checkpoints
def job_fingerprint(job: EditJob, info: VideoInfo) -> str:
    """What the result depends on: settings (not output/report paths) and the input file's identity."""
    settings = job.model_dump(
        mode="json",
        exclude={
            "output", "report", "checkpoint_every", "eval", "paste_background", "feather", "attention_video",
            "attention_strips", *CACHE_FIELDS,
        },
    )
    return checkpoint.job_fingerprint(settings, Path(job.input), info.frames)


class StepKeeper:
    """Times the phases, checkpoints the run state every `every` steps and honours stop requests."""

    def __init__(self, state: RunState, work_dir: Path | None, stop_event: threading.Event | None, every: int) -> None:
        self.state = state
        self.work_dir = work_dir
        self.stop_event = stop_event
        self.every = every
        self.editor: VideoEditor | None = None
        self.clock = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Add the time since the last lap to `phase`'s timing."""
        now = time.perf_counter()
        self.state.timing[phase] = self.state.timing.get(phase, 0.0) + now - self.clock
        self.clock = now

    def save(self, phase: str, step: int, latents: torch.Tensor) -> None:
        state = self.state
        state.phase, state.step, state.latents = phase, step, latents
        if self.editor is not None:
            state.unet_forwards = self.editor.unet_forwards
        state.rng = torch.get_rng_state()
        if self.work_dir is not None:
            checkpoint.save(self.work_dir, state)

    def step_done(self, phase: str, step: int, latents: torch.Tensor, every: int | None = None) -> None:
        """After `step` steps of `phase`: checkpoint when due or stopping; raise JobInterrupted on a stop request."""
        stopping = self.stop_event is not None and self.stop_event.is_set()
        if self.work_dir is not None and (stopping or step % (every or self.every) == 0):
            self.save(phase, step, latents)
        if stopping:
            saved = f"checkpoint saved in {self.work_dir}" if self.work_dir is not None else "nothing saved (no work folder)"
            raise JobInterrupted(f"stopped at {phase} step {step}; {saved}")


# ---------------------------------------------------------------------------------------- report
def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_vram(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def latent_checksum(latents: torch.Tensor) -> str:
    return hashlib.sha256(latents.contiguous().numpy().tobytes()).hexdigest()


def loop_settings(job: EditJob, device: torch.device) -> LoopSettings:
    return LoopSettings(
        steps=job.steps, guidance=job.effective_guidance, rad=job.use_rad, guided_steps=min(job.guided_steps, job.steps),
        step_size=job.step_size, step_schedule=job.step_schedule, refine=job.use_refinement,
        topk_ratio=job.topk_ratio, attention_norm=job.attention_norm, smoothing=job.smoothing, irjs=job.irjs,
        source_noise=job.source_noise, anchor=job.anchor, overlap_weights=job.overlap_weights, seed=job.seed,
        gradient_checkpointing=device.type == "cuda",
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


# ------------------------------------------------------------------------------------------- run
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


def tuned_model(
    job: EditJob, progress: bool, stop_event: threading.Event | None, progress_dir: Path | None = None
) -> str | None:
    """The Tune-A-Video folder a job with `tune:` edits with (cached per clip, base model and settings), else None.

    The cache is `tune.cache_dir` (`longedit run` and `watch` set it), else `.longedit-tuned` beside the output.
    While it tunes, the job's `progress.json` (in `progress_dir`) says so: phase `tune`, its share and ETA
    (`longedit status` shows them); the edit's own phases replace it when the edit starts.
    """
    if job.tune is None:
        return None
    from longedit.config import TUNED_CACHE_FOLDER
    from longedit.tune.cache import ensure_tuned_model

    settings = job.tune if job.tune.size is not None else job.tune.model_copy(update={"size": job.size})
    cache = job.tune.cache_dir or Path(job.output).resolve().parent / f".longedit-{TUNED_CACHE_FOLDER}"
    tracker = None
    if progress_dir is not None:
        Path(progress_dir).mkdir(parents=True, exist_ok=True)
        tracker = JobProgress([Phase("tune", settings.steps, 1.0)], path=Path(progress_dir) / PROGRESS_NAME)
        tracker.start("tune")
    try:
        folder = ensure_tuned_model(
            Path(job.input), job.source_prompt, job.model, settings, cache, device=job.device,
            local_files_only=job.local_files_only, progress=progress, stop_event=stop_event,
            on_step=None if tracker is None else (lambda step, loss: tracker.advance("tune")),
        )
    finally:
        if tracker is not None:
            tracker.close()
    return str(folder)


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


def plan_run_windows(job: EditJob, prepared: Prepared, backbone: Backbone, words, settings: LoopSettings):
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


def is_fresh(state: RunState) -> bool:
    """Nothing of the loop has run yet (the inversion starts at its first step)."""
    return state.phase == "inversion" and state.step == 0


def start_state(job, prepared, backbone, windows, window_plan, work_dir, tracker: JobProgress, stop_event) -> RunState:
    """A new run: encode the source (checkpointed: the encode is not redone after a crash)."""
    clock = time.perf_counter()
    tracker.start("decode")
    source = encode_video(
        backbone, prepared.info, prepared.processed_size, lambda: tracker.advance("decode"), stop_event
    )
    timing = {"decode_s": time.perf_counter() - clock, "inversion_s": 0.0, "edit_s": 0.0, "encode_s": 0.0}
    state = RunState(
        fingerprint=job_fingerprint(job, prepared.info), source=source, latents=source.clone(),
        windows=windows, window_plan=window_plan, timing=timing,
    )
    if work_dir is not None:
        checkpoint.save(work_dir, state)
    return state


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


def latent_grid(prepared: Prepared, backbone: Backbone) -> tuple[int, int]:
    """(width, height) of the latents."""
    size = prepared.processed_size
    return size[0] // backbone.vae_scale, size[1] // backbone.vae_scale


def restore_or_build_masks(job: EditJob, prepared: Prepared, backbone: Backbone, state: RunState, tracker: JobProgress):
    """The run's object masks: from the checkpoint (tracking is not redone on resume) or built now."""
    if state.masks is not None:
        return ObjectMasks(**state.masks)
    tracker.start("masks")
    masks = build_masks(job, prepared, latent_grid(prepared, backbone), lambda: tracker.advance("masks"))
    tracker.finish("masks")
    state.masks = None if masks is None else {"words": masks.words, "latent": masks.latent, "sources": masks.sources}
    return masks


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


@contextlib.contextmanager
def picture_store(job: EditJob, editor: VideoEditor, state: RunState, work_dir: Path | None, prepared: Prepared, backbone):
    """The on-disk store of the word maps for the attention pictures (None when none are asked for), fed by
    the editor's `map_sink`; in the work folder (kept for a resume) or beside the output (removed)."""
    if not job.wants_attention_pictures or not editor.words:
        yield None
        return
    folder = work_dir if work_dir is not None else Path(job.output).resolve().parent
    name = MAPS_NAME if work_dir is not None else f".{Path(job.output).name}.{os.getpid()}.{MAPS_NAME}"
    folder.mkdir(parents=True, exist_ok=True)
    width, height = latent_grid(prepared, backbone)
    grid = (height // MAP_SCALE, width // MAP_SCALE)
    store = MapStore(folder / name, editor.picture_steps, prepared.info.frames, len(editor.words), grid, create=is_fresh(state))
    editor.map_sink = store.put
    try:
        yield store
    finally:
        editor.map_sink = None
        store.close(delete=work_dir is None)


def draw_attention_pictures(job: EditJob, prepared: Prepared, store, masks, words, tracker: JobProgress) -> dict:
    """The attention video and strips from the stored maps (one pass over the source frames); the
    report's `attention_pictures`, paths relative to the report's folder (else the output's)."""
    base = attention_pictures.report_base(job.report, job.output)
    if store is None:
        return attention_pictures.report_entry(None, {}, base)
    info, size = prepared.info, prepared.processed_size
    strips = {w.word: attention_pictures.strip_path(Path(job.output), w.word) for w in words}
    video = None if job.attention_video is None else Path(job.attention_video)

    def writer_for(width: int, height: int) -> VideoWriter:
        return VideoWriter(video, width, height, info.fps, timestamps=info.timestamps[: info.frames])

    tracker.start("pictures")
    shown = attention_pictures.render(
        store, iter_frames(info.path, size=size, end=info.frames), None if masks is None else masks.latent,
        [w.word for w in words], writer_for if video is not None else None, strips, lambda: tracker.advance("pictures"),
    )
    tracker.finish("pictures")
    if not shown:
        return attention_pictures.report_entry(None, {}, base)
    return attention_pictures.report_entry(video, strips, base)



def shared_inversion(
    job: EditJob, prepared: Prepared, backbone: Backbone, editor: VideoEditor, state: RunState, trajectory: bool
) -> SharedInversion | dict | None:
    """The job's place in the shared inversion cache, or why it has none (a dict for the report);
    None once the inversion is done. Computing the key reads the video and hashes the weights (timed)."""
    if state.phase != "inversion":
        return None
    if job.cache_dir is None:
        return {"state": "off", "note": "no cache folder (longedit edit --cache-dir DIR; on in run and watch)"}
    if job.use_fusion:
        return {"state": "off", "note": "attention fusion records the source attention during the inversion"}
    clock = time.perf_counter()
    prompt = "" if job.effective_inversion_prompt == "empty" else job.source_prompt
    parts = key_parts(
        video=prepared.info.path, processed_size=prepared.processed_size, frames=prepared.info.frames,
        backbone=backbone, editor=editor, windows=state.windows, inversion_prompt=prompt, trajectory=trajectory,
    )
    state.timing["cache_key_s"] = time.perf_counter() - clock
    return SharedInversion(InversionCache(Path(job.cache_dir), parse_size(job.cache_size)), cache_key(parts), parts)


def run_inversion(
    editor: VideoEditor, state: RunState, keeper: StepKeeper, trajectory, tracker: JobProgress,
    shared: SharedInversion | dict | None = None,
) -> torch.Tensor:
    """The windowed DDIM inversion from where the state is (nothing when it is past it).

    With a `shared` cache place, a fresh job takes the inversion from the cache when it is there
    (no UNet forward) and publishes the one it computed otherwise; `state.inversion` records which.
    """
    if state.phase != "inversion":
        return state.latents
    cache = shared if isinstance(shared, dict) else {"state": "off", "note": "no cache folder"}
    if isinstance(shared, SharedInversion):
        cache = {"state": "miss", "key": shared.key, "folder": str(shared.cache.folder)}
        cached = shared.load(tuple(state.latents.shape), trajectory is not None) if is_fresh(state) else None
        if cached is not None:
            keeper.clock = time.perf_counter()
            if trajectory is not None:
                trajectory.fill(cached.trajectory)
            keeper.lap("inversion_s")
            tracker.seed("inversion", float("inf"), 0.0)  # done, and no measure of the UNet's speed
            return finish_inversion(state, keeper, cached.latents, {**cache, "state": "hit"})
    steps, windows = editor.schedule.steps, state.windows
    keeper.clock = time.perf_counter()
    tracker.start("inversion")

    def after_step(index: int, latents: torch.Tensor, _stats) -> None:
        if trajectory is not None:
            trajectory.put(steps - 1 - index, latents)
        keeper.lap("inversion_s")
        if index + 1 < steps:
            keeper.step_done("inversion", index + 1, latents)

    latents = invert(
        editor, state.latents, windows, start=state.step, callback=after_step, advance=lambda: tracker.advance("inversion")
    )
    if isinstance(shared, SharedInversion):
        cache["state"] = shared.store(latents, None if trajectory is None else trajectory.values())
    return finish_inversion(state, keeper, latents, cache)


def finish_inversion(state: RunState, keeper: StepKeeper, latents: torch.Tensor, cache: dict) -> torch.Tensor:
    """Enter the edit phase with x_T = `latents` and checkpoint it (always: the finished inversion is kept)."""
    state.inversion = {"checksum": latent_checksum(latents.float()), "cache": cache}
    state.phase, state.step, state.latents = "edit", 0, latents
    keeper.step_done("edit", 0, latents, every=1)
    return latents


def run_denoise(
    editor: VideoEditor, state: RunState, keeper: StepKeeper, masks, trajectory, tracker: JobProgress
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
        phase["name"] = "edit+rad" if index + 1 < rad_steps else "edit"
        keeper.lap("edit_s")
        if index + 1 < steps:
            keeper.step_done("edit", index + 1, latents)

    latents = denoise(
        editor, state.latents, windows, masks, source_at if settings.irjs else None,
        start=state.step, callback=after_step, advance=lambda: tracker.advance(phase["name"]),
    )
    return latents


def evaluate_after_edit(job: EditJob) -> dict | None:
    """`longedit eval` of the finished output when the job asks for it (`--eval`, `eval: true`), else None."""
    if not job.eval:
        return None
    from longedit.evaluation.job import evaluate_job

    return evaluate_job(job)


def build_report(job, prepared, backbone, editor, state: RunState, masks, words, latents, resumed_from, started) -> dict:
    """report.json: what was run, how long it took, what RAD and IRJS measured."""
    info, size, windows, source = prepared.info, prepared.processed_size, state.windows, state.source
    outside = None
    if masks is not None:
        keep = 1 - masks.union()
        if float(keep.sum()) > 0:
            outside = float(((latents.float() - source.float()).abs() * keep).sum() / (keep.sum() * latents.shape[1]))
    total_s = time.perf_counter() - started
    settings = editor.settings
    warnings_list = prepared.notices + ([TINY_WARNING] if backbone.is_tiny else [])
    return {
        "input": str(job.input),
        "output": str(job.output),
        "frames": info.frames,
        "fps": float(info.fps),
        "fps_fraction": f"{info.fps.numerator}/{info.fps.denominator}",
        "duration_s": info.duration_s,
        "size": [info.width, info.height],
        "processed_size": list(size),
        "output_size": list(size if job.keep_size else even_size(info.width, info.height)),
        "output_cropped": None if job.keep_size else crop_note(info.width, info.height),
        "audio": info.has_audio,
        "windows": [list(w) for w in windows],
        "window": {"length": windows[0][1] - windows[0][0], "stride": (windows[1][0] - windows[0][0]) if len(windows) > 1 else None, "reason": state.window_plan.reason, "planner": state.window_plan.to_report()},
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "model": job.model,
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
    }


def write_json_atomic(path: Path, data: dict) -> None:
    atomic.write_json(path, data, what="the report")
