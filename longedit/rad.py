"""Re-Attentional Diffusion (RAD): word attention maps, the top-k region loss and the step schedule.

Paper eq. 3-7, as the official code (github mdswyz/ReAtCo, `pipeline_split_gen.py`) computes them.
For word j, frame i and mask M_i^j at map resolution:
    L_IR^j = 1 - mean_i mean(topk(A_i^j * M_i^j, K_in))
    L_OR^j = mean_i mean(topk(A_i^j * (1 - M_i^j), K_out))
with K = max(1, floor(ratio * area)) of the mask (K_in) and of its complement (K_out), and
L = sum_j (max(0, L_IR^j) + L_OR^j). Frames where the object's mask is empty add no inner term (the
official code would give NaN there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from longedit.words import WordTokens

SOFTMAX_TEMPERATURE = 100.0
OFFICIAL_COLUMNS = tuple(range(1, 76))  # official: attention[..., 1:-1] of the 77 = every column but start and last
ATTENTION_NORMS = ("official", "prompt", "raw")
REFINEMENT_THRESHOLDS = {0: 0.05, 10: 0.5, 20: 0.8}  # at 50 steps (Attend-and-Excite), rescaled to --steps
MAX_REFINEMENT_ITERATIONS = 20


@dataclass(frozen=True)
class ColumnPlan:
    """Which text-token columns the capture layers record, and how they become per-word maps.

    `official` (official code, Attend-and-Excite): record columns 1..75 of the 77 (all but the start
    token and the last column, so the end token and the padding stay in), softmax(100 * A) over them.
    `prompt`: the same over the prompt's own tokens only. `raw`: record only the words' tokens, no
    normalisation (the paper's formula).
    """

    columns: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    normalization: str

    @staticmethod
    def build(words: list[WordTokens], prompt_tokens: int, normalization: str = "official") -> "ColumnPlan":
        if normalization == "official":
            columns = OFFICIAL_COLUMNS
        elif normalization == "prompt":
            columns = tuple(range(1, prompt_tokens + 1))
        elif normalization == "raw":
            columns = tuple(sorted({i for w in words for i in w.indices}))
        else:
            raise ValueError(f"unknown attention normalization '{normalization}' (use one of {', '.join(ATTENTION_NORMS)})")
        position = {c: k for k, c in enumerate(columns)}
        groups = tuple(tuple(position[i] for i in w.indices) for w in words)
        return ColumnPlan(columns, groups, normalization)

    def tensor(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.columns, dtype=torch.long, device=device)

    @property
    def softmax(self) -> bool:
        return self.normalization != "raw"


def gaussian_kernel3d(size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Normalised separable Gaussian kernel [size, size, size] over (frame, h, w).

    The official code's formula (`gaussian_smoothing.py`): exp(-((x - mean) / (2 sigma))^2), which for
    size 3, sigma 0.5 gives 1-D weights of about [0.212, 0.576, 0.212] (wider than a textbook sigma 0.5).
    """
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-((x / (2 * sigma)) ** 2))
    g = g / g.sum()
    return g[:, None, None] * g[None, :, None] * g[None, None, :]


def layer_average(captured: list[torch.Tensor]) -> torch.Tensor:
    """Average the maps [B, Q, C] captured at several layers (fp32)."""
    if not captured:
        raise RuntimeError("no cross-attention map was captured: the capture layers did not run")
    return torch.stack([m.float() for m in captured]).mean(dim=0)


