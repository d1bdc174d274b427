"""What RAD did at each guided step, and the levers an audit found where it does nothing (issue 25).

Per guided step (averaged over the windows): the RAD loss before and after the update, |grad| / |z|
(of the main update's gradient against the window's latents), the share of map cells where
softmax(T A) is a hard argmax (`saturated`: RAD's gradient is ~0 there), the share of the update's norm
that survives IRJS's paste (the rest lands on latents the paste overwrites) and the refinement
iterations. `rad_warnings` turns a run where the loss did not move into one line naming the likely
cause and the option that helps.

The levers (each an EditJob option; the official behaviour is the default): the softmax temperature
(`rad.word_maps`), a step normalised by the gradient's RMS (`rad.normalized_gradient`), RAD's cells
aligned with IRJS's union (`irjs_cells`) and re-noised start latents inside the regions (`renoise_regions`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longedit.rad import GuidedUpdate, layer_average

SATURATED = 0.99  # a cell whose largest softmax entry exceeds this is an argmax: its gradient is ~0
NO_MOVE = 1e-4  # RAD "did nothing": the loss moved by less than this, on average over the guided steps
REGION_STARTS = ("inverted", "noise")
RAD_CELLS = ("official", "irjs")


@torch.no_grad()
def saturated_share(captured: list[torch.Tensor], columns: int | None, temperature: float) -> float | None:
    """Share of map cells (frames x cells) whose softmax(temperature A) over the captured columns has an
    entry above `SATURATED`; None for the raw norm (`columns` None: no softmax)."""
    if columns is None:
        return None
    probabilities = torch.softmax(layer_average(captured) * temperature, dim=-1)
    return float((probabilities.amax(-1) > SATURATED).float().mean())


def irjs_cells(masks_map: torch.Tensor, union: torch.Tensor, factor: int) -> torch.Tensor:
    """RAD's region cells [F, J, h, w] kept only where IRJS lets every latent of the cell change (the
    union [F, 1, H, W] covers the whole cell): the update RAD asks for there survives the paste. A word
    whose cells would all go keeps its official cells in that frame (its RAD term never silently vanishes)."""
    inside = -F.max_pool2d(-union.float(), factor)  # min-pool: 1 where the whole cell is in the union
    aligned = masks_map * inside.to(masks_map)
    lost = (aligned.flatten(2).sum(-1) == 0) & (masks_map.flatten(2).sum(-1) > 0)
    aligned[lost] = masks_map[lost]
    return aligned


def renoise_regions(latents: torch.Tensor, union: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Start latents x_T with the regions re-noised: inside the union, sqrt(1 - s) x_T + sqrt(s) noise
    (s = strength; 1: fresh noise, the source object's layout forgotten there); outside untouched."""
    if strength <= 0:
        return latents
    generator = torch.Generator().manual_seed(seed + 7919)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    mixed = latents.float() * (1 - strength) ** 0.5 + noise * strength**0.5
    keep = union.float()
    return (mixed * keep + latents.float() * (1 - keep)).to(latents.dtype)


def window_diagnostics(
    update: GuidedUpdate, before: torch.Tensor, after: torch.Tensor, loss_after: float | None, keep: torch.Tensor | None
) -> dict:
    """One window's RAD update: before/after latents [F, 4, h, w], the loss measured at `after` (None when
    not measured) and IRJS's keep mask [F, 1, h, w] (None without IRJS: the whole update survives)."""
    delta = after.float() - before.float()
    moved = float(delta.norm())
    survives = 1.0 if keep is None or moved == 0 else float((delta * keep.to(delta)).norm()) / moved
    return {
        "loss_before": update.losses[0] if update.losses else None,
        "loss_after": loss_after,
        "grad_over_z": (update.grad_norms[-1] / max(float(before.float().norm()), 1e-12)) if update.grad_norms else None,
        "saturated": (sum(update.saturated) / len(update.saturated)) if update.saturated else None,
        "update_survives_paste": survives if moved > 0 else None,
        "refinements": update.refinements,
    }


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def step_diagnostics(windows: list[dict]) -> dict:
    """One guided step: the windows' values averaged (refinement iterations summed), rounded for the report."""
    keys = ("loss_before", "loss_after", "grad_over_z", "saturated", "update_survives_paste")
    step = {k: _mean([w[k] for w in windows]) for k in keys}
    step = {k: (None if v is None else float(f"{v:.6g}")) for k, v in step.items()}
    step["refinements"] = sum(w["refinements"] for w in windows)
    return step


