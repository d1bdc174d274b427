"""The windowed DDIM inversion (or its cached result) up to x_T."""

from __future__ import annotations

import time

import torch

from longedit.checkpoint import RunState
from longedit.editor import VideoEditor
from longedit.inversion_cache import SharedInversion
from longedit.progress import JobProgress
from longedit.engine.keeper import StepKeeper, is_fresh, latent_checksum
from longedit.sampling import invert


def run_inversion(
    editor: VideoEditor, state: RunState, keeper: StepKeeper, trajectory, tracker: JobProgress,
    shared: SharedInversion | dict | None = None,
) -> torch.Tensor:
    """The windowed DDIM inversion from where the state is (nothing when it is past it).

    With a `shared` cache place, a fresh job takes the inversion from the cache when it is there
    (no UNet forward) and publishes the one it computed otherwise; `state.inversion` records which.
    """
    if state.phase != "inversion":
        return state.latents
    cache = shared if isinstance(shared, dict) else {"state": "off", "note": "no cache folder"}
    if isinstance(shared, SharedInversion):
        cache = {"state": "miss", "key": shared.key, "folder": str(shared.cache.folder)}
        cached = shared.load(tuple(state.latents.shape), trajectory is not None) if is_fresh(state) else None
        if cached is not None:
            keeper.clock = time.perf_counter()
            if trajectory is not None:
                trajectory.fill(cached.trajectory)
            keeper.lap("inversion_s")
            tracker.seed("inversion", float("inf"), 0.0)  # done, and no measure of the UNet's speed
            return finish_inversion(state, keeper, cached.latents, {**cache, "state": "hit"})
    steps, windows = editor.schedule.steps, state.windows
    keeper.clock = time.perf_counter()
    tracker.start("inversion")

    def after_step(index: int, latents: torch.Tensor, _stats) -> None:
        if trajectory is not None:
            trajectory.put(steps - 1 - index, latents)
        keeper.lap("inversion_s")
        if index + 1 < steps:
            keeper.step_done("inversion", index + 1, latents)

    latents = invert(
        editor, state.latents, windows, start=state.step, callback=after_step, advance=lambda: tracker.advance("inversion")
    )
    if isinstance(shared, SharedInversion):
        cache["state"] = shared.store(latents, None if trajectory is None else trajectory.values())
    return finish_inversion(state, keeper, latents, cache)


def finish_inversion(state: RunState, keeper: StepKeeper, latents: torch.Tensor, cache: dict) -> torch.Tensor:
    """Enter the edit phase with x_T = `latents` and checkpoint it (always: the finished inversion is kept)."""
    state.inversion = {"checksum": latent_checksum(latents.float()), "cache": cache}
    state.phase, state.step, state.latents = "edit", 0, latents
    keeper.step_done("edit", 0, latents, every=1)
    return latents
