"""What a user adds to a backbone: LoRAs (`--lora PATH[:SCALE]`, fused into the weights) and a VAE (`--vae`).

* LoRA: diffusers' LoRA loading (`load_lora_weights`, the peft backend) reads kohya/A1111 and diffusers
  LoRA files into the UNet and text encoder; each gets its scale (`set_adapters`), then all are fused into
  the weights (`fuse_lora`) and the LoRA layers removed (`unload_lora_weights`): the edit then runs at the
  plain model's speed, and the inversion cache (which digests the weights) sees the fused model. A LoRA
  that fits none of the model's layers, or not their shapes (made for another architecture, e.g. SDXL),
  is refused with one line.
* VAE: a diffusers AutoencoderKL folder (its config.json, or a model folder's vae/), a hub id, or a
  single .safetensors/.ckpt file converted with the model's own VAE config.

`LoraSpec` and the path checks import no torch: `longedit.config` and `prepare` use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longedit.errors import UserError

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_FIX = "pass --lora FILE.safetensors[:SCALE] (or a folder holding pytorch_lora_weights.safetensors)"


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA: its file and the scale its weights are fused at (1 = as trained, 0 = no effect)."""

    path: str
    scale: float = 1.0

    @staticmethod
    def parse(value: str) -> "LoraSpec":
        """`PATH` or `PATH:SCALE` (the last `:` starts a scale only when a number follows: `C:\\x` stays a path)."""
        head, sep, tail = str(value).rpartition(":")
        if sep and head:
            try:
                return LoraSpec(head, float(tail))
            except ValueError:
                pass
        return LoraSpec(str(value), 1.0)

    def describe(self) -> dict:
        return {"path": self.path, "scale": self.scale}


def lora_file(spec: LoraSpec) -> Path:
    """The LoRA's weight file (UserError if there is none)."""
    path = Path(spec.path).expanduser()
    if path.is_dir() and (path / LORA_WEIGHT_NAME).is_file():
        return path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise UserError(f"LoRA '{spec.path}' does not exist", LORA_FIX)
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"LoRA '{spec.path}' is not a .safetensors file", LORA_FIX)
    return path


def check_vae_path(vae: str | None) -> None:
    """A local --vae must exist (a hub id is checked when it loads)."""
    if vae is None:
        return
    path = Path(vae).expanduser()
    local = vae.startswith((".", "/", "~")) or path.exists() or path.suffix.lower() in (".safetensors", ".ckpt")
    if local and not path.exists():
        raise UserError(f"VAE '{vae}' does not exist", "pass --vae a diffusers VAE folder, a model folder with vae/, a .safetensors file or a hub id")
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "vae" / "config.json").is_file():
        raise UserError(f"'{vae}' is not a diffusers VAE folder (no config.json or vae/config.json)", "pass the VAE's folder or its .safetensors file")


def _first_line(error: Exception) -> str:
    """The error's text on one line (torch's state-dict errors put the reason on the second line)."""
    text = " ".join(str(error).split())
    return text[:240] if text else type(error).__name__


def load_vae(vae: str, model_source: str | None, local_files_only: bool = False):
    """The AutoencoderKL named by `--vae` (see the module docstring); `model_source` gives a single file its config."""
    from diffusers import AutoencoderKL

    check_vae_path(vae)
    path = Path(vae).expanduser()
    try:
        if path.is_file():
            if model_source is None:
                raise UserError(f"VAE file '{vae}' needs the model's VAE config", "use a model folder or hub id with --vae FILE, or a VAE folder")
            return AutoencoderKL.from_single_file(str(path), config=model_source, subfolder="vae", local_files_only=local_files_only)
        if path.is_dir():
            subfolder = None if (path / "config.json").is_file() else "vae"
            return AutoencoderKL.from_pretrained(str(path), subfolder=subfolder)
        return AutoencoderKL.from_pretrained(vae, local_files_only=local_files_only)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise UserError(f"cannot load VAE '{vae}': {_first_line(error)}", "pass a Stable Diffusion VAE (4 latent channels) folder or file") from error


def fuse_loras(components: dict, loras: list[LoraSpec] | tuple[LoraSpec, ...]) -> None:
    """Load each LoRA into the components' UNet and text encoder at its scale, fuse them, drop the LoRA layers."""
    if not loras:
        return
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    pipeline = StableDiffusionPipeline(
        **{key: components[key] for key in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")},
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    names = []
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "No LoRA keys associated to ..." is turned into an error below
    try:
        for index, spec in enumerate(loras):
            name = f"lora{index}"
            try:
                pipeline.load_lora_weights(str(lora_file(spec)), adapter_name=name)
            except UserError:
                raise
            except Exception as error:  # shape mismatches, foreign key layouts, damaged files: many error types
                raise UserError(
                    f"LoRA '{spec.path}' does not fit this model: {_first_line(error)}",
                    "use a LoRA made for this model's architecture (SD 1.x LoRAs for SD 1.x models, ...)",
                ) from error
            loaded = {adapter for adapters in pipeline.get_list_adapters().values() for adapter in adapters}
            if name not in loaded:
                raise UserError(f"LoRA '{spec.path}' matches no layer of this model", "use a LoRA made for this model's architecture")
            names.append(name)
        pipeline.set_adapters(names, adapter_weights=[spec.scale for spec in loras])
        pipeline.fuse_lora(adapter_names=names)
        pipeline.unload_lora_weights()
    finally:
        diffusers_logging.set_verbosity(verbosity)
