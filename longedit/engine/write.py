"""Decode the edited latents and write the output video (background paste, audio, source timestamps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from longedit import latent_decode
from longedit.composite import BackgroundMeter, composite, feathered_alpha
from longedit.config import EditJob
from longedit.masks import ObjectMasks
from longedit.models import Backbone
from longedit.video import VideoInfo, iter_frames, open_writer
from longedit.engine.source import VAE_CHUNK


def decode_latents(backbone: Backbone, latents: torch.Tensor) -> Iterator[np.ndarray]:
    """VAE-decode host latents in chunks, yielding RGB uint8 frames at the processing size (the same
    pixels in every run: resumed or not, any thread count; see longedit.latent_decode)."""
    return latent_decode.decode_latents(backbone.vae, latents, backbone.device, VAE_CHUNK)


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


def output_size(job: EditJob, info: VideoInfo, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the written frames: the processing size with --keep-size, else the source's."""
    return size if job.keep_size else (info.width, info.height)


def edited_frames(
    backbone: Backbone, latents: torch.Tensor, info: VideoInfo, job: EditJob, size: tuple[int, int],
    masks: ObjectMasks | None = None, meter: BackgroundMeter | None = None,
) -> Iterator[np.ndarray]:
    """The edited frames as written (decoded, resized, the source's background pasted back when on), one at
    a time: what `write_video` encodes and `LongEditPipeline`'s output streams. `meter` measures the paste."""
    out_size = output_size(job, info, size)
    paste = masks is not None and job.use_background_paste
    sources = iter_frames(info, size=out_size, end=info.frames) if paste else None
    for index, frame in enumerate(decode_latents(backbone, latents)):
        frame = _resize(frame, out_size)
        if sources is not None:
            source = next(sources)
            alpha = feathered_alpha(masks.union(index, index + 1)[0, 0], out_size, job.feather)
            if meter is not None:
                meter.add(frame, source, alpha)
            frame = composite(frame, source, alpha)
        yield frame


def write_video(
    backbone: Backbone, latents: torch.Tensor, info: VideoInfo, job: EditJob, size: tuple[int, int],
    advance: Callable[[], None] | None = None, masks: ObjectMasks | None = None,
) -> dict | None:
    """Decode latents and stream them into the output file (atomic: temp name then rename), audio remuxed;
    `advance()` after each frame.

    With `masks` and the background paste on, each frame's background is the source's own pixels
    (`longedit.composite`); returns what the paste measured (None without it).
    """
    out_size = output_size(job, info, size)
    meter = BackgroundMeter()
    with open_writer(
        job.output, out_size[0], out_size[1], info.fps, timestamps=info.timestamps, audio_source=info.path,
        codec=job.codec, pix_fmt=job.pix_fmt, crf=job.crf,
        warn_crop=False,  # the report and the summary line say it (`output_cropped`)
    ) as writer:
        for frame in edited_frames(backbone, latents, info, job, size, masks, meter):
            writer.write(frame)
            if advance is not None:
                advance()
    if masks is None or not job.use_background_paste:
        return None
    return {"enabled": True, "feather_px": job.feather, "decoded_background_psnr_db": meter.mean(),
            "written_background": "exact: the source's decoded pixels outside the regions and their feather"}
