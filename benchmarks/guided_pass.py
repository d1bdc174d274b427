"""What each part of the memory plan removes from one RAD guided pass, measured device-independently.

Runs `VideoEditor.rad_gradient` once per variant on one window (L frames + the anchor) of a bench
preset and prints, per variant: the peak of live tensor bytes during forward + backward
(`TensorMemoryTracker`), the bytes autograd saved for backward (resident weights excluded), the
wall time, and the largest gradient difference to the plain pass (they must agree: truncation and
checkpointing change what is kept, not the math).

    python benchmarks/guided_pass.py --preset small --window 4
    python benchmarks/guided_pass.py --preset sd15 --window 16 --device cuda   # on a GPU

Variants: plain (full UNet on the gradient path, eager maps: the reference settings), + truncation
after the last H/32 capture layer, + gradient checkpointing (the optimized settings). On CUDA the
optimized variant also uses the fused Triton op (`kernel_backend="auto"`); on CPU `auto` is eager.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from longedit.memory import TensorMemoryTracker, saved_tensor_bytes
from longedit.bench.presets import PRESETS, build_backbone
from longedit.bench.run import PROMPT, SOURCE_PROMPT, WORD, bench_inputs, mode_settings
from longedit.editor import MAP_SCALE, VideoEditor
from longedit.models import resolve_device, resolve_dtype
from longedit.planner import format_bytes
from longedit.words import word_tokens


def measure(editor: VideoEditor, latents: torch.Tensor, masks) -> tuple[torch.Tensor, int, int, float]:
    """(gradient, tensor peak bytes, saved-for-backward bytes, seconds) of one guided pass."""
    device, dtype = editor.backbone.device, editor.backbone.dtype
    anchor = latents[:1].to(device, dtype)
    own = latents[1:].to(device, dtype)
    masks_map = masks.at_map_resolution(1, latents.shape[0], MAP_SCALE)
    start = time.perf_counter()
    with saved_tensor_bytes(editor.backbone.unet) as saved, TensorMemoryTracker() as tracker:
        grad, _ = editor.rad_gradient(anchor, own, editor.schedule.timesteps[0], masks_map)
    return grad.cpu(), tracker.peak, saved["bytes"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--window", type=int, default=4, help="frames of the window (the anchor is added)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    backbone = build_backbone(preset, device, dtype)
    size = args.size or preset.size
    latents, masks = bench_inputs(args.window + 1, size, seed=0)
    words = [word_tokens(backbone.tokenizer, PROMPT, WORD)]
    reference = mode_settings("reference", 4)
    variants = {
        "plain (reference settings)": reference,
        "+ truncation": replace(reference, truncate_guided_forward=True),
        "+ truncation + checkpointing (optimized)": replace(mode_settings("optimized", 4), record_attention=False),
    }
    print(f"{preset.name} at {size}x{size}, window {args.window} + anchor, {device} {str(dtype).replace('torch.', '')}")
    rows, base = [], None
    for name, settings in variants.items():
        editor = VideoEditor(backbone, settings, SOURCE_PROMPT, PROMPT, words)
        measure(editor, latents, masks)  # warm-up
        grad, peak, saved, seconds = measure(editor, latents, masks)
        base = grad if base is None else base
        diff = float((grad - base).abs().max() / base.abs().max().clamp(min=1e-30))
        rows.append((name, format_bytes(peak), format_bytes(saved), f"{seconds:.2f}", f"{diff:.1e}"))
    backbone.unet.disable_gradient_checkpointing()
    header = ("variant", "tensor peak", "saved for bwd", "seconds", "max |grad diff| / max |grad|")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
