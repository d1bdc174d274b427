"""Memory of a Tune-A-Video tuning: optimizer state per optimizer, and the peak of a tuning step.

    python benchmarks/tune_memory.py state --preset sd15                 # any machine (meta UNet, real state tensors)
    python benchmarks/tune_memory.py step --preset small --frames 16     # one tuning run of `--steps` steps
    python benchmarks/tune_memory.py step --preset sd15 --device cuda --frames 16 --size 512   # on a GPU

`state`: builds the preset's UNet with Tune-A-Video's temporal layers on the meta device (no memory),
selects the official trainable modules (`attn1.to_q`, `attn2.to_q`, `attn_temp`) with the same code as
`longedit tune`, makes real fp32 tensors of those shapes, gives them gradients and takes one optimizer
step; the state bytes are the sum of the optimizer's own tensors (`optimizer_state_bytes`). `adamw8bit`
is measured when bitsandbytes imports and runs here, else reported as not measured. ZeRO-2 with CPU
offload is computed, not measured (DeepSpeed needs CUDA): the device keeps no optimizer state; the host
keeps the fp32 master weights and both Adam moments, 12 bytes per trainable parameter, plus fp32
gradients (4 bytes) in its offload buffers.

`step`: random weights of the preset (`longedit.bench.presets`), a random clip posterior on disk, and the
real training loop (`longedit.tune.trainer.train`) for `--steps` steps; the peak is the CUDA allocator's
on a GPU, else the peak of live tensor bytes created during the run (`longedit.memory.DevicePeak`:
activations, gradients and optimizer state, not the resident weights).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from longedit.backbones.tuneavideo import attach_tuneavideo
from longedit.config import TuneSettings
from longedit.errors import UserError
from longedit.random_models import SD15_UNET, SMALL_SD_UNET, TINY_SD_UNET
from longedit.tune import optim
from longedit.tune.trainer import trainable_parameters

ARCHITECTURES = {"tiny": TINY_SD_UNET, "small": SMALL_SD_UNET, "sd15": SD15_UNET}


def mib(value: int) -> str:
    return f"{value / 2**20:.2f} MiB"


def trainable_shapes(preset: str) -> tuple[list[torch.Size], int]:
    """Shapes of the official trainable tensors of the preset's TAV UNet, and the UNet's parameter count."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES[preset])
        attach_tuneavideo(unet, identity=True)
    params = trainable_parameters(unet, list(TuneSettings().trainable))
    return [p.shape for p in params.values()], sum(p.numel() for p in unet.parameters())


def state_bytes(name: str, shapes: list[torch.Size]) -> int | str:
    """Measured optimizer state bytes after one step over real tensors of `shapes`, or why not measured."""
    if name == "adamw8bit":
        try:
            optim.check_bitsandbytes(torch.device("cpu"))
        except UserError as error:
            return f"not measured: {error}"
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
    optimizer = optim.make_optimizer(TuneSettings(optimizer=name), params)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    optimizer.step()
    return optim.optimizer_state_bytes(optimizer)


def run_state(args: argparse.Namespace) -> dict:
    shapes, unet_params = trainable_shapes(args.preset)
    trainable = sum(int(np.prod(s)) for s in shapes)
    rows = {name: state_bytes(name, shapes) for name in ("adamw", "adamw8bit")}
    rows["deepspeed-zero2-offload (computed)"] = {"device": 0, "host": 12 * trainable, "host_gradients": 4 * trainable}
    result = {"preset": args.preset, "unet_parameters": unet_params, "trainable_tensors": len(shapes),
              "trainable_parameters": trainable, "trainable_fp32_bytes": 4 * trainable, "optimizer_state_bytes": rows}
    print(f"{args.preset}: {trainable:,} trainable of {unet_params:,} UNet parameters ({len(shapes)} tensors, {mib(4 * trainable)} fp32)")
    for name, value in rows.items():
        shown = value if isinstance(value, str) else (mib(value) if isinstance(value, int) else
                                                      f"device 0, host {mib(value['host'])} (+ {mib(value['host_gradients'])} gradients)")
        print(f"  {name:36s} {shown}")
    return result


def run_step(args: argparse.Namespace) -> dict:
    from diffusers import DDPMScheduler

    from longedit.bench.presets import PRESETS
    from longedit.memory import DevicePeak
    from longedit.models import resolve_device
    from longedit.random_models import build_random_components, build_tiny_components
    from longedit.tune.clip import ClipPosterior, WindowPlan, latents_path
    from longedit.tune.trainer import Checkpoints, TuneRun, build_tuneavideo_unet, encode_prompt, train

    device = resolve_device(args.device)
    preset = PRESETS[args.preset]
    components = (build_tiny_components() if preset.model is None
                  else build_random_components("sd", preset.model, torch.device("cpu")))
    settings = TuneSettings(
        steps=args.steps, frames=args.frames, optimizer=args.optimizer, mixed_precision=args.mixed_precision,
        gradient_checkpointing=not args.no_checkpointing, checkpoint_every=10**6, size=args.size,
    )
    precision = optim.check_request(settings, device)
    unet = build_tuneavideo_unet(components, settings.seed)
    params = trainable_parameters(unet, settings.trainable)
    embedding = encode_prompt(components["tokenizer"], components["text_encoder"], "a red square on a road", torch.device("cpu"))
    side = args.size // 8
    with tempfile.TemporaryDirectory() as work:
        rows = np.random.default_rng(0).standard_normal((args.frames, 2, 4, side, side)).astype(np.float16)
        rows[:, 1] = 0.05
        np.save(latents_path(Path(work), "bench"), rows)
        run = TuneRun(
            unet=unet, params=params, posterior=ClipPosterior(latents_path(Path(work), "bench")),
            plan=WindowPlan.fit(args.frames, args.frames, 1), embedding=embedding,
            scheduler=DDPMScheduler.from_config(components["scheduler"].config), settings=settings, device=device,
            precision=precision, checkpoints=Checkpoints(Path(work), "bench", params, settings.deepspeed),
        )
        unet.to(device)
        started = time.perf_counter()
        with DevicePeak(device) as peak:
            progress, state, _ = train(run, progress_bar=False)
        seconds = time.perf_counter() - started
    result = {
        "preset": args.preset, "device": str(device), "size": args.size, "frames": args.frames, "steps": args.steps,
        "optimizer": args.optimizer, "mixed_precision": precision.name, "gradient_checkpointing": not args.no_checkpointing,
        "peak_bytes": peak.peak, "peak_metric": peak.metric, "optimizer_state_bytes": state,
        "train_seconds_per_step": progress.train_s / len(progress.losses), "wall_seconds": seconds,
        "losses": progress.losses,
    }
    print(f"{args.preset} {args.size}px {args.frames} frames, {args.optimizer}, {precision.name}, checkpointing "
          f"{'on' if settings.gradient_checkpointing else 'off'}: peak {mib(peak.peak)} ({peak.metric}), optimizer state "
          f"{mib(state)}, {progress.train_s / len(progress.losses):.2f} s per training step")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("state", "step"))
    parser.add_argument("--preset", default="tiny", choices=sorted(ARCHITECTURES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw8bit"))
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "fp16", "bf16"))
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="append the result as one JSON line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_state(args) if args.what == "state" else run_step(args)
    if args.json is not None:
        with args.json.open("a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
