"""RAD's levers (issue 25) against hand computations, its per-step diagnostics and the 'did nothing' warning."""

from __future__ import annotations

import json
import math

import pytest
import torch

from longedit.rad import ColumnPlan, GuidedUpdate, RadLoss, guided_update, normalized_gradient, word_maps
from longedit.rad_diagnostics import (
    irjs_cells,
    rad_summary,
    rad_warnings,
    renoise_regions,
    saturated_share,
    step_diagnostics,
    window_diagnostics,
)


def test_attention_temperature_is_the_softmax_factor():
    raw = torch.zeros(1, 1, 75)
    raw[0, 0, 0], raw[0, 0, 1] = 0.05, 0.02  # columns 1 and 2 of the 77
    plan = ColumnPlan(tuple(range(1, 76)), ((0,),), "official")
    for temperature in (100.0, 10.0):
        value = word_maps([raw], plan, 1, 1, smoothing=False, temperature=temperature)[0, 0, 0, 0].item()
        by_hand = math.exp(temperature * 0.05) / (math.exp(temperature * 0.05) + math.exp(temperature * 0.02) + 73)
        assert value == pytest.approx(by_hand, rel=1e-5)
    # x100 makes it an argmax where x10 keeps it graded: the saturation share says so
    big = torch.zeros(1, 2, 75)
    big[0, 0, 0] = 0.3
    assert saturated_share([big], 75, 100.0) == 0.5 and saturated_share([big], 75, 10.0) == 0.0
    assert saturated_share([big], None, 100.0) is None


def test_rms_step_norm_divides_by_the_root_mean_square():
    grad = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    rms = math.sqrt((9 + 16) / 4)
    assert torch.allclose(normalized_gradient(grad, "rms"), grad / rms)
    assert torch.equal(normalized_gradient(grad, "none"), grad)
    assert torch.equal(normalized_gradient(torch.zeros(3), "rms"), torch.zeros(3))
    with pytest.raises(ValueError, match="unknown step norm"):
        normalized_gradient(grad, "l2")

    def measure(x, objective):
        loss = RadLoss(torch.tensor(0.5), torch.tensor([0.5]), torch.tensor([0.0]), saturated=0.25)
        objective(loss)
        return grad * 1e-6, loss

    x = torch.ones(2, 2)
    moved, update = guided_update(x, measure, step_size=2.0, step_norm="rms")
    assert torch.allclose(moved, x - 2.0 * grad / rms, atol=1e-6)  # the 1e-6 scale of the gradient is gone
    assert update.grad_norms == [pytest.approx(5e-6)] and update.saturated == [0.25]


def test_irjs_cells_keep_only_cells_whose_latents_the_paste_lets_change():
    masks_map = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # [F=1, J=1, 2, 2] at factor 2 of a 4x4 latent
    union = torch.zeros(1, 1, 4, 4)
    union[0, 0, 0:2, 0:2] = 1  # the whole top-left cell; the top-right cell only half
    union[0, 0, 0:2, 2] = 1
    assert irjs_cells(masks_map, union, 2).tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]
    # a word that would lose every cell keeps its official ones
    assert irjs_cells(masks_map, torch.zeros(1, 1, 4, 4), 2).tolist() == masks_map.tolist()


def test_region_start_renoises_inside_the_union_only():
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    union = torch.zeros(2, 1, 4, 4)
    union[:, :, 1:3, 1:3] = 1
    out = renoise_regions(latents, union, 0.36, seed=5)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(5 + 7919))
    inside = union.expand_as(latents).bool()
    assert torch.equal(out[~inside], latents[~inside])
    assert torch.allclose(out[inside], (0.8 * latents + 0.6 * noise)[inside], atol=1e-6)
    assert torch.equal(renoise_regions(latents, union, 0.0, seed=5), latents)


