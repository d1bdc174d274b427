"""Random backbones of every kind for `longedit bench` (no downloads).

`build_bench_backbone(kind, size=...)`:

* `size="tiny"`: the tiny models of `longedit.backbones.tiny` (CPU smoke runs, seconds).
* `size="full"`: the real UNet architecture with random weights, so time and memory are those of a
  real run: SD 1.5 (`sd`, and `tuneavideo` = SD 1.5 + TAV temporal layers) or ModelScope
  text-to-video 1.7B (`t2v`). The text encoder and VAE are small stand-ins with the right
  cross-attention width (the diffusion loop never runs the VAE and runs the text encoder three times).
"""

from __future__ import annotations

import torch

from longedit.backbones.adapters import KINDS, T2V, TUNEAVIDEO
from longedit.models import Backbone, frozen_backbone

SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    sample_size=64,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32,
)


def _full_components(kind: str, device: torch.device, seed: int) -> dict:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from longedit.backbones.t2v import MODELSCOPE_T2V_UNET, build_t2v_unet
    from longedit.backbones.tuneavideo import attach_tuneavideo
    from longedit.tiny import build_tiny_components

    components = build_tiny_components(seed)  # VAE, tokenizer, scheduler stand-ins
    tokenizer = components["tokenizer"]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        if kind == T2V:
            unet = build_t2v_unet(seed, sharpness=1.0, **MODELSCOPE_T2V_UNET)
        else:
            unet = UNet2DConditionModel(in_channels=4, out_channels=4, **SD15_UNET)
            if kind == TUNEAVIDEO:
                attach_tuneavideo(unet)
        width = unet.config.cross_attention_dim
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), max_position_embeddings=77,
                hidden_size=width, intermediate_size=width, num_attention_heads=8, num_hidden_layers=2,
            )
        )
    components.update(unet=unet, text_encoder=text_encoder)
    return components


def build_bench_backbone(
    kind: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    size: str = "tiny",
) -> Backbone:
    """A frozen random Backbone of `kind` (sd, t2v, tuneavideo) on `device`/`dtype`; `size` tiny or full."""
    from longedit.backbones.tiny import build_tiny_components

    if kind not in KINDS:
        raise ValueError(f"unknown backbone kind '{kind}' (use one of {', '.join(KINDS)})")
    device = torch.device(device)
    if size == "tiny":
        components = build_tiny_components(kind, seed)
    elif size == "full":
        components = _full_components(kind, device, seed)
    else:
        raise ValueError(f"unknown bench size '{size}' (use tiny or full)")
    return frozen_backbone(components, f"bench-{kind}-{size}", device, dtype, kind)
