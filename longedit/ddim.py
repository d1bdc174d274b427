"""Deterministic DDIM as small pure functions over alphas (k-diffusion style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DdimSchedule:
    """Timesteps (descending) and cumulative alphas of a DDIM run of `steps` steps."""

    timesteps: tuple[int, ...]
    alphas_cumprod: torch.Tensor
    final_alpha: float

    @staticmethod
    def from_scheduler(scheduler, steps: int) -> "DdimSchedule":
        scheduler.set_timesteps(steps)
        return DdimSchedule(
            timesteps=tuple(int(t) for t in scheduler.timesteps),
            alphas_cumprod=scheduler.alphas_cumprod.to(torch.float64),
            final_alpha=float(scheduler.final_alpha_cumprod),
        )

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def alpha(self, timestep: int | None) -> float:
        """alpha_cumprod at `timestep`; None (before the first step) gives the final alpha."""
        return self.final_alpha if timestep is None or timestep < 0 else float(self.alphas_cumprod[timestep])

    def previous(self, index: int) -> int | None:
        """Timestep after edit step `index` (None after the last step)."""
        return self.timesteps[index + 1] if index + 1 < self.steps else None


def ddim_move(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move x from noise level alpha_from to alpha_to along the predicted (x0, eps): eta = 0 DDIM."""
    x0 = (x - (1 - alpha_from) ** 0.5 * eps) / alpha_from**0.5
    return alpha_to**0.5 * x0 + (1 - alpha_to) ** 0.5 * eps


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha: float) -> torch.Tensor:
    """q(x_t | x_0) with fixed noise: sqrt(a) x0 + sqrt(1 - a) noise."""
    return alpha**0.5 * x0 + (1 - alpha) ** 0.5 * noise
