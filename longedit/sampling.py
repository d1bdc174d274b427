"""The loop drivers over a `VideoEditor` (k-diffusion style: small functions with a `callback=`) and IRJS's
source levels V_t: what the engine, the bench, the window planner and the benchmarks call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from longedit.ddim import DdimSchedule, add_noise
from longedit.editor import StepStats, VideoEditor
from longedit.masks import ObjectMasks

SOURCE_NOISE_MODES = ("fresh", "fixed", "inversion")
StepCallback = Callable[[int, torch.Tensor, "StepStats | None"], None]


class SourceLevels:
    """IRJS's V_t: the source latents at the level of timesteps[i] for edit step i (i = steps: the source).

    `fresh` (official: `randn_like` at every step): a new draw per step, seeded by (seed, step) so a
    resumed run is bit-identical; `fixed`: one draw for all steps; `inversion`: the DDIM inversion
    trajectory (`trajectory.get(i)`). Caches the last level: every window of a step reads the same one.
    """

    def __init__(self, schedule: DdimSchedule, source: torch.Tensor, mode: str, seed: int, trajectory=None) -> None:
        if mode not in SOURCE_NOISE_MODES:
            raise ValueError(f"unknown source noise '{mode}' (use one of {', '.join(SOURCE_NOISE_MODES)})")
        if mode == "inversion" and trajectory is None:
            raise ValueError("source noise 'inversion' needs the inversion trajectory")
        self.schedule, self.source, self.mode, self.seed, self.trajectory = schedule, source, mode, seed, trajectory
        self._cached: tuple[int, torch.Tensor] | None = None

    def noise(self, index: int) -> torch.Tensor:
        """The seeded noise of step `index` (`fixed`: the same for every step)."""
        draw = 0 if self.mode == "fixed" else index
        key = hashlib.sha256(f"irjs:{self.seed}:{draw}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(key[:7], "little"))
        return torch.randn(self.source.shape, generator=generator)

    def __call__(self, index: int) -> torch.Tensor:
        if index >= self.schedule.steps:
            return self.source
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        if self.mode == "inversion":
            level = self.trajectory.get(index)
        else:
            alpha = self.schedule.alpha(self.schedule.timesteps[index])
            level = add_noise(self.source.float(), self.noise(index), alpha)
        self._cached = (index, level)
        return level


def invert(
    editor: VideoEditor,
    latents: torch.Tensor,
    windows: list[tuple[int, int]],
    *,
    start: int = 0,
    callback: StepCallback | None = None,
    advance: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Windowed DDIM inversion from step `start` to the noisiest level (a k-diffusion style driver).

    After each step `index` it calls `callback(index, latents, None)`, the latents then being at the
    level of `timesteps[steps - 1 - index]`; the callback may save them, checkpoint or raise to stop.
    """
    for index in range(start, editor.schedule.steps):
        latents = editor.inversion_step(latents, index, windows, advance=advance)
        if callback is not None:
            callback(index, latents, None)
    return latents


def denoise(
    editor: VideoEditor,
    latents: torch.Tensor,
    windows: list[tuple[int, int]],
    masks: ObjectMasks | None,
    source_at: Callable[[int], torch.Tensor] | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    callback: StepCallback | None = None,
    advance: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Windowed edit steps `start` .. `stop` (default: to the end) with RAD and IRJS (`source_at`: a
    `SourceLevels`, or None for no IRJS).

    After each step `index` it calls `callback(index, latents, stats)` (diffusers' callback_on_step_end);
    the callback may record the stats, checkpoint or raise to stop.
    """
    stop = editor.schedule.steps if stop is None else stop
    for index in range(start, stop):
        latents, stats = editor.edit_step(latents, index, windows, masks, source_at, advance=advance)
        if callback is not None:
            callback(index, latents, stats)
    return latents
