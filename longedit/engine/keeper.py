"""The run's state between steps: its fingerprint, checkpoints every N steps, stop requests, the latent checksum."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import torch

from longedit.config import CACHE_FIELDS, EditJob
from longedit import checkpoint
from longedit.checkpoint import RunState
from longedit.editor import VideoEditor
from longedit.errors import JobInterrupted
from longedit.video import VideoInfo


def job_fingerprint(job: EditJob, info: VideoInfo) -> str:
    """What the result depends on: settings (not output/report paths) and the input file's identity."""
    settings = job.model_dump(
        mode="json",
        exclude={
            "output", "report", "checkpoint_every", "eval", "paste_background", "feather", "attention_video",
            "attention_strips", "codec", "pix_fmt", "crf", *CACHE_FIELDS,
        },
    )
    return checkpoint.job_fingerprint(settings, Path(job.input), info.frames)


class StepKeeper:
    """Times the phases, checkpoints the run state every `every` steps and honours stop requests."""

    def __init__(self, state: RunState, work_dir: Path | None, stop_event: threading.Event | None, every: int) -> None:
        self.state = state
        self.work_dir = work_dir
        self.stop_event = stop_event
        self.every = every
        self.editor: VideoEditor | None = None
        self.clock = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Add the time since the last lap to `phase`'s timing."""
        now = time.perf_counter()
        self.state.timing[phase] = self.state.timing.get(phase, 0.0) + now - self.clock
        self.clock = now

    def save(self, phase: str, step: int, latents: torch.Tensor) -> None:
        state = self.state
        state.phase, state.step, state.latents = phase, step, latents
        if self.editor is not None:
            state.unet_forwards = self.editor.unet_forwards
        state.rng = torch.get_rng_state()
        if self.work_dir is not None:
            checkpoint.save(self.work_dir, state)

    def step_done(self, phase: str, step: int, latents: torch.Tensor, every: int | None = None) -> None:
        """After `step` steps of `phase`: checkpoint when due or stopping; raise JobInterrupted on a stop request."""
        stopping = self.stop_event is not None and self.stop_event.is_set()
        if self.work_dir is not None and (stopping or step % (every or self.every) == 0):
            self.save(phase, step, latents)
        if stopping:
            saved = f"checkpoint saved in {self.work_dir}" if self.work_dir is not None else "nothing saved (no work folder)"
            raise JobInterrupted(f"stopped at {phase} step {step}; {saved}")


def is_fresh(state: RunState) -> bool:
    """Nothing of the loop has run yet (the inversion starts at its first step)."""
    return state.phase == "inversion" and state.step == 0


def latent_checksum(latents: torch.Tensor) -> str:
    return hashlib.sha256(latents.contiguous().numpy().tobytes()).hexdigest()
