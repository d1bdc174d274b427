"""Deterministic DDIM as small pure functions over alphas (k-diffusion style).

The loop works in the noise (eps) parametrisation; a model that predicts something else (SD 2.x 768-v
predicts v, some fine-tunes predict x0: the scheduler's `prediction_type`) has its output turned into
eps first (`predicted_noise`), so inversion, the edit step and every consumer of eps stay one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DdimSchedule:
    """Timesteps (descending) and cumulative alphas of a DDIM run of `steps` steps."""

    timesteps: tuple[int, ...]
    alphas_cumprod: torch.Tensor
    final_alpha: float
    prediction_type: str = "epsilon"

    @staticmethod
    def from_scheduler(scheduler, steps: int) -> "DdimSchedule":
        scheduler.set_timesteps(steps)
        return DdimSchedule(
            timesteps=tuple(int(t) for t in scheduler.timesteps),
            alphas_cumprod=scheduler.alphas_cumprod.to(torch.float64),
            final_alpha=float(scheduler.final_alpha_cumprod),
            prediction_type=str(getattr(scheduler.config, "prediction_type", "epsilon")),
        )

    def noise(self, output: torch.Tensor | None, x: torch.Tensor, timestep: int) -> torch.Tensor | None:
        """eps of the model `output` for `x`, called at `timestep` (see `predicted_noise`); None stays None."""
        if output is None or self.prediction_type == "epsilon":
            return output
        return predicted_noise(output, x, self.alpha(timestep), self.prediction_type)

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


#: The scheduler `prediction_type`s the loop understands (diffusers' names; `longedit.backbones.support` refuses others).
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def predicted_noise(output: torch.Tensor, x: torch.Tensor, alpha: float, prediction_type: str) -> torch.Tensor:
    """eps from a model output at noise level `alpha` for latents `x` (fp32), as diffusers' DDIM step reads it.

    epsilon: the output; v_prediction (v = sqrt(a) eps - sqrt(1 - a) x0): sqrt(a) v + sqrt(1 - a) x;
    sample (x0): (x - sqrt(a) x0) / sqrt(1 - a).
    """
    if prediction_type == "epsilon":
        return output
    output, x = output.float(), x.float()
    if prediction_type == "v_prediction":
        return alpha**0.5 * output + (1 - alpha) ** 0.5 * x
    if prediction_type == "sample":
        return (x - alpha**0.5 * output) / (1 - alpha) ** 0.5
    raise ValueError(f"unknown prediction_type '{prediction_type}' (use one of {', '.join(PREDICTION_TYPES)})")