def rad_summary(steps: list[dict]) -> dict:
    """The report's `rad.diagnostics`: the per-step list and the run's means."""
    moves = [s["loss_before"] - s["loss_after"] for s in steps if s["loss_before"] is not None and s["loss_after"] is not None]
    mean = {k: _mean([s[k] for s in steps]) for k in ("grad_over_z", "saturated", "update_survives_paste")}
    return {"per_step": steps, "mean_loss_drop": _mean(moves), **{f"mean_{k}": v for k, v in mean.items()}}


def rad_warnings(summary: dict, attention_norm: str, temperature: float, step_norm: str, rad_cells: str) -> list[str]:
    """One line when RAD did nothing measurable (the loss moved by < NO_MOVE on average), naming the likely
    cause and the option that helps; empty otherwise (or when the loss after was not measured)."""
    drop = summary.get("mean_loss_drop")
    if drop is None or abs(drop) >= NO_MOVE:
        return []
    saturated, ratio, survives = summary["mean_saturated"], summary["mean_grad_over_z"], summary["mean_update_survives_paste"]
    if saturated is not None and saturated > 0.5:
        cause = (f"softmax({temperature:g} A) is a hard argmax in {100 * saturated:.0f}% of map cells (the model gives the start"
                 " token little attention), so RAD's gradient is ~0")
        fix = "try --attention-temperature 10 or --attention-norm raw"
    elif ratio is not None and ratio < 1e-3 and step_norm == "none":
        cause = f"the gradient is tiny (|grad|/|z| = {ratio:.1e})"
        fix = "try --step-norm rms or a larger --step-size"
    elif survives is not None and survives < 0.5 and rad_cells == "official":
        cause = f"IRJS's paste overwrites {100 * (1 - survives):.0f}% of each update"
        fix = "try --rad-cells irjs"
    else:
        cause, fix = "the map is flat or already inside the regions", "try a larger --step-size or --attention-norm raw"
    return [f"RAD did nothing measurable: its loss moved by {drop:.1e} per guided step on average; likely cause: {cause}"
            f" (norm {attention_norm}); {fix}"]


LEVERS = ("attention_temperature", "step_norm", "rad_cells", "region_start", "region_start_strength")


def rad_lever_settings(job) -> dict:
    """The LoopSettings keywords of RAD's levers and diagnostics from an EditJob."""
    return {**{name: getattr(job, name) for name in LEVERS}, "rad_diagnostics": job.rad_diagnostics}


def rad_lever_report(settings) -> dict:
    """The levers' effective values for the report's `settings` block."""
    return {name: getattr(settings, name) for name in LEVERS}


def rad_report_warnings(steps: list[dict], settings) -> list[str]:
    """`rad_warnings` of a run's per-step diagnostics under its loop settings."""
    if not steps:
        return []
    return rad_warnings(rad_summary(steps), settings.attention_norm, settings.attention_temperature, settings.step_norm,
                        settings.rad_cells)


def region_start(latents: torch.Tensor, masks, settings, step: int) -> torch.Tensor:
    """The edit's start latents: x_T as inverted (official), or re-noised inside the regions
    (`region_start="noise"`) when the edit starts at its first step (a resume mid-edit keeps its own)."""
    if settings.region_start == "inverted" or masks is None or step > 0:
        return latents
    return renoise_regions(latents, masks.union(), settings.region_start_strength, settings.seed)
