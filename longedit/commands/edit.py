"""`longedit edit` (one edit from flags) and `longedit demo` (a real edit of the built-in sample)."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from longedit.config import DEFAULT_CACHE_SIZE, EditJob, field_bounds, parse_object_args, preview_job
from longedit.edit_job import build_job, validation_message  # noqa: F401 - re-exported for demo and tests
from longedit.errors import UserError


WINDOW_MIN, WINDOW_MAX = field_bounds("window")  # declared once, on EditJob.window (job files get the same range)

PREVIEW_ONE_WINDOW = "window"  # `--preview` without a number
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)$")


def optional_preview_value(argv: list[str]) -> list[str]:
    """`longedit edit ... --preview` with no number after it -> `--preview window` (typer options cannot
    take an optional value; `--preview 12` and `--preview=12` pass unchanged)."""
    if not argv or argv[0] != "edit":
        return argv
    out: list[str] = []
    for position, arg in enumerate(argv):
        out.append(arg)
        if arg == "--preview":
            following = argv[position + 1] if position + 1 < len(argv) else None
            if following is None or not _NUMBER.match(following):  # a number, even a bad one (-3, 1.5), is its value
                out.append(PREVIEW_ONE_WINDOW)
    return out


def preview_value(value: str | None) -> bool | int | None:
    """The `preview` key from the `--preview` flag: True (one window) or a number of frames."""
    if value is None:
        return None
    if value == PREVIEW_ONE_WINDOW:
        return True
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"--preview {value}: not a number of frames >= 1", "write --preview (one window) or --preview N, N >= 1")
    return int(value)


class Preset(str, Enum):
    paper = "paper"
    fast = "fast"


def mean_share(shares: list[float]) -> float:
    return sum(shares) / len(shares) if shares else 0.0


def print_summary(report: dict, shown: frozenset[str] = frozenset()) -> None:
    """The run's summary lines; its warnings on stderr, but not those in `shown` (printed before the run)."""
    timing = report["timing"]
    cropped = f", {report['output_cropped']}" if report.get("output_cropped") else ""
    cropped += f", {report['output_format']}" if report.get("output_format") else ""
    span = report.get("range")
    cropped += f", source frames {span['start_frame']}-{span['end_frame'] - 1} every {span['every']}" if span else ""
    typer.echo(
        f"wrote {report['output']}: {report['frames']} frames at {report['fps']:.3f} fps{cropped}, "
        f"{len(report['windows'])} windows, {timing['total_s']:.1f} s ({timing['frames_per_s']:.2f} frames/s)"
    )
    choice = report.get("processing_size_choice")
    if choice:
        width, height = report["processed_size"]
        typer.echo(f"  processed at {width}x{height}: short side {choice['short_side']} from {choice['reason']}")
    for word, shares in report["rad"]["attention_in_mask"].items():
        if shares:
            typer.echo(f"  '{word}': share of its attention inside its region, mean over {len(shares)} steps: {mean_share(shares):.3f}")
    diagnostics = report["rad"].get("diagnostics") or {}
    if diagnostics.get("mean_loss_drop") is not None:
        saturated = diagnostics["mean_saturated"]
        typer.echo(f"  RAD: loss drop per guided step {diagnostics['mean_loss_drop']:.2g}, |grad|/|z| {diagnostics['mean_grad_over_z'] or 0:.2g},"
                   f" saturated map cells {'n/a' if saturated is None else f'{100 * saturated:.0f}%'}")
    mae = report["irjs"]["background_latent_mae"]
    if mae is not None:
        typer.echo(f"  background latent MAE vs source: {mae:.4f}")
    paste = report.get("background_paste") or {}
    if paste.get("enabled"):
        psnr = paste["decoded_background_psnr_db"]
        decoded = "exact" if psnr is None else f"{psnr:.1f} dB"
        typer.echo(f"  background: the source's pixels pasted back (decoded edit alone: {decoded} PSNR)")
    cache = (report.get("inversion") or {}).get("cache") or {}
    if cache.get("state") == "hit":
        typer.echo(f"  inversion: shared, taken from {cache['folder']} (no UNet forward for it)")
    if report.get("eval") is not None:
        from longedit.commands.eval import summary_lines

        evaluation = report["eval"]
        lines = summary_lines(evaluation) if evaluation.get("frames") else [f"n/a ({evaluation['reason']})"]
        typer.echo("eval: " + "\n".join(lines))
    pictures = report.get("attention_pictures") or {}
    if pictures.get("video") or pictures.get("strips"):
        names = ([pictures["video"]] if pictures.get("video") else []) + list(pictures["strips"].values())
        typer.echo(f"  attention pictures: {', '.join(names)}")
    for line in report.get("warnings", []):
        if line not in shown:
            typer.echo(f"warning: {line}", err=True)


