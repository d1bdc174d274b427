"""Tiny random models of every backbone kind, in memory or saved as model folders (tests, smoke runs).

All share `longedit.tiny`'s VAE, text encoder, tokenizer and scheduler; only the UNet differs:

* `sd`: `longedit.tiny`'s UNet2DConditionModel.
* `t2v`: a tiny diffusers UNet3DConditionModel (`longedit.backbones.t2v.build_t2v_unet`), saved in the
  TextToVideoSDPipeline layout.
* `tuneavideo`: the tiny SD UNet with Tune-A-Video's temporal layers attached (random, non-zero
  `attn_temp`, unlike TAV's zero init, so the temporal path is exercised), saved in TAV's checkpoint
  layout (`unet/config.json` of TAV's UNet3DConditionModel, TAV state-dict keys).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from longedit.backbones.adapters import SD, T2V, TUNEAVIDEO


def build_tiny_components(kind: str = SD, seed: int = 0) -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler of the tiny model of `kind`."""
    from longedit.tiny import build_tiny_components as build_sd

    components = build_sd(seed)
    if kind == T2V:
        from longedit.backbones.t2v import build_t2v_unet

        components["unet"] = build_t2v_unet(seed)
    elif kind == TUNEAVIDEO:
        from longedit.backbones.tuneavideo import attach_tuneavideo

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            attach_tuneavideo(components["unet"])
    elif kind != SD:
        raise ValueError(f"unknown backbone kind '{kind}'")
    return components


def save_tiny_model(kind: str, folder: str | Path, seed: int = 0, safe_serialization: bool = True) -> Path:
    """Write the tiny model of `kind` as a model folder that `longedit.models.load_backbone` reads back."""
    folder = Path(folder)
    components = build_tiny_components(kind, seed)
    if kind == T2V:
        from diffusers import TextToVideoSDPipeline

        TextToVideoSDPipeline(**components).save_pretrained(folder, safe_serialization=True)
        return folder
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = components["unet"]
    if kind == TUNEAVIDEO:  # the pipeline writer wants a plain SD UNet; the TAV UNet is written after
        components["unet"] = UNet2DConditionModel.from_config(unet.config)
    StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(folder, safe_serialization=True)
    if kind == TUNEAVIDEO:
        from longedit.backbones.tuneavideo import save_tuneavideo_unet

        for old in (folder / "unet").iterdir():
            old.unlink()
        save_tuneavideo_unet(unet, folder / "unet", safe_serialization=safe_serialization)
        index = json.loads((folder / "model_index.json").read_text())
        index["_class_name"] = "TuneAVideoPipeline"
        index["unet"] = ["tuneavideo.models.unet", "UNet3DConditionModel"]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
