"""The toy UNet's attention terms: grounding (TokenCompose-style) and SD's start-token sink.

They shape the cross-attention level RAD reads (`train.map_scale`) so that it behaves as SD's does for RAD:
nouns look at their objects, object cells at their nouns, and every cell gives most of its attention to the
start token, so RAD's softmax(100 A) over columns 1..75 stays graded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grounding_losses(
    maps: torch.Tensor, columns: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two attention grounding terms of the UNet loss, averaged over the valid objects.

    maps [batch, cells, 77]: H/32 cross-attention probabilities (layer and head means); columns
    [batch, 3]: each object's noun column; cells [batch, 3, cells]: its mask's coverage of each cell
    (scaled to max 1); valid [batch, 3]: objects that exist and whose caption was not dropped.
    * share: 1 - the share of the noun's attention mass (over cells) inside its mask (TokenCompose-style):
      the noun should look at its object.
    * dominance: 1 - the noun's mean probability (over the 77 columns) in its mask's cells: the object's
      cells should look at the noun. Without it the toy model gave the padding columns ~60% of each
      object cell's attention and the noun ~7%, so RAD's official map (softmax(100 A) over columns
      1-75) averaged 0.2 on the object and RAD's loss had little gradient to follow; trained SD models
      give nouns the peak there.
    """
    word = torch.gather(maps, 2, columns[:, None, :].expand(-1, maps.shape[1], -1))  # [batch, cells, 3]
    weights = cells.transpose(1, 2)
    share = (word * weights).sum(1) / word.sum(1).clamp_min(1e-8)
    inside = (word * weights).sum(1) / weights.sum(1).clamp_min(1e-6)
    if not valid.any():
        return maps.sum() * 0, maps.sum() * 0
    return (1 - share)[valid].mean(), (1 - inside)[valid].mean()


def sink_losses(
    maps: torch.Tensor, columns: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor, cfg: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """SD's start-token sink, as two terms averaged over the valid captions' cells.

    * sink: background cells (no object covers them) give column 0 at least `sink_background` of their
      attention; object cells (coverage >= 0.5) between `sink_object[0]` and `[1]`. SD's cells give the
      start token most of their attention, so the words' raw values stay small and RAD's softmax(100 A)
      over columns 1..75 stays graded instead of a hard argmax (the toy model gave column 0 0.1%).
    * noun share: in its object's cells the noun takes the most of what the sink leaves, 1 - p_noun /
      (1 - p_0): the object's cells point at their noun, at raw values of SD's range.
    maps [batch, cells, 77], columns/valid [batch, 3], cells [batch, 3, cells] (coverage / max).
    """
    sink = maps[..., 0]
    captioned = valid.any(1)
    if not captioned.any():
        return maps.sum() * 0, maps.sum() * 0
    covered = (cells * valid[..., None]).amax(1)  # [batch, cells]
    background = (covered == 0) & captioned[:, None]
    low, high = cfg["sink_object"]
    inside = (cells >= 0.5) & valid[..., None]  # [batch, 3, cells]
    object_cells = inside.any(1)
    terms = []
    if background.any():
        terms.append(F.relu(cfg["sink_background"] - sink[background]).mean())
    if object_cells.any():
        terms.append((F.relu(low - sink[object_cells]) + F.relu(sink[object_cells] - high)).mean())
    word = torch.gather(maps, 2, columns[:, None, :].expand(-1, maps.shape[1], -1)).transpose(1, 2)
    left = (1 - sink)[:, None, :].clamp_min(1e-4)
    share = word / left  # [batch, 3, cells]
    noun = (1 - share[inside]).mean() if inside.any() else maps.sum() * 0
    return sum(terms), noun
