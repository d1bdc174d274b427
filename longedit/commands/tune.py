"""`longedit tune`: one-shot Tune-A-Video tuning of a clip, the backbone the paper edits with.

The result is a model folder: `longedit edit CLIP --model FOLDER ...` loads it (backbone detected).
"""

from __future__ import annotations

import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from longedit.errors import JobInterrupted, UserError


class Optimizer(str, Enum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"


class MixedPrecision(str, Enum):
    auto = "auto"
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


def default_work_dir(output: Path) -> Path:
    """Where `longedit tune -o OUT` keeps its latent cache and checkpoints: a hidden folder beside OUT."""
    return output.parent / f".{output.name}.tune-work"


def _settings(values: dict):
    """TuneSettings from the flags given; a bad value is a one-line error naming its flag."""
    from longedit.config import TuneSettings

    try:
        return TuneSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "a setting"
        raise UserError(f"{flag}: {first['msg'].removeprefix('Value error, ')}", "see longedit tune --help") from None


def _summary(info: dict, output: Path, clip: Path) -> None:
    loss, window, timing = info["loss"], info["window"], info["timing"]
    trainable = info["trainable"]
    typer.echo(
        f"wrote {output}: Tune-A-Video on {info['base_model']}, {info['settings']['steps']} steps on "
        f"{window['frames']}-frame windows (stride {window['stride']}) of {info['clip']['frames']} frames, "
        f"{trainable['parameters']:,} trainable parameters, {timing['train_s']:.1f} s"
    )
    typer.echo(
        f"  loss on {loss['fixed_samples']} fixed draws: {loss['fixed_before']:.4f} -> {loss['fixed_after']:.4f}; "
        f"optimizer state {info['optimizer']['state_bytes'] / 2**20:.2f} MiB ({info['optimizer']['name']})"
    )
    if window["note"]:
        typer.echo(f"  note: {window['note']}")
    typer.echo(f"edit with: longedit edit {clip} --model {output} --source-prompt '{info['prompt']}' --prompt ...")


def tune(
    clip: Annotated[Path, typer.Argument(help="The source clip (any length: each step trains on a window anywhere in it).")],
    prompt: Annotated[str, typer.Option(help="Source prompt describing the clip, e.g. 'a man talking on a phone in a car'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New folder for the tuned model (written under a temp name, renamed when done).")],
    model: Annotated[Optional[str], typer.Option(help="Base Stable Diffusion folder or hub id [env LONGEDIT_MODEL, else SD 1.5; the paper: SD 1.4]; 'tiny' or 'toy' for built-in models.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps [200].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate, constant [3e-5].")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per training window [16].")] = None,
    frame_stride: Annotated[Optional[int], typer.Option(help="Frames between the frames of a window [1].")] = None,
    trainable: Annotated[Optional[str], typer.Option(help="Comma-separated ends of the module names to train [attn1.to_q,attn2.to_q,attn_temp].")] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option(help="adamw, or adamw8bit (bitsandbytes' 8-bit AdamW: pip install 'longedit[quant]') [adamw].")] = None,
    mixed_precision: Annotated[Optional[MixedPrecision], typer.Option(help="auto (fp16 on CUDA, no on CPU), no, fp16 or bf16 [auto].")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in the backward pass: less memory, more time [on].")] = None,
    deepspeed: Annotated[Optional[bool], typer.Option("--deepspeed", help="DeepSpeed ZeRO-2 with the optimizer state offloaded to CPU (CUDA; pip install 'longedit[deepspeed]').")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the windows, noise and timesteps [33, as the official configs].")] = None,
    size: Annotated[Optional[int], typer.Option(help="Short side of the training frames, rounded to 64 [512].")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps [50].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    local_files_only: Annotated[bool, typer.Option("--local-files-only", help="Never reach the hub.")] = False,
    work_dir: Annotated[Optional[Path], typer.Option(help="Latent cache and checkpoints; a rerun with the same arguments resumes [.OUTPUT.tune-work beside -o].")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Progress bar with loss and ETA; --quiet also silences the libraries' warnings and bars.")] = True,
) -> None:
    """Tune Tune-A-Video on CLIP (one shot, official ReAtCo settings) and write a model folder for `longedit edit`.

    \b
    Example:
      longedit tune clip.mp4 --prompt "a man in a car" -o tuned/ --model CompVis/stable-diffusion-v1-4
      longedit edit clip.mp4 --model tuned/ --source-prompt "a man in a car" --prompt "a robot in a car" -o out.mp4 ...
    """
    from longedit.config import default_model
    from longedit.commands.jobs import graceful_stop
    from longedit.quiet import quiet_libraries
    from longedit.tune.trainer import tune_clip

    settings = _settings(
        dict(
            steps=steps, lr=lr, frames=frames, frame_stride=frame_stride, trainable=trainable,
            optimizer=optimizer.value if optimizer else None,
            mixed_precision=mixed_precision.value if mixed_precision else None,
            gradient_checkpointing=gradient_checkpointing, deepspeed=deepspeed, seed=seed, size=size,
            checkpoint_every=checkpoint_every,
        )
    )
    work = work_dir or default_work_dir(output)
    stop = threading.Event()
    try:
        with graceful_stop(stop.set), quiet_libraries(not progress):
            info = tune_clip(
                clip, prompt, output, settings, model=model or default_model(), work_dir=work, device=device,
                local_files_only=local_files_only, progress=progress, stop_event=stop,
            )
    except (KeyboardInterrupt, JobInterrupted):
        resumable = work.is_dir() and any(work.iterdir())
        typer.echo(
            f"interrupted; rerun the same command to resume (checkpoint in {work})" if resumable else "interrupted; nothing written",
            err=True,
        )
        raise typer.Exit(130) from None
    _summary(info, output, clip)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(tune)
