"""Shared by the RAD tests of every backbone: one guided step and what it changed."""

from dataclasses import dataclass

import torch


@dataclass
class RadStep:
    grad: torch.Tensor
    loss_before: float
    loss_after: float
    share_before: float
    share_after: float


def one_rad_step(editor, latents: torch.Tensor, masks_map: torch.Tensor) -> RadStep:
    """x -= a_0 * grad at the first timestep; the loss and the in-mask attention share before and after."""
    timestep = editor.schedule.timesteps[0]
    grad, before = editor.rad_gradient(None, latents, timestep, masks_map)
    _, inside_before = editor.guided_eps(None, latents, timestep, masks_map)
    moved = latents - editor.step_sizes[0] * grad
    _, after = editor.rad_gradient(None, moved, timestep, masks_map)
    _, inside_after = editor.guided_eps(None, moved, timestep, masks_map)
    return RadStep(
        grad, float(before.total), float(after.total),
        float(inside_before[0] / inside_before[1]), float(inside_after[0] / inside_after[1]),
    )
