"""`LongEditPipeline`: longedit from Python, diffusers-style, with the model loaded once.

    pipe = LongEditPipeline.from_pretrained("toy")
    out = pipe(video="clip.mp4", source_prompt="a red circle on grass", prompt="a blue square on grass",
               objects={"square": (30, 40, 90, 100)}, steps=10)
    for frame in out.frames: ...          # streamed (T never sits in memory)
    out.save("edited.mp4")                 # the source's timestamps and audio kept

A call builds its `EditJob` like the CLI (`longedit.edit_job.build_job`: every setting a keyword with the
flag's name and default) and runs the engine's one runner (`longedit.engine.run_stages`) with the loaded
model, a step hook and no output file: the frames are decoded from the final latents as they are read.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longedit.config import EditJob
from longedit.edit_job import build_job
from longedit.engine import EditRun, JobInterrupted, decode_latents, edited_frames, output_size, run_stages, write_video
from longedit.errors import UserError
from longedit.models import Backbone, load_backbone
from longedit.video import VideoWriter, check_output_path, probe

#: Keywords `from_pretrained` fixes for every call (they choose the loaded weights).
MODEL_SETTINGS = ("model", "device", "dtype", "local_files_only", "backbone", "checkpoint_config", "lora", "vae")
#: EditJob fields a call sets itself (`video`) or that only make sense for files (`output`, `report`).
CALL_SETTINGS = ("input", "output", "report", "source_prompt", "prompt", "objects", "masks", "fps")
DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
StepCallback = Callable[["LongEditPipeline", int, int, dict], "dict | None"]


def settings_keywords() -> list[str]:
    """The `**settings` a call takes: every `EditJob` field (the `longedit edit` flags, snake_case) that the
    call or `from_pretrained` does not set."""
    return [name for name in EditJob.model_fields if name not in MODEL_SETTINGS + CALL_SETTINGS]


class LongEditOutput:
    """What a call returns: `.frames` (a new stream of the edited RGB uint8 frames at each access),
    `.save(path)` (an mp4/mov/mkv with the source's timestamps, and its audio when it was a file), `.report`
    (the report dict `longedit edit --report` writes) and `.latents` (the final latents [F, 4, h, w])."""

    def __init__(self, frames: Callable[[], Iterator[np.ndarray]], save: Callable[[Path], None], report: dict,
                 latents: torch.Tensor, keep: tempfile.TemporaryDirectory | None = None) -> None:
        self._frames, self._save, self.report, self.latents = frames, save, report, latents
        self._keep = keep  # the temporary copy of an in-memory source, read again by the background paste

    @property
    def frames(self) -> Iterator[np.ndarray]:
        """The edited frames, decoded one chunk at a time as they are read."""
        return self._frames()

    def save(self, path: str | Path) -> Path:
        """Write the frames to `path` (atomically); returns the path."""
        path = Path(path)
        self._save(path)
        return path


class LongEditPipeline:
    """A loaded model that edits videos (ReAtCo on Stable Diffusion backbones, Gen-L-Video windows)."""

    def __init__(self, backbone: Backbone, model: str, device: str = "auto", dtype: str = "auto",
                 local_files_only: bool = False, kind: str = "auto", extras: dict | None = None) -> None:
        self.backbone, self.model, self.device, self.dtype = backbone, model, device, dtype
        self.local_files_only, self.kind = local_files_only, kind
        self.extras = dict(extras or {})  # checkpoint_config, lora, vae: part of the loaded model
        self._interrupt = False

    @classmethod
    def from_pretrained(cls, model: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                        local_files_only: bool = False, backbone: str = "auto", *, checkpoint_config: str | None = None,
                        lora: str | list | None = None, vae: str | Path | None = None) -> LongEditPipeline:
        """Load `model` once: whatever `--model` accepts (`toy`, `tiny`, a diffusers folder, a hub id, a single
        .safetensors/.ckpt file). `device`: auto, cpu, cuda, cuda:1 ...; `dtype`: auto, fp32, fp16, bf16 or a
        torch dtype; `backbone`: auto, sd, t2v or tuneavideo; `checkpoint_config`, `lora` (`PATH[:SCALE]` or a
        list of them, fused) and `vae` as `--checkpoint-config`, `--lora` and `--vae`."""
        device = str(device)
        dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, torch.dtype) else dtype
        extras = {"checkpoint_config": checkpoint_config, "lora": lora, "vae": None if vae is None else str(vae)}
        job = build_job({"input": "-", "output": "-", "source_prompt": "-", "prompt": "-", "model": str(model),
                         "device": device, "dtype": dtype, "backbone": backbone, **extras},
                        fix="see help(LongEditPipeline.from_pretrained)")
        loaded = load_backbone(str(model), device, dtype, local_files_only, backbone=backbone,
                               checkpoint_config=job.checkpoint_config, loras=job.lora, vae=job.vae)
        return cls(loaded, str(model), device, dtype, local_files_only, backbone, extras)

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` in a step callback (as in diffusers) to stop after that step."""
        return self._interrupt

    def __call__(
        self,
        video: str | Path | np.ndarray | torch.Tensor | Iterable[np.ndarray],
        source_prompt: str,
        prompt: str,
        objects: Mapping[str, Any] | Iterable[str] | None = None,
        masks: str | Path | None = None,
        *,
        fps: float | Fraction | None = None,
        callback_on_step_end: StepCallback | None = None,
        progress: bool = True,
        **settings: Any,
    ) -> LongEditOutput:
        """Edit `video` from `source_prompt` to `prompt`; the model stays loaded for the next call.

        Args:
            video: a video file (or a `SampleClip`); a (T, H, W, 3) uint8 array or tensor; or an iterable of
                (H, W, 3) uint8 frames (streamed into a temporary H.264 file at crf 0 as they come, at `fps`).
            source_prompt: what the source shows. prompt: what the edit should show.
            objects: word of `prompt` -> where it goes: a box `(x0, y0, x1, y1)` in source pixels, keyframes
                `[((x0, y0, x1, y1), frame), ...]` (interpolated), None (with `masks`), or an `ObjectSpec` dict.
            masks: a folder DIR/WORD/000000.png ... of each object's masks (`--masks`).
            fps: the frame rate of an array or iterable source (default 24), or of a folder of numbered frames
                (`--fps`); a video file keeps its own timestamps.
            callback_on_step_end: `fn(pipe, step, timestep, kwargs) -> kwargs` after each edit step, as in
                diffusers; kwargs holds `latents` (all frames, [F, 4, h, w]), `rad_loss` (the step's mean RAD
                loss, None without RAD) and `windows` (the [start, end) frame windows). Returning
                `{"stop": True, ...}` or setting `pipe._interrupt = True` stops after that step.
            progress: show the job's progress bar.
            **settings: every `longedit edit` setting, same name (snake_case) and default, declared once on
                `longedit.config.EditJob`:
                track="none", sam2_model, preset="paper", steps=50, guidance=None, seed=0,
                size=None (the model's native size), keep_size=False, window=None, stride=None, vram=None, overlap_weights="uniform", rad=True,
                rad_steps=None, step_size=20.0, step_schedule="sqrt", refine=None, topk_ratio=0.2,
                token_mode="all", attention_norm="official", smoothing=True, attention_temperature=100.0,
                step_norm="none", rad_cells="official", region_start="inverted", region_start_strength=1.0,
                rad_diagnostics=True, irjs=True, source_noise="fresh",
                inversion_prompt="auto", anchor="window", paste_background=None, feather=8, mask_dilate=0,
                box_masks=False, min_area=0, eval=False, method="reatco", fuse_attention=False,
                cross_replace_steps=0.8, self_replace_steps=0.5, blend_threshold=0.3, fuse_resolution="h16",
                fuse_controller="auto", equalize={}, blend_word=[], fuse_source="auto", fuse_disk_budget=None,
                checkpoint_every=5, tune=None, cache_dir=None, cache_size, attention_video=None,
                attention_strips=False, preview=False, start=None, end=None, every=1 (a part of the
                source: frame numbers or times), codec=None, pix_fmt=None, crf=None (how `out.save` writes).
                (`model`, `device`, `dtype`, `local_files_only`, `backbone`, `checkpoint_config`, `lora`, `vae`
                are `from_pretrained`'s.)

        Returns:
            `LongEditOutput` with `.frames`, `.save(path)`, `.report` and `.latents`. A stopped run's output
            holds the latents it stopped at (decoded without the background paste) and `report["stopped"]`.
        """
        fixed = sorted(set(settings) & set(MODEL_SETTINGS + CALL_SETTINGS))
        if fixed:
            raise UserError(f"'{fixed[0]}' is not a call setting", "set it in LongEditPipeline.from_pretrained or as the call's argument")
        keep = tempfile.TemporaryDirectory(prefix="longedit-")
        source = source_file(video, Path(keep.name), 24 if fps is None else fps)
        job = build_job({
            "input": source, "output": Path(keep.name) / work_output_name(settings.get("codec")), "source_prompt": source_prompt, "prompt": prompt,
            "objects": object_specs(objects), "masks": masks, "model": self.model, "device": self.device,
            "dtype": self.dtype, "local_files_only": self.local_files_only, "backbone": self.kind,
            "fps": fps if isinstance(video, (str, Path)) else None, **self.extras, **settings,
        }, fix="see help(LongEditPipeline.__call__)")
        stop, last = threading.Event(), {}
        self._interrupt = False

        def on_step(index: int, timestep: int, latents: torch.Tensor, loss: float | None, windows: list) -> None:
            last.update(step=index + 1, latents=latents)
            if callback_on_step_end is None:
                return
            result = callback_on_step_end(self, index, timestep, {"latents": latents, "rad_loss": loss, "windows": windows})
            if self._interrupt or (isinstance(result, Mapping) and result.get("stop")):
                stop.set()

        try:
            run = run_stages(job, progress=progress, stop_event=stop, backbone=self.backbone, on_step=on_step, write=False)
        except JobInterrupted as stopped:
            return self._stopped_output(job, last["latents"], {"stopped": str(stopped), "steps_done": last["step"]}, keep)
        run.report["output"] = None
        return LongEditOutput(lambda: self._edited(run), lambda path: self._write(run, path), run.report, run.latents, keep)

    @staticmethod
    def _edited(run: EditRun) -> Iterator[np.ndarray]:
        info, size = run.prepared.info, run.prepared.processed_size
        return edited_frames(run.backbone, run.latents, info, run.job, size, run.masks)

    @staticmethod
    def _write(run: EditRun, path: Path) -> None:
        """What `longedit edit` writes (`write_video`): the source's timestamps, and its audio when it has some."""
        check_output_path(path, Path(run.job.input))
        job = run.job.model_copy(update={"output": path})
        write_video(run.backbone, run.latents, run.prepared.info, job, run.prepared.processed_size, None, run.masks)

    def _stopped_output(self, job: EditJob, latents: torch.Tensor, report: dict, keep) -> LongEditOutput:
        info = probe(job.input)
        size = output_size(job, info, (latents.shape[-1] * self.backbone.vae_scale, latents.shape[-2] * self.backbone.vae_scale))

        def frames() -> Iterator[np.ndarray]:
            from PIL import Image

            for frame in decode_latents(self.backbone, latents):
                yield frame if (frame.shape[1], frame.shape[0]) == size else np.asarray(Image.fromarray(frame).resize(size))

        def save(path: Path) -> None:
            with VideoWriter(path, size[0], size[1], info.fps, timestamps=info.timestamps[: len(latents)], warn_crop=False) as writer:
                for frame in frames():
                    writer.write(frame)

        return LongEditOutput(frames, save, report, latents, keep)


def object_specs(objects: Mapping[str, Any] | Iterable[str] | None) -> list[dict]:
    """{"square": (x0, y0, x1, y1)} / {"square": [(box, frame), ...]} / {"square": None} / ["square"] -> ObjectSpec dicts."""
    if objects is None:
        return []
    if not isinstance(objects, Mapping):
        return [{"word": str(word)} for word in objects]
    specs = []
    for word, where in objects.items():
        if where is None:
            specs.append({"word": word})
        elif isinstance(where, Mapping):
            specs.append({"word": word, **where})
        elif len(where) == 4 and all(isinstance(v, (int, float)) for v in where):
            specs.append({"word": word, "box": tuple(where)})
        else:
            try:
                specs.append({"word": word, "keyframes": {int(frame): tuple(box) for box, frame in where}})
            except (TypeError, ValueError):
                raise UserError(f"cannot read the region of '{word}': {where!r}",
                                "give a box (x0, y0, x1, y1) or keyframes [((x0, y0, x1, y1), frame), ...]") from None
    return specs


def work_output_name(codec: str | None) -> str:
    """The call's own output name in its temporary folder, in a container `codec` can be written to (`.save`
    then picks the user's): `--codec prores` needs .mov, ffv1 .mkv, vp9 .webm, png a folder."""
    from longedit.video.codecs import CODECS

    suffixes = CODECS[codec].suffixes if codec in CODECS else (".mp4",)
    return "edited" + (suffixes[0] if suffixes else "")


def source_file(video: Any, folder: Path, fps: float | Fraction) -> Path:
    """`video` as a file the engine reads: a path as it is; frames (array, tensor or iterable) streamed into
    `folder/source.mp4` (H.264 at crf 0)."""
    if isinstance(getattr(video, "path", None), Path):  # a `longedit.samples.SampleClip`
        video = video.path
    if isinstance(video, (str, Path)):
        return Path(video)
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, np.ndarray) and (video.ndim != 4 or video.shape[-1] != 3):
        raise UserError(f"a video array must be (T, H, W, 3), not {tuple(video.shape)}", "pass RGB frames, uint8, frame-major")
    path, writer = folder / "source.mp4", None
    try:
        for frame in video:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                raise UserError(f"a frame must be (H, W, 3) uint8, not {frame.shape} {frame.dtype}", "convert the frames to RGB uint8")
            if writer is None:
                writer = VideoWriter(path, frame.shape[1], frame.shape[0], Fraction(fps).limit_denominator(1001), crf=0, warn_crop=False)
            writer.write(frame)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise UserError("the video has no frames", "pass a file, a (T, H, W, 3) array or a non-empty iterable of frames")
    writer.close()
    return path
