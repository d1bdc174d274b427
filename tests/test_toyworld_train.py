"""The toy model's training script end to end on a micro config: stages, resume, export, loading."""

from __future__ import annotations

import json

import pytest
import torch

from longedit.toyworld.train import DEFAULT_CONFIG, main

MICRO = {
    "seed": 0,
    "size": 128,
    "threads": 1,
    "checkpoint_every_s": 0,
    "vae": {"block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 128,
            "pool_scenes": 4, "pool_wild": 2, "steps": 2, "batch": 2, "crop": 64, "lr": 0.001, "kl_weight": 1e-06},
    "data": {"scenes": 6, "chunk": 4},
    "text": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1},
    "unet": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 16, "cross_attention_dim": 32,
             "attention_head_dim": 4, "norm_num_groups": 8, "steps": 3, "batch": 2, "lr": 0.0005, "warmup": 2,
             "caption_dropout": 0.5, "min_snr_gamma": 5.0, "ema_decay": 0.999, "attention_loss": 0.1},
}


def test_default_config_has_every_key_of_the_micro_one():
    config = json.loads(DEFAULT_CONFIG.read_text())
    for section, values in MICRO.items():
        if isinstance(values, dict):
            assert set(values) <= set(config[section]), section
        else:
            assert section in config


@pytest.mark.slow
def test_training_runs_every_stage_resumes_and_exports_a_loadable_folder(tmp_path):
    from longedit.models import load_backbone

    config, work, out = tmp_path / "micro.json", tmp_path / "work", tmp_path / "model"
    config.write_text(json.dumps(MICRO))
    torch_threads = torch.get_num_threads()
    try:
        assert main(["--config", str(config), "--work", str(work), "--out", str(out), "--unet-steps", "1"]) == 0
        first = torch.load(work / "state.pt", weights_only=False)["state"]
        assert first["stage"] == "done" and first["unet_steps_done"] == 1 and first["vae_steps_done"] == 2
        assert len(torch.load(work / "latents.pt", weights_only=False)["captions"]) == 6
        # a later sitting with more steps resumes the UNet stage where it stopped
        state = torch.load(work / "state.pt", weights_only=False)
        state["state"].update(stage="unet", step=1)
        torch.save(state, work / "state.pt")
        assert main(["--config", str(config), "--work", str(work), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(torch_threads)
    info = json.loads((out / "train_info.json").read_text())
    assert info["unet_steps"] == 3 and info["vae_steps"] == 2
    backbone = load_backbone(str(out), device="cpu")
    assert backbone.vae_scale == 8 and backbone.vae.config.scaling_factor == pytest.approx(info["scaling_factor"])
    assert backbone.tokenizer.tokenize("a purple triangle to the right of a white circle on road") == [
        f"{w}</w>" for w in "a purple triangle to the right of a white circle on road".split()
    ]
    assert (out / "model_index.json").is_file() and (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_training_continues_an_exported_folder_with_its_vae_and_scale(tmp_path):
    """--init-from: the folder's VAE and latent scale are kept, the UNet trains on, the step counts add up."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    config = tmp_path / "micro.json"
    config.write_text(json.dumps(MICRO))
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["--config", str(config), "--work", str(tmp_path / "w1"), "--out", str(first)]) == 0
    assert main(["--config", str(config), "--work", str(tmp_path / "w2"), "--out", str(second), "--init-from", str(first),
                 "--unet-steps", "2"]) == 0
    info = json.loads((second / "train_info.json").read_text())
    assert info["unet_steps"] == 3 + 2 and info["continued_from"] == {"model": str(first), "unet_steps": 3}
    assert info["scaling_factor"] == json.loads((first / "train_info.json").read_text())["scaling_factor"]
    vae_a, vae_b = (AutoencoderKL.from_pretrained(f / "vae") for f in (first, second))
    assert all(torch.equal(a, b) for a, b in zip(vae_a.state_dict().values(), vae_b.state_dict().values()))
    unet_a, unet_b = (UNet2DConditionModel.from_pretrained(f / "unet") for f in (first, second))
    assert any(not torch.equal(a, b) for a, b in zip(unet_a.state_dict().values(), unet_b.state_dict().values()))
