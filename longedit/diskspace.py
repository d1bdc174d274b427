"""Free disk space before a long run: what a run will write where, refused up front when a disk cannot hold it.

A run writes its output video (next to the output), its checkpoints and the IRJS inversion trajectory
(in the work folder) and, with FateZero, the attention store or trajectory (`longedit.fatezero.plan`).
Their sizes follow from the latent shape, the frame count and the dtypes, so a run that would fill a
disk after hours is refused before the model loads, with one line naming what, where, how much it
needs and how much is free. Targets on one filesystem are added up.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from longedit.atomic import human_size
from longedit.errors import UserError

LATENT_CHANNELS = 4  # the SD-layout VAE of every supported backbone
VAE_SCALE = 8
#: Bits per pixel and frame assumed for the H.264 output: libx264 at CRF 18 takes about 0.1-0.3 on
#: natural video and up to ~1 on the noise of a random model; 2 leaves room.
OUTPUT_BITS_PER_PIXEL = 2.0
CHECKPOINT_OVERHEAD = 64 * 1024  # a checkpoint's RNG state, windows, per-step stats and pickle framing
AUDIO_BYTES_PER_S = 320_000 // 8  # a generous audio bit rate (the track is copied from the source)


@dataclass(frozen=True)
class DiskNeed:
    """`nbytes` that `what` (e.g. 'the checkpoint folder') will write into `folder`."""

    what: str
    folder: Path
    nbytes: int


def existing_folder(path: Path) -> Path:
    """`path` or its nearest existing parent (a work folder may not exist yet)."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: Path) -> int:
    """Free bytes for this user on the disk that holds (or will hold) `folder`."""
    return shutil.disk_usage(existing_folder(folder)).free


def latent_bytes(frames: int, size: tuple[int, int], bytes_per_value: int = 4) -> int:
    """Bytes of the latents of `frames` frames processed at `size` (width, height)."""
    return frames * LATENT_CHANNELS * (size[0] // VAE_SCALE) * (size[1] // VAE_SCALE) * bytes_per_value


def video_bytes(
    frames: int, size: tuple[int, int], duration_s: float, audio: bool, bits_per_pixel: float = OUTPUT_BITS_PER_PIXEL
) -> int:
    """A generous estimate of the encoded output (see OUTPUT_BITS_PER_PIXEL; other codecs give their own:
    `longedit.video.codecs.OutputFormat.bits_per_pixel`), audio included."""
    pixels = frames * size[0] * size[1]
    return int(pixels * bits_per_pixel / 8) + (int(duration_s * AUDIO_BYTES_PER_S) if audio else 0)


def checkpoint_bytes(frames: int, size: tuple[int, int], objects: int) -> int:
    """Peak disk of the checkpoints: source and current latents (fp32), masks (bool) and the rest, twice (the
    atomic save writes the new file before the old one goes)."""
    masks = frames * max(objects, 1) * (size[0] // VAE_SCALE) * (size[1] // VAE_SCALE)
    return 2 * (2 * latent_bytes(frames, size) + masks + CHECKPOINT_OVERHEAD)


def _filesystem(folder: Path) -> tuple[int, Path]:
    existing = existing_folder(folder)
    return os.stat(existing).st_dev, existing


def check_free_space(needs: Sequence[DiskNeed], fix: str) -> None:
    """UserError when the needs that fall on one disk add up to more than its free space."""
    disks: dict[int, tuple[Path, list[DiskNeed]]] = {}
    for need in needs:
        if need.nbytes <= 0:
            continue
        device, existing = _filesystem(need.folder)
        disks.setdefault(device, (existing, []))[1].append(need)
    for existing, group in disks.values():
        total = sum(n.nbytes for n in group)
        free = shutil.disk_usage(existing).free
        if total > free:
            parts = ", ".join(f"{n.what} needs ~{human_size(n.nbytes)} in '{n.folder}'" for n in group)
            in_all = f" (~{human_size(total)} in all)" if len(group) > 1 else ""
            raise UserError(f"not enough disk space: {parts}{in_all}, but that disk has {human_size(free)} free", fix)
