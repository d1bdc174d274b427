"""The loop's defaults against the official ReAtCo code (github mdswyz/ReAtCo), transcribed into small references.

Each reference below is the official computation written out as in `tuneavideo/pipelines/pipeline_split_gen.py`
and `gaussian_smoothing.py` (names kept where it helps), compared with longedit's on random maps or latents.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import longedit.attention as attention
from longedit.config import EditJob
from longedit.ddim import add_noise
from longedit.editor import LoopSettings, VideoEditor
from longedit.sampling import SourceLevels
from longedit.errors import UserError
from longedit.rad import ColumnPlan, RadLoss, gaussian_kernel3d, guided_update, rad_loss, smooth, word_maps
from longedit.words import WordTokens, prompt_token_count, word_tokens

SOURCE, PROMPT = "a car on a road", "a robot on a road"


# ---------------------------------------------------------------------------- official references
def official_softmax_maps(attention_maps: torch.Tensor) -> torch.Tensor:
    """`_compute_max_attention_per_index`, first lines: [F, h, w, 77] -> [F, h, w, 75]."""
    attention_for_text = attention_maps[:, :, :, 1:-1]
    attention_for_text = attention_for_text * 100
    return torch.softmax(attention_for_text, dim=-1)


def official_smoothing(video: torch.Tensor, kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """`GaussianSmoothing(channels=1, kernel_size=3, sigma=0.5, dim=3)` after `F.pad(..., mode='reflect')`, [F, h, w]."""
    meshgrids = torch.meshgrid([torch.arange(kernel_size, dtype=torch.float32)] * 3, indexing="ij")
    kernel = 1
    for mgrid in meshgrids:
        mean = (kernel_size - 1) / 2
        kernel = kernel * 1 / (sigma * math.sqrt(2 * math.pi)) * torch.exp(-(((mgrid - mean) / (2 * sigma)) ** 2))
    kernel = kernel / torch.sum(kernel)
    padded = F.pad(video.unsqueeze(0).unsqueeze(0), (1, 1, 1, 1, 1, 1), mode="reflect")
    return F.conv3d(padded, kernel.view(1, 1, *kernel.shape)).squeeze(0).squeeze(0)


def official_region_terms(video: torch.Tensor, obj_mask: torch.Tensor, P: float = 0.2) -> tuple[float, float]:
    """The per-word loop: mean over frames of topk means inside and outside the box (k = (area * P).long())."""
    bg_mask = 1 - obj_mask
    image_fg, image_bg = [], []
    for j, image in enumerate(video):
        k = int((obj_mask[j].sum() * P).long())
        image_fg.append((image * obj_mask[j]).reshape(-1).topk(k)[0].mean().unsqueeze(0))
        k = int((bg_mask[j].sum() * P).long())
        image_bg.append((image * bg_mask[j]).reshape(-1).topk(k)[0].mean().unsqueeze(0))
    return float(torch.cat(image_fg).mean()), float(torch.cat(image_bg).mean())


def official_compute_loss(fg: list[float], bg: list[float]) -> float:
    """`_compute_loss`: sum of max(0, 1 - fg) and max(0, bg)."""
    return sum(max(0, 1.0 - f) for f in fg) + sum(max(0, b) for b in bg)


# ---------------------------------------------------------------------------------------- 1. maps
def test_official_normalisation_is_softmax_x100_over_columns_1_to_75():
    frames, h, w = 3, 4, 5
    probs = torch.softmax(torch.randn(frames, h, w, 77, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    words = [WordTokens("robot", (2,)), WordTokens("dog", (5, 6))]
    plan = ColumnPlan.build(words, prompt_tokens=6, normalization="official")
    assert plan.columns == tuple(range(1, 76))
    captured = [probs.reshape(frames, h * w, 77)[..., list(plan.columns)]]  # what the capture layers record
    ours = word_maps(captured, plan, h, w, smoothing=False)
    reference = official_softmax_maps(probs)
    torch.testing.assert_close(ours[:, 0], reference[..., 2 - 1])
    torch.testing.assert_close(ours[:, 1], (reference[..., 5 - 1] + reference[..., 6 - 1]) / 2)


def test_prompt_and_raw_normalisations_stay_options():
    words = [WordTokens("robot", (2,))]
    assert ColumnPlan.build(words, 5, "prompt").columns == (1, 2, 3, 4, 5)
    assert ColumnPlan.build(words, 5, "raw").columns == (2,)
    with pytest.raises(ValueError, match="official, prompt, raw"):
        ColumnPlan.build(words, 5, "softmax")


def test_smoothing_is_the_official_kernel_with_reflect_padding():
    assert gaussian_kernel3d().sum(dim=(1, 2)).tolist() == pytest.approx([0.2119, 0.5761, 0.2119], abs=1e-4)
    maps = torch.rand(5, 2, 6, 7, generator=torch.Generator().manual_seed(1))
    ours = smooth(maps)
    for word in range(2):
        torch.testing.assert_close(ours[:, word], official_smoothing(maps[:, word]))


def test_region_loss_matches_the_official_terms():
    generator = torch.Generator().manual_seed(2)
    maps = torch.rand(4, 2, 8, 8, generator=generator) ** 3
    masks = torch.zeros(4, 2, 8, 8)
    masks[:, 0, 1:5, 2:7] = 1  # area 20 -> k 4; complement 44 -> k 8
    masks[:, 1, 3:8, 0:3] = 1  # area 15 -> k 3; complement 49 -> k 9
    loss = rad_loss(maps, masks, 0.2)
    fg, bg = zip(*(official_region_terms(maps[:, j], masks[:, j]) for j in range(2)))
    torch.testing.assert_close(loss.inner, torch.tensor([1 - f for f in fg]))
    torch.testing.assert_close(loss.outer, torch.tensor(bg))
    assert float(loss.total) == pytest.approx(official_compute_loss(list(fg), list(bg)), rel=1e-6)


# ---------------------------------------------------------------------------------- 2. refinement
def official_refinement(x: torch.Tensor, measure, step_size: float, threshold: float | None, max_refinement_steps: int = 20):
    """The official step: the main forward, `_perform_iterative_refinement_step` at a refinement step, the main update.

    `measure(x)` -> (max_j L_IR^j, total loss) as differentiable functions of x.
    """
    updates = 0
    loss_fg, _ = measure(x)
    if threshold is not None and float(loss_fg) > 1.0 - threshold:
        target_loss = max(0, 1.0 - threshold)
        iteration = 0
        while float(loss_fg.detach()) > target_loss:
            iteration += 1
            x = x.clone().detach().requires_grad_(True)
            loss_fg, _ = measure(x)
            if float(loss_fg.detach()) != 0:
                x = x - step_size * torch.autograd.grad(loss_fg, [x])[0]
                updates += 1
            if iteration >= max_refinement_steps:
                break
    x = x.clone().detach().requires_grad_(True)
    _, loss = measure(x)
    x = x - step_size * torch.autograd.grad(loss, [x])[0]
    return x.detach(), updates


def _toy_problem():
    """Two words whose inner terms fall as x grows toward a target: a smooth stand-in for the guided forward."""
    weights = torch.tensor([[0.3, 0.1, 0.0], [0.0, 0.2, 0.05]])

    def terms(x: torch.Tensor) -> RadLoss:
        inner = (1 - torch.sigmoid(weights @ x - 2)).clamp(min=0)
        outer = 0.1 * (x**2).sum() * torch.ones(2) / 2
        return RadLoss(total=(inner + outer).sum(), inner=inner, outer=outer)

    def measure_ours(x: torch.Tensor, objective):
        variable = x.detach().requires_grad_(True)
        loss = terms(variable)
        (grad,) = torch.autograd.grad(objective(loss), variable)
        return grad, RadLoss(loss.total.detach(), loss.inner.detach(), loss.outer.detach())

    def measure_official(x: torch.Tensor):
        loss = terms(x)
        return loss.inner.max(), loss.total

    return measure_ours, measure_official


@pytest.mark.parametrize("threshold", [None, 0.05, 0.5, 0.8])
@pytest.mark.parametrize("start", [0.5, -5.0])
def test_refinement_follows_the_official_loop(threshold, start):
    measure_ours, measure_official = _toy_problem()
    x0 = torch.tensor([start, -0.2, start])
    ours, update = guided_update(x0, measure_ours, 2.0, threshold, 20)
    reference, updates = official_refinement(x0, measure_official, 2.0, threshold)
    torch.testing.assert_close(ours, reference)
    assert update.refinements == updates
    assert len(update.losses) == updates + 1
    if threshold is None:
        assert updates == 0
    elif start == -5.0:  # attention ~0.02: below every threshold, so every refinement step refines
        assert updates >= 1


def test_a_non_finite_gradient_skips_its_update_and_is_counted():
    def overflowing(x, objective):
        loss = RadLoss(torch.tensor(1.0), torch.tensor([0.5]), torch.tensor([0.5]))
        objective(loss)
        return torch.full_like(x, float("inf")), loss

    x = torch.ones(3)
    out, update = guided_update(x, overflowing, 20.0)
    assert torch.equal(out, x) and update.skipped == 1


# ------------------------------------------------------------------------------------------ 3. IRJS
def test_fresh_source_noise_is_a_new_seeded_draw_per_step_and_fixed_is_one(tiny_backbone):
    editor = VideoEditor(tiny_backbone, LoopSettings(steps=4, kernel_backend="reference"), SOURCE, PROMPT, [])
    source = torch.randn(3, 4, 8, 8)
    fresh = SourceLevels(editor.schedule, source, "fresh", seed=7)
    again = SourceLevels(editor.schedule, source, "fresh", seed=7)
    assert not torch.equal(fresh.noise(0), fresh.noise(1))
    assert torch.equal(fresh.noise(2), again.noise(2))  # a resumed run draws the same noise
    assert not torch.equal(fresh.noise(2), SourceLevels(editor.schedule, source, "fresh", seed=8).noise(2))
    fixed = SourceLevels(editor.schedule, source, "fixed", seed=7)
    assert torch.equal(fixed.noise(0), fixed.noise(3))
    level = editor.schedule.alpha(editor.schedule.timesteps[1])
    torch.testing.assert_close(fresh(1), add_noise(source, fresh.noise(1), level))
    assert torch.equal(fresh(editor.schedule.steps), source)  # V_0: the exact source after the last step


def test_irjs_pastes_the_background_before_the_cfg_forward(tiny_backbone, monkeypatch):
    """The CFG forward's input outside the masks is the source noised to level t (official placement)."""
    from longedit.masks import ObjectMasks

    words = [word_tokens(tiny_backbone.tokenizer, PROMPT, "robot")]
    editor = VideoEditor(tiny_backbone, LoopSettings(steps=4, guided_steps=2, kernel_backend="reference"), SOURCE, PROMPT, words)
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 4:12, 4:12] = True
    masks = ObjectMasks(["robot"], mask, ["box"])
    source_at = SourceLevels(editor.schedule, torch.randn(3, 4, 16, 16), "fresh", 0)
    seen = []
    original = editor.guided_eps

    def spy(anchor, own, timestep, masks_map):
        seen.append(own.clone())
        return original(anchor, own, timestep, masks_map)

    monkeypatch.setattr(editor, "guided_eps", spy)
    editor.edit_step(latents, 0, [(0, 3)], masks, source_at)
    outside = ~mask.expand(-1, 4, -1, -1)
    assert torch.equal(seen[0][outside], source_at(0)[outside])
    assert not torch.equal(seen[0][~outside], latents[~outside])  # inside: RAD moved it


