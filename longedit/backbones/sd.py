"""Stable Diffusion 1.x/2.x (and fine-tunes): diffusers `UNet2DConditionModel`, frames as batch rows.

Cross-frame attention comes from the processors of `longedit.attention`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from longedit.backbones.kind import UNET_2D, BackboneKind, UNetAdapter


def load_sd_unet(source: str, local_files_only: bool = False) -> torch.nn.Module:
    """diffusers UNet2DConditionModel from `source`/unet (folder or hub id)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_files_only)


def random_sd_unet(size: str, seed: int, sd_unet: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The random SD UNet itself."""
    return sd_unet()


def save_sd_folder(components: dict, folder: Path, safe_serialization: bool = True) -> Path:
    """Write SD components as a diffusers StableDiffusionPipeline folder (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(folder, safe_serialization=safe_serialization)
    return Path(folder)


BACKBONE = BackboneKind(
    name="sd",
    title="Stable Diffusion",
    unet_class=UNET_2D,
    adapter=UNetAdapter("sd"),
    load_unet=load_sd_unet,
    random_unet=random_sd_unet,
    save_folder=save_sd_folder,
)
