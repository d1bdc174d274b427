"""The clip a tuning trains on: VAE posteriors cached on disk once, and the windows each step samples.

The official Tune-A-Video dataset decodes the first `n_sample_frames` frames and VAE-encodes them at
every step (`latent_dist.sample()`). Here the VAE runs once over the whole clip, streaming frames in
chunks, and writes each frame's posterior (mean and standard deviation, already times the VAE's
scaling factor, fp16) into a memory-mapped `.npy` file; every step then draws
`mean + std * noise` for the frames of its window, which is what `latent_dist.sample() * scale` gives,
without the VAE on the device during training and without the clip in RAM.

A window is `frames` frames `stride` apart, placed anywhere in the clip (uniformly over the possible
starts), so one tuning sees a long video end to end instead of only its first frames.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from longedit.atomic import AtomicFile
from longedit.errors import JobInterrupted, UserError
from longedit.video import VideoInfo, iter_frames

LATENTS_PREFIX = "posterior-"
#: Frames per VAE call while encoding the clip.
ENCODE_CHUNK = 8


@dataclass(frozen=True)
class WindowPlan:
    """How each step picks its frames: `frames` frames `stride` apart from a start in [0, starts)."""

    frames: int
    stride: int
    starts: int
    note: str | None = None

    @classmethod
    def fit(cls, total: int, frames: int, stride: int) -> "WindowPlan":
        """The plan for a clip of `total` frames; a clip shorter than one window gives every frame it has at that stride."""
        if total < 1:
            raise UserError("the clip has no frames", "give a video with at least one frame")
        span = (frames - 1) * stride + 1
        if span <= total:
            return cls(frames, stride, total - span + 1)
        fitted = (total - 1) // stride + 1
        note = (
            f"the clip has {total} frames: each step trains on all {fitted} frames {stride} apart "
            f"instead of {frames}"
        )
        return cls(fitted, stride, total - ((fitted - 1) * stride + 1) + 1, note)

    def sample(self, generator: torch.Generator) -> list[int]:
        """The frame indices of one window (start drawn from `generator`)."""
        start = int(torch.randint(self.starts, (1,), generator=generator))
        return [start + i * self.stride for i in range(self.frames)]


class ClipPosterior:
    """The clip's per-frame VAE posteriors [frames, 2 (mean, std), 4, h, w], memory-mapped read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.array = np.load(path, mmap_mode="r")

    @property
    def frames(self) -> int:
        return int(self.array.shape[0])

    def sample(self, indices: list[int], generator: torch.Generator) -> torch.Tensor:
        """Latents [len(indices), 4, h, w] (fp32): a posterior sample of each frame, as `latent_dist.sample()`."""
        rows = torch.from_numpy(np.ascontiguousarray(self.array[indices])).float()
        mean, std = rows[:, 0], rows[:, 1]
        return mean + std * torch.randn(mean.shape, generator=generator)


def latents_path(folder: Path, key: str) -> Path:
    """The latent cache of `key` (a hash of what the latents depend on) in `folder`."""
    return folder / f"{LATENTS_PREFIX}{key[:16]}.npy"


def encode_clip(
    vae: torch.nn.Module,
    info: VideoInfo,
    size: tuple[int, int],
    folder: Path,
    device: torch.device,
    key: str,
    progress: bool = True,
    stop_event: threading.Event | None = None,
) -> ClipPosterior:
    """The clip's posteriors from `folder` (a finished earlier encode) or encoded now, streaming, into it.

    `key` names what the latents depend on (clip bytes, VAE, size: `latents_path`). Frames are decoded
    at `size` (width, height) one at a time and encoded `ENCODE_CHUNK` at a time; the file is written
    under a temp name and renamed when complete, so a half-written cache is never read.
    """
    path = latents_path(folder, key)
    scale = float(vae.config.scaling_factor)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (info.frames, 2, int(vae.config.latent_channels), size[1] // factor, size[0] // factor)
    if path.is_file():
        cached = ClipPosterior(path)
        if cached.array.shape == shape:
            return cached
    folder.mkdir(parents=True, exist_ok=True)
    target = AtomicFile(path, what="the clip's latent cache", suffix=".npy", needed=int(np.prod(shape)) * 2)
    dtype = next(vae.parameters()).dtype
    try:
        array = np.lib.format.open_memmap(target.temp, mode="w+", dtype=np.float16, shape=shape)
        done = 0
        chunk: list[np.ndarray] = []
        bar = tqdm(total=info.frames, desc="encode clip", unit="frame", disable=not progress)

        def flush() -> None:
            nonlocal done
            pixels = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.no_grad():
                posterior = vae.encode(pixels.to(device=device, dtype=dtype)).latent_dist
                rows = torch.stack([posterior.mean, posterior.std], dim=1).float() * scale
            array[done : done + len(chunk)] = rows.cpu().numpy().astype(np.float16)
            done += len(chunk)
            bar.update(len(chunk))
            chunk.clear()

        for frame in iter_frames(info.path, size=size):
            chunk.append(frame)
            if len(chunk) == ENCODE_CHUNK:
                flush()
                if stop_event is not None and stop_event.is_set():
                    raise JobInterrupted("stopped while encoding the clip; nothing to resume yet")
        if chunk:
            flush()
        bar.close()
        if done != info.frames:
            raise UserError(f"'{info.path}' decoded to {done} frames, not the {info.frames} it announced", "re-encode the video")
        array.flush()
        del array
    except OSError as error:
        raise target.fail(error) from error
    except BaseException:
        target.discard()
        raise
    target.commit()
    return ClipPosterior(path)
