"""Which kind of UNet a model folder (or hub id) holds: `sd`, `t2v` or `tuneavideo`.

Read from `unet/config.json` (no weights loaded):

* `_class_name` `UNet2DConditionModel` -> `sd` (Stable Diffusion 1.x/2.x and its fine-tunes).
* `_class_name` `UNet3DConditionModel` is used by two incompatible layouts:
  - diffusers' own (ModelScope text-to-video, e.g. damo-vilab/text-to-video-ms-1.7b): temporal layers
    `transformer_in`, `temp_attentions`, `temp_convs`; its config has only the keys of diffusers'
    `UNet3DConditionModel.__init__`.
  - Tune-A-Video's (a fine-tuned SD UNet with `attn_temp`/`norm_temp` in every transformer block):
    its config carries the SD UNet keys diffusers' UNet3D does not have (`mid_block_type`,
    `flip_sin_to_cos`, `use_linear_projection`, ...).
  The config keys decide; where they do not (a hand-written config), the weight names of a local
  folder do (`attn_temp` -> tuneavideo, `temp_attentions`/`transformer_in` -> t2v).
* anything else is refused with a one-line error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from longedit.backbones.adapters import KINDS, SD, T2V, TUNEAVIDEO
from longedit.errors import UserError

UNET_2D = "UNet2DConditionModel"
UNET_3D = "UNet3DConditionModel"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: Keys of Tune-A-Video's UNet3DConditionModel config (inherited from the SD UNet) that diffusers'
#: text-to-video UNet3DConditionModel does not take.
TUNEAVIDEO_CONFIG_KEYS = frozenset(
    {
        "mid_block_type", "flip_sin_to_cos", "freq_shift", "center_input_sample", "only_cross_attention",
        "dual_cross_attention", "use_linear_projection", "upcast_attention", "class_embed_type",
        "num_class_embeds", "resnet_time_scale_shift",
    }
)
SUPPORTED = (
    "supported: UNet2DConditionModel (Stable Diffusion), UNet3DConditionModel (diffusers text-to-video "
    "or Tune-A-Video)"
)


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


def detect_backbone_kind(config: dict, keys: Iterable[str] | None = None, model: str = "") -> str:
    """`sd`, `t2v` or `tuneavideo` from a UNet config (and optionally its weight names); see module doc."""
    name = config.get("_class_name")
    if name == UNET_2D:
        return SD
    if name != UNET_3D:
        where = f"model '{model}'" if model else "the model"
        raise UserError(f"{where} has a UNet of unknown class '{name}'", SUPPORTED)
    if TUNEAVIDEO_CONFIG_KEYS & set(config):
        return TUNEAVIDEO
    for key in keys or ():
        if ".attn_temp." in key or ".norm_temp." in key:
            return TUNEAVIDEO
        if key.startswith("transformer_in.") or ".temp_attentions." in key:
            return T2V
    return T2V


def resolve_backbone_kind(model: str, source: str, requested: str = "auto", local_files_only: bool = False) -> str:
    """The backbone kind of `model`: detected for `auto`, else `requested` checked against the UNet class."""
    if requested not in ("auto", *KINDS):
        raise UserError(f"unknown backbone '{requested}'", f"use auto or one of {', '.join(KINDS)}")
    config = read_unet_config(source, local_files_only)
    detected = detect_backbone_kind(config, None, model)
    weights = unet_weight_file(source) if detected == T2V else None
    if weights is not None:  # a UNet3D config without Tune-A-Video keys: let the weight names decide
        detected = detect_backbone_kind(config, weight_keys(weights), model)
    if requested in ("auto", detected):
        return detected
    if detected == SD or requested == SD:
        raise UserError(
            f"--backbone {requested} does not fit model '{model}': its UNet is a {config.get('_class_name')}",
            f"use --backbone auto (detected: {detected})",
        )
    raise UserError(
        f"--backbone {requested} does not fit model '{model}': its UNet3DConditionModel has the {detected} layout",
        f"use --backbone auto (detected: {detected})",
    )
