"""The windowed ReAtCo loop: DDIM inversion and editing steps with RAD and IRJS over overlapping windows.

The whole video's latents stay on the host; each window's latents go to the device for its passes.
Every window gets the video's first frame prepended (unless it starts there) as the shared anchor of
cross-frame attention; the anchor's outputs are discarded. Per step:

    for each window w:  RAD (guided cond-only forward, top-k loss, x_t -= a_t * grad)
                        CFG forward (no grad) -> DDIM step -> x_{t-1}[w]
    merge windows (weighted average of overlapping frames)
    IRJS: x_{t-1} = x_{t-1} * M + V_{t-1} * (1 - M)

The backbone's adapter (`longedit.backbones.adapters`) decides how the UNet is called (2D batch of
frames, or UNet3D videos), whether the anchor frame is prepended and which attn1 processor is used.
An optional attention fusion (FateZero, `longedit.fatezero`, `attach_fusion`) stores the source
attention maps during inversion and fuses them into the classifier-free guided pass of editing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from longedit.attention import AttentionContext, StopForward, install_processors
from longedit.backbones.adapters import adapter_for
from longedit.ddim import DdimSchedule, add_noise, ddim_move
from longedit.masks import ObjectMasks
from longedit.models import Backbone
from longedit.rad import (
    MAX_REFINEMENT_ITERATIONS,
    ColumnPlan,
    RadLoss,
    attention_share,
    rad_loss,
    refinement_thresholds,
    step_sizes,
    word_maps,
)
from longedit.windows import WindowMerger
from longedit.words import WordTokens, prompt_token_count

MAP_SCALE = 4  # RAD maps live at latent/4 = frame/32
FP16_LOSS_SCALE = 1024.0


@dataclass
class LoopSettings:
    """The knobs of the diffusion loop (a subset of EditJob; benchmarks build it directly)."""

    steps: int = 50
    guidance: float = 12.5
    rad: bool = True
    guided_steps: int = 25
    step_size: float = 20.0
    step_schedule: str = "sqrt"
    refine: bool = False
    topk_ratio: float = 0.2
    attention_norm: str = "softmax"
    smoothing: bool = True
    irjs: bool = True
    source_noise: str = "fresh"
    overlap_weights: str = "uniform"
    seed: int = 0
    truncate_guided_forward: bool = True
    gradient_checkpointing: bool = False
    kernel_backend: str = "auto"
    record_attention: bool = True


@dataclass
class StepStats:
    """What one edit step measured: per word attention mass inside the mask / total, and the RAD loss."""

    inside: torch.Tensor
    total: torch.Tensor
    losses: list[float] = field(default_factory=list)
    unet_forwards: int = 0

    def share(self) -> list[float]:
        return [float(i / t) if t > 0 else 0.0 for i, t in zip(self.inside, self.total)]


class VideoEditor:
    """Runs inversion and edit steps of one video on one backbone (state explicit, no globals)."""

    def __init__(
        self,
        backbone: Backbone,
        settings: LoopSettings,
        source_prompt: str,
        prompt: str,
        words: list[WordTokens],
        inversion_prompt: str | None = None,
    ) -> None:
        self.backbone = backbone
        self.settings = settings
        self.words = words
        self.adapter = adapter_for(getattr(backbone, "kind", "sd"))
        self.context = AttentionContext(kernel_backend=settings.kernel_backend)
        self.capture_layers = install_processors(
            backbone.unet, self.context, MAP_SCALE, sparse_causal=self.adapter.sparse_causal
        )
        self.fusion = None
        if settings.gradient_checkpointing and self.adapter.supports_checkpointing:
            backbone.unet.enable_gradient_checkpointing()
        else:
            backbone.unet.disable_gradient_checkpointing()
        self.schedule = DdimSchedule.from_scheduler(backbone.scheduler, settings.steps)
        self.cond = self._encode(prompt)
        self.uncond = self._encode("")
        self.inversion_cond = self._encode(source_prompt if inversion_prompt is None else inversion_prompt)
        count = prompt_token_count(backbone.tokenizer, prompt)
        self.loss_plan = ColumnPlan.build(words, count, settings.attention_norm)
        self.record_plan = ColumnPlan.build(words, count, "raw")
        self.step_sizes = step_sizes(settings.step_size, settings.steps, settings.step_schedule)
        self.refinement = refinement_thresholds(settings.steps) if settings.refine else {}
        self.unet_forwards = 0

    # ----------------------------------------------------------------------------------- basics
    @torch.no_grad()
    def _encode(self, prompt: str) -> torch.Tensor:
        tokenizer = self.backbone.tokenizer
        ids = tokenizer(
            prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.backbone.device)
        return self.backbone.text_encoder(ids)[0].to(self.backbone.dtype)

    def _unet(self, x: torch.Tensor, timestep: int, embedding: torch.Tensor) -> torch.Tensor:
        """One UNet forward (counted) through the backbone's adapter; x is [videos*frames, 4, h, w]."""
        self.unet_forwards += 1
        return self.adapter.forward(self.backbone.unet, x, timestep, embedding, self.context.frames)

    def attach_fusion(self, fusion) -> None:
        """Use attention fusion `fusion` (longedit.fatezero.AttentionFusion) from now on."""
        self.fusion = fusion
        self.context.fusion = fusion

    def _fusing(self, mode: str, step: int, window: int, own: torch.Tensor):
        """Context in which the fusion stores (inversion) or fuses (edit) maps of `window` at edit step `step`."""
        if self.fusion is None:
            return contextlib.nullcontext()
        return self.fusion.active(mode, step, window, tuple(own.shape[-2:]), latents=own)

    def _window(self, latents: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(anchor or None, own frames) of window [start, end) on the device in the model dtype."""
        device, dtype = self.backbone.device, self.backbone.dtype
        own = latents[start:end].to(device=device, dtype=dtype)
        anchor = None if start == 0 or not self.adapter.uses_anchor else latents[:1].to(device=device, dtype=dtype)
        return anchor, own

    @staticmethod
    def _with_anchor(anchor: torch.Tensor | None, own: torch.Tensor) -> torch.Tensor:
        return own if anchor is None else torch.cat([anchor, own])

    # -------------------------------------------------------------------------------- inversion
    @torch.no_grad()
    def inversion_step(self, latents: torch.Tensor, index: int, windows: list[tuple[int, int]], advance=None):
        """One windowed DDIM inversion step: from the level of step `index - 1` up to timestep index."""
        timesteps = self.schedule.timesteps
        target = timesteps[self.schedule.steps - 1 - index]
        current = timesteps[self.schedule.steps - index] if index > 0 else None
        alpha_from, alpha_to = self.schedule.alpha(current), self.schedule.alpha(target)
        merger = WindowMerger(latents, self.settings.overlap_weights)
        for position, (start, end) in enumerate(windows):
            with self._fusing("store", self.schedule.steps - 1 - index, position, latents[start:end]):
                own, eps = self.source_forward(latents, start, end, target)
            merger.add(start, ddim_move(own.float(), eps.float(), alpha_from, alpha_to))
            if advance:
                advance()
        return merger.result(latents.dtype)

    @torch.no_grad()
    def source_forward(self, latents: torch.Tensor, start: int, end: int, timestep: int):
        """(own latents, their eps) of the conditional source-prompt forward of window [start, end) of `latents`.

        The inversion's forward; FateZero's `recompute` reruns it on the inversion trajectory to
        regenerate the source attention (its hook may stop the forward early: eps is then None).
        """
        anchor, own = self._window(latents, start, end)
        x = self._with_anchor(anchor, own)
        self.context.frames = x.shape[0]
        try:
            eps = self._unet(x, timestep, self.inversion_cond)[x.shape[0] - own.shape[0] :]
        except StopForward:
            eps = None
        return own, eps

    # ------------------------------------------------------------------------------------ RAD
    def rad_gradient(
        self, anchor: torch.Tensor | None, own: torch.Tensor, timestep: int, masks: torch.Tensor
    ) -> tuple[torch.Tensor, RadLoss]:
        """Loss and d loss / d own of the guided (cond-only) forward for one window."""
        context = self.context
        variable = own.detach().requires_grad_(True)
        x = self._with_anchor(None if anchor is None else anchor.detach(), variable)
        offset = x.shape[0] - own.shape[0]
        context.reset()
        context.frames = x.shape[0]
        context.capture = True
        context.columns = self.loss_plan.tensor(x.device)
        context.stop_after = self.capture_layers[-1] if self.settings.truncate_guided_forward else None
        try:
            with torch.enable_grad():
                try:
                    self._unet(x, timestep, self.cond)
                except StopForward:
                    pass
                height, width = own.shape[-2] // MAP_SCALE, own.shape[-1] // MAP_SCALE
                maps = word_maps([m[offset:] for m in context.maps], self.loss_plan, height, width, self.settings.smoothing)
                loss = rad_loss(maps, masks.to(maps.device), self.settings.topk_ratio)
                scale = FP16_LOSS_SCALE if own.dtype == torch.float16 else 1.0
                context.replaying = True
                (grad,) = torch.autograd.grad(loss.total * scale, variable)
        finally:
            context.reset()
        grad = torch.nan_to_num(grad.float() / scale)
        return grad, RadLoss(loss.total.detach(), loss.inner.detach(), loss.outer.detach())

    def rad_update(self, anchor, own: torch.Tensor, index: int, masks: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """x_t <- x_t - a_t * grad (eq. 7), plus Attend-and-Excite refinement at its steps."""
        timestep = self.schedule.timesteps[index]
        size = self.step_sizes[index]
        grad, loss = self.rad_gradient(anchor, own, timestep, masks)
        losses = [float(loss.total)]
        own = (own.float() - size * grad).to(own.dtype)
        threshold = self.refinement.get(index)
        if threshold is not None:
            for _ in range(MAX_REFINEMENT_ITERATIONS):
                grad, loss = self.rad_gradient(anchor, own, timestep, masks)
                losses.append(float(loss.total))
                if float(loss.inner.max()) <= 1 - threshold:
                    break
                own = (own.float() - size * grad).to(own.dtype)
        return own, losses

    # ----------------------------------------------------------------------------------- edit
    @torch.no_grad()
    def guided_eps(self, anchor, own: torch.Tensor, timestep: int, masks_map: torch.Tensor | None):
        """Classifier-free guided noise of the window's own frames; records attention shares if asked."""
        context = self.context
        x = self._with_anchor(anchor, own)
        frames = x.shape[0]
        offset = frames - own.shape[0]
        context.reset()
        context.frames = frames
        record = self.settings.record_attention and masks_map is not None and bool(self.words)
        if record:
            context.capture = True
            context.columns = self.record_plan.tensor(x.device)
            context.capture_rows = slice(frames + offset, 2 * frames)
        try:
            eps = self._unet(torch.cat([x, x]), timestep, torch.cat([self.uncond, self.cond]).repeat_interleave(frames, 0))
        finally:
            captured = list(context.maps)
            context.reset()
        eps_uncond, eps_cond = eps.float().chunk(2)
        eps = eps_uncond + self.settings.guidance * (eps_cond - eps_uncond)
        shares = None
        if record:
            height, width = own.shape[-2] // MAP_SCALE, own.shape[-1] // MAP_SCALE
            maps = word_maps(captured, self.record_plan, height, width, smoothing=False)
            shares = attention_share(maps, masks_map.to(maps.device))
        return eps[offset:], shares

    def edit_step(
        self,
        latents: torch.Tensor,
        index: int,
        windows: list[tuple[int, int]],
        masks: ObjectMasks | None,
        source: torch.Tensor | None,
        source_prev: Callable[[int], torch.Tensor] | None = None,
        advance=None,
    ) -> tuple[torch.Tensor, StepStats]:
        """One windowed edit step from timesteps[index] to the next level; returns merged x_{t-1}."""
        settings = self.settings
        timestep = self.schedule.timesteps[index]
        previous = self.schedule.previous(index)
        alpha_from, alpha_to = self.schedule.alpha(timestep), self.schedule.alpha(previous)
        guided = settings.rad and masks is not None and bool(self.words) and index < settings.guided_steps
        merger = WindowMerger(latents, settings.overlap_weights)
        stats = StepStats(inside=torch.zeros(len(self.words)), total=torch.zeros(len(self.words)))
        forwards_before = self.unet_forwards
        for position, (start, end) in enumerate(windows):
            anchor, own = self._window(latents, start, end)
            masks_map = masks.at_map_resolution(start, end, MAP_SCALE) if masks is not None else None
            if guided:
                own, losses = self.rad_update(anchor, own, index, masks_map)
                stats.losses.extend(losses)
            with self._fusing("fuse", index, position, own):
                eps, shares = self.guided_eps(anchor, own, timestep, masks_map)
            if shares is not None:
                stats.inside += shares[0].cpu()
                stats.total += shares[1].cpu()
            merger.add(start, ddim_move(own.float(), eps, alpha_from, alpha_to))
            if advance:
                advance()
        merged = merger.result(latents.dtype)
        if settings.irjs and masks is not None and source is not None:
            keep = masks.union()
            background = source if previous is None else source_prev(index)
            merged = (merged * keep + background.to(merged) * (1 - keep)).to(latents.dtype)
        stats.unet_forwards = self.unet_forwards - forwards_before
        return merged, stats

    def fresh_source_noise(self, shape: torch.Size) -> torch.Tensor:
        """Seeded noise for IRJS's `fresh` mode (same for every step, as the paper's add_noise)."""
        generator = torch.Generator().manual_seed(self.settings.seed + 1)
        return torch.randn(shape, generator=generator)

    def noised_source(self, source: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """V_{t-1} for edit step `index` in `fresh` mode."""
        return add_noise(source.float(), noise, self.schedule.alpha(self.schedule.previous(index)))
