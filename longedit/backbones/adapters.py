"""How the editor calls each kind of UNet with its frame-batched latents.

`VideoEditor` works on latents `[N, 4, h, w]` where the batch N is videos x frames (one video for
inversion and the guided pass, two under classifier-free guidance: unconditional then conditional) and
on prompt embeddings `[N or 1, 77, D]`. An adapter turns that into the call its UNet expects:

* `sd`: `UNet2DConditionModel` as is (frames are batch rows; cross-frame attention comes from the
  processors of `longedit.attention`).
* `t2v`: diffusers `UNet3DConditionModel` (ModelScope text-to-video and its fine-tunes) takes
  `[videos, 4, frames, h, w]` and one embedding per video. Its spatial layers still see
  `[videos*frames, tokens, C]`, so the capture processors work unchanged; its temporal layers
  (`transformer_in`, `temp_attentions`, `temp_convs`) keep their own processors. No anchor frame is
  prepended: the temporal layers would see the video's first frame as an extra, far-away frame
  (a jump cut) next to every window, and the model does not need it (its self-attention is per frame;
  windows are tied together by the temporal layers and the overlap averaging).
* `tuneavideo`: a `UNet2DConditionModel` with Tune-A-Video's temporal layers attached
  (`longedit.backbones.tuneavideo`); the adapter tells those layers how many frames a video has.
  The anchor is kept: Tune-A-Video's own sparse-causal attention uses the clip's first frame as
  anchor. Its temporal attention and clip-wise GroupNorms then see the anchor as one extra frame of
  the window (TAV itself runs on contiguous clips; the shared anchor is what ties windows together).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SD, T2V, TUNEAVIDEO = "sd", "t2v", "tuneavideo"
KINDS = (SD, T2V, TUNEAVIDEO)


@dataclass(frozen=True)
class UNetAdapter:
    """Calls one kind of UNet on frame-batched latents.

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
        if self.kind == T2V:
            return _forward_video_unet(unet, x, timestep, embedding, frames)
        if self.kind == TUNEAVIDEO:
            unet.tuneavideo_temporal.frames = frames
        return unet(x, timestep, encoder_hidden_states=embedding).sample


def _forward_video_unet(unet, x: torch.Tensor, timestep, embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """[videos*frames, C, h, w] -> UNet3D [videos, C, frames, h, w] -> back; one embedding per video."""
    total = x.shape[0]
    if frames < 1 or total % frames:
        raise ValueError(f"batch of {total} rows is not a whole number of {frames}-frame videos")
    videos = total // frames
    sample = x.reshape(videos, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    per_video = embedding.reshape(videos, frames, *embedding.shape[1:])[:, 0]
    out = unet(sample, timestep, encoder_hidden_states=per_video).sample
    return out.permute(0, 2, 1, 3, 4).reshape(total, *out.shape[1:2], *out.shape[3:])


ADAPTERS = {
    SD: UNetAdapter(SD),
    T2V: UNetAdapter(T2V, uses_anchor=False, sparse_causal=False, supports_checkpointing=False, native_window=16),
    TUNEAVIDEO: UNetAdapter(TUNEAVIDEO),
}


def adapter_for(kind: str) -> UNetAdapter:
    """The adapter of backbone `kind` (sd, t2v, tuneavideo)."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown backbone kind '{kind}' (use one of {', '.join(KINDS)})") from None
