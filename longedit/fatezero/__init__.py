"""FateZero attention fusion (zero-shot editing without masks) on the windowed engine.

* `align_prompts`, `replacement_mapper`, `word_indices`: prompt-to-prompt's token mappings.
* `CrossAttentionEdit` / `build_cross_edit`: the cross-attention controller (replace, refine, equalizer)
  and the blend tokens.
* `AttentionDiskStore` (`--fuse-source store`): the source's maps per layer, step and window in fp16
  memory-mapped files; `RecomputedMaps` (`--fuse-source recompute`): the inversion trajectory, from
  which the maps are regenerated when the edit needs them.
* `AttentionFusion`: the hook `VideoEditor.attach_fusion` takes; keeps the source during inversion,
  replaces cross-attention and blends self-attention while editing.
* `plan_fusion` / `FusionPlan`: what the engine calls, once before any long work (words, source
  mode, disk) and then `plan.attach(editor)`.
"""

from __future__ import annotations

from pathlib import Path

from longedit.fatezero.align import TokenAlignment, align_prompts, replacement_mapper, word_indices
from longedit.fatezero.controller import CrossAttentionEdit, build_cross_edit
from longedit.fatezero.fusion import (
    RESOLUTIONS,
    AttentionFusion,
    FusedLayer,
    FusionSettings,
    blending_mask,
    fused_layers,
    mask_layer_names,
    store_slots,
)
from longedit.fatezero.plan import STORE_NAME, FusionPlan, check_disk_space, make_plan, plan_fusion
from longedit.fatezero.recompute import RecomputedMaps
from longedit.fatezero.store import AttentionDiskStore, Slot, spatial_size

__all__ = [
    "RESOLUTIONS", "STORE_NAME", "AttentionDiskStore", "AttentionFusion", "CrossAttentionEdit", "FusedLayer",
    "FusionPlan", "FusionSettings", "RecomputedMaps", "Slot", "TokenAlignment", "align_prompts", "blending_mask",
    "build_cross_edit", "check_disk_space", "fused_layers", "fusion_for_editor", "make_plan", "mask_layer_names",
    "plan_fusion", "replacement_mapper", "spatial_size", "store_slots", "word_indices",
]


def fusion_for_editor(
    editor,
    source_prompt: str,
    prompt: str,
    settings: FusionSettings,
    windows: list[tuple[int, int]],
    latent_hw: tuple[int, int],
    folder: str | Path,
    create: bool = True,
    source: str = "store",
    edit: CrossAttentionEdit | None = None,
) -> AttentionFusion:
    """The fusion of `editor`'s video (its UNet, tokenizer, steps, adapter), attached; disk checked when `create`."""
    backbone = editor.backbone
    edit = edit or build_cross_edit(backbone.tokenizer, source_prompt, prompt)
    plan = make_plan(
        backbone.unet, edit, settings, editor.schedule.steps, windows, latent_hw, folder, source=source,
        text_tokens=int(editor.cond.shape[1]), sparse_causal=editor.adapter.sparse_causal,
        uses_anchor=editor.prepends_anchor,
    )
    if create:
        check_disk_space(Path(folder), plan.store_bytes() if source == "store" else plan.recompute_bytes(), source)
    return plan.attach(editor, create)
