"""The run state of one edit job, saved atomically in its work folder so a later call resumes it.

`RunState` is everything the loop needs to continue from a step boundary (phase, step, latents, the
source latents, windows, masks, what was measured so far); `save` writes it to `checkpoint.pt`
atomically, `load` reads it back when the job's fingerprint matches, `read_progress` reads only the
phase and step (memory-mapped: the latents are not read), for `longedit status` and the watcher.
The file holds tensors and plain values only, with a checksum (`longedit.statefile`): a planted pickle
never runs, and a damaged or old-format checkpoint is ignored with one warning line.
`Trajectory` keeps the DDIM inversion latents of every step on disk (IRJS `--source-noise inversion`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longedit.planner import ProbeResult, WindowPlan
from longedit.statefile import load_state, peek_state, save_state

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
    window_plan: WindowPlan | None
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


def _plan_to_dict(plan: WindowPlan | None) -> dict | None:
    return None if plan is None else dataclasses.asdict(plan)


def _plan_from_dict(data: dict | None) -> WindowPlan | None:
    """The inverse of `_plan_to_dict` (tuples come back as tuples: the file keeps them)."""
    if data is None:
        return None
    probe = data.get("probe")
    return WindowPlan(**{**data, "probe": None if probe is None else ProbeResult(**probe)})


def job_fingerprint(settings: dict, input_path: Path, frames: int) -> str:
    """What a result depends on: the job's settings (without output paths) and the input file's identity."""
    stat = Path(input_path).stat()
    identity = {"settings": settings, "input_size": stat.st_size, "input_mtime": stat.st_mtime_ns, "frames": frames}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def save(work_dir: Path, state: RunState) -> None:
    """Atomic write (`longedit.atomic`): a full disk is a one-line UserError and leaves no temp file."""
    work_dir.mkdir(parents=True, exist_ok=True)
    saved = {**state.as_dict(), "window_plan": _plan_to_dict(state.window_plan)}
    save_state(work_dir / CHECKPOINT_NAME, saved, what="the checkpoint")


def load(work_dir: Path | None, fingerprint: str, notices: list[str] | None = None) -> RunState | None:
    """The saved state of the job with `fingerprint`, or None (no checkpoint, another job's, or unusable:
    old format, planted, torn or damaged; those say so in one line, added to `notices` when given, else
    warned)."""
    if work_dir is None:
        return None
    saved = load_state(work_dir / CHECKPOINT_NAME, what="the checkpoint", notices=notices)
    if saved is None or saved.get("fingerprint") != fingerprint:
        return None
    known = {f.name for f in fields(RunState)}
    try:
        values = {k: v for k, v in saved.items() if k in known}
        values["window_plan"] = _plan_from_dict(values.get("window_plan"))
        state = RunState(**values)
    except (TypeError, AttributeError):  # written by a version with other fields
        return None
    problem = _state_problem(state)
    if problem is not None:  # a well-formed file with the right fingerprint but nonsense inside: hand-made
        message = f"ignoring the checkpoint '{work_dir / CHECKPOINT_NAME}': {problem}; starting afresh"
        if notices is not None:
            notices.append(message)
        else:
            warnings.warn(message, UserWarning, stacklevel=2)
        return None
    return state


def _state_problem(state: RunState) -> str | None:
    """What makes a loaded state unusable (wrong types or shapes), None when the loop can continue from it."""
    if not isinstance(state.source, torch.Tensor) or not isinstance(state.latents, torch.Tensor):
        return "its latents are not tensors"
    if state.latents.shape != state.source.shape:
        return f"its latents {tuple(state.latents.shape)} and source {tuple(state.source.shape)} differ in shape"
    if state.phase not in PHASES or type(state.step) is not int or state.step < 0:
        return "its phase or step is not one the loop knows"
    frames = state.source.shape[0] if state.source.dim() else 0
    if not isinstance(state.windows, list) or not all(
        isinstance(w, tuple) and len(w) == 2 and all(type(i) is int for i in w) and 0 <= w[0] < w[1] <= frames
        for w in state.windows
    ):
        return "its windows are not frame ranges of its latents"
    if state.rng is not None and not isinstance(state.rng, torch.Tensor):
        return "its random state is not a tensor"
    return None


def read_progress(work_dir: Path) -> tuple[str, int] | None:
    """(phase, step) of the checkpoint in `work_dir`, None without one; reads only the header (mmap)."""
    saved = peek_state(work_dir / CHECKPOINT_NAME)
    try:
        phase, step = saved["phase"], int(saved["step"])
    except (TypeError, KeyError, ValueError):  # missing, replaced while reading, or not a checkpoint
        return None
    return (phase, step) if phase in PHASES else None


def remove_run_state(work_dir: Path | None, also: Sequence[str] = ()) -> list[str]:
    """After a successful edit (output and report fully written), delete its resumable state from `work_dir`:
    the checkpoint (as large as the video's latents), the inversion trajectory and the files named in `also`
    (the attention maps); names of the deleted files. Only these names, so a folder shared with other things
    keeps them, and the progress file stays for `longedit status`. A rerun of the job then starts afresh, as
    `longedit run` and `watch` do (they drop a finished job's whole work folder)."""
    if work_dir is None:
        return []
    removed = []
    for name in (CHECKPOINT_NAME, TRAJECTORY_NAME, *also):
        path = Path(work_dir) / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    return removed


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
