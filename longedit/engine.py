"""One edit job end to end: decode -> encode latents -> masks -> inversion -> edit -> decode -> encode.

Every stage streams or chunks (frames never all in RAM; latents of the whole video on the host).
With a work folder the loop checkpoints atomically every `checkpoint_every` steps and a later call
with the same job resumes from the checkpoint with bit-identical results on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from longedit.backbones.adapters import adapter_for
from longedit.config import EditJob, ObjectSpec
from longedit.editor import LoopSettings, VideoEditor
from longedit.errors import UserError
from longedit.masks import ObjectMasks, build_object_masks, validate_objects
from longedit.models import Backbone, load_backbone, load_tokenizer, resolve_device
from longedit.planner import Probe, WindowPlan, parse_size, plan_window, probe_window_costs
from longedit.video import VideoInfo, VideoWriter, check_output_path, iter_frames, probe, processing_size
from longedit.windows import plan_windows
from longedit.words import WordTokens, word_tokens

CHECKPOINT_NAME = "checkpoint.pt"
TRAJECTORY_NAME = "inversion-trajectory.f16"
VAE_CHUNK = 8
DEFAULT_WINDOW = {"cuda": 16, "cpu": 8}
TINY_WARNING = "--model tiny is a random model for smoke runs: its output is not a meaningful edit"


class JobInterrupted(Exception):
    """Raised by run_edit when its stop event was set; a checkpoint was saved first."""


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
    objects = job.resolved_objects()
    validate_objects(objects, info.width, info.height, info.frames)
    for obj in objects:
        if obj.masks is not None and not Path(obj.masks).is_dir():
            raise UserError(f"mask folder '{obj.masks}' for '{obj.word}' does not exist", "give --masks DIR holding DIR/WORD/000000.png ...")
    notices = []
    if job.method == "reatco" and (job.rad or job.irjs) and not objects:
        notices.append("no --object given: RAD and IRJS have nothing to act on; the whole frame follows the prompt")
    size = processing_size(info.width, info.height, job.size)
    return Prepared(info=info, objects=objects, processed_size=size, notices=notices)


def resolve_words(tokenizer, job: EditJob, objects: list[ObjectSpec]) -> list[WordTokens]:
    return [word_tokens(tokenizer, job.prompt, obj.word, job.token_mode) for obj in objects]


def preflight(job: EditJob) -> dict:
    """Validate a job without running the diffusion model: video, output, words (tokenizer), boxes."""
    prepared = prepare(job)
    tokenizer = load_tokenizer(job.model, job.local_files_only)
    words = resolve_words(tokenizer, job, prepared.objects)
    info = prepared.info
    return {
        "input": str(job.input),
        "frames": info.frames,
        "fps": float(info.fps),
        "size": [info.width, info.height],
        "processed_size": list(prepared.processed_size),
        "objects": {w.word: list(w.indices) for w in words},
        "model": job.model,
    }


# ------------------------------------------------------------------------------------------ stages
def encode_video(
    backbone: Backbone, info: VideoInfo, size: tuple[int, int], progress: bool, stop_event: threading.Event | None = None
) -> torch.Tensor:
    """Stream-decode frames at the processing size and VAE-encode them in chunks -> host latents [F,4,h,w].

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

    bar = tqdm(total=info.frames, desc="decode", unit="frame", disable=not progress)
    for frame in iter_frames(info.path, size=size):
        chunk.append(frame)
        if len(chunk) == VAE_CHUNK:
            flush()
            if stop_event is not None and stop_event.is_set():
                bar.close()
                raise JobInterrupted("stopped while encoding the source; nothing to resume yet")
        bar.update(1)
    if chunk:
        flush()
    bar.close()
    return torch.cat(latents)


def decode_latents(backbone: Backbone, latents: torch.Tensor) -> Iterator[np.ndarray]:
    """VAE-decode host latents in chunks, yielding RGB uint8 frames at the processing size."""
    vae = backbone.vae
    dtype = next(vae.parameters()).dtype
    for start in range(0, latents.shape[0], VAE_CHUNK):
        batch = latents[start : start + VAE_CHUNK].to(device=backbone.device, dtype=dtype) / vae.config.scaling_factor
        with torch.no_grad():
            pixels = vae.decode(batch).sample.float()
        pixels = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        yield from pixels


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


