"""FateZero attention fusion over windows: the source's attention during inversion, fused while editing.

FateZero (Qi et al. 2023; official code ChenyangQiQi/FateZero) edits without masks by reusing the
attention maps that DDIM inversion of the source video produced with the source prompt:

* fused layers: every spatial self- (`attn1`) and cross-attention (`attn2`) layer whose queries are
  at most 32x32 at 512x512 (`resolution="h16"`: latent/2 and coarser; the official
  `attn.shape[-2] <= 32 ** 2`); `h32` keeps latent/4 and coarser only (less disk, not official);
* the source maps come from an on-disk store written during inversion (`AttentionDiskStore`,
  `--fuse-source store`) or are regenerated at each fused edit step from the inversion trajectory
  (`RecomputedMaps`, `--fuse-source recompute`); both give the same maps up to fp16 rounding;
* editing, step i uses the maps inversion computed at the same timestep (inversion step n-1-i),
  in the classifier-free guided pass, conditional half only (as FateZero's controller):
  - cross-attention, first `int((n + 1) * cross_replace_steps)` [0.8] steps (capped at n, the
    official `get_time_words_attention_alpha`): the controller (`CrossAttentionEdit`: replace,
    refine, optional equalizer);
  - self-attention, first `int(n * self_replace_steps)` [0.5] steps: attention blending,
    `A = M * A_current + (1 - M) * A_source`, where M (per frame, per query position) is FateZero's
    blending mask (`SpatialBlender.get_mask`): the source cross-attention of the blend tokens at the
    H/32 layers of the down and up blocks (the official `down_cross[2:4] + up_cross[:3]`, 5 maps in
    SD), summed over the tokens, averaged over all heads of those layers, max-pooled 3x3, resized
    (nearest) to the layer, divided by its per-frame maximum and thresholded at `blend_threshold`
    [0.3]. No blend token (a style edit): M = 0, the source's self-attention everywhere.

The fusion plugs into `AttentionContext.fusion`: the processors of `longedit.attention` call
`attend(...)`, which returns the fused attention output for layers and steps it acts on and None
elsewhere. `VideoEditor` opens `active(mode, step, window, latent size, latents)` around the passes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longedit.attention import StopForward, is_temporal_layer, layer_scale
from longedit.fatezero.controller import CrossAttentionEdit
from longedit.fatezero.recompute import RecomputedMaps
from longedit.fatezero.store import AttentionDiskStore, Slot, spatial_size

RESOLUTIONS = {"h32": 4, "h16": 2}
MASK_SCALE = 4  # FateZero's blending mask comes from the 16x16 (H/32) cross-attention layers
POOL = 3


@dataclass(frozen=True)
class FusionSettings:
    """FateZero knobs (official defaults)."""

    cross_replace_steps: float = 0.8
    self_replace_steps: float = 0.5
    blend_threshold: float = 0.3
    resolution: str = "h16"

    @property
    def min_scale(self) -> int:
        return RESOLUTIONS[self.resolution]

    def step_counts(self, steps: int) -> tuple[int, int]:
        """(cross, self) numbers of first edit steps that are fused, as the official controller counts them.

        Cross: `get_time_words_attention_alpha` makes n + 1 rows and sets the first
        int((n + 1) * fraction) to 1; self: `int(n * fraction)`.
        """
        return min(int((steps + 1) * self.cross_replace_steps), steps), int(steps * self.self_replace_steps)


@dataclass
class _Pass:
    mode: str  # "store" (inversion), "fuse" (edit, conditional half of a CFG batch) or "capture" (source pass)
    step: int
    window: int
    latent_hw: tuple[int, int]


@dataclass(frozen=True)
class FusedLayer:
    name: str  # processor name, as the processors report it
    kind: str  # "self" or "cross"
    scale: int
    heads: int
    block: str = ""  # down_blocks, mid_block or up_blocks


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
            layers.append(FusedLayer(name, kind, scale, module.heads, name.split(".")[0]))
    return layers


def mask_layer_names(layers: list[FusedLayer]) -> list[str]:
    """The cross layers of the blending mask: H/32 of the down and up blocks (not the mid block)."""
    return [l.name for l in layers if l.kind == "cross" and l.scale == MASK_SCALE and l.block != "mid_block"]


class AttentionFusion:
    """Stores (or regenerates) and fuses attention maps of one video (see the module docstring)."""

    def __init__(
        self,
        layers: list[FusedLayer],
        store: AttentionDiskStore | RecomputedMaps,
        edit: CrossAttentionEdit,
        settings: FusionSettings,
        steps: int,
    ) -> None:
        self.layers = {layer.name: layer for layer in layers}
        self.store = store
        self.edit = edit
        self.settings = settings
        self.steps = steps
        self.cross_steps, self.self_steps = settings.step_counts(steps)
        self.mask_layers = mask_layer_names(layers)
        self.state: _Pass | None = None
        self._masks: dict[int, torch.Tensor] = {}
        self.stored = 0
        self.fused = 0
        self.planned: dict = {}  # the plan's per-mode disk and forward costs, for the report

    @property
    def source_mode(self) -> str:
        return "recompute" if isinstance(self.store, RecomputedMaps) else "store"

    # ------------------------------------------------------------------------------ passes
    @contextlib.contextmanager
    def active(self, mode: str, step: int, window: int, latent_hw: tuple[int, int], latents: torch.Tensor | None = None):
        """Within: the processors store (`store`) or fuse (`fuse`) maps of `window` at edit step `step`.

        `latents`: the window's own latents of this pass; a recompute fusion keeps those of the
        inversion (its trajectory) and, before a fused edit pass, regenerates the source maps.
        """
        if mode not in ("store", "fuse"):
            raise ValueError(f"unknown fusion mode '{mode}'")
        recompute = isinstance(self.store, RecomputedMaps)
        self._masks = {}
        try:
            if recompute and mode == "store" and latents is not None:
                self.store.record(step, window, latents)
            if recompute and mode == "fuse" and step < max(self.cross_steps, self.self_steps):
                self.state = _Pass("capture", step, window, tuple(latent_hw))
                self.store.regenerate(step, window)
            self.state = _Pass(mode, step, window, tuple(latent_hw))
            yield self
        finally:
            self.state = None
            self._masks = {}
            if recompute:
                self.store.release()

    def _wanted(self, layer: FusedLayer, step: int, mode: str) -> bool:
        if not self.store.has(layer.name, step):
            return False
        if mode == "store":
            return not isinstance(self.store, RecomputedMaps)
        return step < (self.cross_steps if layer.kind == "cross" else self.self_steps)

    # ----------------------------------------------------------------------------- attention
    def attend(self, name: str, kind: str, query, key, value, scale: float):
        """Attention output of layer `name` with stored/fused probabilities, or None where not acting."""
        state = self.state
        layer = self.layers.get(name)
        if state is None or layer is None:
            return None
        if state.mode == "capture":
            if self.store.capture(name, query, key, scale):
                raise StopForward(name)
            return None
        if not self._wanted(layer, state.step, state.mode):
            return None
        half = 0 if state.mode == "store" else query.shape[0] // 2
        logits = torch.matmul(query[half:].float(), key[half:].float().transpose(-1, -2)) * scale
        probs = logits.softmax(dim=-1)
        if state.mode == "store":  # keep the maps; the output stays SDPA's, so storing does not change the inversion
            self.store.put(name, state.step, state.window, probs)
            self.stored += 1
            return None
        else:
            base = self.store.get(name, state.step, state.window, keys=probs.shape[-1]).to(probs.device, probs.dtype)
            if kind == "cross":
                probs = self.edit.apply(base, probs)
            else:
                mask = self.blend_mask(layer.scale, probs.shape[-2])
                probs = mask * probs + (1 - mask) * base
            self.fused += 1
        out = torch.matmul(probs.to(value.dtype), value[half:])
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
        """Source cross-attention of the blend tokens at the mask layers: [rows, h, w], or None.

        Summed over the tokens, averaged over all heads of all mask layers (the official
        `(maps * alpha).sum(-1).mean(1)` over the heads of the concatenated layers).
        """
        tokens = list(self.edit.blend_tokens)
        if not tokens or not self.mask_layers:
            return None
        height, width = (spatial_size(s, MASK_SCALE) for s in latent_hw)
        per_head = [self.store.get(name, step, window).float()[..., tokens].sum(-1) for name in self.mask_layers]
        maps = torch.cat(per_head, dim=1).mean(1)  # [rows, heads of all layers, h*w] -> [rows, h*w]
        return maps.reshape(-1, height, width)

    # ------------------------------------------------------------------------------- report
    def report(self, frames: int) -> dict:
        """What the fusion kept and where, its disk footprint and extra UNet forwards per frame."""
        recompute = isinstance(self.store, RecomputedMaps)
        return {
            "source": self.source_mode,
            "layers": len(self.layers),
            "resolution": self.settings.resolution,
            "cross_replace_steps": self.cross_steps,
            "self_replace_steps": self.self_steps,
            "blend_threshold": self.settings.blend_threshold,
            **self.edit.report(),
            "disk_bytes": self.store.file_bytes(),
            "disk_bytes_per_frame": round(self.store.bytes_per_frame(frames), 1),
            "extra_unet_forwards": self.store.passes if recompute else 0,
            "extra_unet_forwards_per_frame": round(self.store.frame_passes / max(frames, 1), 3) if recompute else 0.0,
            "store": str(self.store.folder),
            **self.planned,
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
    """The per-layer slots: cross maps for the cross (and blending) steps, self maps for the self steps."""
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
