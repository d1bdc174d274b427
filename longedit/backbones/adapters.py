"""How the editor calls each kind of UNet: the `UNetAdapter` of a backbone kind.

The adapters themselves live with their kinds (`UNetAdapter` in `longedit.backbones.kind`, the
text-to-video and Tune-A-Video ones in their kind files); this is the editor's lookup.
"""

from __future__ import annotations

from longedit.backbones.kind import UNetAdapter
from longedit.backbones.registry import backbone_kind

__all__ = ["UNetAdapter", "adapter_for"]


def adapter_for(kind: str) -> UNetAdapter:
    """The adapter of backbone `kind` (sd, t2v, tuneavideo, ...)."""
    return backbone_kind(kind).adapter
