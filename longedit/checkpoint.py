"""The run state of one edit job, saved atomically in its work folder so a later call resumes it.

`RunState` is everything the loop needs to continue from a step boundary (phase, step, latents, the
source latents, windows, masks, what was measured so far); `save` writes it to `checkpoint.pt`
atomically, `load` reads it back when the job's fingerprint matches, `read_progress` reads only the
phase and step (memory-mapped: the latents are not read), for `longedit status` and the watcher.
`Trajectory` keeps the DDIM inversion latents of every step on disk (IRJS `--source-noise inversion`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longedit.atomic import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
TRAJECTORY_NAME = "inversion-trajectory.f16"
PHASES = ("inversion", "edit", "decode")


@dataclass
class RunState:
    """Where a job is: `phase` (inversion, edit, decode) and the number of steps of it already done."""

    fingerprint: str
    source: torch.Tensor
    latents: torch.Tensor
    windows: list[tuple[int, int]]
    window_plan: Any
    phase: str = "inversion"
    step: int = 0
    masks: dict | None = None
    attention: list[list[float]] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    refinements: list[int] = field(default_factory=list)
    skipped_updates: int = 0
    rad_diagnostics: list[dict] = field(default_factory=list)  # per guided step (`longedit.rad_diagnostics`)
    unet_forwards: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    fatezero: dict | None = None
    paste: dict | None = None
    inversion: dict | None = None  # x_T's checksum and what the shared inversion cache did (engine)
    rng: torch.Tensor | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def job_fingerprint(settings: dict, input_path: Path, frames: int) -> str:
    """What a result depends on: the job's settings (without output paths) and the input file's identity."""
    stat = Path(input_path).stat()
    identity = {"settings": settings, "input_size": stat.st_size, "input_mtime": stat.st_mtime_ns, "frames": frames}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def save(work_dir: Path, state: RunState) -> None:
    """Atomic write (`longedit.atomic`): a full disk is a one-line UserError and leaves no temp file."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(work_dir / CHECKPOINT_NAME, "wb", what="the checkpoint") as handle:
        torch.save(state.as_dict(), handle)


def load(work_dir: Path | None, fingerprint: str) -> RunState | None:
    """The saved state of the job with `fingerprint`, or None (no checkpoint, another job's, or unreadable)."""
    if work_dir is None or not (work_dir / CHECKPOINT_NAME).is_file():
        return None
    try:
        saved = torch.load(work_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: start over rather than fail the job
        warnings.warn(f"ignoring unreadable checkpoint in {work_dir}")
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return None
    known = {f.name for f in fields(RunState)}
    try:
        return RunState(**{k: v for k, v in saved.items() if k in known})
    except TypeError:  # written by a version with other required fields
        return None


def read_progress(work_dir: Path) -> tuple[str, int] | None:
    """(phase, step) of the checkpoint in `work_dir`, None without one; reads only the header (mmap)."""
    path = work_dir / CHECKPOINT_NAME
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        phase, step = saved["phase"], int(saved["step"])
    except Exception:  # missing, replaced while reading, or not a checkpoint
        return None
    return (phase, step) if phase in PHASES else None


class Trajectory:
    """DDIM inversion latents of every step on disk (fp16 memmap); position p = the level of timesteps[p]."""

    def __init__(self, path: Path, steps: int, shape: tuple[int, ...], create: bool) -> None:
        mode = "w+" if create or not path.exists() else "r+"
        self.path = Path(path)
        self.array = np.memmap(path, dtype=np.float16, mode=mode, shape=(steps, *shape))

    def put(self, position: int, latents: torch.Tensor) -> None:
        self.array[position] = latents.to(torch.float16).numpy()

    def get(self, position: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[position])).float()

    def values(self) -> torch.Tensor:
        """Every step as one fp16 tensor [steps, ...] backed by the file (not read into memory)."""
        return torch.from_numpy(self.array)

    def fill(self, values: torch.Tensor) -> None:
        """Every step at once (a shared inversion's trajectory), one step at a time."""
        for position in range(self.array.shape[0]):
            self.array[position] = values[position].to(torch.float16).numpy()
