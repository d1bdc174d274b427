"""Single-file checkpoints (`model.safetensors` / `model.ckpt`, as community fine-tunes ship) as backbones.

diffusers' `StableDiffusionPipeline.from_single_file` converts the original (LDM) layout into the
diffusers components; it needs a diffusers *config* folder that describes the architecture (each
component's config.json and the tokenizer files, no weights). That folder is `--checkpoint-config DIR_OR_ID`
when given, else the default diffusers picks for the checkpoint's type (SD 1.x -> SD 1.5, SD 2.x -> SD 2.1),
taken from the hub cache, or downloaded (JSON and tokenizer files only) unless `--local-files-only`.
Unlike diffusers, which would go online anyway when the config is missing from the cache, an offline run
fails with one line naming the config it needs and how to give it.

The checkpoint's type is read from its tensor names and a few shapes (a safetensors header, a
memory-mapped .ckpt), so SDXL, inpainting and other unsupported checkpoints are refused before any
weight is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from longedit.errors import UserError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
SUPPORTED_TYPES = {"v1": "Stable Diffusion 1.x", "v2": "Stable Diffusion 2.x"}
TYPE_NAMES = {"xl_base": "SDXL", "xl_refiner": "the SDXL refiner", "xl_inpaint": "SDXL inpainting",
              "inpainting": "an inpainting model", "inpainting_v2": "an inpainting model", "upscale": "an upscaler",
              "playground-v2-5": "Playground v2.5 (SDXL)"}
CONFIG_FIX = ("pass --checkpoint-config DIR_OR_ID: a diffusers folder (or cached hub id) of the same architecture, e.g. the "
              "base model the checkpoint was fine-tuned from; or run once without --local-files-only to cache it")


def is_single_file(model: str) -> bool:
    """Whether `model` names a single-file checkpoint (by its suffix; the file is checked when it is read)."""
    return Path(model).suffix.lower() in SINGLE_FILE_SUFFIXES


def checkpoint_path(model: str) -> Path:
    """The checkpoint file (UserError if it is missing or not a file)."""
    path = Path(model).expanduser()
    if not path.is_file():
        raise UserError(f"model file '{model}' does not exist", "pass --model a .safetensors/.ckpt file, a diffusers folder or a hub id")
    return path


class _LazyCheckpoint(Mapping):
    """The tensors of a checkpoint by name, each read only when asked for (type detection reads a few)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            self._handle = safe_open(str(path), framework="pt")
            self._keys = list(self._handle.keys())
            self._tensors = None
        else:
            import torch

            tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            while isinstance(tensors, dict) and "state_dict" in tensors:
                tensors = tensors["state_dict"]
            self._tensors, self._keys = tensors, list(tensors)

    def __getitem__(self, key: str):
        if self._tensors is not None:
            return self._tensors[key]
        if key not in self._keys:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def checkpoint_type(model: str) -> str:
    """diffusers' name of the checkpoint's architecture (`v1`, `v2`, `xl_base`, ...), from its tensor names."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    path = checkpoint_path(model)
    try:
        return infer_diffusers_model_type(_LazyCheckpoint(path))
    except Exception as error:  # a damaged or foreign file: safetensors/pickle/zip errors of many kinds
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read checkpoint '{model}': {reason}", "pass a Stable Diffusion .safetensors or .ckpt file") from error


def check_supported(model: str) -> str:
    """The checkpoint's type, refused with one line unless it is SD 1.x/2.x."""
    kind = checkpoint_type(model)
    if kind not in SUPPORTED_TYPES:
        name = TYPE_NAMES.get(kind, f"a '{kind}' checkpoint")
        raise UserError(f"checkpoint '{model}' is {name}", "longedit edits with Stable Diffusion 1.x/2.x checkpoints (and their fine-tunes)")
    return kind


def config_folder(model: str, checkpoint_config: str | None, local_files_only: bool) -> str:
    """The local diffusers folder describing the checkpoint's architecture (see the module docstring)."""
    kind = check_supported(model)
    if checkpoint_config is not None and Path(checkpoint_config).expanduser().is_dir():
        folder = Path(checkpoint_config).expanduser()
        if not (folder / "unet" / "config.json").is_file():
            raise UserError(f"--checkpoint-config '{checkpoint_config}' has no unet/config.json", "point it at a diffusers model folder (model_index.json, unet/, vae/, ...)")
        return str(folder)
    if checkpoint_config is not None and (checkpoint_config.startswith((".", "/", "~")) or checkpoint_config.count("/") > 1):
        raise UserError(f"--checkpoint-config folder '{checkpoint_config}' does not exist", CONFIG_FIX)
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS
    from huggingface_hub import snapshot_download

    repo = checkpoint_config or DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"]
    try:
        return snapshot_download(repo, local_files_only=local_files_only, allow_patterns=["**/*.json", "*.json", "**/*.txt", "*.txt"])
    except Exception as error:  # offline and not cached, unknown repo, no network: hub errors of many kinds
        where = "is not in the hub cache and --local-files-only forbids downloading it" if local_files_only else f"cannot be fetched ({type(error).__name__})"
        raise UserError(
            f"checkpoint '{model}' ({SUPPORTED_TYPES[kind]}) needs the diffusers config of '{repo}' "
            f"(each component's config.json and the tokenizer), which {where}", CONFIG_FIX,
        ) from error


def load_single_file_components(model: str, config: str) -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler of the checkpoint, converted with the config folder `config` (fp32, CPU)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    bar = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..." would interleave with longedit's bars
    try:
        pipeline = StableDiffusionPipeline.from_single_file(
            str(checkpoint_path(model)), config=config, local_files_only=True, safety_checker=None, requires_safety_checker=False,
        )
    finally:
        if bar:
            diffusers_logging.enable_progress_bar()
    return {name: getattr(pipeline, name) for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
