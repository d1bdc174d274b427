"""What longedit can edit with, decided from config files before any weight is loaded.

The loop is DDIM over an SD 1.x/2.x-style UNet: 4 latent input channels, text conditioning only, and
a scheduler with a DDPM noise schedule (betas) whose output is eps, v or x0. Anything else would load
and then fail mid-run or edit silently wrong, so it is refused here with one line:

* SDXL (its UNet also takes pooled text embeddings and size/crop time ids: `addition_embed_type`
  `text_time`), or any other added conditioning (class / image embeddings);
* inpainting (9 input channels: latents + mask + masked image), instruct-pix2pix (8), upscalers (7);
* flow-matching schedulers (SD3, FLUX: no betas, so no DDIM form), beta schedules DDIM cannot build,
  and prediction types it cannot read.
"""

from __future__ import annotations

from longedit.errors import UserError

SUPPORTED_FIX = "use a Stable Diffusion 1.x or 2.x model (or a fine-tune of one); SDXL, inpainting and flow-matching models are not supported"
DDIM_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # as longedit.ddim.predicted_noise reads them
LATENT_CHANNELS = 4


def _name(model: str) -> str:
    return f"model '{model}'" if model else "the model"


def check_unet_config(config: dict, model: str = "") -> None:
    """Refuse a UNet config longedit cannot edit with (SDXL, inpainting, other added conditioning)."""
    if config.get("addition_embed_type") == "text_time" or config.get("cross_attention_dim") == 2048:
        raise UserError(f"{_name(model)} is SDXL (its UNet also takes pooled text and size/crop time ids)", SUPPORTED_FIX)
    channels = config.get("in_channels", LATENT_CHANNELS)
    if channels != LATENT_CHANNELS:
        what = {9: "an inpainting UNet", 8: "an instruct-pix2pix UNet", 7: "an upscaler UNet"}.get(channels, "a UNet")
        raise UserError(f"{_name(model)} has {what} with {channels} input channels, not {LATENT_CHANNELS} latent channels", SUPPORTED_FIX)
    extra = config.get("addition_embed_type") or config.get("class_embed_type") or config.get("encoder_hid_dim_type")
    if extra:
        raise UserError(f"{_name(model)}'s UNet takes extra conditioning ({extra})", SUPPORTED_FIX)


def check_scheduler_config(config: dict, model: str = "") -> None:
    """Refuse a scheduler with no DDIM form (no betas, a schedule DDIM cannot build) or an unknown prediction type."""
    name = str(config.get("_class_name", ""))
    if "FlowMatch" in name or config.get("shift") is not None and "beta_schedule" not in config:
        raise UserError(f"{_name(model)} uses a flow-matching scheduler ({name}): it has no DDIM form", SUPPORTED_FIX)
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and schedule not in DDIM_BETA_SCHEDULES:
        raise UserError(
            f"{_name(model)}'s scheduler has the beta schedule '{schedule}', which DDIM cannot build",
            f"supported: {', '.join(DDIM_BETA_SCHEDULES)}",
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise UserError(
            f"{_name(model)} predicts '{prediction}', which the DDIM loop cannot read", f"supported: {', '.join(PREDICTION_TYPES)}"
        )
