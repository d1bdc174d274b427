"""RAD's map level comes from the model (a toy UNet grown with 16x16 cross-attention), and the sink term."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from longedit.errors import UserError
from longedit.models import DEFAULT_MAP_SCALE, MAP_LEVEL_FILE, rad_map_scale
from longedit.toyworld import components
from longedit.toyworld.train import sink_losses

MICRO_UNET = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 16, "cross_attention_dim": 32,
              "attention_head_dim": 4, "norm_num_groups": 8}


def test_grown_unet_computes_what_the_smaller_one_did_and_has_full_resolution_cross_attention():
    torch.manual_seed(0)
    small = components.build_unet(MICRO_UNET).eval()
    grown = components.build_unet({**MICRO_UNET, "full_resolution_attention": True}).eval()
    new = components.grow_unet(grown, small.state_dict())
    assert new and all(n.startswith(("down_blocks.0.attentions", "up_blocks.3.attentions")) for n in new)
    x, t, text = torch.randn(2, 4, 16, 16), torch.tensor([900, 50]), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(small(x, t, text).sample, grown(x, t, text).sample)
    from longedit.attention import capture_layer_names

    assert capture_layer_names(grown, 1)[0].startswith("down_blocks.0.attentions.0")
    assert capture_layer_names(small, 1) == []


def test_sink_losses_against_a_hand_computation():
    # 1 caption, 4 cells, 77 columns; object noun at column 2 covers cells 0 and 1 (coverage 1, 0.6), cell 3 is
    # background, cell 2 is touched by the object below 0.5 (neither background nor object cell)
    maps = torch.zeros(1, 4, 77)
    maps[0, :, 0] = torch.tensor([0.4, 0.9, 0.5, 0.7])
    maps[0, :, 2] = torch.tensor([0.3, 0.05, 0.1, 0.0])
    columns = torch.tensor([[2, 0, 0]])
    cells = torch.zeros(1, 3, 4)
    cells[0, 0] = torch.tensor([1.0, 0.6, 0.2, 0.0])
    valid = columns > 0
    cfg = {"sink_background": 0.9, "sink_object": [0.5, 0.85]}
    sink, noun = sink_losses(maps, columns, cells, valid, cfg)
    background = 0.9 - 0.7
    objects = ((0.5 - 0.4) + (0.9 - 0.85)) / 2
    assert sink.item() == pytest.approx(background + objects, abs=1e-6)
    assert noun.item() == pytest.approx(((1 - 0.3 / 0.6) + (1 - 0.05 / 0.1)) / 2, abs=1e-6)
    # a dropped caption counts nowhere
    zero_sink, zero_noun = sink_losses(maps, columns, cells, torch.zeros_like(valid), cfg)
    assert zero_sink.item() == 0 and zero_noun.item() == 0


def test_the_model_folder_names_rad_map_level(tmp_path):
    assert rad_map_scale(str(tmp_path)) == DEFAULT_MAP_SCALE
    (tmp_path / MAP_LEVEL_FILE).write_text(json.dumps({"rad_map_scale": 1}))
    assert rad_map_scale(str(tmp_path)) == 1
    (tmp_path / MAP_LEVEL_FILE).write_text(json.dumps({"rad_map_scale": 3}))
    with pytest.raises(UserError, match="must be 1, 2, 4 or 8"):
        rad_map_scale(str(tmp_path))
    (tmp_path / MAP_LEVEL_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not a map level file"):
        rad_map_scale(str(tmp_path))


def test_the_editor_reads_rad_maps_at_the_backbones_level(tiny_backbone):
    from longedit.editor import LoopSettings, VideoEditor
    from longedit.masks import ObjectMasks
    from longedit.words import word_tokens

    backbone = dataclasses.replace(tiny_backbone, map_scale=2)
    words = [word_tokens(backbone.tokenizer, "a cat on a road", "cat")]
    settings = LoopSettings(steps=4, guided_steps=2, kernel_backend="reference")
    editor = VideoEditor(backbone, settings, "a dog on a road", "a cat on a road", words)
    assert editor.map_scale == 2 and all(n.startswith(("down_blocks.1", "up_blocks.2")) for n in editor.capture_layers)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :4, :4] = True
    masks_map = ObjectMasks(["cat"], mask, ["dog"]).at_map_resolution(0, 2, editor.map_scale)
    assert masks_map.shape[-2:] == (4, 4)
    grad, loss = editor.rad_gradient(None, latents, editor.schedule.timesteps[0], masks_map)
    assert grad.shape == latents.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_continued_run_resumes_its_grown_weights_in_the_data_stage(tmp_path):
    from longedit.toyworld.train import Trainer
    from test_toyworld_train import MICRO

    config = {**MICRO, "unet": {**MICRO["unet"], "full_resolution_attention": True}, "attention_map_scale": 1}
    first = Trainer(config, tmp_path, log=lambda message: None)
    first.state.update(stage="data", init_from="some/model", scaling_factor=0.5)
    with torch.no_grad():
        next(first.unet.parameters()).add_(1.0)
    first.save()
    second = Trainer(config, tmp_path, log=lambda message: None)
    second.load()
    assert torch.equal(next(second.unet.parameters()), next(first.unet.parameters()))


@pytest.mark.slow
def test_growing_a_trained_micro_model_trains_with_the_sink_and_exports_its_map_level(tmp_path):
    from longedit.models import load_backbone
    from longedit.toyworld.train import main
    from test_toyworld_train import MICRO

    small, grown = tmp_path / "small.json", tmp_path / "grown.json"
    small.write_text(json.dumps(MICRO))
    unet = {**MICRO["unet"], "full_resolution_attention": True, "sink_loss": 0.1, "noun_share_loss": 0.1,
            "sink_background": 0.9, "sink_object": [0.5, 0.85]}
    grown.write_text(json.dumps({**MICRO, "unet": unet, "attention_map_scale": 1}))
    threads = torch.get_num_threads()
    try:
        assert main(["--config", str(small), "--work", str(tmp_path / "w1"), "--out", str(tmp_path / "m1"), "--unet-steps", "1"]) == 0
        assert main(["--config", str(grown), "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "m2"),
                     "--init-from", str(tmp_path / "m1"), "--unet-steps", "25"]) == 0
    finally:
        torch.set_num_threads(threads)
    losses = [json.loads(line) for line in (tmp_path / "w2" / "loss.jsonl").read_text().splitlines()]
    assert losses[-1]["step"] == 25 and 0 <= losses[-1]["sink_loss"] < 2 and 0 <= losses[-1]["noun_share_loss"] <= 1
    assert json.loads((tmp_path / "m2" / MAP_LEVEL_FILE).read_text())["rad_map_scale"] == 1
    assert load_backbone(str(tmp_path / "m2"), device="cpu").map_scale == 1
    assert load_backbone(str(tmp_path / "m1"), device="cpu").map_scale == 4
    # the card names the map level, the grown run's config chain, its sink losses and the paired text -> image check
    from longedit.toyworld import model_path
    from longedit.toyworld.card import model_card

    results = json.loads((model_path() / "gates.json").read_text())
    results["attention"]["map"] = "16x16"
    results["text_to_image_vs_baseline"] = {"baseline": "m1", "n": 4, "on": 0.75, "off": 0.5, "diff": 0.25, "low": -0.25,
                                            "high": 0.75, "n_for_0.1": 192}
    card = model_card(tmp_path / "m2", results)
    assert "RAD reads latent/1" in card and "at latent/1 (= H/8" in card and "grow16_config.json" in card
    assert "start-token sink" in card and "background cells give column 0 at least 0.9" in card
    assert "75.0% vs 50.0%, paired difference +25.0 points (bootstrap 95% interval -25.0 to +75.0)" in card
    assert "16x16 cross-attention (RAD's level)" in card


def test_paired_interval_against_a_hand_computation():
    from longedit.toyworld.scoring import paired_interval

    result = paired_interval([1, 1, 1, 0], [0, 1, 0, 0])
    assert (result["n"], result["on"], result["off"], result["diff"]) == (4, 0.75, 0.25, 0.5)
    assert 0 <= result["low"] <= 0.5 <= result["high"] <= 1
    assert result["n_for_0.1"] == 129  # ceil((1.96 * sqrt(1/3) / 0.1) ** 2): the sd of the differences [1, 0, 1, 0]
    same = paired_interval([1, 0, 1], [1, 0, 1])
    assert (same["diff"], same["low"], same["high"], same["n_for_0.1"]) == (0, 0, 0, None)
