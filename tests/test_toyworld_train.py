"""The toy model's training script end to end on a micro config: stages, resume, export, loading."""

from __future__ import annotations

import json

import pytest
import torch

from longedit.toyworld.train import DEFAULT_CONFIG, grounding_losses, main, unet_lr

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
    continued = tmp_path / "continue.json"  # the continuation's extra terms: noun dominance, cosine decay
    continued.write_text(json.dumps({**MICRO, "unet": {**MICRO["unet"], "noun_dominance_loss": 0.1, "min_lr_ratio": 0.1}}))
    assert main(["--config", str(continued), "--work", str(tmp_path / "w2"), "--out", str(second), "--init-from", str(first),
                 "--unet-steps", "2"]) == 0
    info = json.loads((second / "train_info.json").read_text())
    assert info["unet_steps"] == 3 + 2 and info["continued_from"] == {"model": str(first), "unet_steps": 3}
    assert info["scaling_factor"] == json.loads((first / "train_info.json").read_text())["scaling_factor"]
    vae_a, vae_b = (AutoencoderKL.from_pretrained(f / "vae") for f in (first, second))
    assert all(torch.equal(a, b) for a, b in zip(vae_a.state_dict().values(), vae_b.state_dict().values()))
    unet_a, unet_b = (UNet2DConditionModel.from_pretrained(f / "unet") for f in (first, second))
    assert any(not torch.equal(a, b) for a, b in zip(unet_a.state_dict().values(), unet_b.state_dict().values()))


def test_grounding_losses_against_a_hand_computation():
    maps = torch.zeros(1, 4, 77)
    maps[0, :, 3] = torch.tensor([0.5, 0.1, 0.0, 0.0])  # the noun's probability in each of 4 cells
    cells = torch.zeros(1, 3, 4)
    cells[0, 0] = torch.tensor([1.0, 0.5, 0.0, 0.0])  # object 0 covers cell 0 and half of cell 1
    columns = torch.tensor([[3, 0, 0]])
    valid = torch.tensor([[True, False, False]])
    share, dominance = grounding_losses(maps, columns, cells, valid)
    assert float(share) == pytest.approx(1 - (0.5 + 0.05) / 0.6)  # of the noun's mass, this much inside
    assert float(dominance) == pytest.approx(1 - (0.5 + 0.05) / 1.5)  # its mean probability over the mask
    none = grounding_losses(maps, columns, cells, torch.zeros(1, 3, dtype=torch.bool))
    assert float(none[0]) == 0.0 and float(none[1]) == 0.0


def test_unet_lr_warms_up_then_stays_or_decays_by_cosine():
    constant = {"lr": 1e-3, "warmup": 10}
    assert unet_lr(constant, 0, 100) == pytest.approx(1e-4)
    assert unet_lr(constant, 9, 100) == unet_lr(constant, 99, 100) == pytest.approx(1e-3)
    cosine = {**constant, "min_lr_ratio": 0.1}
    assert unet_lr(cosine, 50, 100) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert unet_lr(cosine, 100, 100) == pytest.approx(1e-4)
    assert unet_lr(cosine, 20, 100) > unet_lr(cosine, 60, 100) > unet_lr(cosine, 99, 100)


def test_sharpen_trains_the_decoder_only_resumes_and_writes_a_loadable_vae(tmp_path):
    """The UNet's latent space must survive: encoder and quant_conv unchanged, decoder changed."""
    from diffusers import AutoencoderKL

    from longedit.toyworld import components
    from longedit.toyworld.sharpen import main as sharpen

    model = tmp_path / "model"
    components.build_vae(MICRO["vae"]).save_pretrained(model / "vae")
    args = ["--model", str(model), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "vae"), "--batch", "2",
            "--scenes", "3", "--wild", "1", "--checkpoint-every", "0"]
    torch_threads = torch.get_num_threads()
    try:
        assert sharpen([*args, "--steps", "1"]) == 0
        one_step = AutoencoderKL.from_pretrained(tmp_path / "vae").state_dict()
        assert sharpen([*args, "--steps", "1"]) == 0  # resumed at step 1 of 1: nothing left to train
        assert all(torch.equal(v, AutoencoderKL.from_pretrained(tmp_path / "vae").state_dict()[k]) for k, v in one_step.items())
        assert sharpen([*args, "--steps", "2"]) == 0  # resumes at step 1
    finally:
        torch.set_num_threads(torch_threads)
    info = json.loads((tmp_path / "vae" / "sharpen_info.json").read_text())
    assert info["decoder_steps"] == 2 and info["scenes"] == 3
    before = AutoencoderKL.from_pretrained(model / "vae").state_dict()
    after = AutoencoderKL.from_pretrained(tmp_path / "vae").state_dict()
    kept = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
