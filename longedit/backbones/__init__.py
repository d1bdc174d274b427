"""Backbones beyond Stable Diffusion: text-to-video UNet3D and Tune-A-Video checkpoints.

* `resolve_backbone_kind` / `detect_backbone_kind`: `sd`, `t2v` or `tuneavideo` from `unet/config.json`.
* `load_unet(kind, source)`: the UNet of a model folder or hub id, for `longedit.models.load_backbone`.
* `adapter_for(kind)`: how `VideoEditor` calls that UNet (batch layout, anchor frame, processors).
* `build_bench_backbone(kind, ...)`: random backbones of each kind for `longedit bench`.
"""

from __future__ import annotations

import torch

from longedit.backbones.adapters import KINDS, SD, T2V, TUNEAVIDEO, UNetAdapter, adapter_for
from longedit.backbones.bench import build_bench_backbone
from longedit.backbones.detect import detect_backbone_kind, read_unet_config, resolve_backbone_kind

__all__ = [
    "KINDS", "SD", "T2V", "TUNEAVIDEO", "UNetAdapter", "adapter_for", "build_bench_backbone",
    "detect_backbone_kind", "load_unet", "read_unet_config", "resolve_backbone_kind",
]


def load_unet(kind: str, source: str, local_files_only: bool = False) -> torch.nn.Module:
    """The UNet of `source` (folder or hub id) for backbone `kind`."""
    if kind == T2V:
        from longedit.backbones.t2v import load_t2v_unet

        return load_t2v_unet(source, local_files_only)
    if kind == TUNEAVIDEO:
        from longedit.backbones.tuneavideo import load_tuneavideo_unet

        return load_tuneavideo_unet(source, local_files_only)
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_files_only)