# ------------------------------------------------------------------------------- 4. inversion prompt
def test_inversion_prompt_is_empty_for_reatco_and_the_source_for_fatezero(tmp_path):
    base = dict(input=tmp_path / "a.mp4", output=tmp_path / "b.mp4", source_prompt=SOURCE, prompt=PROMPT)
    assert EditJob(**base).effective_inversion_prompt == "empty"
    assert EditJob(**base, method="fatezero").effective_inversion_prompt == "source"
    assert EditJob(**base, inversion_prompt="source").effective_inversion_prompt == "source"
    with pytest.raises(ValueError, match="source prompt's maps"):
        EditJob(**base, method="fatezero", inversion_prompt="empty")
    assert EditJob(**base).effective_guidance == 12.5
    assert EditJob(**base, method="fatezero").effective_guidance == 7.5
    assert EditJob(**base).use_refinement  # the official code always refines


# ------------------------------------------------------------------------------------ 5. the anchor
def _attended_frames(editor: VideoEditor, start: int, end: int, monkeypatch) -> list[tuple[int, int]]:
    """For each own frame of window [start, end): the video frames whose keys its queries attend to."""
    calls = []
    original = attention.sparse_causal_kv

    def spy(tensor, frames, prepended_anchor=False):
        calls.append((frames, prepended_anchor))
        return original(tensor, frames, prepended_anchor)

    monkeypatch.setattr(attention, "sparse_causal_kv", spy)
    latents = torch.randn(end, 4, 8, 8)
    windows = [(0, start), (start, end)] if start > 0 else [(0, end)]  # every frame covered; the last is measured
    editor.inversion_step(latents, 0, windows)
    monkeypatch.setattr(attention, "sparse_causal_kv", original)
    frames, prepended = calls[-1]
    layers = len(calls) // len(windows)
    assert all(call == calls[-1] for call in calls[-layers:])  # every attn1 layer of the forward saw the same window
    video_frame = ([0] if prepended else []) + list(range(start, end))  # batch position -> video frame
    previous = attention.sparse_causal_frames(frames, prepended).tolist()
    own = range(1 if prepended else 0, frames)
    return [(video_frame[0], video_frame[previous[p]]) for p in own]


