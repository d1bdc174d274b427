"""FateZero attention fusion: prompt alignment, the on-disk map store, blending masks, fusion in the loop."""

import json

import pytest
import torch
import torch.nn.functional as F

from longedit.cli import main
from longedit.editor import LoopSettings, VideoEditor
from longedit.fatezero import (
    AttentionDiskStore,
    AttentionFusion,
    CrossAttentionEdit,
    FusedLayer,
    FusionSettings,
    Slot,
    TokenAlignment,
    align_prompts,
    blending_mask,
    fusion_for_editor,
    spatial_size,
    store_slots,
)
from longedit.windows import plan_windows

SOURCE, PROMPT = "a car on a road", "a red robot on a road"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ alignment
def test_alignment_maps_shared_words_and_marks_the_changed_ones(tiny_backbone):
    tokenizer = tiny_backbone.tokenizer
    align = align_prompts(tokenizer, SOURCE, PROMPT)
    # source: <s> a car on a road </s>   edited: <s> a red robot on a road </s>
    assert align.mapper[:8] == (0, 1, 0, 0, 3, 4, 5, 6)
    assert align.alphas[:8] == (1, 1, 0, 0, 1, 1, 1, 1)
    assert align.changed == (2,)  # "car"
    # padding: the same position of the source (prompt-to-prompt's get_mapper)
    assert len(align.mapper) == 77 and align.mapper[8] == 8 and align.alphas[40] == 1
    same = align_prompts(tokenizer, SOURCE, SOURCE)
    assert same.mapper == tuple(range(77)) and all(a == 1 for a in same.alphas) and same.changed == ()


# ---------------------------------------------------------------------------------------- store
def test_disk_store_round_trip_and_file_size(tmp_path):
    slots = [Slot("a.attn1.processor", "self", 2, 2, 4, 8), Slot("a.attn2.processor", "cross", 3, 2, 4, 77)]
    rows = [3, 4, 4]  # first window without anchor, the others with
    store = AttentionDiskStore(tmp_path / "maps", slots, rows)
    generator = torch.Generator().manual_seed(0)
    written = {}
    for step in range(3):
        for window, count in enumerate(rows):
            maps = torch.rand(count, 2, 4, 77, generator=generator)
            store.put("a.attn2.processor", step, window, maps)
            written[step, window] = maps.half()
    short = torch.rand(4, 2, 4, 4, generator=generator)  # fewer keys than the slot: padded, then cut on read
    store.put("a.attn1.processor", 1, 2, short)
    store.flush()
    for (step, window), maps in written.items():
        assert torch.equal(store.get("a.attn2.processor", step, window), maps)
    assert torch.equal(store.get("a.attn1.processor", 1, 2, keys=4), short.half())
    assert torch.count_nonzero(store.get("a.attn1.processor", 1, 2)[..., 4:]) == 0

    expected = (2 * 11 * 2 * 4 * 8 + 3 * 11 * 2 * 4 * 77) * 2  # steps x rows x heads x queries x keys x fp16
    files = sorted((tmp_path / "maps").glob("*.f16"))
    assert sum(f.stat().st_size for f in files) == expected == store.file_bytes()
    assert AttentionDiskStore.expected_bytes(slots, rows) == expected
    assert store.bytes_per_frame(10) == expected / 10
    store.close()

    reopened = AttentionDiskStore(tmp_path / "maps", slots, rows, create=False)  # a resumed job reads the same maps
    assert torch.equal(reopened.get("a.attn2.processor", 2, 1), written[2, 1])
    reopened.close(delete=True)
    assert not (tmp_path / "maps").exists()


# ------------------------------------------------------------------------------------- blending
def test_blending_mask_is_the_pooled_normalised_thresholded_word_map():
    word = torch.zeros(1, 4, 4)
    word[0, 1, 1] = 1.0
    word[0, 3, 3] = 0.2
    mask = blending_mask(word, (4, 4), 0.3)
    expected = torch.zeros(1, 4, 4)
    expected[0, 0:3, 0:3] = 1  # max-pool 3x3 spreads the peak; 0.2 < 0.3 after normalising by the peak
    assert torch.equal(mask, expected)
    assert blending_mask(word, (8, 8), 0.3).shape == (1, 8, 8)
    assert torch.count_nonzero(blending_mask(torch.zeros(2, 4, 4), (4, 4), 0.3)) == 0


