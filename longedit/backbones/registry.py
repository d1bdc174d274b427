"""The backbone registry: kind name -> the module whose `BACKBONE` object describes it.

A new backbone is one new file exporting `BACKBONE = BackboneKind(...)` (see `longedit.backbones.kind`)
plus one line in `KIND_MODULES`. Everything else (config values, detection, the editor's adapter,
the temporal-layer pattern, random and saved test models) looks kinds up here.

The names are plain strings so that `longedit.config` can validate `backbone:` without importing
torch; the kind modules are imported on first lookup.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING

from longedit.errors import UserError

if TYPE_CHECKING:
    from longedit.backbones.kind import BackboneKind

KIND_MODULES = {
    "sd": "longedit.backbones.sd",
    "t2v": "longedit.backbones.t2v",
    "tuneavideo": "longedit.backbones.tuneavideo",
}
KINDS = tuple(KIND_MODULES)
#: What `--backbone` / `backbone:` accept: auto-detection or a kind.
BACKBONE_CHOICES = ("auto", *KINDS)


def backbone_kind(name: str) -> BackboneKind:
    """The `BackboneKind` called `name` (UserError naming the choices for anything else)."""
    module = KIND_MODULES.get(name)
    if module is None:
        raise UserError(f"unknown backbone kind '{name}'", f"use one of {', '.join(KINDS)}")
    return importlib.import_module(module).BACKBONE


def backbone_kinds() -> list[BackboneKind]:
    """Every registered kind, in registry order (the first kind of a UNet class is its default)."""
    return [backbone_kind(name) for name in KIND_MODULES]


def temporal_layer_pattern() -> re.Pattern[str]:
    """Matches attention-layer names that mix frames in any registered kind (the editor leaves them alone)."""
    parts = [re.escape(part) for kind in backbone_kinds() for part in kind.temporal_layers]
    return re.compile(r"(^|\.)(" + "|".join(parts) + r")(\.|$)") if parts else re.compile(r"(?!)")


def supported_unets() -> str:
    """'UNet2DConditionModel (Stable Diffusion), UNet3DConditionModel (... or ...)' for error messages."""
    titles: dict[str, list[str]] = {}
    for kind in backbone_kinds():
        titles.setdefault(kind.unet_class, []).append(kind.title)
    return ", ".join(f"{cls} ({' or '.join(names)})" for cls, names in titles.items())
