"""Load a backbone (diffusers folder, hub id, single-file checkpoint, or the built-in `tiny`), with LoRAs and a VAE.

The folder has the Stable Diffusion layout; its UNet decides the backbone kind (`sd`, `t2v` for a
diffusers text-to-video UNet3DConditionModel, `tuneavideo` for a Tune-A-Video checkpoint), detected
from `unet/config.json` or forced with `backbone=` (see `longedit.backbones`). A `.safetensors`/`.ckpt`
file is converted by diffusers with a config folder (`longedit.single_file`); `--lora` and `--vae` are
applied after loading (`longedit.model_extras`). Models longedit cannot edit with (SDXL, inpainting,
a scheduler without DDIM form) are refused from their configs before any weight loads
(`longedit.backbones.support`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from longedit.errors import UserError

TINY = "tiny"
DEFAULT_MAP_SCALE = 4  # RAD's maps at latent/4 = frame/32: SD 1.x's 16x16 level at 512 px
MAP_LEVEL_FILE = "attention_map.json"  # a model folder may name its own level: {"rad_map_scale": 1}


@dataclass
class Backbone:
    """The frozen components one edit needs, on their device and dtype."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    name: str
    device: torch.device
    dtype: torch.dtype
    kind: str = "sd"
    loras: tuple = ()  # the fused LoRAs (model_extras.LoraSpec)
    vae_source: str | None = None  # --vae, when the model's own VAE was replaced
    map_scale: int = DEFAULT_MAP_SCALE  # latent downsampling of the cross-attention level RAD reads

    @property
    def is_tiny(self) -> bool:
        return self.name == TINY

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` -> CUDA if present, else CPU; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"unknown device '{device}'", "use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for but CUDA is not available", "use --device cpu or auto")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> fp16 on CUDA (half the memory, tensor cores), fp32 elsewhere (CPU kernels are fp32)."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return table[dtype]


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists() or model.count("/") > 1


def _model_source(model: str) -> str:
    """Local folder (checked) or hub id; `toy` is the trained toy model's folder inside the package."""
    from longedit.toyworld import resolve_model_name

    model = resolve_model_name(model)
    if not _looks_like_path(model):
        return model
    source = str(Path(model).expanduser())
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(f"model folder '{model}' does not exist", "pass --model a diffusers folder, a hub id or 'tiny'")
    if not (folder / "unet").is_dir() or not (folder / "vae").is_dir():
        raise UserError(
            f"'{model}' is not a diffusers Stable Diffusion folder (no unet/ or vae/ inside)",
            "point --model at the folder holding model_index.json",
        )
    return source


def rad_map_scale(source: str) -> int:
    """The latent downsampling of RAD's cross-attention level for a model folder: its `attention_map.json`
    (written by the toy trainer; a small model whose 16x16 level is not H/32) or SD's latent/4."""
    path = Path(source) / MAP_LEVEL_FILE
    if not path.is_file():
        return DEFAULT_MAP_SCALE
    import json

    try:
        scale = json.loads(path.read_text())["rad_map_scale"]
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"'{path}' is not a map level file ({error})", 'write {"rad_map_scale": 4} or remove it') from error
    if scale not in (1, 2, 4, 8):
        raise UserError(f"'{path}' names map scale {scale!r}", "rad_map_scale must be 1, 2, 4 or 8 (latent downsampling)")
    return scale


def _load_error(model: str, error: Exception) -> UserError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(
        f"cannot load model '{model}': {reason[:200]}",
        "download it first (huggingface-cli download ID) and pass --model PATH, set LONGEDIT_MODEL, "
        "or use --model tiny for a smoke run",
    )


TOKENIZER_FILES = ("vocab.json", "tokenizer.json")


def load_tokenizer(model: str, local_files_only: bool = False, checkpoint_config: str | None = None):
    """Only the tokenizer of `model` (word checks without loading the networks)."""
    if model == TINY:
        from longedit.random_models import build_tiny_tokenizer

        return build_tiny_tokenizer()
    from transformers import CLIPTokenizer

    source = config_source(model, checkpoint_config, local_files_only)
    if _looks_like_path(source) and not any((Path(source) / "tokenizer" / name).is_file() for name in TOKENIZER_FILES):
        # transformers 5 builds an empty tokenizer from a folder without one; every word would then match
        raise _load_error(model, OSError(f"no tokenizer in '{Path(source) / 'tokenizer'}' (vocab.json or tokenizer.json)"))
    try:
        return CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        raise _load_error(model, error) from error


def config_source(model: str, checkpoint_config: str | None = None, local_files_only: bool = False) -> str:
    """The diffusers folder or hub id holding `model`'s configs: the model itself, or for a single-file
    checkpoint its config folder (`--checkpoint-config`, else diffusers' default for its type)."""
    from longedit.single_file import config_folder, is_single_file

    if is_single_file(model):
        return config_folder(model, checkpoint_config, local_files_only)
    return _model_source(model)


def check_scheduler(source: str, model: str, local_files_only: bool = False) -> None:
    """Refuse a scheduler without DDIM form from `source`'s scheduler config (no weights read)."""
    from diffusers import DDIMScheduler

    from longedit.backbones.support import check_scheduler_config

    config = DDIMScheduler.load_config(source, subfolder="scheduler", local_files_only=local_files_only)
    check_scheduler_config(dict(config), model)


def _load_single_file(model: str, local_files_only: bool, backbone: str, checkpoint_config: str | None) -> dict:
    from longedit.backbones.detect import resolve_backbone_kind
    from longedit.single_file import load_single_file_components

    source = config_source(model, checkpoint_config, local_files_only)
    if backbone not in ("auto", "sd"):
        raise UserError(f"a single-file checkpoint is a Stable Diffusion model, not --backbone {backbone}", "use --backbone auto")
    try:
        resolve_backbone_kind(model, source, "sd", True)  # the config's UNet: SDXL, inpainting... are refused
        check_scheduler(source, model, True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {"kind": "sd", **load_single_file_components(model, source)}
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise _load_error(model, error) from error


def _load_components(model: str, local_files_only: bool, backbone: str = "auto", checkpoint_config: str | None = None) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from longedit.backbones.detect import resolve_backbone_kind
    from longedit.backbones.registry import backbone_kind
    from longedit.single_file import is_single_file

    if is_single_file(model):
        return _load_single_file(model, local_files_only, backbone, checkpoint_config)
    source = _model_source(model)
    kwargs = {"local_files_only": local_files_only}
    try:
        kind = resolve_backbone_kind(model, source, backbone, local_files_only)
        check_scheduler(source, model, local_files_only)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {
                "kind": kind,
                "map_scale": rad_map_scale(source),
                "unet": backbone_kind(kind).load_unet(source, local_files_only),
                "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", **kwargs),
                "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs),
                "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs),
                "scheduler": DDIMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs),
            }
    except (OSError, ValueError) as error:
        raise _load_error(model, error) from error


def load_backbone(
    model: str, device: str = "auto", dtype: str = "auto", local_files_only: bool = False, backbone: str = "auto",
    *, checkpoint_config: str | None = None, loras=(), vae: str | None = None,
) -> Backbone:
    """Load `model` (folder, hub id, .safetensors/.ckpt file or `tiny`), freeze it and move it to the device/dtype.

    `backbone`: auto (detect from unet/config.json), sd, t2v or tuneavideo (`tiny` is always sd).
    `checkpoint_config`: a single file's config folder or hub id; `loras`: `model_extras.LoraSpec`s fused into
    the weights; `vae`: a VAE that replaces the model's.
    """
    target = resolve_device(device)
    precision = resolve_dtype(dtype, target)
    components = load_components(model, local_files_only, backbone, checkpoint_config)
    add_extras(components, model, checkpoint_config, loras, vae, local_files_only)
    backbone_ = frozen_backbone(components, model, target, precision, components["kind"])
    backbone_.loras, backbone_.vae_source = tuple(loras), vae
    return backbone_


def add_extras(components: dict, model: str, checkpoint_config: str | None, loras, vae: str | None, local_files_only: bool) -> None:
    """Swap in `vae` and fuse `loras` into freshly loaded components (before they are frozen and moved)."""
    from longedit.model_extras import fuse_loras, load_vae

    if vae is not None:
        source = None if model == TINY else config_source(model, checkpoint_config, local_files_only)
        components["vae"] = load_vae(vae, source, local_files_only)
    if loras:
        if components["kind"] != "sd":
            raise UserError(f"--lora needs a Stable Diffusion UNet, not a {components['kind']} one", "drop --lora, or use an SD 1.x/2.x model")
        fuse_loras(components, loras)


def load_components(model: str, local_files_only: bool = False, backbone: str = "auto", checkpoint_config: str | None = None) -> dict:
    """kind, unet, vae, text_encoder, tokenizer, scheduler of `model` (folder, hub id, `toy` or `tiny`), fp32 on CPU.

    The networks are as loaded (trainable, train mode untouched): `load_backbone` freezes them for
    editing, `longedit.tune` trains parts of the UNet.
    """
    if model == TINY:
        from longedit.random_models import build_tiny_components

        if backbone not in ("auto", "sd"):
            raise UserError(f"--model tiny is a Stable Diffusion model, not --backbone {backbone}", "use --backbone auto")
        return {"kind": "sd", **build_tiny_components()}
    return _load_components(model, local_files_only, backbone, checkpoint_config)


def own_aligned_storage(module: torch.nn.Module, alignment: int = 64) -> None:
    """Copy the parameters and buffers that sit at an address not `alignment`-byte aligned into fresh memory.

    A safetensors file mapped into memory leaves its tensors at their file offsets; CPU kernels take another,
    differently rounding path on unaligned data, so the same weights computed other bits depending on the
    file they came from (a single-file checkpoint vs its diffusers folder: UNet outputs 1.6e-6 apart).
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.data_ptr() % alignment:
                tensor.data = tensor.data.clone()


def frozen_backbone(components: dict, name: str, device: torch.device, dtype: torch.dtype, kind: str = "sd") -> Backbone:
    """Freeze components (eval, no grad), move them to device/dtype and wrap them as a Backbone.

    The VAE stays fp32 under fp16 (SD's VAE is known to overflow to NaN in fp16 at large sizes);
    the scheduler becomes DDIM with the model's own noise schedule.
    """
    from diffusers import DDIMScheduler
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # silence "modules that should be kept in float32: []"
    try:
        for key in ("unet", "vae", "text_encoder"):
            module = components[key]
            module.requires_grad_(False)
            module.eval()
            module.to(device=device, dtype=dtype)
        if dtype == torch.float16:
            components["vae"].to(torch.float32)
        for key in ("unet", "vae", "text_encoder"):
            own_aligned_storage(components[key])
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return Backbone(
        unet=components["unet"],
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        scheduler=DDIMScheduler.from_config(components["scheduler"].config),
        name=name,
        device=device,
        dtype=dtype,
        kind=kind,
        map_scale=components.get("map_scale", DEFAULT_MAP_SCALE),
    )