def synthetic_fusion(tmp_path, alignment, steps=2, rows=2, queries=16, text=6):
    layers = [FusedLayer("b.attn1.processor", "self", 4, 2), FusedLayer("b.attn2.processor", "cross", 4, 2)]
    slots = [Slot("b.attn1.processor", "self", 1, 2, queries, 2 * queries), Slot("b.attn2.processor", "cross", 2, 2, queries, text)]
    store = AttentionDiskStore(tmp_path / "s", slots, [rows])
    edit = CrossAttentionEdit("refine", alignment, None, torch.ones(text), alignment.changed)
    return AttentionFusion(layers, store, edit, FusionSettings(0.5, 0.5, 0.3), steps)


def test_fuse_replaces_cross_attention_of_shared_tokens_and_blends_self_attention(tmp_path):
    alignment = TokenAlignment(mapper=(0, 2, 1, 0, 4, 5), alphas=(1, 1, 1, 0, 1, 1), changed=(3,))
    fusion = synthetic_fusion(tmp_path, alignment)
    generator = torch.Generator().manual_seed(0)
    # 2 frames, 2 heads, 16 image tokens (latent 16x16 -> 4x4 at 1/4), 6 text tokens, head dim 8
    q, k, v = (torch.randn(2, 2, 16, 8, generator=generator) for _ in range(3))
    kt, vt = (torch.randn(2, 2, 6, 8, generator=generator) for _ in range(2))
    with fusion.active("store", 0, 0, (16, 16)):
        stored_out = fusion.attend("b.attn2.processor", "cross", q, kt, vt, 0.5)
        fusion.attend("b.attn1.processor", "self", q, k, v, 0.5)
    source_cross = (q @ kt.transpose(-1, -2) * 0.5).softmax(-1)
    assert stored_out is None  # storing keeps the processors' own SDPA output: the inversion is unchanged
    assert torch.allclose(fusion.store.get("b.attn2.processor", 0, 0).float(), source_cross, atol=1e-3)
    assert fusion.stored == 2
    # Make the changed source token (3) attend to one corner of the 4x4 map, so the blending mask is partial.
    crafted = torch.full((2, 2, 16, 6), 0.1)
    crafted[..., 3] = 0.0
    crafted[:, :, 0, 3] = 0.5
    fusion.store.put("b.attn2.processor", 0, 0, crafted)

    # Edit pass: a CFG batch (uncond rows, then cond rows); only the conditional half is fused.
    q2, k2, v2 = (torch.randn(4, 2, 16, 8, generator=generator) for _ in range(3))
    kt2, vt2 = (torch.randn(4, 2, 6, 8, generator=generator) for _ in range(2))
    with fusion.active("fuse", 0, 0, (16, 16)):
        out = fusion.attend("b.attn2.processor", "cross", q2, kt2, vt2, 0.5)
        out_self = fusion.attend("b.attn1.processor", "self", q2, k2, v2, 0.5)
    base = fusion.store.get("b.attn2.processor", 0, 0).float()
    current = (q2[2:] @ kt2[2:].transpose(-1, -2) * 0.5).softmax(-1)
    alphas = torch.tensor(alignment.alphas)
    fused = base[..., list(alignment.mapper)] * alphas + current * (1 - alphas)
    assert torch.allclose(out[2:], fused @ vt2[2:], atol=1e-5)
    assert torch.allclose(out[:2], F.scaled_dot_product_attention(q2[:2], kt2[:2], vt2[:2]), atol=1e-5)

    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2, :2] = 1  # the corner peak, spread by the 3x3 max-pool
    mask = mask.reshape(2, 1, 16, 1)
    current_self = (q2[2:] @ k2[2:].transpose(-1, -2) * 0.5).softmax(-1)
    base_self = fusion.store.get("b.attn1.processor", 0, 0, keys=16).float()
    blended = mask * current_self + (1 - mask) * base_self
    assert torch.allclose(out_self[2:], blended @ v2[2:], atol=1e-5)

    with fusion.active("fuse", 1, 0, (16, 16)):  # past self_replace_steps (1 of 2) and cross (1 of 2): untouched
        assert fusion.attend("b.attn1.processor", "self", q2, k2, v2, 0.5) is None
        assert fusion.attend("b.attn2.processor", "cross", q2, kt2, vt2, 0.5) is None
    assert fusion.attend("b.attn2.processor", "cross", q2, kt2, vt2, 0.5) is None  # outside any pass
    fusion.store.close(delete=True)


