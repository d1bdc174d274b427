"""Benchmark models built in code with random weights (no downloads): `tiny`, `small`, `sd15`.

What the benchmark measures is the diffusion loop (inversion + edit steps over windows), so the
UNet is what matters: `sd15` is the full Stable Diffusion 1.5 UNet architecture (same compute and
memory as the real weights), `small` a scaled-down SD layout that runs on a CPU in minutes, `tiny`
the built-in tiny model for CI smoke runs. The models themselves are built in `longedit.random_models`.

The loop never runs the VAE (latents are random, no encode/decode) and runs the text encoder
only three times (prompt embeddings), so `tiny` and `small` use small stand-ins for them; `sd15`
builds both at their real sizes (CLIP ViT-L/14 text encoder, SD VAE) so that their weights count
in the peak memory as they would in a real run. Every preset uses the tiny CLIP tokenizer: the
bench prompts are made of its words.

Other backbone kinds (`--backbone t2v|tuneavideo`) run their tiny models, except under `sd15`,
which builds their full-size UNet (ModelScope text-to-video 1.7B; SD 1.5 + Tune-A-Video layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longedit.models import Backbone, frozen_backbone
from longedit.random_models import (
    CLIP_L_TEXT,
    SD15_UNET,
    SD_VAE,
    SMALL_SD_UNET,
    RandomArchitecture,
    build_random_components,
    build_tiny_components,
)

SD = "sd"  # the backbone kind whose layouts the presets describe


@dataclass(frozen=True)
class BenchPreset:
    """One benchmark model and its default run size (`model` None: the tiny model of each kind)."""

    name: str
    description: str
    size: int
    frames: int
    steps: int
    cpu_ok: bool
    model: RandomArchitecture | None = None
    full_size: bool = False  # other backbone kinds build their full-size UNet (else their tiny model)

    def notes(self) -> list[str]:
        """What differs from a real run, printed with the results."""
        notes = ["random weights; latents are random and the VAE never runs (the bench times the diffusion loop only)"]
        if self.model is None:
            notes.append("tiny UNet (block_out_channels 32,64,64,64): a smoke test, not a performance figure")
        elif not self.full_size:
            notes.append("VAE and text encoder are small stand-ins (they do not run in the loop)")
        else:
            notes.append("UNet, text encoder and VAE at SD 1.5 sizes (weights resident as in a real run)")
        return notes


PRESETS: dict[str, BenchPreset] = {
    "tiny": BenchPreset(
        name="tiny", description="built-in tiny random SD model (CI smoke run, seconds on CPU)",
        size=128, frames=16, steps=4, cpu_ok=True,
    ),
    "small": BenchPreset(
        name="small",
        description="scaled-down SD 1.x UNet: channels 64,128,256,256, 2 layers/block, 8 heads, cross-attention 768",
        size=256, frames=16, steps=4, cpu_ok=True,
        model=RandomArchitecture(
            unet=SMALL_SD_UNET, sample_size=256,
            text={"hidden_size": 768, "intermediate_size": 1024, "num_attention_heads": 12, "num_hidden_layers": 2},
        ),
    ),
    "sd15": BenchPreset(
        name="sd15",
        description="full SD 1.5 UNet architecture (320,640,1280,1280; 2 layers/block; 8 heads; cross-attention 768), random weights",
        size=512, frames=16, steps=50, cpu_ok=False,
        model=RandomArchitecture(unet=SD15_UNET, text=CLIP_L_TEXT, vae=SD_VAE, text_vocab=49408, sample_size=512),
        full_size=True,
    ),
}


def build_backbone(
    preset: BenchPreset, device: torch.device, dtype: torch.dtype, seed: int = 0, kind: str = SD
) -> Backbone:
    """A frozen Backbone of random `preset` components of backbone `kind` on `device`/`dtype`."""
    if preset.model is None or (kind != SD and not preset.full_size):
        components, size = build_tiny_components(seed, kind), "tiny"
    else:
        components, size = build_random_components(kind, preset.model, device, seed), "full"
    name = f"bench-{preset.name}" if kind == SD else f"bench-{kind}-{size}"
    return frozen_backbone(components, name, device, dtype, kind)
