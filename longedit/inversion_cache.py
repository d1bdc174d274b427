"""A content-addressed cache of DDIM inversions, shared by the jobs of one work folder.

With the empty inversion prompt (ReAtCo's default) the inversion depends only on the source video and
how it is processed (model, size, steps, dtype, windows), never on the edited prompt, so the usual
batch, several prompts on one clip, inverts the clip once. The key (`key_parts`) names everything the
result depends on: the video's bytes, the model's weights (LoRAs fused in, the VAE given), the LoRAs and VAE named, the scheduler, the processing size, steps,
dtype, device, windows, anchor and merge weights, the inversion prompt's text and its embedding, the
versions of torch/diffusers and of the inversion code (`INVERSION_CODE_VERSION`). A source-prompt
inversion includes that prompt, so it is cached too, per source prompt.

One entry is one file, `FOLDER/<key>.inv.pt` (x_T, and the per-step trajectory when the job needs it
for `--source-noise inversion`), written through `longedit.atomic`: a hidden temp name beside it,
fsync, rename. A reader sees a whole entry or none; two workers that compute one key at once both
publish identical, complete files (the last rename wins). A read checks the key and a checksum of the
payload, so a damaged or foreign file is a miss, never a wrong result. The cache is least recently
used: a hit touches the entry's mtime; after a write the oldest entries beyond the size cap are
removed. Temp files are not entries: one being written is never removed (those of dead writers are).
The cache never fails a job: a cache that cannot be read or written is a miss, and the report says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from longedit.atomic import atomic_write, remove_stale_temps
from longedit.errors import UserError

if TYPE_CHECKING:
    from longedit.video.probe import VideoInfo

#: Bump when the inversion's numbers change (editor.inversion_step, ddim, the window merge): old entries become misses.
INVERSION_CODE_VERSION = 2  # 2: v- and x0-predicting models are inverted as their prediction_type says
ENTRY_SUFFIX = ".inv.pt"
FORMAT = "longedit-inversion-1"
_CHUNK = 1 << 20


@dataclass
class CachedInversion:
    """One entry: the inverted latents x_T [F,4,h,w] and, when stored, the trajectory [steps,F,4,h,w] (fp16)."""

    latents: torch.Tensor
    trajectory: torch.Tensor | None


@dataclass(frozen=True)
class Entry:
    """A published entry on disk."""

    path: Path
    size: int
    used: float  # mtime: the last write or hit


# ------------------------------------------------------------------------------------------ keys
def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of tensors, in the given order."""
    digest = hashlib.sha256()
    for name, tensor in named:
        flat = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{flat.dtype}|{tuple(flat.shape)}|".encode())
        if flat.numel():
            digest.update(flat.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """The identity of a network: a digest of its weights and buffers (the model's content, wherever it came from)."""
    return tensor_digest(sorted(module.state_dict().items()))


def cache_key(parts: dict) -> str:
    """The entry name for key parts (canonical JSON, sha256)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def key_parts(
    *,
    video: Path | VideoInfo,
    processed_size: tuple[int, int],
    frames: int,
    backbone,
    editor,
    windows: list[tuple[int, int]],
    inversion_prompt: str,
    trajectory: bool,
) -> dict:
    """Everything an inversion depends on (see the module docstring); `backbone` a `models.Backbone`,
    `editor` the `editor.VideoEditor` that would run it. The seed is not a part: the inversion draws no noise."""
    import diffusers

    device = backbone.device
    settings = editor.settings
    return {
        "code": INVERSION_CODE_VERSION,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "video_sha256": source_digest(video),
        "frames": frames,
        "size": list(processed_size),
        "backbone": backbone.kind,
        "unet": module_digest(backbone.unet),
        "vae": module_digest(backbone.vae),
        "loras": [spec.describe() for spec in getattr(backbone, "loras", ())],  # also in the unet digest (fused)
        "vae_source": getattr(backbone, "vae_source", None),
        "scheduler": {k: v for k, v in dict(backbone.scheduler.config).items() if not k.startswith("_")},
        "steps": editor.schedule.steps,
        "dtype": str(backbone.dtype),
        "device": device.type if device.type != "cuda" else f"cuda:{torch.cuda.get_device_name(device)}",
        "windows": [list(w) for w in windows],
        "anchor": settings.anchor,
        "overlap_weights": settings.overlap_weights,
        "kernel_backend": settings.kernel_backend,
        "inversion_prompt": inversion_prompt,
        "inversion_embedding": tensor_digest([("cond", editor.inversion_cond)]),
        "trajectory": trajectory,
        **({} if _range(video) is None else {"range": _range(video)}),
    }


def _range(video) -> dict | None:
    """The part of the source a `VideoInfo` covers (`longedit.video.source.range_key`); None for a path or the whole."""
    from longedit.video.source import range_key

    return None if isinstance(video, (str, Path)) else range_key(video)


def source_digest(video) -> str:
    """sha256 of the source: a video file's bytes, or of a frame folder's frames (their names and bytes)."""
    if isinstance(video, (str, Path)):
        return file_digest(Path(video))
    if not video.image_files:
        return file_digest(Path(video.path))
    digest = hashlib.sha256()
    for file in video.image_files:
        digest.update(f"{file.name}:{file_digest(file)}".encode())
    return digest.hexdigest()


def _payload_digest(latents: torch.Tensor, trajectory: torch.Tensor | None) -> str:
    named = [("latents", latents)] + ([] if trajectory is None else [("trajectory", trajectory)])
    return tensor_digest(named)


# ----------------------------------------------------------------------------------------- store
class InversionCache:
    """The entries in `folder`, at most `max_bytes` of them (least recently used go first)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> CachedInversion | None:
        """The entry of `key`, or None: missing, torn, damaged (checksum), or another key's file."""
        path = self.path(key)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # missing, evicted meanwhile, torn or not ours: a miss
            return None
        try:
            if saved.get("format") != FORMAT or saved.get("key") != key:
                return None
            latents, trajectory = saved["latents"], saved.get("trajectory")
            if _payload_digest(latents, trajectory) != saved.get("checksum"):
                return None
            entry = CachedInversion(latents.clone(), trajectory)
        except Exception:  # a file with the right name but another layout
            return None
        try:
            os.utime(path)  # least recently used: a hit counts as a use
        except OSError:
            pass
        return entry

    def put(self, key: str, latents: torch.Tensor, trajectory: torch.Tensor | None = None, parts: dict | None = None) -> bool:
        """Publish an entry atomically, then evict beyond the cap; False (nothing written) when the
        entry alone is larger than the cap. Raises OSError/UserError when the folder cannot take it."""
        # Strides are kept as they are (torch.save keeps them): the UNet's kernels follow the memory
        # format (channels_last or not), so a hit must hand back the same layout to give the same bits.
        latents = latents.detach().cpu()
        trajectory = None if trajectory is None else trajectory.detach().cpu()
        size = latents.numel() * latents.element_size() + (0 if trajectory is None else trajectory.numel() * trajectory.element_size())
        if size > self.max_bytes:
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "format": FORMAT, "key": key, "latents": latents, "trajectory": trajectory,
            "checksum": _payload_digest(latents, trajectory), "parts": json.loads(json.dumps(parts or {}, default=str)),
            "created": time.time(),
        }
        target = self.path(key)
        with atomic_write(target, "wb", what="the inversion cache entry", needed=size) as handle:
            torch.save(record, handle)
        self.evict(keep=target)
        return True

    def entries(self) -> list[Entry]:
        """Published entries, least recently used first (temp files are not entries)."""
        found = []
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        for name in names:
            if name.startswith(".") or not name.endswith(ENTRY_SUFFIX):
                continue
            try:
                stat = (self.folder / name).stat()
            except OSError:  # evicted by another worker meanwhile
                continue
            found.append(Entry(self.folder / name, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda e: (e.used, e.path.name))

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used entries until the rest fit the cap (never `keep`), and temp
        files of writers that died; a temp file of a live writer is never touched. Returns what went."""
        removed = self._remove_dead_temps()
        entries = self.entries()
        total = sum(e.size for e in entries)
        for entry in entries:
            if total <= self.max_bytes:
                break
            if keep is not None and entry.path == keep:
                continue
            try:
                entry.path.unlink()
                removed.append(entry.path)
            except FileNotFoundError:  # another worker evicted it first
                pass
            total -= entry.size
        return removed

    def _remove_dead_temps(self) -> list[Path]:
        """Temp files `.NAME.PID.RANDOM.tmp` (longedit.atomic) whose PID is gone on this host."""
        targets = set()
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        for name in names:
            parts = name[1:].rsplit(".", 3)
            if name.startswith(".") and len(parts) == 4 and parts[3] == "tmp" and parts[0].endswith(ENTRY_SUFFIX):
                targets.add(parts[0])
        removed: list[Path] = []
        for target in sorted(targets):
            removed += remove_stale_temps(self.folder / target)
        return removed


@dataclass
class SharedInversion:
    """One job's place in the cache: `load` and `store` never raise (the cache never fails a job)."""

    cache: InversionCache
    key: str
    parts: dict

    def load(self, shape: tuple[int, ...], needs_trajectory: bool) -> CachedInversion | None:
        """The entry when it fits this job (latents of `shape`, a trajectory when needed), else None."""
        try:
            entry = self.cache.get(self.key)
        except Exception:  # an unreadable folder is a miss
            return None
        if entry is None or tuple(entry.latents.shape) != tuple(shape):
            return None
        if needs_trajectory and entry.trajectory is None:
            return None
        return entry

    def store(self, latents: torch.Tensor, trajectory: torch.Tensor | None) -> str:
        """Publish the job's inversion; returns what happened, in words for the report."""
        try:
            stored = self.cache.put(self.key, latents, trajectory, self.parts)
        except (OSError, UserError) as error:
            return f"not stored: {error}"
        return "stored" if stored else f"not stored: larger than the cache cap ({self.cache.max_bytes} bytes)"