def write_video(backbone: Backbone, latents: torch.Tensor, info: VideoInfo, job: EditJob, size: tuple[int, int], progress: bool) -> None:
    """Decode latents and stream them into the output file (atomic: temp name then rename), audio remuxed."""
    out_size = size if job.keep_size else (info.width, info.height)
    bar = tqdm(total=latents.shape[0], desc="encode", unit="frame", disable=not progress)
    with VideoWriter(
        job.output, out_size[0], out_size[1], info.fps, timestamps=info.timestamps, audio_source=info.path
    ) as writer:
        for frame in decode_latents(backbone, latents):
            writer.write(_resize(frame, out_size))
            bar.update(1)
    bar.close()


def _mask_reader(obj_folder: Path, word: str, frames: int, size: tuple[int, int]):
    from longedit.segmentation import load_mask_folder

    # `obj.masks` is DIR/WORD already; the folder reader takes DIR and WORD.
    return load_mask_folder(Path(obj_folder).parent, Path(obj_folder).name, frames, size)


def build_masks(job: EditJob, prepared: Prepared, grid: tuple[int, int], progress: bool) -> ObjectMasks | None:
    """Object masks at latent resolution from boxes, mask folders or SAM2 tracking."""
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
            box_masks=job.box_masks, min_area=job.min_area, local_files_only=job.local_files_only, progress=progress,
        )
    source_size = (info.width, info.height)
    return build_object_masks(
        objects, info.frames, source_size, grid, dilate_px=job.mask_dilate,
        folder_reader=lambda folder, word, frames: _mask_reader(folder, word, frames, size), tracker=tracker,
    )


# ------------------------------------------------------------------------------------ checkpoints
def job_fingerprint(job: EditJob, info: VideoInfo) -> str:
    """What the result depends on: settings (not output/report paths) and the input file's identity."""
    settings = job.model_dump(mode="json", exclude={"output", "report", "checkpoint_every"})
    stat = Path(job.input).stat()
    identity = {"settings": settings, "input_size": stat.st_size, "input_mtime": stat.st_mtime_ns, "frames": info.frames}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def save_checkpoint(work_dir: Path, state: dict) -> None:
    """Atomic write: temp file in the same folder, fsync, rename."""
    work_dir.mkdir(parents=True, exist_ok=True)
    temporary = work_dir / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, work_dir / CHECKPOINT_NAME)


def load_checkpoint(work_dir: Path | None, fingerprint: str) -> dict | None:
    if work_dir is None or not (work_dir / CHECKPOINT_NAME).is_file():
        return None
    try:
        state = torch.load(work_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: start over rather than fail the job
        warnings.warn(f"ignoring unreadable checkpoint in {work_dir}")
        return None
    return state if state.get("fingerprint") == fingerprint else None


class Trajectory:
    """DDIM inversion latents of every step on disk (fp16 memmap): IRJS's `inversion` source mode."""

    def __init__(self, path: Path, steps: int, shape: tuple[int, ...], create: bool) -> None:
        mode = "w+" if create or not path.exists() else "r+"
        self.array = np.memmap(path, dtype=np.float16, mode=mode, shape=(steps, *shape))

    def put(self, position: int, latents: torch.Tensor) -> None:
        self.array[position] = latents.to(torch.float16).numpy()

    def get(self, position: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[position])).float()