def test_window_diagnostics_and_the_warning_when_rad_did_nothing():
    before = torch.zeros(1, 4, 2, 2)
    after = before.clone()
    after[0, 0, 0, 0], after[0, 0, 1, 1] = 3.0, 4.0  # |update| = 5, 3 of it inside the keep mask
    keep = torch.zeros(1, 1, 2, 2)
    keep[0, 0, 0, 0] = 1
    update = GuidedUpdate(losses=[1.2, 1.1], refinements=1, grad_norms=[2.0, 1.0], saturated=[0.9, 0.7])
    window = window_diagnostics(update, before + 1, after + 1, 1.1, keep)
    assert window["update_survives_paste"] == pytest.approx(3 / 5)
    assert window["grad_over_z"] == pytest.approx(1.0 / 4.0)  # the main update's |grad| over |z| = |ones(16)| = 4
    assert window["saturated"] == pytest.approx(0.8) and window["loss_before"] == 1.2 and window["refinements"] == 1
    assert window_diagnostics(update, before, before, 1.2, keep)["update_survives_paste"] is None  # nothing moved
    step = step_diagnostics([window, {**window, "loss_after": 1.2, "refinements": 0}])
    assert step["loss_after"] == pytest.approx(1.15) and step["refinements"] == 1
    summary = rad_summary([step])
    assert summary["mean_loss_drop"] == pytest.approx(0.05)
    assert rad_warnings(summary, "official", 100, "none", "official") == []
    still = rad_summary([{**step, "loss_after": step["loss_before"] - 1e-6}])
    (line,) = rad_warnings(still, "official", 100, "none", "official")
    assert "did nothing measurable" in line and "80% of map cells" in line and "--attention-temperature" in line
    flat = rad_summary([{**step, "loss_after": step["loss_before"], "saturated": 0.0, "grad_over_z": 1e-5}])
    assert "--step-norm rms" in rad_warnings(flat, "official", 100, "none", "official")[0]
    pasted = rad_summary([{**step, "loss_after": step["loss_before"], "saturated": 0.0, "update_survives_paste": 0.3}])
    assert "--rad-cells irjs" in rad_warnings(pasted, "official", 100, "none", "official")[0]


@pytest.mark.parametrize("extra", [[], ["--no-refine"], ["--attention-temperature", "10", "--step-norm", "rms", "--rad-cells",
                                        "irjs", "--region-start", "noise", "--region-start-strength", "0.5"]])
def test_the_report_has_rads_diagnostics_per_guided_step(tmp_path, extra):
    from longedit.cli import main
    from longedit.samples import make_clip

    clip = make_clip(tmp_path / "c.mp4", frames=4, width=64, height=64).path
    report_path = tmp_path / "r.json"
    code = main(["edit", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "tiny", "--quiet", "--source-prompt",
                 "a red square on a road", "--prompt", "a yellow duck on a road", "--steps", "3", "--size", "64",
                 "--window", "4", "--object", "duck=10,10,50,40", "--report", str(report_path), *extra])
    assert code == 0
    report = json.loads(report_path.read_text())
    diagnostics = report["rad"]["diagnostics"]
    assert len(diagnostics["per_step"]) == report["rad"]["guided_steps"] >= 1
    first = diagnostics["per_step"][0]
    # the step's loss is the mean of its 1 + refinements guided forwards (one window here); loss_before is the first
    if first["refinements"] == 0:
        assert first["loss_before"] == pytest.approx(report["rad"]["loss"][0], rel=1e-5)
    assert first["loss_after"] is not None and first["grad_over_z"] > 0 and 0 <= first["saturated"] <= 1
    assert 0 < first["update_survives_paste"] <= 1 and first["refinements"] == report["rad"]["refinement_iterations"][0]
    settings = report["settings"]
    levers = "--step-norm" in extra
    assert (settings["attention_temperature"], settings["step_norm"]) == ((10.0, "rms") if levers else (100.0, "none"))
    assert (first["refinements"] == 0) == ("--no-refine" in extra)
    moved = abs(diagnostics["mean_loss_drop"]) >= 1e-4
    assert moved == (not any("did nothing measurable" in w for w in report["warnings"]))


@pytest.mark.parametrize("extra, message", [
    (["--attention-temperature", "0"], "attention_temperature"),
    (["--step-norm", "l2"], "step_norm"),
    (["--region-start-strength", "1.5"], "region_start_strength"),
    (["--rad-cells", "all"], "rad_cells"),
])
def test_bad_lever_values_exit_2_with_one_line(tmp_path, capsys, extra, message):
    from longedit.cli import main

    out = tmp_path / "o.mp4"
    code = main(["edit", str(tmp_path / "missing.mp4"), "-o", str(out), "--model", "tiny", "--source-prompt", "a dog",
                 "--prompt", "a cat", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()