# ------------------------------------------------------------------------------ in the loop
def test_inversion_stores_and_editing_reuses_maps_of_every_window(tiny_backbone, tmp_path):
    editor = VideoEditor(tiny_backbone, LoopSettings(steps=2, rad=False, kernel_backend="reference"), "a car on a road", "a robot on a road", [])
    windows = plan_windows(5, 3, 2)  # [0,3) [2,5): 3 rows each (window anchor: nothing prepended)
    settings = FusionSettings(cross_replace_steps=1.0, self_replace_steps=0.5, resolution="h32")
    fusion = fusion_for_editor(editor, "a car on a road", "a robot on a road", settings, windows, (8, 8), tmp_path / "maps")
    try:
        slots = fusion.store.slots
        names = sorted(slots)
        assert all(".attentions." in n for n in names) and len(names) == 8  # down_blocks.2, up_blocks.1 x2, mid: attn1+attn2
        cross = slots["down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor"]
        self_ = slots["down_blocks.2.attentions.0.transformer_blocks.0.attn1.processor"]
        heads = tiny_backbone.unet.get_submodule("down_blocks.2.attentions.0.transformer_blocks.0.attn1").heads
        assert (cross.steps, cross.heads, cross.queries, cross.keys) == (2, heads, 4, 77)  # 8x8 latent -> 2x2
        assert (self_.steps, self_.heads, self_.queries, self_.keys) == (1, heads, 4, 8)  # sparse-causal: 2 x 4 keys
        assert slots["mid_block.attentions.0.transformer_blocks.0.attn1.processor"].queries == spatial_size(8, 8) ** 2 == 1
        assert fusion.store.window_rows == [3, 3]

        latents = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        x = latents
        for index in range(2):
            x = editor.inversion_step(x, index, windows)
        assert fusion.stored == (4 * 2 + 4 * 1) * 2  # cross layers x 2 steps + self layers x 1 step, 2 windows
        maps = fusion.store.get(cross.name, 0, 1).float()
        assert maps.shape == (3, heads, 4, 77)
        assert torch.allclose(maps.sum(-1), torch.ones(3, heads, 4), atol=2e-2)  # probabilities
        assert maps.abs().sum() > 0 and fusion.store.get(self_.name, 0, 0).abs().sum() > 0
        assert fusion.source_word_map(0, 1, (8, 8)).shape == (3, 2, 2)

        fused_x = x
        for index in range(2):
            fused_x, _ = editor.edit_step(fused_x, index, windows, None, None)
        assert fusion.fused == (4 * 2 + 4 * 1) * 2
        plain = VideoEditor(tiny_backbone, LoopSettings(steps=2, rad=False, kernel_backend="reference"), "a car on a road", "a robot on a road", [])
        plain_x = x
        for index in range(2):
            plain_x, _ = plain.edit_step(plain_x, index, windows, None, None)
        assert torch.isfinite(fused_x).all() and not torch.allclose(fused_x, plain_x)
    finally:
        fusion.store.close(delete=True)
        editor.context.fusion = None