# ---------------------------------------------------------------------------------------- report
def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_vram(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def latent_checksum(latents: torch.Tensor) -> str:
    return hashlib.sha256(latents.contiguous().numpy().tobytes()).hexdigest()


def loop_settings(job: EditJob, device: torch.device) -> LoopSettings:
    return LoopSettings(
        steps=job.steps, guidance=job.guidance, rad=job.use_rad, guided_steps=min(job.guided_steps, job.steps),
        step_size=job.step_size, step_schedule=job.step_schedule, refine=job.use_refinement,
        topk_ratio=job.topk_ratio, attention_norm=job.attention_norm, smoothing=job.smoothing, irjs=job.irjs,
        source_noise=job.source_noise, overlap_weights=job.overlap_weights, seed=job.seed,
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
    """Run one edit job; returns the report (also written to job.report). See module docstring."""
    started = time.perf_counter()
    prepared = prepare(job)
    info = prepared.info
    device = resolve_device(job.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    backbone = load_backbone(job.model, job.device, job.dtype, job.local_files_only, backbone=job.backbone)
    warnings_list = prepared.notices + ([TINY_WARNING] if backbone.is_tiny else [])
    words = resolve_words(backbone.tokenizer, job, prepared.objects)
    size = prepared.processed_size
    grid = (size[0] // backbone.vae_scale, size[1] // backbone.vae_scale)
    settings = loop_settings(job, device)

    def probe_costs(lengths):
        return probe_window_costs(backbone, settings, job.source_prompt, job.prompt, words, grid[1], grid[0], lengths)

    work_dir = Path(work_dir) if work_dir is not None else None
    fingerprint = job_fingerprint(job, info)
    state = load_checkpoint(work_dir, fingerprint)
    if state is not None and "windows" in state:  # a resumed job keeps its windows, whatever memory is free now
        windows, window_plan = state["windows"], state["window_plan"]
    else:
        native = adapter_for(backbone.kind).native_window
        windows, window_plan = choose_windows(job, info.frames, device, probe_costs, native)
    fusion_plan, fresh = None, state is None or (state["phase"], state["step"]) == ("inversion", 0)
    if job.use_fusion and (state is None or state["phase"] != "decode"):  # words, source mode and disk: before any long work
        from longedit.fatezero import plan_fusion

        fusion_plan = plan_fusion(job, backbone, windows, grid, work_dir, fresh)
    timing = {"decode_s": 0.0, "inversion_s": 0.0, "edit_s": 0.0, "encode_s": 0.0}
    if state is not None:
        timing.update(state["timing"])
    resumed_from = None if state is None else {"phase": state["phase"], "step": state["step"]}

    clock = time.perf_counter()
    if state is None:
        source = encode_video(backbone, info, size, progress, stop_event)
        state = {"fingerprint": fingerprint, "phase": "inversion", "step": 0, "source": source, "latents": source.clone(),
                 "attention": [], "losses": [], "unet_forwards": 0, "timing": timing,
                 "windows": windows, "window_plan": window_plan}
        timing["decode_s"] = time.perf_counter() - clock
        if work_dir is not None:  # the whole-video encode is not redone after a crash
            save_checkpoint(work_dir, state)
    source = state["source"]
    if state.get("masks") is not None:  # tracking is not redone on resume
        masks = ObjectMasks(**state["masks"])
    else:
        masks = build_masks(job, prepared, grid, progress)
        state["masks"] = None if masks is None else {"words": masks.words, "latent": masks.latent, "sources": masks.sources}
    editor = VideoEditor(
        backbone, settings, job.source_prompt, job.prompt, words,
        inversion_prompt="" if job.inversion_prompt == "empty" else None,
    )
    editor.unet_forwards = state["unet_forwards"]
    fusion = fusion_plan.attach(editor, create=fresh) if fusion_plan is not None else None
    steps = editor.schedule.steps
    trajectory = None
    if job.irjs and job.source_noise == "inversion":
        folder = work_dir if work_dir is not None else Path(job.output).resolve().parent
        path = folder / (TRAJECTORY_NAME if work_dir is not None else f".{Path(job.output).name}.{os.getpid()}.trajectory")
        folder.mkdir(parents=True, exist_ok=True)
        # position p holds the inverted latents at the level of timesteps[p]
        trajectory = Trajectory(path, steps, tuple(source.shape), create=state["phase"] == "inversion" and state["step"] == 0)

    def checkpoint(phase: str, step: int, latents: torch.Tensor) -> None:
        state.update(phase=phase, step=step, latents=latents, unet_forwards=editor.unet_forwards, timing=timing,
                     rng=torch.get_rng_state())
        if work_dir is not None:
            save_checkpoint(work_dir, state)

    def maybe_stop(phase: str, step: int, latents: torch.Tensor, every: int) -> None:
        stopping = stop_event is not None and stop_event.is_set()
        if work_dir is not None and (stopping or step % every == 0):
            checkpoint(phase, step, latents)
        if stopping:
            raise JobInterrupted(f"stopped at {phase} step {step}; checkpoint saved in {work_dir}")

    try:
        latents = state["latents"]
        if state["phase"] == "inversion":
            clock = time.perf_counter()
            bar = tqdm(total=steps * len(windows), initial=state["step"] * len(windows), desc="inversion", unit="window", disable=not progress)
            for index in range(state["step"], steps):
                latents = editor.inversion_step(latents, index, windows, advance=lambda: bar.update(1))
                if trajectory is not None:
                    trajectory.put(steps - 1 - index, latents)
                timing["inversion_s"] += time.perf_counter() - clock
                clock = time.perf_counter()
                if index + 1 < steps:
                    maybe_stop("inversion", index + 1, latents, job.checkpoint_every)
            bar.close()
            state["phase"], state["step"] = "edit", 0
            maybe_stop("edit", 0, latents, every=1)  # always checkpoint the finished inversion

        noise = editor.fresh_source_noise(source.shape) if job.source_noise == "fresh" else None

        def source_prev(index: int) -> torch.Tensor:
            if trajectory is not None:
                return trajectory.get(index + 1)
            return editor.noised_source(source, noise, index)

        clock = time.perf_counter()
        bar = tqdm(total=steps * len(windows), initial=state["step"] * len(windows), desc="edit", unit="window", disable=not progress)
        for index in range(state["step"], steps):
            latents, stats = editor.edit_step(latents, index, windows, masks, source, source_prev, advance=lambda: bar.update(1))
            state["attention"].append(stats.share())
            state["losses"].append(float(np.mean(stats.losses)) if stats.losses else None)
            if stats.losses:
                bar.set_postfix(loss=f"{state['losses'][-1]:.3f}")
            timing["edit_s"] += time.perf_counter() - clock
            clock = time.perf_counter()
            if index + 1 < steps:
                maybe_stop("edit", index + 1, latents, job.checkpoint_every)
        bar.close()
        if fusion is not None:
            state["fatezero"] = fusion.report(info.frames)
        checkpoint("decode", steps, latents)
        if fusion is not None:  # the decode phase never needs the maps again
            fusion.store.close(delete=True)

        clock = time.perf_counter()
        write_video(backbone, latents, info, job, size, progress)
        timing["encode_s"] = time.perf_counter() - clock
    finally:
        if trajectory is not None and work_dir is None:
            Path(trajectory.array.filename).unlink(missing_ok=True)
        if fusion is not None and work_dir is None:
            fusion.store.close(delete=True)

    outside = None
    if masks is not None:
        keep = 1 - masks.union()
        if float(keep.sum()) > 0:
            outside = float(((latents.float() - source.float()).abs() * keep).sum() / (keep.sum() * latents.shape[1]))
    total_s = time.perf_counter() - started
    report = {
        "input": str(job.input),
        "output": str(job.output),
        "frames": info.frames,
        "fps": float(info.fps),
        "fps_fraction": f"{info.fps.numerator}/{info.fps.denominator}",
        "duration_s": info.duration_s,
        "size": [info.width, info.height],
        "processed_size": list(size),
        "output_size": list(size if job.keep_size else (info.width, info.height)),
        "audio": info.has_audio,
        "windows": [list(w) for w in windows],
        "window": {"length": windows[0][1] - windows[0][0], "stride": (windows[1][0] - windows[0][0]) if len(windows) > 1 else None, "reason": window_plan.reason, "planner": window_plan.to_report()},
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "model": job.model,
        "steps": steps,
        "unet_forwards": editor.unet_forwards,
        "timing": {**{k: round(v, 3) for k, v in timing.items()}, "total_s": round(total_s, 3),
                   "frames_per_s": round(info.frames / max(total_s, 1e-9), 4)},
        "memory": {"peak_rss_bytes": _peak_rss(), "peak_vram_bytes": _peak_vram(backbone.device)},
        "rad": {
            "enabled": job.use_rad,
            "guided_steps": settings.guided_steps if job.use_rad else 0,
            "words": {w.word: list(w.indices) for w in words},
            "attention_in_mask": {w.word: [round(s[j], 6) for s in state["attention"]] for j, w in enumerate(words)},
            "loss": state["losses"],
        },
        "irjs": {"enabled": job.irjs, "source_noise": job.source_noise, "background_latent_mae": outside},
        "method": job.method,
        "backbone": backbone.kind,
        "fatezero": state.get("fatezero"),
        "masks": None if masks is None else {"summary": masks.area_summary()},
        "latent_checksum": latent_checksum(latents.float()),
        "resumed_from": resumed_from,
        "warnings": warnings_list,
    }
    if job.report is not None:
        write_json_atomic(Path(job.report), report)
    return report


def write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)
