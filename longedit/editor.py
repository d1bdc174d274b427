"""The windowed ReAtCo loop: DDIM inversion and editing steps with RAD and IRJS over overlapping windows.

The whole video's latents stay on the host; each window's latents go to the device for its passes.
Per edit step, as the official ReAtCo code (github mdswyz/ReAtCo, `pipeline_split_gen.py`):

    for each window w:  RAD: guided cond-only forward, top-k loss, x_t -= a_t * grad
                             (+ refinement on max_j L_IR at its steps)
                        IRJS: x_t = x_t * M + V_t * (1 - M)   (the CFG forward sees the true background)
                        CFG forward (no grad) -> DDIM step -> x_{t-1}[w]
    merge windows (weighted average of overlapping frames)
    IRJS: x_{t-1} = x_{t-1} * M + V_{t-1} * (1 - M)   (exact at the last step: V_0 = source latents)

Cross-frame attention is Tune-A-Video's sparse-causal attention within each window (`anchor="window"`);
`anchor="video"` prepends the video's first frame to every window instead (its outputs discarded).
The backbone's adapter (`longedit.backbones.adapters`) decides how the UNet is called (2D batch of
frames, or UNet3D videos), whether an anchor frame may be prepended and which attn1 processor is used.
An optional attention fusion (FateZero, `longedit.fatezero`, `attach_fusion`) stores the source
attention maps during inversion and fuses them into the classifier-free guided pass of editing.
An optional `map_sink` receives the per-word maps the edit computes anyway (RAD's, at its steps), window
by window, for the attention pictures (`longedit.attention_pictures`): no extra forward.
The loop drivers over it (`invert`, `denoise`) and IRJS's source levels live in `longedit.sampling`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from longedit.attention import AttentionContext, StopForward, install_processors
from longedit.backbones.adapters import adapter_for
from longedit.ddim import DdimSchedule, ddim_move
from longedit.masks import ObjectMasks
from longedit.rad_diagnostics import irjs_cells, saturated_share, window_diagnostics
from longedit.models import DEFAULT_MAP_SCALE, Backbone
from longedit.rad import (
    MAX_REFINEMENT_ITERATIONS,
    SOFTMAX_TEMPERATURE,
    ColumnPlan,
    GuidedUpdate,
    RadLoss,
    attention_share,
    guided_update,
    rad_loss,
    refinement_thresholds,
    step_sizes,
    word_maps,
)
from longedit.windows import WindowMerger
from longedit.words import WordTokens, prompt_token_count

MAP_SCALE = DEFAULT_MAP_SCALE  # RAD maps live at latent/4 = frame/32 unless the model names its level
FP16_LOSS_SCALE = 1024.0
ANCHOR_MODES = ("window", "video")

#: map_sink(step, window position, start, end, maps [frames, words, h, w] on the CPU)
MapSink = Callable[[int, int, int, int, torch.Tensor], None]


@dataclass
class LoopSettings:
    """The knobs of the diffusion loop (a subset of EditJob; benchmarks build it directly).

    Defaults are the official ReAtCo code's (DESIGN.md section 3).
    """

    steps: int = 50
    guidance: float = 12.5
    rad: bool = True
    guided_steps: int = 25
    step_size: float = 20.0
    step_schedule: str = "sqrt"
    refine: bool = True
    topk_ratio: float = 0.2
    attention_norm: str = "official"
    smoothing: bool = True
    irjs: bool = True
    source_noise: str = "fresh"
    anchor: str = "window"
    overlap_weights: str = "uniform"
    seed: int = 0
    truncate_guided_forward: bool = True
    gradient_checkpointing: bool = False
    kernel_backend: str = "auto"
    record_attention: bool = True
    attention_temperature: float = SOFTMAX_TEMPERATURE
    step_norm: str = "none"
    rad_cells: str = "official"
    rad_diagnostics: bool = False  # measure the loss after each update (one no-grad guided forward more)
    region_start: str = "inverted"
    region_start_strength: float = 1.0


@dataclass
class StepStats:
    """What one edit step measured: per word attention mass inside the mask / total, the RAD losses,
    refinement iterations and RAD updates skipped for a non-finite gradient (fp16 overflow)."""

    inside: torch.Tensor
    total: torch.Tensor
    losses: list[float] = field(default_factory=list)
    refinements: int = 0
    skipped_updates: int = 0
    unet_forwards: int = 0
    rad: list[dict] = field(default_factory=list)  # per window: `rad_diagnostics.window_diagnostics`

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
        self.map_scale = getattr(backbone, "map_scale", MAP_SCALE)  # the model's RAD map level (latent/scale)
        self.context = AttentionContext(kernel_backend=settings.kernel_backend)
        self.capture_layers = self._take_unet()
        self.fusion = None
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
        #: cap of the refinement's iterations per refinement step (the memory simulation runs one: each repeats the same pass)
        self.max_refinements = MAX_REFINEMENT_ITERATIONS
        self.map_sink: MapSink | None = None
        self._maps: torch.Tensor | None = None  # the last word maps of the window (for map_sink)

    # ----------------------------------------------------------------------------------- basics
    @torch.no_grad()
    def _encode(self, prompt: str) -> torch.Tensor:
        tokenizer = self.backbone.tokenizer
        ids = tokenizer(
            prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.backbone.device)
        return self.backbone.text_encoder(ids)[0].to(self.backbone.dtype)

    def _take_unet(self) -> list[str]:
        """Install this editor's attention processors (and its checkpointing choice) on the UNet.

        Several editors may share one loaded UNet (e.g. several prompts on one model): each forward first
        checks that the processors are this editor's, so the last editor built does not capture the
        others' maps. Returns the capture layer names."""
        unet = self.backbone.unet
        layers = install_processors(unet, self.context, self.map_scale, sparse_causal=self.adapter.sparse_causal)
        if self.settings.gradient_checkpointing and self.adapter.supports_checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        return layers

    def _owns_unet(self) -> bool:
        """Whether the installed processors are this editor's (judged by one captured cross-attention layer)."""
        layer = self.backbone.unet.get_submodule(self.capture_layers[0].removesuffix(".processor"))
        return getattr(layer.processor, "context", None) is self.context

    def _unet(self, x: torch.Tensor, timestep: int, embedding: torch.Tensor) -> torch.Tensor:
        """One UNet forward (counted) through the backbone's adapter; x is [videos*frames, 4, h, w]."""
        if not self._owns_unet():
            self._take_unet()
        self.unet_forwards += 1
        return self.adapter.forward(self.backbone.unet, x, timestep, embedding, self.context.frames)

    @property
    def picture_steps(self) -> int:
        """How many first edit steps give their maps to `map_sink`: RAD's guided steps (the smoothed,
        normalised maps of its last guided forward at each step); without RAD (or with 0 RAD steps)
        every step, with the conditional branch's maps of the guided forward (raw, as recorded)."""
        settings = self.settings
        guided = min(settings.guided_steps, settings.steps) if settings.rad else 0
        return guided if guided > 0 else settings.steps

    def _sink_rad_maps(self) -> bool:
        return self.settings.rad and min(self.settings.guided_steps, self.settings.steps) > 0

    def attach_fusion(self, fusion) -> None:
        """Use attention fusion `fusion` (longedit.fatezero.AttentionFusion) from now on."""
        self.fusion = fusion
        self.context.fusion = fusion

    def _fusing(self, mode: str, step: int, window: int, own: torch.Tensor):
        """Context in which the fusion stores (inversion) or fuses (edit) maps of `window` at edit step `step`."""
        if self.fusion is None:
            return contextlib.nullcontext()
        return self.fusion.active(mode, step, window, tuple(own.shape[-2:]), latents=own)

    def window_inputs(self, latents: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(anchor or None, own frames) of window [start, end) on the device in the model dtype.

        The video's first frame is prepended as anchor only with `anchor="video"`, for backbones that
        take one, in windows that do not start with it.
        """
        device, dtype = self.backbone.device, self.backbone.dtype
        own = latents[start:end].to(device=device, dtype=dtype)
        anchor = latents[:1].to(device=device, dtype=dtype) if self.prepends_anchor and start > 0 else None
        return anchor, own

    @property
    def prepends_anchor(self) -> bool:
        """Whether windows after the first get the video's first frame prepended (`anchor="video"`)."""
        return prepends_anchor(self.settings.anchor, self.adapter.uses_anchor)

    def _with_anchor(self, anchor: torch.Tensor | None, own: torch.Tensor) -> torch.Tensor:
        """The UNet batch of one video; tells the attention processors how many frames and whether an anchor leads."""
        self.context.frames = own.shape[0] + (0 if anchor is None else 1)
        self.context.prepended_anchor = anchor is not None
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
        anchor, own = self.window_inputs(latents, start, end)
        x = self._with_anchor(anchor, own)
        try:
            output = self._unet(x, timestep, self.inversion_cond)[x.shape[0] - own.shape[0] :]
        except StopForward:
            output = None
        return own, self.schedule.noise(output, own, timestep)

    # ------------------------------------------------------------------------------------ RAD
    def rad_gradient(
        self,
        anchor: torch.Tensor | None,
        own: torch.Tensor,
        timestep: int,
        masks: torch.Tensor,
        objective: Callable[[RadLoss], torch.Tensor] | None = None,
        gradient: bool = True,
    ) -> tuple[torch.Tensor | None, RadLoss]:
        """Loss and d objective / d own of the guided (cond-only) forward for one window.

        `objective(loss)` picks the scalar to differentiate once the loss is known (default: the total
        loss). The gradient is returned as computed (fp32): a non-finite one (fp16 overflow) is the
        caller's to skip, never clamped into a huge step. `gradient=False`: the loss alone (no backward; None).
        """
        context = self.context
        variable = own.detach().requires_grad_(True)
        x = self._with_anchor(None if anchor is None else anchor.detach(), variable)
        offset = x.shape[0] - own.shape[0]
        context.reset()
        context.capture = True
        context.columns = self.loss_plan.tensor(x.device)
        context.stop_after = self.capture_layers[-1] if self.settings.truncate_guided_forward else None
        try:
            with torch.set_grad_enabled(gradient):
                try:
                    self._unet(x, timestep, self.cond)
                except StopForward:
                    pass
                height, width = own.shape[-2] // self.map_scale, own.shape[-1] // self.map_scale
                captured = [m[offset:] for m in context.maps]
                temperature = self.settings.attention_temperature
                maps = word_maps(captured, self.loss_plan, height, width, self.settings.smoothing, temperature)
                if self.map_sink is not None and gradient:
                    self._maps = maps.detach()
                loss = rad_loss(maps, masks.to(maps.device), self.settings.topk_ratio)
                saturated = saturated_share(captured, len(self.loss_plan.columns) if self.loss_plan.softmax else None, temperature)
                if not gradient:
                    return None, RadLoss(loss.total.detach(), loss.inner.detach(), loss.outer.detach(), saturated)
                target = loss.total if objective is None else objective(loss)
                scale = FP16_LOSS_SCALE if own.dtype == torch.float16 else 1.0
                context.replaying = True
                (grad,) = torch.autograd.grad(target * scale, variable)
        finally:
            context.reset()
        return grad.float() / scale, RadLoss(loss.total.detach(), loss.inner.detach(), loss.outer.detach(), saturated)

    def rad_update(self, anchor, own: torch.Tensor, index: int, masks: torch.Tensor) -> tuple[torch.Tensor, GuidedUpdate]:
        """x_t <- x_t - a_t * grad (eq. 7), after the official refinement at its steps (`rad.guided_update`)."""
        timestep = self.schedule.timesteps[index]

        def measure(x: torch.Tensor, objective):
            return self.rad_gradient(anchor, x, timestep, masks, objective)

        return guided_update(
            own, measure, self.step_sizes[index], self.refinement.get(index), self.max_refinements,
            self.settings.step_norm,
        )

    # ----------------------------------------------------------------------------------- edit
    @torch.no_grad()
    def guided_eps(self, anchor, own: torch.Tensor, timestep: int, masks_map: torch.Tensor | None):
        """Classifier-free guided noise of the window's own frames; records attention shares if asked."""
        context = self.context
        x = self._with_anchor(anchor, own)
        frames = x.shape[0]
        offset = frames - own.shape[0]
        context.reset()
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
        eps = self.schedule.noise(eps, x, timestep)  # a v- or x0-predicting model's guided output, as eps
        shares = None
        if record:
            height, width = own.shape[-2] // self.map_scale, own.shape[-1] // self.map_scale
            maps = word_maps(captured, self.record_plan, height, width, smoothing=False)
            shares = attention_share(maps, masks_map.to(maps.device))
            if self.map_sink is not None and not self._sink_rad_maps():
                self._maps = maps
        return eps[offset:], shares

    def edit_step(
        self,
        latents: torch.Tensor,
        index: int,
        windows: list[tuple[int, int]],
        masks: ObjectMasks | None,
        source_at: Callable[[int], torch.Tensor] | None = None,
        advance=None,
    ) -> tuple[torch.Tensor, StepStats]:
        """One windowed edit step from timesteps[index] to the next level; returns merged x_{t-1}.

        `source_at(i)`: IRJS's source latents V at the level of timesteps[i] (i = steps: the clean
        source), for the whole video; None turns IRJS off.
        """
        settings = self.settings
        timestep = self.schedule.timesteps[index]
        previous = self.schedule.previous(index)
        alpha_from, alpha_to = self.schedule.alpha(timestep), self.schedule.alpha(previous)
        guided = settings.rad and masks is not None and bool(self.words) and index < settings.guided_steps
        irjs = settings.irjs and masks is not None and source_at is not None
        merger = WindowMerger(latents, settings.overlap_weights)
        stats = StepStats(inside=torch.zeros(len(self.words)), total=torch.zeros(len(self.words)))
        forwards_before = self.unet_forwards
        for position, (start, end) in enumerate(windows):
            anchor, own = self.window_inputs(latents, start, end)
            masks_map = masks.at_map_resolution(start, end, self.map_scale) if masks is not None else None
            self._maps = None
            if guided:
                rad_masks = masks_map
                if settings.rad_cells == "irjs" and irjs:
                    rad_masks = irjs_cells(masks_map, masks.union(start, end), self.map_scale)
                before = own
                own, update = self.rad_update(anchor, own, index, rad_masks)
                after = None
                if settings.rad_diagnostics:
                    after = float(self.rad_gradient(anchor, own, timestep, rad_masks, gradient=False)[1].total)
                stats.rad.append(window_diagnostics(update, before, own, after, masks.union(start, end) if irjs else None))
                stats.losses.extend(update.losses)
                stats.refinements += update.refinements
                stats.skipped_updates += update.skipped
            if irjs:  # official: the CFG forward and the DDIM step start from the true background at level t
                own = paste_background(own, source_at(index)[start:end], masks.union(start, end))
            with self._fusing("fuse", index, position, own):
                eps, shares = self.guided_eps(anchor, own, timestep, masks_map)
            if shares is not None:
                stats.inside += shares[0].cpu()
                stats.total += shares[1].cpu()
            if self.map_sink is not None and self._maps is not None and index < self.picture_steps:
                self.map_sink(index, position, start, end, self._maps.float().cpu())
                self._maps = None
            merger.add(start, ddim_move(own.float(), eps, alpha_from, alpha_to))
            if advance:
                advance()
        merged = merger.result(latents.dtype)
        if irjs:  # exact at the last step (V_0 = the source latents)
            merged = paste_background(merged, source_at(index + 1), masks.union()).to(latents.dtype)
        stats.unet_forwards = self.unet_forwards - forwards_before
        return merged, stats


def prepends_anchor(anchor: str, backbone_uses_anchor: bool) -> bool:
    """`anchor="video"` prepends the video's first frame to later windows, for backbones that take one."""
    if anchor not in ANCHOR_MODES:
        raise ValueError(f"unknown anchor '{anchor}' (use one of {', '.join(ANCHOR_MODES)})")
    return anchor == "video" and backbone_uses_anchor


def paste_background(x: torch.Tensor, background: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """IRJS (eq. 8): x inside the regions `keep` (1 = object), `background` outside; in x's device and dtype."""
    keep = keep.to(device=x.device, dtype=torch.float32)
    return (x.float() * keep + background.to(device=x.device, dtype=torch.float32) * (1 - keep)).to(x.dtype)