def test_slots_and_bytes_per_frame_follow_the_layers_and_steps(tiny_backbone):
    from longedit.fatezero import fused_layers

    coarse = FusionSettings(resolution="h32")
    layers = fused_layers(tiny_backbone.unet, coarse.min_scale)
    slots = store_slots(layers, coarse, steps=50, latent_hw=(64, 64), text_tokens=77, sparse_causal=True)
    per_window_frame = sum(s.steps * s.frame_values * 2 for s in slots)
    rows = [16, 17, 17]
    assert AttentionDiskStore.expected_bytes(slots, rows) == per_window_frame * 50
    assert {s.steps for s in slots} == {25, 40}  # self: int(50 x 0.5); cross: int(51 x 0.8)
    wide = store_slots(fused_layers(tiny_backbone.unet, FusionSettings().min_scale), FusionSettings(), 50, (64, 64), 77, True)
    assert len(wide) > len(slots)  # the default h16 adds the latent/2 layers


# ------------------------------------------------------------------------------------ command
def edit_args(clip, out, *extra):
    return [
        "edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet",
        "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
        "--steps", "2", "--size", "64", "--window", "4", "--stride", "2", *extra,
    ]


@pytest.mark.slow
def test_fatezero_edit_runs_end_to_end_and_reports_its_disk_footprint(clip, tmp_path):
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(edit_args(clip, out, "--method", "fatezero", "--report", str(report_path)))
    assert code == 0 and out.is_file()
    report = json.loads(report_path.read_text())
    fz = report["fatezero"]
    assert report["method"] == "fatezero" and report["rad"]["loss"] == [None, None]
    # 64 px -> latent 8x8; heads 8 (tiny); windows [0,4) [2,6) -> 4 + 4 rows (window anchor); 2 steps. Fused (h16): the
    # latent/2 layers at 4x4 (down 1, up 2), the latent/4 ones at 2x2 (down 1, up 2), the mid block at 1x1.
    # cross steps min(int(3 x 0.8), 2) = 2, self steps int(2 x 0.5) = 1 (the official counts).
    rows = 4 + 4
    queries = [16, 16, 16, 4, 4, 4, 1]
    cross = 2 * 8 * sum(queries) * 77
    self_ = 1 * 8 * sum(q * 2 * q for q in queries)
    assert fz["source"] == "store" and fz["disk_bytes"] == (cross + self_) * rows * 2
    assert fz["disk_bytes_per_frame"] == pytest.approx(fz["disk_bytes"] / 6, abs=0.1)
    assert fz["modes"]["store"]["disk_bytes_per_frame"] == fz["disk_bytes_per_frame"]
    assert fz["modes"]["recompute"] == {"disk_bytes_per_frame": 2 * 4 * 8 * 8 * 2, "extra_unet_forwards_per_frame": pytest.approx(2 * rows / 6, abs=1e-3)}
    assert fz["controller"] == "replace"  # as many words in both prompts: a word swap
    # the default blend tokens are the changed source words: "red" and "square" (two tokens in the tiny vocabulary)
    assert fz["blend_tokens"] == [2, 3, 4] and fz["cross_replace_steps"] == 2 and fz["self_replace_steps"] == 1
    assert report["unet_forwards"] == 2 * 2 * 2  # inversion + edit, 2 windows, 2 steps: no extra forward
    assert not list(tmp_path.glob(".*attention"))  # the store is removed after the edit


@pytest.mark.slow
def test_reatco_with_fused_attention_runs_with_masks(clip, tmp_path):
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(edit_args(clip, out, "--fuse-attention", "--object", "duck=10,10,40,40", "--report", str(report_path)))
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["method"] == "reatco" and report["fatezero"]["disk_bytes"] > 0
    assert len([v for v in report["rad"]["loss"] if v is not None]) == 1
    assert report["irjs"]["background_latent_mae"] < 1e-6


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--blend-word", "zebra"], "--blend-word 'zebra' is not in the source prompt"),
        (["--equalize", "zebra=2"], "--equalize word 'zebra' is not in the edited prompt"),
        (["--equalize", "duck"], "cannot read 'duck': write WORD=SCALE"),
        (["--fuse-controller", "replace", "--prompt", "a yellow duck on a long road"], "needs prompts with as many words"),
        (["--fuse-disk-budget", "lots"], "cannot read the memory size 'lots'"),
    ],
)
def test_bad_fatezero_flags_fail_before_the_video_is_encoded(clip, tmp_path, monkeypatch, capsys, flags, message):
    import longedit.engine

    monkeypatch.setattr(longedit.engine.source, "encode_video", lambda *a, **k: pytest.fail("encoded before the check"))
    out = tmp_path / "out.mp4"
    code = main(edit_args(clip, out, "--method", "fatezero", *flags))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".*attention"))


