"""Write a diffusers Stable Diffusion model as one original-layout (LDM) checkpoint file, as community
fine-tunes ship: the inverse of diffusers' single-file conversion (after diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py, generalised to any layers_per_block and to
blocks without attention, as the tiny and toy models have)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

RESNET_NAMES = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _unet_prefixes(unet) -> dict[str, str]:
    """diffusers module prefix -> LDM prefix for a UNet2DConditionModel."""
    config = unet.config
    per_block, levels = config.layers_per_block, len(config.block_out_channels)
    prefixes = dict(UNET_TOP)
    for i, kind in enumerate(config.down_block_types):
        for j in range(per_block):
            index = 1 + i * (per_block + 1) + j
            prefixes[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{index}.0"
            if "CrossAttn" in kind:
                prefixes[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{index}.1"
        if i < levels - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (per_block + 1)}.0.op"
    for i, kind in enumerate(config.up_block_types):
        attention = "CrossAttn" in kind
        for j in range(per_block + 1):
            index = i * (per_block + 1) + j
            prefixes[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{index}.0"
            if attention:
                prefixes[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{index}.1"
        if i < levels - 1:
            prefixes[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{i * (per_block + 1) + per_block}.{2 if attention else 1}"
    prefixes["mid_block.resnets.0"] = "middle_block.0"
    prefixes["mid_block.attentions.0"] = "middle_block.1"
    prefixes["mid_block.resnets.1"] = "middle_block.2"
    return prefixes


def _rename(key: str, prefixes: dict[str, str], inner: list[tuple[str, str]]) -> str:
    for hf, ldm in sorted(prefixes.items(), key=lambda item: -len(item[0])):
        if key.startswith(hf + "."):
            rest = key[len(hf) + 1 :]
            if "resnets" in hf:  # only resnets rename their inner layers; attentions keep diffusers' names
                for a, b in inner:
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a) :]
            return f"{ldm}.{rest}"
    raise KeyError(f"no LDM name for {key}")


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefixes(unet)
    return {f"model.diffusion_model.{_rename(k, prefixes, RESNET_NAMES)}": v for k, v in unet.state_dict().items()}


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    per_block, levels = vae.config.layers_per_block, len(vae.config.block_out_channels)
    prefixes = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    for i in range(levels):
        for j in range(per_block):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        for j in range(per_block + 1):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
        if i < levels - 1:
            prefixes[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
            prefixes[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{levels - 1 - i}.upsample"
    for part in ("encoder", "decoder"):
        for j in range(2):
            prefixes[f"{part}.mid_block.resnets.{j}"] = f"{part}.mid.block_{j + 1}"
        prefixes[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
    attention = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
    out = {}
    for key, value in vae.state_dict().items():
        name = key
        for hf, ldm in sorted(prefixes.items(), key=lambda item: -len(item[0])):
            if key.startswith(hf + "."):
                rest = key[len(hf) + 1 :]
                for a, b in attention + [("conv_shortcut", "nin_shortcut")]:
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a) :]
                name = f"{ldm}.{rest}"
                if ".attn_1." in name and value.ndim == 2:
                    value = value[:, :, None, None]  # LDM's attention projections are 1x1 convs
                break
        out[f"first_stage_model.{name}"] = value
    return out


def save_single_file(components: dict, path: Path) -> Path:
    """The components' UNet, VAE and text encoder as one LDM-layout .safetensors file (or .ckpt by suffix)."""
    tensors = {**unet_to_ldm(components["unet"]), **vae_to_ldm(components["vae"])}
    text = components["text_encoder"].state_dict()  # transformers 5 flattened CLIPTextModel: LDM keeps text_model.
    tensors.update({f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v for k, v in text.items()})
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    path = Path(path)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": tensors}, path)
    else:
        save_file(tensors, str(path))
    return path
