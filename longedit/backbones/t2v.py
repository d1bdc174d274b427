"""Text-to-video backbones: diffusers `UNet3DConditionModel` (ModelScope text-to-video and fine-tunes).

A folder such as damo-vilab/text-to-video-ms-1.7b has the Stable Diffusion layout (`unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`) with a `UNet3DConditionModel` in `unet/`. Only the UNet
loads differently; `longedit.backbones.adapters` feeds it `[videos, C, frames, h, w]`.

`build_t2v_unet` makes random ones: by default the tiny layout of `longedit.tiny` (same 4-level channel
plan, attention only at latent/2 and latent/4), with the init of the spatial cross-attention
`to_q`/`to_k` sharpened as `longedit.tiny` does, so that RAD has a gradient to follow (DESIGN.md 4).
The temporal layers keep diffusers' init.
"""

from __future__ import annotations

import torch

from longedit.attention import is_temporal_layer

TINY_T2V_UNET = dict(
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
#: The ModelScope text-to-video 1.7B UNet architecture (random weights, for benchmarks).
MODELSCOPE_T2V_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=1024,
    attention_head_dim=64,
    norm_num_groups=32,
)


def sharpen_cross_attention(unet: torch.nn.Module, factor: float) -> None:
    """Scale the `to_q`/`to_k` init of every spatial `attn2` (peaky attention, as trained models have)."""
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2") and not is_temporal_layer(name):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)


def build_t2v_unet(seed: int = 0, sharpness: float | None = None, **overrides) -> torch.nn.Module:
    """A random UNet3DConditionModel (the tiny layout unless `overrides` say otherwise)."""
    from diffusers import UNet3DConditionModel

    from longedit.tiny import ATTENTION_SHARPNESS

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3DConditionModel(**{**TINY_T2V_UNET, **overrides})
    sharpen_cross_attention(unet, ATTENTION_SHARPNESS if sharpness is None else sharpness)
    return unet


def load_t2v_unet(source: str, local_files_only: bool = False) -> torch.nn.Module:
    """diffusers UNet3DConditionModel from `source`/unet (folder or hub id)."""
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_files_only)
