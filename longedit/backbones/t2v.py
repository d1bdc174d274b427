"""Text-to-video backbones: diffusers `UNet3DConditionModel` (ModelScope text-to-video and fine-tunes).

A folder such as damo-vilab/text-to-video-ms-1.7b has the Stable Diffusion layout (`unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`) with a `UNet3DConditionModel` in `unet/`. Only the UNet
loads differently; the adapter feeds it `[videos, C, frames, h, w]` and one embedding per video. Its
spatial layers still see `[videos*frames, tokens, C]`, so the capture processors work unchanged; its
temporal layers (`transformer_in`, `temp_attentions`, `temp_convs`) keep their own processors. No
anchor frame is prepended: the temporal layers would see the video's first frame as an extra,
far-away frame (a jump cut) next to every window, and the model does not need it (its self-attention
is per frame; windows are tied together by the temporal layers and the overlap averaging).

Random UNets (`random_t2v_unet`): `tiny` has the tiny layout of `longedit.random_models` (same 4-level
channel plan, attention only at latent/2 and latent/4); `full` the ModelScope 1.7B architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from longedit.backbones.kind import UNET_3D, BackboneKind, UNetAdapter

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
RANDOM_T2V_UNETS = {"tiny": TINY_T2V_UNET, "full": MODELSCOPE_T2V_UNET}


class VideoUNetAdapter(UNetAdapter):
    """[videos*frames, C, h, w] -> UNet3D [videos, C, frames, h, w] -> back; one embedding per video."""

    def call_unet(self, unet, x: torch.Tensor, timestep, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        total = x.shape[0]
        if frames < 1 or total % frames:
            raise ValueError(f"batch of {total} rows is not a whole number of {frames}-frame videos")
        videos = total // frames
        sample = x.reshape(videos, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        per_video = embedding.reshape(videos, frames, *embedding.shape[1:])[:, 0]
        out = unet(sample, timestep, encoder_hidden_states=per_video).sample
        return out.permute(0, 2, 1, 3, 4).reshape(total, *out.shape[1:2], *out.shape[3:])


def random_t2v_unet(size: str, seed: int, sd_unet: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A random UNet3DConditionModel of `size` (tiny or full); diffusers' init (sharpened by the caller)."""
    from diffusers import UNet3DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet3DConditionModel(**RANDOM_T2V_UNETS[size])


def load_t2v_unet(source: str, local_files_only: bool = False) -> torch.nn.Module:
    """diffusers UNet3DConditionModel from `source`/unet (folder or hub id)."""
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_files_only)


def save_t2v_folder(components: dict, folder: Path, safe_serialization: bool = True) -> Path:
    """Write components as a diffusers TextToVideoSDPipeline folder."""
    from diffusers import TextToVideoSDPipeline

    TextToVideoSDPipeline(**components).save_pretrained(folder, safe_serialization=safe_serialization)
    return Path(folder)


def has_t2v_weights(config: dict, keys: Iterable[str]) -> bool:
    """diffusers' own UNet3D layout: weight names of its temporal transformers."""
    return any(key.startswith("transformer_in.") or ".temp_attentions." in key for key in keys)


BACKBONE = BackboneKind(
    name="t2v",
    title="diffusers text-to-video",
    unet_class=UNET_3D,
    adapter=VideoUNetAdapter("t2v", uses_anchor=False, sparse_causal=False, supports_checkpointing=False, native_window=16),
    load_unet=load_t2v_unet,
    random_unet=random_t2v_unet,
    save_folder=save_t2v_folder,
    recognises=has_t2v_weights,
    temporal_layers=("transformer_in", "temp_attentions"),
)