@pytest.mark.parametrize("kind", ["sd", "tuneavideo"])
def test_cross_frame_attention_anchor_in_both_modes(kind, tiny_backbone, monkeypatch):
    if kind == "sd":
        backbone = tiny_backbone
    else:
        from longedit.bench.presets import PRESETS, build_backbone

        backbone = build_backbone(PRESETS["tiny"], torch.device("cpu"), torch.float32, 0, kind="tuneavideo")

    def editor(anchor: str) -> VideoEditor:  # an editor installs its processors on the UNet: build it right before use
        return VideoEditor(backbone, LoopSettings(steps=2, anchor=anchor, kernel_backend="reference"), SOURCE, PROMPT, [])

    # Tune-A-Video's sparse-causal attention: [window's first frame, previous frame]; the first takes itself.
    assert _attended_frames(editor("window"), 0, 4, monkeypatch) == [(0, 0), (0, 0), (0, 1), (0, 2)]
    assert _attended_frames(editor("window"), 4, 8, monkeypatch) == [(4, 4), (4, 4), (4, 5), (4, 6)]
    assert _attended_frames(editor("video"), 0, 4, monkeypatch) == [(0, 0), (0, 0), (0, 1), (0, 2)]
    # The video's frame 0 prepended: the window's first own frame attends to itself, never [0, 0].
    assert _attended_frames(editor("video"), 4, 8, monkeypatch) == [(0, 4), (0, 4), (0, 5), (0, 6)]


