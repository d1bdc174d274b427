"""Where FateZero's source attention comes from for one job, decided before any long work.

`plan_fusion` runs after the model is loaded and the windows are known, before the video is encoded:
it checks the blend and equalizer words against the prompts, picks the source of the maps
(`--fuse-source`: `store` keeps every fused map on disk, `recompute` keeps the inversion trajectory
and reruns the source pass; `auto` takes `recompute` when the store would exceed
`--fuse-disk-budget` [half the free disk], else `store`, the faster of the two on the bench), and
refuses a job whose choice does not fit on the disk. `FusionPlan.attach` builds the fusion on the
engine's `VideoEditor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from longedit.diskspace import DiskNeed, check_free_space, free_bytes
from longedit.errors import UserError
from longedit.fatezero.controller import CrossAttentionEdit, build_cross_edit
from longedit.fatezero.fusion import AttentionFusion, FusedLayer, FusionSettings, fused_layers, store_slots
from longedit.fatezero.recompute import RecomputedMaps
from longedit.fatezero.store import MANIFEST, AttentionDiskStore, Slot

STORE_NAME = "fatezero-attention"
BUDGET_FRACTION = 0.5  # default --fuse-disk-budget: this share of the free disk
PREFERRED_WITHIN_BUDGET = "store"  # faster on the bench (benchmarks/RESULTS.md) when the store fits


@dataclass
class FusionPlan:
    """The fusion of one video: layers, slots, controller, source of the maps and their disk cost."""

    source: str  # "store" or "recompute"
    folder: Path
    settings: FusionSettings
    edit: CrossAttentionEdit
    layers: list[FusedLayer]
    slots: list[Slot]
    windows: list[tuple[int, int]]
    window_rows: list[int]
    latent_shape: tuple[int, int, int]
    steps: int
    budget: int | None = None

    @property
    def frames(self) -> int:
        return max(end for _, end in self.windows)

    @property
    def fused_steps(self) -> int:
        return max((s.steps for s in self.slots), default=0)

    def store_bytes(self) -> int:
        return AttentionDiskStore.expected_bytes(self.slots, self.window_rows)

    def recompute_bytes(self) -> int:
        return RecomputedMaps.expected_bytes(self.fused_steps, self.frames, self.latent_shape)

    def modes(self) -> dict:
        """Per source mode: bytes per frame kept on disk and extra (truncated) UNet forwards per frame."""
        frames = self.frames
        return {
            "store": {"disk_bytes_per_frame": round(self.store_bytes() / frames, 1), "extra_unet_forwards_per_frame": 0.0},
            "recompute": {
                "disk_bytes_per_frame": round(self.recompute_bytes() / frames, 1),
                "extra_unet_forwards_per_frame": round(self.fused_steps * sum(self.window_rows) / frames, 3),
            },
        }

    def effective_settings(self) -> dict:
        """The FateZero settings this run used, by their flag names (for the report's settings)."""
        cross, self_ = self.settings.step_counts(self.steps)
        return {
            "fuse_source": self.source, "fuse_resolution": self.settings.resolution, "fuse_controller": self.edit.kind,
            "cross_replace_steps": self.settings.cross_replace_steps, "self_replace_steps": self.settings.self_replace_steps,
            "cross_replace_step_count": cross, "self_replace_step_count": self_, "blend_threshold": self.settings.blend_threshold,
            "blend_word": list(self.edit.blend_words), "equalize": dict(self.edit.equalize), "fuse_disk_budget": self.budget,
        }

    def build(self, create: bool = True) -> AttentionFusion:
        """The fusion with its store or trajectory in `folder` (`create`: new files, else reopen a resumed job's)."""
        if self.source == "store":
            maps = AttentionDiskStore(self.folder, self.slots, self.window_rows, create=create)
        else:
            maps = RecomputedMaps(self.folder, self.slots, self.windows, self.window_rows, self.latent_shape, create=create)
        kept = {slot.name for slot in self.slots}
        fusion = AttentionFusion([l for l in self.layers if l.name in kept], maps, self.edit, self.settings, self.steps)
        fusion.planned = {"settings": self.effective_settings(), "modes": self.modes(), "disk_budget": self.budget}
        return fusion

    def attach(self, editor, create: bool = True) -> AttentionFusion:
        """Build the fusion and attach it to `editor` (a recompute fusion reruns the editor's source pass)."""
        fusion = self.build(create)
        if isinstance(fusion.store, RecomputedMaps):
            fusion.store.connect(editor.source_forward, editor.schedule.timesteps)
        editor.attach_fusion(fusion)
        return fusion


def window_rows(windows: list[tuple[int, int]], uses_anchor: bool) -> list[int]:
    """Batch rows of each window: its frames plus the prepended anchor frame, if any."""
    return [(end - start) + (1 if uses_anchor and start > 0 else 0) for start, end in windows]


def check_disk_space(folder: Path, needed: int, source: str, also: Sequence[DiskNeed] = ()) -> None:
    """Refuse to start when the maps (with what else the run writes there, `also`) would not fit: writing a
    memory map past a full disk kills the process."""
    fix = (
        "use --fuse-source recompute (keeps only the inversion trajectory), --work-dir on a larger disk, or fewer --steps"
        if source == "store" else "use --work-dir on a larger disk or fewer --steps"
    )
    check_free_space([*also, DiskNeed(f"the FateZero attention {source}", Path(folder), needed)], fix)


def resumed_source(folder: Path) -> str:
    """The source mode an interrupted job wrote into `folder` (UserError when nothing is there)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise UserError(
            f"the FateZero attention store of this resumed job is missing in {folder}",
            "delete the work dir to start the job over",
        )
    return json.loads(manifest.read_text()).get("mode", "store")


def make_plan(
    unet: torch.nn.Module,
    edit: CrossAttentionEdit,
    settings: FusionSettings,
    steps: int,
    windows: list[tuple[int, int]],
    latent_hw: tuple[int, int],
    folder: str | Path,
    source: str = "store",
    text_tokens: int = 77,
    sparse_causal: bool = True,
    uses_anchor: bool = True,
) -> FusionPlan:
    """The plan for a video with `windows` of latents `latent_hw` (no disk check, no files)."""
    layers = fused_layers(unet, settings.min_scale)
    slots = store_slots(layers, settings, steps, latent_hw, text_tokens, sparse_causal)
    channels = int(unet.config.in_channels)
    return FusionPlan(
        source, Path(folder), settings, edit, layers, slots, list(windows), window_rows(windows, uses_anchor),
        (channels, *latent_hw), steps,
    )


def plan_fusion(
    job, backbone, windows: list[tuple[int, int]], grid: tuple[int, int], work_dir: Path | None, fresh: bool,
    also: Sequence[DiskNeed] = (),
) -> FusionPlan:
    """The fusion plan of an edit job (`longedit.config.EditJob`); UserErrors before any long work.

    `also`: what else the run writes (output, checkpoints), counted when the maps share their disk.

    The maps live in `work_dir/fatezero-attention` (kept for a resumed job) or, without a work dir,
    in a hidden folder next to the output (removed by the engine at the end). `grid` is the latent
    (width, height). A resumed job reopens what the interrupted run wrote, in the same mode.
    """
    from longedit.backbones.adapters import adapter_for
    from longedit.editor import prepends_anchor
    from longedit.planner import parse_size

    if work_dir is not None:
        folder = Path(work_dir) / STORE_NAME
    else:
        output = Path(job.output).resolve()
        folder = output.parent / f".{output.name}.{os.getpid()}.attention"
    budget = parse_size(job.fuse_disk_budget) if job.fuse_disk_budget is not None else None
    edit = build_cross_edit(
        backbone.tokenizer, job.source_prompt, job.prompt, job.fuse_controller, job.equalize, job.blend_word
    )
    settings = FusionSettings(
        cross_replace_steps=job.cross_replace_steps, self_replace_steps=job.self_replace_steps,
        blend_threshold=job.blend_threshold, resolution=job.fuse_resolution,
    )
    adapter = adapter_for(getattr(backbone, "kind", "sd"))
    plan = make_plan(
        backbone.unet, edit, settings, job.steps, windows, (grid[1], grid[0]), folder,
        text_tokens=getattr(backbone.tokenizer, "model_max_length", 77),
        sparse_causal=adapter.sparse_causal, uses_anchor=prepends_anchor(job.anchor, adapter.uses_anchor),
    )
    if not fresh:
        plan.source = resumed_source(folder)
        return plan
    if budget is None:
        budget = int(free_bytes(folder) * BUDGET_FRACTION)
    plan.budget = budget
    if job.fuse_source == "auto":
        plan.source = "recompute" if plan.store_bytes() > budget else PREFERRED_WITHIN_BUDGET
    else:
        plan.source = job.fuse_source
    needed = plan.store_bytes() if plan.source == "store" else plan.recompute_bytes()
    check_disk_space(folder, needed, plan.source, also)
    return plan

