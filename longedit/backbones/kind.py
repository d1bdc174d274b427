"""What a backbone kind is: one `BackboneKind` object per kind file (`sd.py`, `t2v.py`, `tuneavideo.py`).

A kind bundles everything that differs between UNet families, so the rest of the package looks it up
(`longedit.backbones.registry`) instead of branching on its name:

* `adapter`: how `VideoEditor` calls the UNet (batch layout, anchor frame, processors);
* `load_unet(source, local_files_only)`: the UNet of a model folder or hub id;
* `random_unet(size, seed, sd_unet)`: a random UNet of this kind for tiny test models (`size="tiny"`)
  and full-size benchmarks (`"full"`); `sd_unet()` builds the random Stable Diffusion UNet of that size
  (which a kind may extend or ignore). `longedit.random_models` assembles whole models around it;
* `save_folder(components, folder, safe_serialization)`: write components as this kind's model folder;
* detection from `unet/config.json`: `unet_class` (its `_class_name`) and `recognises(config, weight
  names)` for the kinds that share a class; the first registered kind of a class is its default;
* `temporal_layers`: module-name parts of the layers that mix frames (left alone by the editor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

UNET_2D = "UNet2DConditionModel"
UNET_3D = "UNet3DConditionModel"


@dataclass(frozen=True)
class UNetAdapter:
    """Calls one kind of UNet on frame-batched latents.

    `VideoEditor` works on latents `[N, 4, h, w]` where the batch N is videos x frames (one video for
    inversion and the guided pass, two under classifier-free guidance) and on prompt embeddings
    `[N or 1, 77, D]`; `forward` turns that into the call the UNet expects (here: frames as batch rows).

    uses_anchor: prepend the video's first frame to every window (cross-frame attention anchor).
    sparse_causal: put the sparse-causal cross-frame processor on the spatial `attn1` layers.
    supports_checkpointing: the UNet implements diffusers gradient checkpointing.
    native_window: frames per window the model was trained on (None: no preference).
    """

    kind: str
    uses_anchor: bool = True
    sparse_causal: bool = True
    supports_checkpointing: bool = True
    native_window: int | None = None

    def forward(self, unet: torch.nn.Module, x: torch.Tensor, timestep, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        """eps for `x` [videos*frames, C, h, w]; `embedding` is [1 or videos*frames, T, D]."""
        if embedding.shape[0] == 1:
            embedding = embedding.expand(x.shape[0], -1, -1)
        return self.call_unet(unet, x, timestep, embedding, frames)

    def call_unet(self, unet: torch.nn.Module, x: torch.Tensor, timestep, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        """The UNet's eps for frame-batched `x` and one embedding row per frame."""
        return unet(x, timestep, encoder_hidden_states=embedding).sample


def never(config: dict, keys: Iterable[str]) -> bool:
    """A detection rule for a kind that is its class's default (nothing singles it out)."""
    return False


@dataclass(frozen=True)
class BackboneKind:
    """One UNet family (see the module docstring)."""

    name: str
    title: str  # for messages: "Stable Diffusion"
    unet_class: str
    adapter: UNetAdapter
    load_unet: Callable[[str, bool], torch.nn.Module]
    random_unet: Callable[[str, int, Callable[[], torch.nn.Module]], torch.nn.Module]
    save_folder: Callable[[dict, Path, bool], Path]
    recognises: Callable[[dict, Iterable[str]], bool] = never
    temporal_layers: tuple[str, ...] = ()
