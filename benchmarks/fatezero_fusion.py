"""FateZero's source attention kept on disk (`store`) vs regenerated from the inversion trajectory (`recompute`).

Runs the product's loop (`VideoEditor.inversion_step` then `edit_step` over `plan_windows` windows,
the fusion built by `longedit.fatezero.make_plan`, official settings: h16 layers, cross 0.8, self 0.5,
guidance 7.5, no RAD/IRJS) on a bench preset's random model and random source latents, once per
mode, and prints per mode: seconds per frame (inversion + edit, wall and CPU), UNet forwards, disk
bytes per frame of the fusion data, extra (truncated) UNet forwards per frame, and the largest latent
difference between the modes. Also prints what the store and the trajectory take per frame for the
full SD 1.5 UNet at 512x512, 50 steps, 16-frame windows (built on the meta device: nothing runs).

    python benchmarks/fatezero_fusion.py --preset small --threads 1
    python benchmarks/fatezero_fusion.py --preset sd15 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from longedit.bench.presets import PRESETS, build_backbone
from longedit.bench.run import PROMPT, SOURCE_PROMPT, bench_inputs
from longedit.editor import LoopSettings, VideoEditor
from longedit.fatezero import FusionSettings, build_cross_edit, make_plan
from longedit.models import resolve_device, resolve_dtype
from longedit.planner import format_bytes
from longedit.windows import plan_windows

MODES = ("store", "recompute")


def run_mode(backbone, mode: str, source: torch.Tensor, steps: int, windows, folder: Path) -> dict:
    """Inversion + edit with the fusion's maps from `mode`; returns timings, forwards, disk and the latents."""
    settings = LoopSettings(steps=steps, rad=False, irjs=False, guidance=7.5, record_attention=False, seed=0)
    editor = VideoEditor(backbone, settings, SOURCE_PROMPT, PROMPT, [])
    edit = build_cross_edit(backbone.tokenizer, SOURCE_PROMPT, PROMPT)
    plan = make_plan(
        backbone.unet, edit, FusionSettings(), steps, windows, tuple(source.shape[-2:]), folder / mode, source=mode,
        text_tokens=int(editor.cond.shape[1]),
    )
    fusion = plan.attach(editor)
    device = backbone.device
    try:
        cpu, clock = time.process_time(), time.perf_counter()
        latents = source.clone()
        for index in range(steps):
            latents = editor.inversion_step(latents, index, windows)
        _sync(device)
        inversion_s = time.perf_counter() - clock
        clock = time.perf_counter()
        for index in range(steps):
            latents, _ = editor.edit_step(latents, index, windows, None, None)
        _sync(device)
        edit_s = time.perf_counter() - clock
        cpu_s = time.process_time() - cpu
        frames = source.shape[0]
        report = fusion.report(frames)
        return {
            "mode": mode,
            "inversion_s": round(inversion_s, 3),
            "edit_s": round(edit_s, 3),
            "seconds_per_frame": (inversion_s + edit_s) / frames,
            "cpu_seconds_per_frame": cpu_s / frames,
            "unet_forwards": editor.unet_forwards,
            "disk_bytes_per_frame": report["disk_bytes_per_frame"],
            "extra_unet_forwards_per_frame": report["extra_unet_forwards_per_frame"],
            "layers": report["layers"],
            "latents": latents.float().cpu(),
        }
    finally:
        fusion.store.close(delete=True)
        editor.context.fusion = None


def sd15_footprint(frames: int = 1000, window: int = 16, steps: int = 50) -> dict:
    """Store vs trajectory bytes per frame for the SD 1.5 UNet at 512x512 (meta device, official settings)."""
    from diffusers import UNet2DConditionModel

    from longedit.tiny import build_tiny_tokenizer

    with torch.device("meta"):
        unet = UNet2DConditionModel(**PRESETS["sd15"].unet)
    edit = build_cross_edit(build_tiny_tokenizer(), SOURCE_PROMPT, PROMPT)
    plan = make_plan(unet, edit, FusionSettings(), steps, plan_windows(frames, window, window // 2), (64, 64), "unused")
    return {"frames": frames, "window": window, "steps": steps, **plan.modes()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--frames", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--order", default=",".join(MODES), help="modes in run order, e.g. recompute,store")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    frames, steps, size = args.frames or preset.frames, args.steps or preset.steps, args.size or preset.size
    backbone = build_backbone(preset, device, dtype, 0)
    source, _ = bench_inputs(frames, size, 0)
    windows = plan_windows(frames, args.window, max(1, args.window // 2))
    results = {}
    with tempfile.TemporaryDirectory(prefix="longedit-fatezero-") as folder:
        for mode in args.order.split(","):
            results[mode] = run_mode(backbone, mode, source, steps, windows, Path(folder))
    difference = float((results["store"].pop("latents") - results["recompute"].pop("latents")).abs().max())
    print(f"fatezero fusion on {preset.name}: {frames} frames, {steps} steps, {size}x{size}, window {args.window}, "
          f"{device} {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} torch threads, {results['store']['layers']} fused layers")
    print(f"{'mode':<10} {'s/frame':>8} {'cpu s/frame':>11} {'UNet fwd':>8} {'disk/frame':>11} {'extra fwd/frame':>15}")
    for mode, r in results.items():
        print(f"{mode:<10} {r['seconds_per_frame']:>8.3f} {r['cpu_seconds_per_frame']:>11.3f} {r['unet_forwards']:>8} "
              f"{format_bytes(r['disk_bytes_per_frame']):>11} {r['extra_unet_forwards_per_frame']:>15.2f}")
    print(f"largest latent difference store vs recompute: {difference:.5f}")
    sd15 = sd15_footprint()
    print(f"SD 1.5 UNet at 512x512, {sd15['steps']} steps, {sd15['window']}-frame windows: store "
          f"{format_bytes(sd15['store']['disk_bytes_per_frame'])}/frame, recompute "
          f"{format_bytes(sd15['recompute']['disk_bytes_per_frame'])}/frame + "
          f"{sd15['recompute']['extra_unet_forwards_per_frame']:.1f} truncated forwards/frame")
    if args.json:
        args.json.write_text(json.dumps({"preset": preset.name, "frames": frames, "steps": steps, "size": size,
                                         "window": args.window, "modes": results, "latent_difference": difference,
                                         "sd15_512": sd15}, indent=2))


if __name__ == "__main__":
    main()
