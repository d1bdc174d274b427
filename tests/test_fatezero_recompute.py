"""FateZero `--fuse-source recompute`: the source maps regenerated from the inversion trajectory.

Tolerance. The two modes differ only by fp16 rounding (the store rounds the maps, recompute the
trajectory latents it reruns the source pass on; with both kept in fp32 the edits are bitwise equal):
regenerated maps within 5e-3 of the stored ones; final latents within 0.02 max abs (latents are ~1.8
in mean abs; measured 0.005-0.011) at 16x16 latents; decoded frames within 4/255 mean abs (measured
2.7: the random tiny VAE has a large gain, the picture means nothing). At 8x8
latents the random tiny model amplifies the rounding (a blend-mask cell is a quarter of the frame
there and flips): 0.7 max abs there, so the tests run at 16x16.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from longedit.cli import main
from longedit.editor import LoopSettings, VideoEditor
from longedit.errors import UserError
from longedit.fatezero import FusionSettings, RecomputedMaps, fusion_for_editor, plan_fusion
from longedit.samples import make_clip
from longedit.windows import plan_windows

SOURCE, PROMPT = "a car on a road", "a red robot on a road"
MAP_TOLERANCE, LATENT_TOLERANCE, PIXEL_MEAN_TOLERANCE = 5e-3, 0.02, 4.0
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _editor(backbone, steps):
    # anchor "video": the prepended anchor rows are the harder case for the stored/regenerated maps
    return VideoEditor(backbone, LoopSettings(steps=steps, rad=False, kernel_backend="reference", guidance=7.5, anchor="video"), SOURCE, PROMPT, [])


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_recompute_regenerates_the_stored_maps_and_gives_the_same_edit(tiny_backbone, tmp_path):
    steps, frames, latent = 4, 7, (16, 16)
    windows = plan_windows(frames, 4, 2)  # [0,4) [2,6) [3,7): 4 + 5 + 5 rows with the anchor
    settings = FusionSettings()  # official: h16 layers, cross 4 of 4 steps, self 2 of 4
    start = torch.randn(frames, 4, *latent, generator=torch.Generator().manual_seed(0))
    inverted, edited, forwards, fusions = {}, {}, {}, {}
    try:
        for mode in ("store", "recompute"):  # one editor at a time: each installs its processors on the shared UNet
            editor = _editor(tiny_backbone, steps)
            fusion = fusions[mode] = fusion_for_editor(editor, SOURCE, PROMPT, settings, windows, latent, tmp_path / mode, source=mode)
            x = start
            for index in range(steps):
                x = editor.inversion_step(x, index, windows)
            inverted[mode] = x
            if mode == "recompute":  # the regenerated maps of every fused layer, step and window are the stored ones
                store, recompute = fusions["store"].store, fusion.store
                for step in range(steps):
                    for window in range(len(windows)):
                        with fusion.active("fuse", step, window, latent):
                            for name in recompute.slots:
                                if recompute.has(name, step):
                                    regenerated = recompute.get(name, step, window)
                                    stored = store.get(name, step, window, keys=regenerated.shape[-1]).float()
                                    assert (regenerated - stored).abs().max() < MAP_TOLERANCE, (name, step, window)
                recompute.passes = recompute.frame_passes = 0  # count the edit's source passes only
            before = editor.unet_forwards
            calls, handle = _count_calls(tiny_backbone.unet.conv_out)
            try:
                for index in range(steps):
                    x, _ = editor.edit_step(x, index, windows, None, None)
            finally:
                handle.remove()
                editor.context.fusion = None
            edited[mode] = x
            forwards[mode] = (editor.unet_forwards - before, len(calls))
        assert torch.equal(inverted["store"], inverted["recompute"])  # keeping the source maps does not change the inversion
        store, recompute = fusions["store"].store, fusions["recompute"].store
        assert isinstance(recompute, RecomputedMaps)
        assert recompute.file_bytes() == steps * frames * 4 * 16 * 16 * 2  # the trajectory only: 4 fused steps, fp16
        assert store.file_bytes() > 100 * recompute.file_bytes()
        assert forwards["store"] == (steps * len(windows), steps * len(windows))
        # one source pass per window and fused step, stopped after the last fused layer (conv_out never runs)
        assert forwards["recompute"] == (2 * steps * len(windows), steps * len(windows))
        assert (edited["store"] - edited["recompute"]).abs().max() < LATENT_TOLERANCE
        assert fusions["store"].fused == fusions["recompute"].fused > 0
        report = fusions["recompute"].report(frames)
        assert report["source"] == "recompute" and report["extra_unet_forwards"] == steps * len(windows)
        assert report["extra_unet_forwards_per_frame"] == pytest.approx(steps * (4 + 5 + 5) / frames, abs=1e-3)
    finally:
        for fusion in fusions.values():
            fusion.store.close(delete=True)


def _job(clip, out, **changes):
    from longedit.config import EditJob

    values = dict(
        input=clip, output=out, source_prompt="a red square on a road", prompt="a yellow duck on a road",
        model="tiny", device="cpu", steps=2, size=64, window=4, stride=2, method="fatezero",
    )
    values.update(changes)
    return EditJob(**values)


def test_auto_takes_recompute_when_the_store_exceeds_the_budget(tiny_backbone, tmp_path):
    clip = Path("unused.mp4")
    windows = plan_windows(1000, 8, 4)
    plan = plan_fusion(_job(clip, tmp_path / "o.mp4"), tiny_backbone, windows, (8, 8), tmp_path / "work", fresh=True)
    store_bytes = plan.store_bytes()
    assert plan.source == "store" and plan.budget > store_bytes  # fits in half the free disk: the faster store
    small = plan_fusion(_job(clip, tmp_path / "o.mp4", fuse_disk_budget=f"{store_bytes - 1}"), tiny_backbone, windows, (8, 8), tmp_path / "work", True)
    assert small.source == "recompute" and small.budget == store_bytes - 1
    forced = plan_fusion(_job(clip, tmp_path / "o.mp4", fuse_source="recompute"), tiny_backbone, windows, (8, 8), None, True)
    assert forced.source == "recompute"
    assert forced.modes()["recompute"]["disk_bytes_per_frame"] == 2 * 4 * 8 * 8 * 2
    with pytest.raises(UserError, match="cannot read the memory size"):
        plan_fusion(_job(clip, tmp_path / "o.mp4", fuse_disk_budget="lots"), tiny_backbone, windows, (8, 8), None, True)
    assert not (tmp_path / "work").exists()  # planning writes nothing


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=6, width=128, height=128, fps=Fraction(24)).path


@pytest.mark.slow
def test_store_and_recompute_edits_give_the_same_latents_and_video(short_clip, tmp_path, monkeypatch):
    import longedit.engine
    from longedit.engine import run_edit
    from longedit.video import iter_frames

    written = {}
    original = longedit.engine.runner.write_video

    def keep_latents(backbone, latents, info, job, *args):
        written[Path(job.output).stem] = latents.clone()
        return original(backbone, latents, info, job, *args)

    monkeypatch.setattr(longedit.engine.runner, "write_video", keep_latents)
    reports, frames = {}, {}
    for mode in ("store", "recompute"):
        out = tmp_path / f"{mode}.mp4"
        reports[mode] = run_edit(_job(short_clip, out, steps=3, size=128, fuse_source=mode), progress=False)
        frames[mode] = np.stack(list(iter_frames(out))).astype(np.float64)
    assert reports["store"]["fatezero"]["source"] == "store" and reports["recompute"]["fatezero"]["source"] == "recompute"
    assert reports["recompute"]["unet_forwards"] == reports["store"]["unet_forwards"] + 3 * 2  # 3 fused steps x 2 windows
    assert reports["recompute"]["fatezero"]["disk_bytes"] < reports["store"]["fatezero"]["disk_bytes"] / 100
    latent_difference = (written["store"] - written["recompute"]).abs().max()
    pixel_difference = np.abs(frames["store"] - frames["recompute"]).mean()
    print(f"store vs recompute: latents max abs {latent_difference:.5f}, pixels mean abs {pixel_difference:.3f}")
    assert latent_difference < LATENT_TOLERANCE
    assert pixel_difference < PIXEL_MEAN_TOLERANCE


def test_a_fatezero_edit_over_budget_recomputes_with_a_trajectory_linear_in_frames(clip_factory, tmp_path):
    """The planner's choice at a budget the store exceeds, and the bytes per frame, on 48 frames (3 windows).

    The 1,000-frame edit this replaces (3 minutes of CI; 100 MB budget, under 1 MB of fusion data per frame)
    is `python benchmarks/long_runs.py fatezero-1000`, its figures in benchmarks/RESULTS.md; the bytes per
    frame are the same at any length (the trajectory is frames x steps x one latent).
    """
    frames = 48
    clip = clip_factory("clip48.mp4", frames=frames, width=64, height=64).path
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main([
        "edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--method", "fatezero",
        "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
        "--steps", "2", "--size", "64", "--window", "16", "--stride", "16", "--fuse-disk-budget", "2MB", "--report", str(report_path),
    ])
    assert code == 0 and out.is_file()
    report = json.loads(report_path.read_text())
    fz = report["fatezero"]
    assert report["frames"] == frames and fz["source"] == "recompute"  # the store would exceed the 2 MB budget
    assert fz["modes"]["store"]["disk_bytes_per_frame"] * frames > 2e6
    assert fz["modes"]["store"]["disk_bytes_per_frame"] * 1000 > 100e6  # so at 1,000 frames it exceeds 100 MB too
    assert fz["disk_bytes_per_frame"] == fz["modes"]["recompute"]["disk_bytes_per_frame"] < 1e6
    assert fz["disk_bytes"] == 2 * frames * 4 * 8 * 8 * 2  # the trajectory file: 2 fused steps x frames x 4x8x8 fp16
    assert not list(tmp_path.glob(".*attention"))
