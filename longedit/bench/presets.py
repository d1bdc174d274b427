"""Benchmark models built in code with random weights (no downloads): `tiny`, `small`, `sd15`.

What the benchmark measures is the diffusion loop (inversion + edit steps over windows), so the
UNet is what matters: `sd15` is the full Stable Diffusion 1.5 UNet architecture (same compute and
memory as the real weights), `small` a scaled-down SD layout that runs on a CPU in minutes, `tiny`
the built-in tiny model (`longedit.tiny`) for CI smoke runs.

The loop never runs the VAE (latents are random, no encode/decode) and runs the text encoder
only three times (prompt embeddings), so `tiny` and `small` use small stand-ins for them; `sd15`
builds both at their real sizes (CLIP ViT-L/14 text encoder, SD VAE) so that their weights count
in the peak memory as they would in a real run. Every preset uses the tiny CLIP tokenizer: the
bench prompts are made of its words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from longedit.models import Backbone, frozen_backbone

SD_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
CLIP_L_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
SD_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32}


@dataclass(frozen=True)
class BenchPreset:
    """One benchmark model and its default run size.

    unet: UNet2DConditionModel keyword arguments (None: the built-in tiny model as a whole).
    text: CLIPTextConfig overrides; vae: AutoencoderKL overrides (None: the tiny stand-in).
    """

    name: str
    description: str
    size: int
    frames: int
    steps: int
    cpu_ok: bool
    unet: dict | None = None
    text: dict = field(default_factory=dict)
    vae: dict | None = None
    text_vocab: int | None = None

    def notes(self) -> list[str]:
        """What differs from a real run, printed with the results."""
        notes = ["random weights; latents are random and the VAE never runs (the bench times the diffusion loop only)"]
        if self.unet is None:
            notes.append("tiny UNet (block_out_channels 32,64,64,64): a smoke test, not a performance figure")
        elif self.vae is None:
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
        unet={
            "block_out_channels": (64, 128, 256, 256), "layers_per_block": 2, "cross_attention_dim": 768,
            "attention_head_dim": 8, "sample_size": 32, "down_block_types": SD_DOWN_BLOCKS,
            "up_block_types": SD_UP_BLOCKS, "norm_num_groups": 32,
        },
        text={"hidden_size": 768, "intermediate_size": 1024, "num_attention_heads": 12, "num_hidden_layers": 2},
    ),
    "sd15": BenchPreset(
        name="sd15",
        description="full SD 1.5 UNet architecture (320,640,1280,1280; 2 layers/block; 8 heads; cross-attention 768), random weights",
        size=512, frames=16, steps=50, cpu_ok=False,
        unet={
            "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "cross_attention_dim": 768,
            "attention_head_dim": 8, "sample_size": 64, "down_block_types": SD_DOWN_BLOCKS,
            "up_block_types": SD_UP_BLOCKS, "norm_num_groups": 32,
        },
        text=CLIP_L_TEXT,
        vae=SD_VAE,
        text_vocab=49408,
    ),
}


def _text_encoder(preset: BenchPreset, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        vocab_size=preset.text_vocab or len(tokenizer), max_position_embeddings=77, layer_norm_eps=1e-5, **preset.text,
    )
    return CLIPTextModel(config)


def _vae(preset: BenchPreset):
    from diffusers import AutoencoderKL

    settings = {"block_out_channels": (16, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 16}
    settings.update(preset.vae or {})
    levels = len(settings["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=preset.size,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels, **settings,
    )


def build_components(preset: BenchPreset, device: torch.device, seed: int = 0) -> dict:
    """Random components of `preset`, created directly on `device` (fast init on a GPU)."""
    from diffusers import UNet2DConditionModel

    from longedit.tiny import build_tiny_components, build_tiny_tokenizer

    if preset.unet is None:
        return build_tiny_components(seed)
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **preset.unet)
        text_encoder = _text_encoder(preset, tokenizer)
        vae = _vae(preset)
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def build_backbone(preset: BenchPreset, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Backbone:
    """A frozen Backbone of random `preset` components on `device`/`dtype` (as load_backbone freezes)."""
    components = build_components(preset, device, seed)
    return frozen_backbone(components, f"bench-{preset.name}", device, dtype)
