"""Text -> image and image <-> latent with a loaded toy backbone (`longedit.models.Backbone`).

Small plain functions (DDIM, eta 0, classifier-free guidance) used by the quality gates and tests;
edits go through `longedit.engine` like any other model.
"""

from __future__ import annotations

import numpy as np
import torch

from longedit.ddim import DdimSchedule, ddim_move


@torch.no_grad()
def encode_prompts(backbone, prompts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states [N, 77, D] of the prompts, padded to 77 tokens as SD."""
    ids = backbone.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return backbone.text_encoder(ids.to(backbone.device))[0]


@torch.no_grad()
def encode_images(backbone, images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 -> scaled latents (posterior means) [N, 4, H/8, W/8]."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    vae = backbone.vae
    means = vae.encode(pixels.to(backbone.device, next(vae.parameters()).dtype)).latent_dist.mean
    return means.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(backbone, latents: torch.Tensor) -> np.ndarray:
    """Scaled latents -> uint8 NxHxWx3."""
    vae = backbone.vae
    pixels = vae.decode((latents / vae.config.scaling_factor).to(next(vae.parameters()).dtype)).sample
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(backbone, prompts: list[str], size: int = 128, steps: int = 25, guidance: float = 7.5, seed: int = 0) -> np.ndarray:
    """Images (uint8 NxHxWx3) for `prompts` by DDIM with classifier-free guidance."""
    generator = torch.Generator().manual_seed(seed)
    scale = backbone.vae_scale
    x = torch.randn((len(prompts), 4, size // scale, size // scale), generator=generator)
    x = x.to(backbone.device, backbone.dtype)
    context = torch.cat([encode_prompts(backbone, [""] * len(prompts)), encode_prompts(backbone, prompts)])
    schedule = DdimSchedule.from_scheduler(backbone.scheduler, steps)
    for index, timestep in enumerate(schedule.timesteps):
        t = torch.full((2 * len(prompts),), timestep, device=backbone.device)
        uncond, cond = backbone.unet(torch.cat([x, x]), t, context.to(backbone.dtype)).sample.chunk(2)
        eps = uncond + guidance * (cond - uncond)
        x = ddim_move(x, eps, schedule.alpha(timestep), schedule.alpha(schedule.previous(index)))
    return decode_latents(backbone, x.float())