# ------------------------------------------------------------------------------- 8. long prompts
def test_a_90_word_prompt_truncates_and_a_word_past_75_tokens_is_refused(tiny_backbone):
    tokenizer = tiny_backbone.tokenizer
    long_prompt = "a robot on a road " + " ".join(["and a car on a road"] * 18)  # 95 words
    assert prompt_token_count(tokenizer, long_prompt) == 75
    words = [word_tokens(tokenizer, long_prompt, "robot")]
    plan = ColumnPlan.build(words, prompt_token_count(tokenizer, long_prompt), "prompt")
    assert max(plan.columns) == 75
    late = long_prompt + " with a duck"
    with pytest.raises(UserError, match="past CLIP's 77-token limit"):
        word_tokens(tokenizer, late, "duck")


def test_a_90_word_prompt_edits_in_every_normalisation(tiny_backbone):
    from longedit.masks import ObjectMasks

    long_prompt = "a robot on a road " + " ".join(["and a car on a road"] * 18)
    words = [word_tokens(tiny_backbone.tokenizer, long_prompt, "robot")]
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 4:12, 4:12] = True
    masks = ObjectMasks(["robot"], mask, ["box"])
    for norm in ("official", "prompt", "raw"):
        settings = LoopSettings(steps=2, guided_steps=1, refine=False, attention_norm=norm, kernel_backend="reference")
        editor = VideoEditor(tiny_backbone, settings, SOURCE, long_prompt, words)
        out, stats = editor.edit_step(torch.randn(2, 4, 16, 16), 0, [(0, 2)], masks, None)
        assert torch.isfinite(out).all() and stats.losses
