"""What a job's model says before it is loaded: its native processing size (from config files only).

Diffusers pipelines default to `unet.config.sample_size * vae_scale_factor` (the VAE's scale factor is
`2 ** (len(vae.config.block_out_channels) - 1)`): 512 for SD 1.5, 768 for SD 2.x 768-v, 128 for the toy
model. The processing size follows it unless `--size` is given; a `--size` far from it (out of the
model's training distribution: slower and usually worse, or too small for its attention) gets a one-line
warning. `prepare` decides this before any weight loads, so only the JSON configs are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from longedit.backbones.support import check_scheduler_config, check_unet_config
from longedit.errors import UserError

FALLBACK_SIZE = 512  # SD 1.x's, when the model's configs cannot be read before loading (a hub id offline)
FAR_RATIO = 1.5  # a --size more than this factor above or below the native size is warned about


@dataclass(frozen=True)
class SizeChoice:
    """The processing short side of a job and why (the report's `processing_size_choice`)."""

    short_side: int
    native: int | None
    reason: str
    warning: str | None = None

    def to_report(self) -> dict:
        return {"short_side": self.short_side, "native": self.native, "reason": self.reason}


def _read_config(source: str, subfolder: str, local_files_only: bool) -> dict:
    path = Path(source) / subfolder / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    if Path(source).is_dir():
        raise OSError(f"no {subfolder}/config.json in '{source}'")
    from diffusers import UNet2DConditionModel

    return dict(UNet2DConditionModel.load_config(source, subfolder=subfolder, local_files_only=local_files_only))


def _vae_config(job) -> dict | None:
    """The --vae's config when it replaces the model's VAE and is a folder (a single file keeps the model's config)."""
    if job.vae is None:
        return None
    path = Path(job.vae).expanduser()
    for candidate in (path / "config.json", path / "vae" / "config.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def native_size(job) -> tuple[int, str]:
    """(short side, where it comes from) of `job.model` (an `EditJob`), from its UNet and VAE configs.

    Raises OSError/ValueError when the configs cannot be read (a hub id that is not cached, offline)."""
    from longedit.models import TINY, config_source

    if job.model == TINY:
        from longedit.random_models import TINY_SD_UNET, TINY_VAE

        unet, vae = TINY_SD_UNET, {"block_out_channels": TINY_VAE["block_out_channels"]}
        where = "the tiny model"
    else:
        source = config_source(job.model, job.checkpoint_config, job.local_files_only)
        unet = _read_config(source, "unet", job.local_files_only)
        check_unet_config(unet, job.model)  # SDXL, inpainting: refused before any decoding
        scheduler = Path(source) / "scheduler" / "scheduler_config.json"
        if scheduler.is_file():  # a local folder's scheduler too (a hub id's is checked when it loads)
            check_scheduler_config(json.loads(scheduler.read_text()), job.model)
        vae = _vae_config(job) or _read_config(source, "vae", job.local_files_only)
        where = f"'{source}'" if source != job.model else f"'{job.model}'"
    sample = unet.get("sample_size")
    sample = min(sample) if isinstance(sample, (list, tuple)) else sample
    if not isinstance(sample, int) or sample < 1:
        raise ValueError(f"no sample_size in the UNet config of {where}")
    scale = 2 ** (len(vae.get("block_out_channels", (0, 0, 0, 0))) - 1)
    return sample * scale, f"unet sample_size {sample} x VAE scale {scale} of {where}"


def choose_size(job) -> SizeChoice:
    """The job's processing short side: `--size` if given (warned about when far from native), else native."""
    try:
        native, where = native_size(job)
    except (OSError, ValueError) as error:  # (a UserError, e.g. an SDXL model, passes through)
        if job.size is not None:
            return SizeChoice(job.size, None, "--size")
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        return SizeChoice(FALLBACK_SIZE, None, f"default {FALLBACK_SIZE}: the model's config could not be read ({reason})")
    if job.size is None:
        return SizeChoice(native, native, f"the model's native size ({where})")
    warning = None
    far = job.size > native * FAR_RATIO or job.size * FAR_RATIO < native
    if far and job.model != "tiny":  # the tiny model is random: no size is in its distribution
        warning = (f"--size {job.size} is far from the model's native {native} px: out of its training distribution "
                   f"({'slower, ' if job.size > native else ''}often worse); leave --size out to use {native}")
    return SizeChoice(job.size, native, "--size", warning)


def check_model_inputs(job) -> SizeChoice:
    """What `prepare` checks of the model before any weight loads: the LoRA files and the VAE exist, the
    model is one longedit can edit with (from its configs), and the processing size (`choose_size`)."""
    from longedit.model_extras import check_vae_path, lora_file

    for spec in job.lora:
        lora_file(spec)
    check_vae_path(job.vae)
    if job.checkpoint_config is not None:
        from longedit.single_file import is_single_file

        if not is_single_file(job.model):
            raise UserError("--checkpoint-config is for a single-file --model (.safetensors/.ckpt)", "drop --checkpoint-config")
    return choose_size(job)


def model_extras_report(job) -> dict:
    """The report's `model_extras`: the single file's config, the fused LoRAs and the replacing VAE."""
    return {
        "checkpoint_config": job.checkpoint_config,
        "loras": [spec.describe() for spec in job.lora],
        "vae": job.vae,
    }
