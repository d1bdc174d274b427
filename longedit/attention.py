"""Attention processors that make an image UNet video-aware and expose its cross-attention maps.

Nothing of the UNet is forked: we swap processors with `set_attn_processor`, the diffusers way.

* `CrossFrameAttnProcessor` on every `attn1`: each frame's queries attend to the keys/values of the
  window's anchor frame (its first frame) and of the previous frame ("sparse-causal" attention of
  Tune-A-Video / FateZero); the anchor itself attends to [anchor, anchor]. With `--anchor video` the
  editor prepends the video's first frame to windows that start later (`prepended_anchor`): the
  window's first own frame then attends to [anchor, itself], never [anchor, anchor] (that would
  rebuild it from frame 0's content: flicker at every window start).
* `CaptureCrossAttnProcessor` on every `attn2`: ordinary text cross-attention, and, at the layers the
  RAD loss uses (spatial size H/32), the head-averaged attention probabilities of a few token columns,
  computed by the fused op of `longedit.kernels.word_attention` (never the full heads x queries x 77
  tensor kept for backward).

Temporal layers of video UNets (diffusers `UNet3DConditionModel`: `transformer_in`, `temp_attentions`;
Tune-A-Video's temporal attention, see `longedit.backbones.tuneavideo`) keep their own processors: they
mix frames by design and are neither cross-frame nor text attention (`is_temporal_layer`).

All per-call state lives in one `AttentionContext` object shared by the processors of one UNet. An
optional `AttentionContext.fusion` hook (FateZero attention fusion, `longedit.fatezero`) may compute a
layer's attention itself (explicit probabilities it stores or replaces); it returns None where it does
not act, and the processors then run their ordinary SDPA path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from longedit.backbones.registry import temporal_layer_pattern
from longedit.kernels.word_attention import word_attention_maps


class StopForward(Exception):
    """Raised after the last captured layer of a guided pass: the rest of the UNet cannot change the loss."""


@dataclass
class AttentionContext:
    """Mutable state shared by the processors of one UNet (one per engine, never global).

    frames: frames per video in the current batch (the batch is videos x frames).
    prepended_anchor: the first frame of each video is a prepended anchor, not one of the window's own.
    capture: whether the capture layers record maps in this forward.
    columns: text-token columns to record, shape [C].
    capture_rows: which videos of the batch to record (the conditional half under CFG).
    stop_after: name of the layer after whose capture the forward stops (guided pass only).
    replaying: True while autograd recomputes checkpointed blocks: compute the same ops, store nothing.
    fusion: optional attention-fusion hook (see module docstring); not cleared by `reset`.
    """

    frames: int = 1
    prepended_anchor: bool = False
    capture: bool = False
    columns: torch.Tensor | None = None
    capture_rows: slice = field(default_factory=lambda: slice(None))
    stop_after: str | None = None
    replaying: bool = False
    kernel_backend: str = "auto"
    maps: list[torch.Tensor] = field(default_factory=list)
    fusion: Any = None

    def reset(self) -> None:
        self.capture = False
        self.columns = None
        self.capture_rows = slice(None)
        self.stop_after = None
        self.replaying = False
        self.maps = []


def _project(attn: Attention, hidden_states: torch.Tensor, context_states: torch.Tensor | None):
    """Shared front half of diffusers' AttnProcessor2_0: norms and q/k/v projections split into heads."""
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if context_states is None:
        context_states = hidden_states
    elif attn.norm_cross:
        context_states = attn.norm_encoder_hidden_states(context_states)
    key = attn.to_k(context_states)
    value = attn.to_v(context_states)
    batch = hidden_states.shape[0]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(key.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(value.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key, value


def _run_attention(attn, hidden_states, context_states, temb, attend):
    """The whole AttnProcessor2_0 body with a pluggable `attend(query, key, value) -> out` in the middle."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    query, key, value = _project(attn, hidden_states, context_states)
    out = attend(query, key, value)
    batch = out.shape[0]
    out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3]).to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def sparse_causal_frames(frames: int, prepended_anchor: bool = False) -> torch.Tensor:
    """For each frame of a video, the frame whose keys join the anchor's: its previous frame (Tune-A-Video).

    Frame 0 (the anchor) takes itself. After a prepended anchor, the window's first own frame (1) takes
    itself too: its real previous frame is not in the window, and the anchor twice would copy frame 0.
    """
    previous = (torch.arange(frames) - 1).clamp(min=0)
    if prepended_anchor and frames > 1:
        previous[1] = 1
    return previous


def sparse_causal_kv(tensor: torch.Tensor, frames: int, prepended_anchor: bool = False) -> torch.Tensor:
    """[B*F, heads, N, d] -> [B*F, heads, 2N, d]: each frame sees the anchor (frame 0) and its previous frame."""
    total, heads, tokens, dim = tensor.shape
    if frames <= 1 or total % frames:
        return tensor
    videos = total // frames
    tensor = tensor.view(videos, frames, heads, tokens, dim)
    previous = sparse_causal_frames(frames, prepended_anchor).to(tensor.device)
    anchor = tensor[:, :1].expand(-1, frames, -1, -1, -1)
    joined = torch.cat([anchor, tensor[:, previous]], dim=3)
    return joined.reshape(total, heads, 2 * tokens, dim)


def _fused(context: AttentionContext, name: str, kind: str, query, key, value, scale: float):
    """The fusion hook's attention output for this layer, or None where it does not act."""
    if context.fusion is None or context.replaying:
        return None
    return context.fusion.attend(name, kind, query, key, value, scale)


class CrossFrameAttnProcessor:
    """Self-attention across frames (anchor + previous frame) for `attn1` layers.

    `sparse_causal=False` gives plain per-frame self-attention (the spatial `attn1` of a text-to-video
    UNet, whose temporal layers already mix frames); it still goes through the fusion hook.
    """

    def __init__(self, context: AttentionContext, name: str = "", sparse_causal: bool = True) -> None:
        self.context = context
        self.name = name
        self.sparse_causal = sparse_causal

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        frames = self.context.frames if self.sparse_causal else 1
        prepended = self.context.prepended_anchor

        def attend(query, key, value):
            key = sparse_causal_kv(key, frames, prepended)
            value = sparse_causal_kv(value, frames, prepended)
            out = _fused(self.context, self.name, "self", query, key, value, attn.scale)
            return F.scaled_dot_product_attention(query, key, value) if out is None else out

        return _run_attention(attn, hidden_states, None, temb, attend)


class CaptureCrossAttnProcessor:
    """Text cross-attention for `attn2` layers; records word maps when its layer is a capture layer."""

    def __init__(self, context: AttentionContext, name: str, captures: bool) -> None:
        self.context = context
        self.name = name
        self.captures = captures

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        context = self.context

        def attend(query, key, value):
            out = _fused(context, self.name, "cross", query, key, value, attn.scale)
            if out is None:
                out = F.scaled_dot_product_attention(query, key, value, attn_mask=None)
            if self.captures and context.capture and context.columns is not None:
                rows = context.capture_rows
                maps = word_attention_maps(
                    query[rows], key[rows], context.columns, attn.scale, backend=context.kernel_backend
                )
                if not context.replaying:
                    context.maps.append(maps)
            return out

        out = _run_attention(attn, hidden_states, encoder_hidden_states, temb, attend)
        if self.captures and context.capture and context.stop_after == self.name and not context.replaying:
            raise StopForward(self.name)
        return out


_BLOCK_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")
_TEMPORAL_RE = temporal_layer_pattern()  # every backbone kind's temporal layers (longedit.backbones.registry)


def is_temporal_layer(name: str) -> bool:
    """Whether attention layer `name` mixes frames (UNet3D temporal transformers, Tune-A-Video temporal layers)."""
    return bool(_TEMPORAL_RE.search(name))


def layer_scale(name: str, levels: int) -> int:
    """Downsampling factor relative to the latents of the attention layer `name` in a UNet2D/3D."""
    match = _BLOCK_RE.match(name)
    if not match:
        return 1
    kind, index = match.group(1) or match.group(3), int(match.group(2) or 0)
    if kind == "down_blocks":
        return 2**index
    if kind == "mid_block":
        return 2 ** (levels - 1)
    return 2 ** (levels - 1 - index)


def capture_layer_names(unet: torch.nn.Module, scale: int = 4) -> list[str]:
    """Names of the `attn2` processors at latent/`scale` (H/32 of the frame for SD), in execution order."""
    levels = len(unet.config.block_out_channels)
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor") and not is_temporal_layer(n)]
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}

    def key(name: str):
        match = _BLOCK_RE.match(name)
        numbers = [int(x) for x in re.findall(r"\.(\d+)\.", "." + name)]
        return (order.get(match.group(1) or match.group(3), 3) if match else 3, numbers)

    return sorted((n for n in names if layer_scale(n, levels) == scale), key=key)


def install_processors(
    unet: torch.nn.Module, context: AttentionContext, scale: int = 4, sparse_causal: bool = True
) -> list[str]:
    """Swap the spatial attention processors of `unet`; returns the capture layer names in execution order.

    Temporal layers keep their processors. `sparse_causal=False` makes `attn1` plain per-frame
    self-attention (text-to-video UNets).
    """
    captured = set(capture_layer_names(unet, scale))
    if not captured:
        raise ValueError(f"the UNet has no cross-attention layer at 1/{scale} of the latent size")
    processors = {}
    for name in unet.attn_processors:
        if is_temporal_layer(name):
            processors[name] = unet.attn_processors[name]
        elif name.endswith("attn1.processor"):
            processors[name] = CrossFrameAttnProcessor(context, name, sparse_causal)
        elif name.endswith("attn2.processor"):
            processors[name] = CaptureCrossAttnProcessor(context, name, name in captured)
        else:
            processors[name] = unet.attn_processors[name]
    unet.set_attn_processor(processors)
    return capture_layer_names(unet, scale)
