"""`longedit bench` on the tiny preset, `bench kernel`, and what the memory plan saves in the guided pass."""

from __future__ import annotations

import json

import pytest
import torch

from longedit.memory import TensorMemoryTracker, saved_tensor_bytes
from longedit.bench.run import MODES, bench_inputs, mode_settings
from longedit.cli import main
from longedit.editor import MAP_SCALE, VideoEditor
from longedit.models import load_backbone
from longedit.words import word_tokens

PROMPT = "a robot on a road"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_bench_tiny_compares_both_modes_in_their_own_processes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--preset", "tiny", "--frames", "8", "--steps", "2", "--size", "64", "--threads", "1",
                 "--no-refine", "--quiet", "--json", str(out)])  # refinement repeats passes a loss-dependent number of times
    assert code == 0
    printed = capsys.readouterr().out
    assert "optimized/reference" in printed and "VAE never runs" in printed
    document = json.loads(out.read_text())
    modes = document["modes"]
    assert set(modes) == set(MODES)
    for result in modes.values():
        for key in ("peak_rss_bytes", "peak_vram_bytes", "seconds_per_frame", "unet_forwards", "window", "stride"):
            assert key in result
        assert result["peak_rss_bytes"] > 0 and result["seconds_per_frame"] > 0 and result["latents_finite"]
    optimized, reference = modes["optimized"], modes["reference"]
    assert (reference["window"], reference["stride"], reference["windows"]) == (4, 1, 5)
    assert (optimized["window"], optimized["stride"], optimized["windows"]) == (8, 4, 1)
    # reference: 2 inversion steps x 5 windows + 2 edit steps x 5 windows x (guided + CFG) = 30
    # optimized: 2 inversion + step 0 (guided + CFG) + step 1 (CFG only: RAD on the first half) = 5
    assert (reference["unet_forwards"], optimized["unet_forwards"]) == (30, 5)
    assert optimized["settings"]["gradient_checkpointing"] and not reference["settings"]["truncate_guided_forward"]
    assert optimized["guided_pass_tensor_peak_bytes"] < reference["guided_pass_tensor_peak_bytes"]
    ratios = document["ratios"]
    assert ratios["unet_forwards"] == pytest.approx(5 / 30)
    assert ratios["memory_metric"] == "peak_rss_bytes" and ratios["speedup"] > 0
    assert set(document["targets"]) == {"speedup_at_least_2x", "cpu_time_speedup_at_least_2x", "peak_memory_not_higher"}
    assert optimized["cpu_seconds_per_frame"] > 0 and ratios["cpu_speedup"] > 0


def test_bench_sweep_in_process_reports_each_length(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    code = main(["bench", "--preset", "tiny", "--size", "64", "--steps", "1", "--window", "4", "--frames-sweep", "4,10",
                 "--in-process", "--quiet", "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert [row["frames"] for row in document["rows"]] == [4, 10]
    assert [row["windows"] for row in document["rows"]] == [1, 4]
    assert "max_growth_vs_first" in document["summary"]
    assert "peak memory growth" in capsys.readouterr().out


def test_bench_kernel_on_tiny_shapes(tmp_path, capsys):
    out = tmp_path / "kernel.json"
    assert main(["bench", "kernel", "--shapes", "tiny", "--repeats", "2", "--device", "cpu", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "memory saved" in printed
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["fused_ms"] > 0 and r["reference_ms"] > 0 for r in rows)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--preset", "sd15", "--device", "cpu"], "--force"),
        (["bench", "--frames-sweep", "16,x"], "--frames-sweep"),
        (["bench", "--vram", "lots"], "memory size"),
        (["bench", "--size", "100"], "multiple of 64"),
        (["bench", "--mode", "fastest"], "unknown --mode"),
    ],
)
def test_bench_refuses_bad_input_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny():
    backbone = load_backbone("tiny", "cpu", "fp32")
    yield backbone
    backbone.unet.disable_gradient_checkpointing()


def _guided_pass(backbone, settings, latents, masks):
    """Gradient, bytes saved for backward and tensor peak of one guided pass on window [1, F) with anchor 0."""
    editor = VideoEditor(backbone, settings, "a car on a road", PROMPT, [word_tokens(backbone.tokenizer, PROMPT, "robot")])
    masks_map = masks.at_map_resolution(1, latents.shape[0], MAP_SCALE)
    with saved_tensor_bytes(backbone.unet) as saved, TensorMemoryTracker() as tracker:
        grad, _ = editor.rad_gradient(latents[:1], latents[1:], editor.schedule.timesteps[0], masks_map)
    return grad, saved["bytes"], tracker.peak


def test_optimized_guided_pass_keeps_less_for_backward_and_gives_the_same_gradient(tiny):
    latents, masks = bench_inputs(frames=4, size=128, seed=0)
    optimized = mode_settings("optimized", 4)
    reference = mode_settings("reference", 4)
    plain = mode_settings("optimized", 4)
    plain.truncate_guided_forward, plain.gradient_checkpointing = False, False
    grad_opt, saved_opt, peak_opt = _guided_pass(tiny, optimized, latents, masks)
    grad_ref, saved_ref, peak_ref = _guided_pass(tiny, reference, latents, masks)
    grad_plain, saved_plain, _ = _guided_pass(tiny, plain, latents, masks)
    assert saved_opt < saved_plain <= saved_ref and peak_opt < peak_ref
    assert grad_plain.abs().sum() > 0
    # truncation + checkpointing change what is kept, never the gradient
    assert torch.allclose(grad_opt, grad_plain, atol=1e-6, rtol=1e-5)
    assert torch.allclose(grad_ref, grad_plain, atol=1e-6, rtol=1e-5)


def test_bench_backbones_gives_one_row_per_backbone(tmp_path, capsys):
    from longedit.cli import main

    out = tmp_path / "backbones.json"
    code = main(["bench", "backbones", "--frames", "4", "--steps", "1", "--size", "64", "--quiet", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["sd", "t2v", "tuneavideo"]
    for kind, row in rows.items():
        assert row["backbone"] == kind and row["unet_forwards"] > 0 and row["seconds_per_frame"] > 0
    assert "tuneavideo" in capsys.readouterr().out
