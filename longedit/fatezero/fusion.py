"""FateZero attention fusion over windows: store the source's attention during inversion, fuse it while editing.

FateZero (Qi et al. 2023) edits without masks by reusing the attention maps that DDIM inversion of the
source video produced with the source prompt:

* inversion, every window and step: the source's self-attention (`attn1`) and cross-attention
  (`attn2`) probabilities of the fused layers go to an on-disk store (`AttentionDiskStore`);
* editing, step i uses the maps inversion computed at the same timestep (inversion step n-1-i),
  in the classifier-free guided pass, conditional half only (as FateZero's controller):
  - cross-attention, first `cross_replace_steps` [0.8] of the steps: edited-prompt tokens that also
    occur in the source prompt (and start/end/padding) take the source's map of that token
    (`TokenAlignment`); new words keep their own maps;
  - self-attention, first `self_replace_steps` [0.5] of the steps: attention blending,
    `A = M * A_current + (1 - M) * A_source`, where M (per frame, per query position) is FateZero's
    blending mask: the stored source cross-attention of the changed source words, averaged over heads
    and the H/32 layers, max-pooled 3x3, resized to the layer, normalised by its per-frame maximum and
    thresholded at `blend_threshold` [0.3]. No changed word (a style edit): M = 0, the source's
    self-attention everywhere.
* Only layers at H/32 and coarser (`resolution="h32"`, latent/4 and below) are fused by default;
  `h16` adds the latent/2 layers (FateZero's 32x32 layers at 512 px), at 5-15x the disk.

The fusion plugs into `AttentionContext.fusion`: the processors of `longedit.attention` call
`attend(...)`, which returns the fused attention output for layers and steps it acts on and None
elsewhere. `VideoEditor` opens `active(mode, step, window, latent size)` around the passes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from longedit.attention import is_temporal_layer, layer_scale
from longedit.fatezero.align import TokenAlignment
from longedit.fatezero.store import AttentionDiskStore, Slot, spatial_size

RESOLUTIONS = {"h32": 4, "h16": 2}
MASK_SCALE = 4  # FateZero's blending mask comes from the 16x16 (H/32) cross-attention layers
POOL = 3


@dataclass(frozen=True)
class FusionSettings:
    """FateZero knobs (paper/official defaults)."""

    cross_replace_steps: float = 0.8
    self_replace_steps: float = 0.5
    blend_threshold: float = 0.3
    resolution: str = "h32"

    @property
    def min_scale(self) -> int:
        return RESOLUTIONS[self.resolution]

    def step_counts(self, steps: int) -> tuple[int, int]:
        """(cross, self) numbers of first edit steps that are fused (FateZero's int(steps * fraction))."""
        return int(steps * self.cross_replace_steps), int(steps * self.self_replace_steps)


@dataclass
class _Pass:
    mode: str  # "store" (inversion, all rows) or "fuse" (edit, conditional half of a CFG batch)
    step: int
    window: int
    latent_hw: tuple[int, int]


@dataclass(frozen=True)
class FusedLayer:
    name: str  # processor name, as the processors report it
    kind: str  # "self" or "cross"
    scale: int
    heads: int


def fused_layers(unet: torch.nn.Module, min_scale: int) -> list[FusedLayer]:
    """Spatial attn1/attn2 layers of `unet` at latent/`min_scale` and coarser, in processor order."""
    levels = len(unet.config.block_out_channels)
    layers = []
    for name in unet.attn_processors:
        if is_temporal_layer(name):
            continue
        if name.endswith("attn1.processor"):
            kind = "self"
        elif name.endswith("attn2.processor"):
            kind = "cross"
        else:
            continue
        scale = layer_scale(name, levels)
        if scale >= min_scale:
            module = unet.get_submodule(name[: -len(".processor")])
            layers.append(FusedLayer(name, kind, scale, module.heads))
    return layers


class AttentionFusion:
    """Stores and fuses attention maps of one video (see the module docstring)."""

    def __init__(
        self,
        layers: list[FusedLayer],
        store: AttentionDiskStore,
        alignment: TokenAlignment,
        settings: FusionSettings,
        steps: int,
    ) -> None:
        self.layers = {layer.name: layer for layer in layers}
        self.store = store
        self.alignment = alignment
        self.settings = settings
        self.steps = steps
        self.cross_steps, self.self_steps = settings.step_counts(steps)
        self.mask_layers = [l.name for l in layers if l.kind == "cross" and l.scale == MASK_SCALE]
        self.state: _Pass | None = None
        self._masks: dict[int, torch.Tensor] = {}
        self.stored = 0
        self.fused = 0

    # ------------------------------------------------------------------------------ passes
    @contextlib.contextmanager
    def active(self, mode: str, step: int, window: int, latent_hw: tuple[int, int]):
        """Within: the processors store (`store`) or fuse (`fuse`) maps of `window` at edit step `step`."""
        if mode not in ("store", "fuse"):
            raise ValueError(f"unknown fusion mode '{mode}'")
        self.state = _Pass(mode, step, window, tuple(latent_hw))
        self._masks = {}
        try:
            yield self
        finally:
            self.state = None
            self._masks = {}

    def _wanted(self, layer: FusedLayer, step: int, mode: str) -> bool:
        if not self.store.has(layer.name, step):
            return False
        if mode == "store":
            return True
        return step < (self.cross_steps if layer.kind == "cross" else self.self_steps)

    # ----------------------------------------------------------------------------- attention
    def attend(self, name: str, kind: str, query, key, value, scale: float):
        """Attention output of layer `name` with stored/fused probabilities, or None where not acting."""
        state = self.state
        layer = self.layers.get(name)
        if state is None or layer is None or not self._wanted(layer, state.step, state.mode):
            return None
        half = 0 if state.mode == "store" else query.shape[0] // 2
        logits = torch.matmul(query[half:].float(), key[half:].float().transpose(-1, -2)) * scale
        probs = logits.softmax(dim=-1)
        if state.mode == "store":
            self.store.put(name, state.step, state.window, probs)
            self.stored += 1
        else:
            base = self.store.get(name, state.step, state.window, keys=probs.shape[-1]).to(probs.device, probs.dtype)
            if kind == "cross":
                mapper = self.alignment.mapper_tensor(probs.device)
                alphas = self.alignment.alphas_tensor(probs.device)
                probs = base[..., mapper] * alphas + probs * (1 - alphas)
            else:
                mask = self.blend_mask(layer.scale, probs.shape[-2])
                probs = mask * probs + (1 - mask) * base
            self.fused += 1
        out = torch.matmul(probs.to(value.dtype), value[half:])
        if half == 0:
            return out
        rest = F.scaled_dot_product_attention(query[:half], key[:half], value[:half])
        return torch.cat([rest, out])

    # ----------------------------------------------------------------------------- blending
    def blend_mask(self, scale: int, queries: int) -> torch.Tensor:
        """FateZero's self-attention blending mask for a layer at `scale`: [rows, 1, queries, 1] of 0/1."""
        if scale in self._masks:
            return self._masks[scale]
        state = self.state
        height, width = (spatial_size(s, scale) for s in state.latent_hw)
        if height * width != queries:
            raise ValueError(f"layer at 1/{scale} has {queries} queries, expected {height}x{width}")
        source = self.source_word_map(state.step, state.window, state.latent_hw)
        if source is None:
            rows = self.store.window_rows[state.window]
            mask = torch.zeros(rows, 1, queries, 1)
        else:
            mask = blending_mask(source, (height, width), self.settings.blend_threshold)
            mask = mask.reshape(mask.shape[0], 1, queries, 1)
        self._masks[scale] = mask
        return mask

    def source_word_map(self, step: int, window: int, latent_hw: tuple[int, int]) -> torch.Tensor | None:
        """Stored source cross-attention of the changed words at the H/32 layers: [rows, h, w], or None."""
        changed = list(self.alignment.changed)
        if not changed or not self.mask_layers:
            return None
        height, width = (spatial_size(s, MASK_SCALE) for s in latent_hw)
        total = None
        for name in self.mask_layers:
            maps = self.store.get(name, step, window).float()  # [rows, heads, h*w, tokens]
            words = maps[..., changed].sum(-1).mean(1)
            total = words if total is None else total + words
        return (total / len(self.mask_layers)).reshape(-1, height, width)

    # ------------------------------------------------------------------------------- report
    def report(self, frames: int) -> dict:
        """What the fusion stored and where, and its disk footprint per frame."""
        return {
            "layers": len(self.layers),
            "resolution": self.settings.resolution,
            "cross_replace_steps": self.cross_steps,
            "self_replace_steps": self.self_steps,
            "blend_threshold": self.settings.blend_threshold,
            "replaced_tokens": self.alignment.replaced,
            "blend_tokens": list(self.alignment.changed),
            "disk_bytes": self.store.file_bytes(),
            "disk_bytes_per_frame": round(self.store.bytes_per_frame(frames), 1),
            "store": str(self.store.folder),
        }


def blending_mask(word_map: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """[rows, h, w] word attention -> [rows, H, W] 0/1 mask: max-pool 3x3, resize, per-frame max-normalise, > threshold."""
    maps = F.max_pool2d(word_map[:, None].float(), POOL, stride=1, padding=POOL // 2)
    maps = F.interpolate(maps, size=size, mode="nearest")
    peak = maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return (maps / peak > threshold).float()[:, 0]


def store_slots(
    layers: list[FusedLayer],
    settings: FusionSettings,
    steps: int,
    latent_hw: tuple[int, int],
    text_tokens: int,
    sparse_causal: bool,
) -> list[Slot]:
    """The on-disk slots of `layers`: cross maps for the cross (and blending) steps, self maps for the self steps."""
    cross_steps, self_steps = settings.step_counts(steps)
    slots = []
    for layer in layers:
        queries = spatial_size(latent_hw[0], layer.scale) * spatial_size(latent_hw[1], layer.scale)
        if layer.kind == "cross":
            count, keys = max(cross_steps, self_steps), text_tokens
        else:
            count, keys = self_steps, queries * (2 if sparse_causal else 1)
        if count > 0:
            slots.append(Slot(layer.name, layer.kind, count, layer.heads, queries, keys))
    return slots


def check_disk_space(folder: Path, needed: int) -> None:
    """Refuse to start when the store would not fit: writing a memory map past a full disk kills the process."""
    import shutil

    from longedit.errors import UserError

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UserError(
            f"the FateZero attention store needs {needed / 2**30:.1f} GiB in {folder} but only {free / 2**30:.1f} GiB are free",
            "use --work-dir on a larger disk, fewer --steps, lower --self-replace-steps, or --fuse-resolution h32",
        )


def build_fusion(
    unet: torch.nn.Module,
    alignment: TokenAlignment,
    settings: FusionSettings,
    steps: int,
    windows: list[tuple[int, int]],
    latent_hw: tuple[int, int],
    folder: str | Path,
    text_tokens: int = 77,
    sparse_causal: bool = True,
    uses_anchor: bool = True,
    create: bool = True,
) -> AttentionFusion:
    """An AttentionFusion for a video with `windows` of latents `latent_hw`, its store in `folder`."""
    layers = fused_layers(unet, settings.min_scale)
    slots = store_slots(layers, settings, steps, latent_hw, text_tokens, sparse_causal)
    rows = [(end - start) + (1 if uses_anchor and start > 0 else 0) for start, end in windows]
    if create:
        check_disk_space(Path(folder), AttentionDiskStore.expected_bytes(slots, rows))
    store = AttentionDiskStore(folder, slots, rows, create=create)
    kept = {slot.name for slot in slots}
    return AttentionFusion([l for l in layers if l.name in kept], store, alignment, settings, steps)