def edit(
    input: Annotated[Path, typer.Argument(help="Video to edit (any length; mp4/mov/mkv/webm...), or a folder of numbered PNG/JPEG frames (with --fps). A rotated (phone) video is edited and written upright.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Edited video (written to a temp name, renamed when done).")],
    source_prompt: Annotated[str, typer.Option(help="Describes the source video, e.g. 'a man talking on a phone in a car'.")],
    prompt: Annotated[str, typer.Option(help="The edited prompt, e.g. 'a robot talking on a phone in a car'.")],
    object: Annotated[Optional[list[str]], typer.Option("--object", help="WORD=x0,y0,x1,y1 box in source pixels as displayed (a rotated phone video: upright) for a word of --prompt; repeat with @FRAME for keyframes (FRAME is a source frame number, as for --start), or for more objects.")] = None,
    
    masks: Annotated[Optional[Path], typer.Option(help="Folder of masks: DIR/WORD/000000.png per source frame (from `longedit masks`; a range reads its own frames' files), upright as displayed.")] = None,
    track: Annotated[Optional[str], typer.Option(help="'sam2': track each --object box through the video with SAM2.")] = None,
    sam2_model: Annotated[Optional[str], typer.Option(help="SAM2 hub id or folder ('tiny' for a random smoke-test tracker).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Diffusers SD folder, hub id, or a single .safetensors/.ckpt checkpoint (SD 1.x/2.x) [env LONGEDIT_MODEL, else SD 1.5]; 'toy' = the small trained model, 'tiny' = random built-in model.")] = None,
    checkpoint_config: Annotated[Optional[str], typer.Option(metavar="DIR_OR_ID", help="For a single-file --model: the diffusers folder or hub id of its architecture (configs and tokenizer, no weights) [the SD 1.5 / SD 2.1 hub config for SD 1.x / 2.x checkpoints; needed offline unless cached].")] = None,
    lora: Annotated[Optional[list[str]], typer.Option("--lora", metavar="PATH[:SCALE]", help="A LoRA (.safetensors, kohya or diffusers format) fused into the model at SCALE [1.0]; repeat for several.")] = None,
    vae: Annotated[Optional[str], typer.Option(metavar="PATH", help="Replace the model's VAE: a diffusers VAE folder, a .safetensors/.ckpt VAE file or a hub id.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="UNet kind: auto (from unet/config.json), sd, t2v (diffusers text-to-video UNet3D) or tuneavideo [auto].")] = None,
    local_files_only: Annotated[Optional[bool], typer.Option("--local-files-only", help="Never reach the hub.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")] = None,
    preset: Annotated[Optional[Preset], typer.Option(help="paper: the official code's refinement at steps 0/10/20 of 50; fast: without [paper].")] = None,
    steps: Annotated[Optional[int], typer.Option(help="DDIM steps [50].")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale [12.5 for reatco, 7.5 for fatezero, as the official code].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the source noise [0].")] = None,
    size: Annotated[Optional[int], typer.Option(help="Short side of the processing size, rounded to 64 [the model's native size: unet sample_size x VAE scale, 512 for SD 1.5, 768 for SD 2.x 768-v, 128 for toy].")] = None,
    keep_size: Annotated[Optional[bool], typer.Option("--keep-size", help="Write at the processing size instead of the source size.")] = None,
    start: Annotated[Optional[str], typer.Option(help="Edit from this source frame number (120) or time (00:01:02.5, 62.5s) on; the output covers just the range, audio cut to match [0].")] = None,
    end: Annotated[Optional[str], typer.Option(help="Stop before this source frame number or time (exclusive: --start 10 --end 20 edits source frames 10-19) [the end].")] = None,
    every: Annotated[Optional[int], typer.Option(help="Take every N-th frame of the range (the output's rate is the source's / N) [1].")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Frame rate of an INPUT that is a folder of numbered PNG/JPEG frames (or a pattern like frames/%06d.png).")] = None,
    codec: Annotated[Optional[str], typer.Option(help="Output codec: h264, h265, prores (.mov), ffv1 (.mkv), vp9 (.webm) or png (-o names a folder of numbered frames + audio file) [vp9 for .webm, else h264].")] = None,
    pix_fmt: Annotated[Optional[str], typer.Option(help="Output pixel format where the codec allows: yuv420p, yuv422p, yuv444p and their 10-bit ...10le for h264/h265/ffv1; yuv422p10le or yuv444p10le for prores [yuv420p; prores yuv422p10le; ffv1 yuv444p].")] = None,
    crf: Annotated[Optional[int], typer.Option(help="Constant quality of h264/h265 (0-51) or vp9 (0-63), lower is better [18; h265 20; vp9 31].")] = None,
    window: Annotated[Optional[int], typer.Option(min=WINDOW_MIN, max=WINDOW_MAX, help=f"Frames per window, {WINDOW_MIN}-{WINDOW_MAX} [planned from --vram or free GPU memory on CUDA; 8 on CPU].")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Frames between window starts [window/2].")] = None,
    vram: Annotated[Optional[str], typer.Option(help="VRAM budget for the window planner, e.g. 24GB.")] = None,
    overlap_weights: Annotated[Optional[str], typer.Option(help="Merge of overlapping windows: uniform or pyramid [uniform].")] = None,
    rad: Annotated[Optional[bool], typer.Option("--rad/--no-rad", help="Re-Attentional Diffusion: move the objects to their regions [on].")] = None,
    rad_steps: Annotated[Optional[int], typer.Option(help="Guided first steps [steps/2].")] = None,
    step_size: Annotated[Optional[float], typer.Option(help="RAD step scale a [20].")] = None,
    step_schedule: Annotated[Optional[str], typer.Option(help="sqrt (official code) or linear (paper) decay 1 -> 0.5.")] = None,
    refine: Annotated[Optional[bool], typer.Option("--refine/--no-refine", help="Attend-and-Excite refinement [on with --preset paper].")] = None,
    topk_ratio: Annotated[Optional[float], typer.Option(help="Top-k share of each region in the loss [0.2].")] = None,
    token_mode: Annotated[Optional[str], typer.Option(help="Multi-token words: all tokens or the last [all].")] = None,
    attention_norm: Annotated[Optional[str], typer.Option(help="official (softmax x100 over the 75 columns 1..75 of 77), prompt (softmax over the prompt's tokens) or raw [official].")] = None,
    smoothing: Annotated[Optional[bool], typer.Option("--smoothing/--no-smoothing", help="Gaussian smoothing of the maps [on].")] = None,
    attention_temperature: Annotated[Optional[float], typer.Option(help="T of RAD's softmax(T A) over the columns (official 100; smaller keeps a map graded on a model without SD's start-token sink) [100].")] = None,
    step_norm: Annotated[Optional[str], typer.Option(help="none (official: x -= a grad) or rms (x -= a grad / RMS(grad)) [none].")] = None,
    rad_cells: Annotated[Optional[str], typer.Option(help="official (cells at least half covered) or irjs (only cells whose latents IRJS lets change) [official].")] = None,
    region_start: Annotated[Optional[str], typer.Option(help="inverted (official: x_T as inverted) or noise (x_T re-noised inside the regions) [inverted].")] = None,
    region_start_strength: Annotated[Optional[float], typer.Option(help="Share of noise variance for --region-start noise, 0..1 [1].")] = None,
    rad_diagnostics: Annotated[Optional[bool], typer.Option("--rad-diagnostics/--no-rad-diagnostics", help="Measure RAD's loss after each update for the report (one no-grad guided forward more per guided step) [on].")] = None,
    irjs: Annotated[Optional[bool], typer.Option("--irjs/--no-irjs", help="Keep everything outside the objects as in the source [on].")] = None,
    source_noise: Annotated[Optional[str], typer.Option(help="IRJS source latents: fresh (a new seeded draw per step, as the official code), fixed (one draw) or inversion (the DDIM trajectory) [fresh].")] = None,
    inversion_prompt: Annotated[Optional[str], typer.Option(help="Prompt of the DDIM inversion: auto (empty for reatco, as the official code; source for fatezero), source or empty [auto].")] = None,
    anchor: Annotated[Optional[str], typer.Option(help="Cross-frame attention anchor: window (each window's first frame, Tune-A-Video) or video (the video's first frame prepended to every window) [window].")] = None,
    paste_background: Annotated[Optional[bool], typer.Option("--paste-background/--no-paste-background", help="After decoding, put the source's own pixels back outside the regions: no VAE drift or flicker there [on for reatco with regions].")] = None,
    feather: Annotated[Optional[int], typer.Option(help="Width in pixels of the soft edge of the background paste [8].")] = None,
    mask_dilate: Annotated[Optional[int], typer.Option(help="Grow the object regions by N source pixels [0].")] = None,
    box_masks: Annotated[Optional[bool], typer.Option("--box-masks", help="Use each mask's bounding box (the paper's box regions).")] = None,
    min_area: Annotated[Optional[int], typer.Option(help="Drop tracked masks smaller than N pixels [0].")] = None,
    eval: Annotated[Optional[bool], typer.Option("--eval", help="Measure the output afterwards (`longedit eval` in the job's regions) and put the numbers into the report [off].")] = None,  # noqa: A002
    method: Annotated[Optional[str], typer.Option(help="reatco (RAD + IRJS, regions given) or fatezero (attention fusion, no masks needed) [reatco].")] = None,
    fuse_attention: Annotated[Optional[bool], typer.Option("--fuse-attention/--no-fuse-attention", help="Add FateZero attention fusion to --method reatco [off].")] = None,
    cross_replace_steps: Annotated[Optional[float], typer.Option(help="FateZero: fraction of first steps whose cross-attention follows the source's [0.8].")] = None,
    self_replace_steps: Annotated[Optional[float], typer.Option(help="FateZero: fraction of first steps whose self-attention is blended with the source's [0.5].")] = None,
    blend_threshold: Annotated[Optional[float], typer.Option(help="FateZero: threshold of the normalised cross-attention mask of the blend words [0.3].")] = None,
    fuse_resolution: Annotated[Optional[str], typer.Option(help="FateZero: finest fused layers, h16 (frame/16 and coarser: 32x32 at 512, official) or h32 [h16].")] = None,
    fuse_controller: Annotated[Optional[str], typer.Option(help="FateZero cross-attention: replace (word swaps), refine (added words) or auto (replace when both prompts have as many words) [auto].")] = None,
    equalize: Annotated[Optional[list[str]], typer.Option("--equalize", help="FateZero: WORD=SCALE scales the cross-attention of a word of --prompt (repeatable).")] = None,
    blend_word: Annotated[Optional[list[str]], typer.Option("--blend-word", help="FateZero: word of --source-prompt whose attention marks where the edit happens (repeatable) [the changed words].")] = None,
    fuse_source: Annotated[Optional[str], typer.Option(help="FateZero source maps: store (on disk), recompute (from the inversion trajectory) or auto (recompute when the store exceeds --fuse-disk-budget) [auto].")] = None,
    fuse_disk_budget: Annotated[Optional[str], typer.Option(help="FateZero: disk the attention store may take, e.g. 50GB [half the free disk].")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a JSON report (timing, memory, attention shares, windows).")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps into --work-dir [5].")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Share the DDIM inversion through this folder: another edit of the same clip and settings reuses it [off; on in `longedit run` and `watch`].")] = None,
    cache_size: Annotated[Optional[str], typer.Option(help=f"Cap of --cache-dir; least recently used inversions go first [{DEFAULT_CACHE_SIZE}].")] = None,
    attention_video: Annotated[Optional[Path], typer.Option(help="Also write a video of each object word's cross-attention (the maps RAD works on, at its steps) over the source frames, its region outlined; implies --attention-strips.")] = None,
    attention_strips: Annotated[Optional[bool], typer.Option("--attention-strips", help="Write <output stem>.attention-<word>.png per object word: a few steps x a few frames of its attention.")] = None,
    tune: Annotated[Optional[int], typer.Option(metavar="STEPS", min=1, help="Tune-A-Video-tune the model on this clip first, for STEPS steps at the official settings (200 in the paper; `longedit tune` has every option), cached beside the output and reused by later edits of the clip [off].")] = None,
    preview: Annotated[Optional[str], typer.Option(metavar="[N]", help="Edit only the first N frames [one window] at the job's settings, with attention pictures, into <output stem>.preview.mp4 (+ .preview.json, .preview.attention.mp4, strips); the output itself is not touched.")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="Folder for checkpoints: a rerun with the same job resumes from it. After a successful edit its checkpoint, inversion trajectory and attention maps are deleted (progress.json stays for `longedit status`).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Progress bars.")] = True,
) -> None:
    """Edit INPUT with text: objects named by words of --prompt go to their regions (RAD), the rest stays (IRJS).

    \b
    Example:
      longedit edit clip.mp4 -o out.mp4 --source-prompt "a man in a car" --prompt "a robot in a car" --object robot=40,10,150,144
    """
    values = dict(locals())
    values.pop("object")
    values.pop("work_dir")
    values.pop("progress")
    values["preset"] = preset.value if preset is not None else None
    values["preview"] = preview_value(preview)
    values["tune"] = {"steps": tune} if tune is not None else None
    values["objects"] = parse_object_args(object or [])
    if masks is not None:
        values["objects"] = _objects_with_masks(values["objects"], masks)
    job = build_job(values)
    run_and_summarise(job, work_dir=work_dir, progress=progress)


def _objects_with_masks(objects: list, masks: Path) -> list:
    """The objects of `--masks DIR`: its word sub-folders when no --object is given, else the given ones,
    of which at least one must take its region from the masks (a box of its own wins over --masks)."""
    if not masks.is_dir():
        raise UserError(f"mask folder '{masks}' does not exist", "give --masks DIR made by `longedit masks`")
    if not objects:
        words = sorted(p.name for p in masks.iterdir() if p.is_dir())
        if not words:
            raise UserError(
                f"mask folder '{masks}' has no word sub-folders", "give DIR/WORD/000000.png ... as written by `longedit masks`"
            )
        return parse_object_args(words)
    if all(obj.box is not None or obj.keyframes is not None for obj in objects):
        raise UserError(
            f"--masks '{masks}' would be ignored: every --object has a box",
            "name an object without a box, --object WORD, to take its region from the masks; or drop --masks",
        )
    return objects


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops `longedit edit` like Ctrl-C (a KeyboardInterrupt), in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:  # noqa: ANN001
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_message(work_dir: Path | None) -> str:
    """What an interrupted edit left behind: a resumable work folder, or nothing."""
    if work_dir is not None and work_dir.is_dir() and any(work_dir.iterdir()):
        return f"interrupted; rerun the same command to resume (checkpoint in {work_dir})"
    return "interrupted; nothing written"


def run_and_summarise(job: EditJob, work_dir: Path | None = None, progress: bool = True) -> dict:
    """Check the job (video, output, regions, the words against the tokenizer) before any long work, run
    it and print the summary. Ctrl-C or SIGTERM end it with exit 130 and a line saying what is left."""
    from longedit.engine import JobInterrupted, preflight, run_edit

    try:
        with _sigterm_as_interrupt():
            notices = preflight(job, work_dir)["notices"]
            for line in notices:  # before the long work: e.g. which occurrence of a repeated word is used
                typer.echo(f"warning: {line}", err=True)
            report = run_edit(job, work_dir=work_dir, progress=progress)
    except (KeyboardInterrupt, JobInterrupted):
        typer.echo(_interrupted_message(work_dir), err=True)
        raise typer.Exit(130) from None
    print_summary(report, frozenset(notices))
    if report.get("preview"):
        typer.echo(f"preview of the first {report['preview']['frames']} of {report['preview']['source_frames']} frames; "
                   f"report: {preview_job(job).report}")
    elif job.report is not None:
        typer.echo(f"report: {job.report}")
    return report


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(edit)