def test_equalize_and_blend_word_flags_reach_the_report(clip, tmp_path):
    report_path = tmp_path / "report.json"
    code = main(edit_args(
        clip, tmp_path / "out.mp4", "--method", "fatezero", "--steps", "1", "--equalize", "duck=2.5", "--blend-word", "square",
        "--blend-word", "red", "--fuse-controller", "refine", "--fuse-source", "recompute", "--report", str(report_path),
    ))
    assert code == 0
    fz = json.loads(report_path.read_text())["fatezero"]
    assert fz["equalize"] == {"duck": 2.5} and fz["blend_words"] == ["square", "red"] and fz["blend_tokens"] == [3, 4, 2]
    assert fz["settings"]["fuse_controller"] == "refine" and fz["settings"]["fuse_source"] == "recompute"
    assert fz["source"] == "recompute" and fz["cross_replace_steps"] == 1 and fz["self_replace_steps"] == 0


def test_fusion_with_an_empty_inversion_prompt_is_refused(clip, tmp_path, capsys):
    code = main(edit_args(clip, tmp_path / "out.mp4", "--method", "fatezero", "--inversion-prompt", "empty"))
    err = capsys.readouterr().err
    assert code == 2 and "inversion_prompt source" in err and "Traceback" not in err


class _StopAfter:
    """A stop event that reads as set from its (n+1)-th check on (stops a job at a chosen point)."""

    def __init__(self, checks: int) -> None:
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


@pytest.mark.slow
@pytest.mark.parametrize("source", ["store", "recompute"])
def test_fatezero_job_resumes_mid_inversion_with_its_stored_maps(clip, tmp_path, source):
    from longedit.config import EditJob
    from longedit.engine import JobInterrupted, run_edit

    def job(name):
        return EditJob(
            input=clip, output=tmp_path / name, source_prompt="a red square on a road", prompt="a yellow duck on a road",
            model="tiny", device="cpu", steps=3, size=64, window=4, stride=2, method="fatezero", fuse_source=source,
        )

    reference = run_edit(job("ref.mp4"), progress=False)
    work = tmp_path / "work"
    with pytest.raises(JobInterrupted, match="inversion step 2"):
        run_edit(job("out.mp4"), work_dir=work, progress=False, stop_event=_StopAfter(1))
    assert (work / "fatezero-attention" / "manifest.json").is_file()
    resumed = run_edit(job("out.mp4"), work_dir=work, progress=False)
    assert resumed["resumed_from"] == {"phase": "inversion", "step": 2}
    assert resumed["latent_checksum"] == reference["latent_checksum"]
    assert resumed["fatezero"]["source"] == reference["fatezero"]["source"] == source
    assert resumed["fatezero"]["disk_bytes"] == reference["fatezero"]["disk_bytes"]
    assert not (work / "fatezero-attention").exists()


def test_a_store_larger_than_the_free_disk_is_refused_before_the_video_is_encoded(clip, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    import longedit.engine

    usage = namedtuple("usage", "total used free")
    # room for the output video (~6 KB, checked before the model loads), not for the store (~1.4 MB)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 30_000, 30_000))
    monkeypatch.setattr(longedit.engine.source, "encode_video", lambda *a, **k: pytest.fail("encoded before the disk check"))
    out = tmp_path / "out.mp4"
    code = main(edit_args(clip, out, "--method", "fatezero", "--fuse-source", "store"))
    err = capsys.readouterr().err
    assert code == 2 and "attention store needs" in err and "--fuse-source recompute" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*attention"))
