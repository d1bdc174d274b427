"""`longedit bench memory`: the memory simulation (`longedit.simulation`) on a bench preset, for the
optimized settings (longedit on CUDA) and the official ReAtCo settings.

The preset's model is built on the meta device (SD 1.5's 1.1 B parameters cost nothing) and its
weights become fake tensors; `fake=False` builds it for real on the CPU and runs the same ops (the check
of the simulation on small presets).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from longedit.bench.presets import PRESETS, build_backbone
from longedit.bench.run import PROMPT, SOURCE_PROMPT, WORD, bench_inputs, mode_settings
from longedit.simulation import CUDA_BLOCK, SIM_DEVICE, simulate_window, to_fake
from longedit.words import word_tokens

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
SETTINGS = ("optimized", "official")
VAE_CHUNK = 8  # longedit.engine.VAE_CHUNK (the bench may not import the engine's internals for it)


def simulation_settings(setting: str, steps: int = 50):
    """Loop settings of `setting` as a GPU run takes them: `optimized` (the product on CUDA: truncated,
    checkpointed guided pass, the fused maps' op) or `official` (ReAtCo's: full UNet on the gradient path,
    no checkpointing, eager maps, RAD at every step); refinement on in both (the official default)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown settings '{setting}' (use {' or '.join(SETTINGS)})")
    settings = mode_settings("optimized" if setting == "optimized" else "reference", steps, refine=True)
    return replace(settings, kernel_backend="triton") if setting == "optimized" else settings


def simulate_preset(
    preset: str = "sd15",
    window: int = 16,
    dtype: str = "float16",
    setting: str = "optimized",
    size: int | None = None,
    fake: bool = True,
    round_to: int = CUDA_BLOCK,
) -> dict:
    """Simulated peak bytes, per-phase peaks and FLOPs of one `window`-frame window on `preset`."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    chosen = PRESETS[preset]
    size = size or chosen.size
    precision = DTYPES[dtype]
    settings = simulation_settings(setting)
    fake_mode = None
    if fake:
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        backbone = build_backbone(chosen, torch.device("meta") if chosen.model else SIM_DEVICE, precision, seed=0)
        for module in (backbone.unet, backbone.text_encoder, backbone.vae):
            to_fake(module, fake_mode)
        backbone.device = SIM_DEVICE
    else:
        backbone = build_backbone(chosen, SIM_DEVICE, precision, seed=0)
        settings = replace(settings, kernel_backend="reference" if setting == "official" else "auto")
    words = [word_tokens(backbone.tokenizer, PROMPT, WORD)]
    result = simulate_window(
        backbone, settings, lambda: bench_inputs(window, size, seed=0), SOURCE_PROMPT, PROMPT, words, fake_mode=fake_mode, round_to=round_to,
        vae_chunk=VAE_CHUNK,
    )
    result["settings"] = {"name": setting, **result["settings"]}
    result.update(preset=preset, size=size, dtype=dtype)
    return result
