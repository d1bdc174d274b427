"""Which backbone kind a model folder (or hub id) holds, from `unet/config.json` (no weights loaded).

* The config's `_class_name` names the UNet class; the kinds registered for that class are the
  candidates (`UNet2DConditionModel` -> `sd`; `UNet3DConditionModel` -> `t2v` or `tuneavideo`).
* Where a class has several kinds, each kind's `recognises` rule looks at the config keys (e.g.
  Tune-A-Video's config carries SD-only keys); where no config rule decides (a hand-written config),
  the weight names of a local folder do; else the class's first registered kind is taken.
* A class no kind registers is refused with a one-line error, and so is a UNet longedit cannot edit
  with (SDXL, inpainting: `longedit.backbones.support`).
"""

from __future__ import annotations

from collections.abc import Iterable

from longedit.backbones.support import check_unet_config
from longedit.backbones.registry import BACKBONE_CHOICES, KINDS, backbone_kinds, supported_unets
from longedit.backbones.unet_files import read_unet_config, unet_weight_file, weight_keys
from longedit.errors import UserError


def _candidates(config: dict, model: str) -> list:
    name = config.get("_class_name")
    kinds = [kind for kind in backbone_kinds() if kind.unet_class == name]
    if not kinds:
        where = f"model '{model}'" if model else "the model"
        raise UserError(f"{where} has a UNet of unknown class '{name}'", f"supported: {supported_unets()}")
    return kinds


def _recognised(kinds: list, config: dict, keys: Iterable[str]) -> str | None:
    keys = list(keys)
    return next((kind.name for kind in kinds if kind.recognises(config, keys)), None)


def detect_backbone_kind(config: dict, keys: Iterable[str] | None = None, model: str = "") -> str:
    """The kind of a UNet config (and optionally its weight names); see the module doc."""
    kinds = _candidates(config, model)
    return _recognised(kinds, config, keys or ()) or kinds[0].name


def resolve_backbone_kind(model: str, source: str, requested: str = "auto", local_files_only: bool = False) -> str:
    """The backbone kind of `model`: detected for `auto`, else `requested` checked against the UNet class."""
    if requested not in BACKBONE_CHOICES:
        raise UserError(f"unknown backbone '{requested}'", f"use auto or one of {', '.join(KINDS)}")
    config = read_unet_config(source, local_files_only)
    kinds = _candidates(config, model)
    check_unet_config(config, model)
    detected = _recognised(kinds, config, ())
    if detected is None and len(kinds) > 1:  # the config does not decide: let the weight names
        weights = unet_weight_file(source)
        detected = _recognised(kinds, config, weight_keys(weights)) if weights is not None else None
    detected = detected or kinds[0].name
    if requested in ("auto", detected):
        return detected
    if requested not in {kind.name for kind in kinds}:
        raise UserError(
            f"--backbone {requested} does not fit model '{model}': its UNet is a {config.get('_class_name')}",
            f"use --backbone auto (detected: {detected})",
        )
    raise UserError(
        f"--backbone {requested} does not fit model '{model}': its {config.get('_class_name')} has the {detected} layout",
        f"use --backbone auto (detected: {detected})",
    )
