"""FateZero attention fusion (zero-shot editing without masks) on the windowed engine.

* `align_prompts`: which edited-prompt tokens take the source's cross-attention, which source words change.
* `AttentionDiskStore`: the source's attention maps per layer, step and window in fp16 memory-mapped files.
* `AttentionFusion` / `build_fusion`: the hook `VideoEditor.attach_fusion` takes; stores during inversion,
  replaces cross-attention and blends self-attention while editing.
* `fusion_for_editor`: all of the above for one `VideoEditor` (what the engine calls).
"""

from __future__ import annotations

from pathlib import Path

from longedit.fatezero.align import TokenAlignment, align_prompts
from longedit.fatezero.fusion import (
    RESOLUTIONS,
    AttentionFusion,
    FusedLayer,
    FusionSettings,
    blending_mask,
    build_fusion,
    fused_layers,
    store_slots,
)
from longedit.fatezero.store import AttentionDiskStore, Slot, spatial_size

__all__ = [
    "RESOLUTIONS", "AttentionDiskStore", "AttentionFusion", "FusedLayer", "FusionSettings", "Slot",
    "TokenAlignment", "align_prompts", "blending_mask", "build_fusion", "fused_layers", "fusion_for_editor",
    "spatial_size", "store_slots",
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
) -> AttentionFusion:
    """Build the fusion of `editor`'s video (its UNet, tokenizer, steps, adapter) and attach it."""
    backbone = editor.backbone
    alignment = align_prompts(backbone.tokenizer, source_prompt, prompt)
    fusion = build_fusion(
        backbone.unet, alignment, settings, editor.schedule.steps, windows, latent_hw, folder,
        text_tokens=int(editor.cond.shape[1]), sparse_causal=editor.adapter.sparse_causal,
        uses_anchor=editor.adapter.uses_anchor, create=create,
    )
    editor.attach_fusion(fusion)
    return fusion


STORE_NAME = "fatezero-attention"


def fusion_for_job(job, editor, windows: list[tuple[int, int]], grid: tuple[int, int], work_dir: Path | None, fresh: bool) -> AttentionFusion:
    """The fusion of an edit job (`longedit.config.EditJob`), attached to `editor`.

    The store lives in `work_dir/fatezero-attention` (kept for a resumed job) or, without a work dir,
    in a hidden folder next to the output (removed by the engine at the end). `grid` is the latent
    (width, height). A resumed job must find the store the interrupted run wrote.
    """
    from longedit.errors import UserError
    from longedit.fatezero.store import MANIFEST

    if work_dir is not None:
        folder = Path(work_dir) / STORE_NAME
    else:
        import os

        output = Path(job.output).resolve()
        folder = output.parent / f".{output.name}.{os.getpid()}.attention"
    if not fresh and not (folder / MANIFEST).is_file():
        raise UserError(
            f"the FateZero attention store of this resumed job is missing in {folder}",
            "delete the work dir to start the job over",
        )
    settings = FusionSettings(
        cross_replace_steps=job.cross_replace_steps, self_replace_steps=job.self_replace_steps,
        blend_threshold=job.blend_threshold, resolution=job.fuse_resolution,
    )
    return fusion_for_editor(
        editor, job.source_prompt, job.prompt, settings, windows, (grid[1], grid[0]), folder, create=fresh
    )
