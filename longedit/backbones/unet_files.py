"""Read a model's UNet files without loading it: `unet/config.json`, the weight file and its tensor names.

Backbone detection (`longedit.backbones.detect`) and the Tune-A-Video loader use these.
"""

from __future__ import annotations

import json
from pathlib import Path

from longedit.errors import UserError

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def read_unet_config(source: str, local_files_only: bool = False) -> dict:
    """`unet/config.json` of a local folder or hub id, as a dict."""
    folder = Path(source) / "unet"
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            raise UserError(f"'{source}' has no unet/config.json", "point --model at a complete diffusers folder")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read {path}: {error}") from error
    from diffusers import UNet2DConditionModel

    # load_config only reads the JSON (any _class_name), from the hub cache or the hub.
    return dict(UNet2DConditionModel.load_config(source, subfolder="unet", local_files_only=local_files_only))


def unet_weight_file(source: str) -> Path | None:
    """The UNet weight file of a local folder (safetensors preferred), or None."""
    for name in WEIGHT_NAMES:
        path = Path(source) / "unet" / name
        if path.is_file():
            return path
    return None


def weight_keys(path: Path) -> list[str]:
    """Tensor names of a weight file without loading the tensors (safetensors header, or a mmap'ed .bin)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    import torch

    return list(torch.load(path, map_location="cpu", weights_only=True, mmap=True).keys())
