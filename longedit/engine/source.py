"""Encode the source: stream-decode the video and VAE-encode it into host latents (the run's first state)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from longedit import checkpoint
from longedit.checkpoint import RunState
from longedit.config import EditJob
from longedit.errors import JobInterrupted
from longedit.models import Backbone
from longedit.planner import WindowPlan
from longedit.progress import JobProgress
from longedit.video import VideoInfo, iter_frames
from longedit.engine.keeper import job_fingerprint
from longedit.engine.prepare import Prepared


VAE_CHUNK = 8


def encode_video(
    backbone: Backbone,
    info: VideoInfo,
    size: tuple[int, int],
    advance: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
) -> torch.Tensor:
    """Stream-decode the first `info.frames` frames at the processing size and VAE-encode them in chunks
    -> host latents [F,4,h,w]; `advance()` after each frame.

    Checks `stop_event` between chunks so a stop request on a long video is honoured quickly.
    """
    vae = backbone.vae
    scale = vae.config.scaling_factor
    latents: list[torch.Tensor] = []
    chunk: list[np.ndarray] = []

    def flush() -> None:
        pixels = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 127.5 - 1
        pixels = pixels.to(device=backbone.device, dtype=next(vae.parameters()).dtype)
        with torch.no_grad():
            latents.append((vae.encode(pixels).latent_dist.mean * scale).float().cpu())
        chunk.clear()

    for frame in iter_frames(info, size=size, end=info.frames, strict=True):  # fewer frames: damaged
        chunk.append(frame)
        if len(chunk) == VAE_CHUNK:
            flush()
            if stop_event is not None and stop_event.is_set():
                raise JobInterrupted("stopped while encoding the source; nothing to resume yet")
        if advance is not None:
            advance()
    if chunk:
        flush()
    return torch.cat(latents)


def start_state(
    job: EditJob, prepared: Prepared, backbone: Backbone, windows: list[tuple[int, int]], window_plan: WindowPlan,
    work_dir: Path | None, tracker: JobProgress, stop_event: threading.Event | None,
) -> RunState:
    """A new run: encode the source (checkpointed: the encode is not redone after a crash)."""
    clock = time.perf_counter()
    tracker.start("decode")
    source = encode_video(
        backbone, prepared.info, prepared.processed_size, lambda: tracker.advance("decode"), stop_event
    )
    timing = {"decode_s": time.perf_counter() - clock, "inversion_s": 0.0, "edit_s": 0.0, "encode_s": 0.0}
    state = RunState(
        fingerprint=job_fingerprint(job, prepared.info), source=source, latents=source.clone(),
        windows=windows, window_plan=window_plan, timing=timing,
    )
    if work_dir is not None:
        checkpoint.save(work_dir, state)
    return state