def word_maps(
    captured: list[torch.Tensor], plan: ColumnPlan, height: int, width: int, smoothing: bool = True,
    temperature: float = SOFTMAX_TEMPERATURE,
) -> torch.Tensor:
    """Per-word attention maps [F, J, h, w] from captured head-averaged maps [F, h*w, C] of each layer.

    `temperature`: the factor of the softmax over the plan's columns (official 100; a model without SD's
    start-token sink saturates it into an argmax, where a smaller one keeps the map graded)."""
    maps = layer_average(captured)
    if plan.softmax:
        maps = torch.softmax(maps * temperature, dim=-1)
    per_word = torch.stack([maps[..., list(group)].mean(dim=-1) for group in plan.groups], dim=1)
    frames, words = per_word.shape[:2]
    per_word = per_word.reshape(frames, words, height, width)
    if smoothing:
        per_word = smooth(per_word)
    return per_word


def smooth(maps: torch.Tensor, size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian smoothing of [F, J, h, w] maps over (frame, h, w), edges reflected as the official code.

    Reflect padding needs more than `size // 2` entries along an axis; a shorter axis (a 1-frame
    window, a 1-cell map) is padded by replication instead.
    """
    kernel = gaussian_kernel3d(size, sigma).to(maps)
    volume = maps.permute(1, 0, 2, 3).unsqueeze(1)  # [J, 1, F, h, w]
    pad = size // 2
    reflectable = min(volume.shape[-3:]) > pad
    volume = F.pad(volume, (pad,) * 6, mode="reflect" if reflectable else "replicate")
    out = F.conv3d(volume, kernel[None, None])
    return out.squeeze(1).permute(1, 0, 2, 3)


def topk_counts(area: torch.Tensor, ratio: float) -> torch.Tensor:
    """K = max(1, floor(ratio * area)) (official `(area * P).long()`; paper's best ratio: 20%)."""
    return torch.clamp(torch.floor(area * ratio), min=1)


def _topk_mean(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mean of the k largest entries of each row of values [..., N], k [...] varying per row."""
    ordered = values.sort(dim=-1, descending=True).values
    rank = torch.arange(values.shape[-1], device=values.device)
    keep = (rank < k.unsqueeze(-1)).to(values.dtype)
    return (ordered * keep).sum(dim=-1) / k


@dataclass
class RadLoss:
    total: torch.Tensor
    inner: torch.Tensor  # [J] L_IR per word (0 where the word's mask is empty in every frame)
    outer: torch.Tensor  # [J] L_OR per word
    saturated: float | None = None  # share of map cells whose softmax is a hard argmax (diagnostics)


def rad_loss(maps: torch.Tensor, masks: torch.Tensor, ratio: float = 0.2) -> RadLoss:
    """Top-k inner/outer region loss of maps [F, J, h, w] against 0/1 masks [F, J, h, w]."""
    maps = maps.float().flatten(2)
    masks = masks.to(maps).flatten(2)
    cells = maps.shape[-1]
    area = masks.sum(dim=-1)
    present = area > 0
    inner_mean = _topk_mean(maps * masks, topk_counts(area, ratio))
    outer_mean = _topk_mean(maps * (1 - masks), topk_counts(cells - area, ratio))
    frames_present = present.sum(dim=0)
    inner_share = (inner_mean * present).sum(dim=0) / frames_present.clamp(min=1)
    inner = torch.where(frames_present > 0, (1 - inner_share).clamp(min=0), torch.zeros_like(inner_share))
    outer = outer_mean.mean(dim=0)
    return RadLoss(total=(inner + outer).sum(), inner=inner, outer=outer)


def step_sizes(scale: float, steps: int, schedule: str = "sqrt") -> list[float]:
    """a_t per step: official code `scale * sqrt(linspace(1, 0.5, steps))`; paper: linear 1 -> 0.5."""
    ramp = torch.linspace(1.0, 0.5, steps, dtype=torch.float64)
    if schedule == "sqrt":
        ramp = ramp.sqrt()
    elif schedule != "linear":
        raise ValueError(f"unknown step schedule '{schedule}' (use sqrt or linear)")
    return [scale * float(r) for r in ramp]


def refinement_thresholds(steps: int) -> dict[int, float]:
    """Attend-and-Excite refinement steps {0, 10, 20} of 50, rescaled to `steps`."""
    return {min(steps - 1, int(math.floor(i * steps / 50))): t for i, t in REFINEMENT_THRESHOLDS.items()}


def attention_share(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per word: (attention mass inside its mask, total mass) of maps [F, J, h, w], summed over frames."""
    maps = maps.float()
    return (maps * masks.to(maps)).sum(dim=(0, 2, 3)), maps.sum(dim=(0, 2, 3))


@dataclass
class GuidedUpdate:
    """What one RAD update did: the losses measured (one per guided forward), refinement iterations,
    and updates skipped because their gradient was not finite (fp16 overflow)."""

    losses: list[float]
    refinements: int = 0
    skipped: int = 0
    grad_norms: list[float] = field(default_factory=list)  # |grad| of each measure, in order
    saturated: list[float] = field(default_factory=list)  # saturated map share of each measure


Measure = Callable[[torch.Tensor, Callable[[RadLoss], torch.Tensor]], tuple[torch.Tensor, RadLoss]]


def guided_update(
    x: torch.Tensor,
    measure: Measure,
    step_size: float,
    threshold: float | None = None,
    max_refinements: int = MAX_REFINEMENT_ITERATIONS,
    step_norm: str = "none",
) -> tuple[torch.Tensor, GuidedUpdate]:
    """RAD's latent update at one step, as the official loop runs it (a pure function over `measure`).

    `measure(x, objective)` runs the guided forward at x and returns (d objective(loss) / dx, loss).
    Without a `threshold`: one step on the total loss, x - a * grad L. At a refinement step (threshold
    given) whose worst inner loss max_j L_IR^j exceeds 1 - threshold, the official refinement first
    steps on the gradient of max_j L_IR^j alone, do-while style: it updates, then continues while the
    loss measured before that update still exceeded the target, at most `max_refinements` times; then
    the main update on the total loss at the refined latents. A non-finite gradient skips its update.
    `step_norm="rms"` divides each gradient by its root mean square first (`normalized_gradient`).
    """
    target = None if threshold is None else max(0.0, 1.0 - threshold)
    report = GuidedUpdate(losses=[])
    previous: float | None = None

    def refining(loss: RadLoss) -> bool:
        if target is None or report.refinements >= max_refinements:
            return False
        worst = float(loss.inner.detach().max()) if loss.inner.numel() else 0.0
        return worst > target if previous is None else previous > target

    while True:
        decision: list[bool] = []

        def objective(loss: RadLoss) -> torch.Tensor:
            decision.append(refining(loss))
            return loss.inner.max() if decision[0] else loss.total

        grad, loss = measure(x, objective)
        report.losses.append(float(loss.total))
        report.grad_norms.append(float(grad.float().norm()))
        if loss.saturated is not None:
            report.saturated.append(loss.saturated)
        finite = bool(torch.isfinite(grad).all())
        if finite:
            grad = normalized_gradient(grad, step_norm)
            x = (x.float() - step_size * grad.to(x.device)).to(x.dtype)
        else:
            report.skipped += 1
        if not decision[0]:
            return x, report
        report.refinements += 1
        previous = float(loss.inner.detach().max())


STEP_NORMS = ("none", "rms")


def normalized_gradient(grad: torch.Tensor, step_norm: str = "none") -> torch.Tensor:
    """The gradient RAD steps along: as computed (`none`, official) or divided by its root mean square
    (`rms`: a_t then moves each latent by about a_t / 1, whatever the gradient's scale; an almost-zero
    gradient of a saturated map still moves the latents). An all-zero gradient stays zero."""
    if step_norm == "none":
        return grad
    if step_norm != "rms":
        raise ValueError(f"unknown step norm '{step_norm}' (use one of {', '.join(STEP_NORMS)})")
    rms = grad.float().pow(2).mean().sqrt()
    return grad if float(rms) == 0 else (grad.float() / rms).to(grad.dtype)
