"""Models as users have them (issue 26 items 1 and 4): single-file checkpoints, LoRAs, a VAE, models that
cannot be edited refused at load, and the processing size following the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from longedit import engine
from longedit.cli import main
from longedit.config import EditJob
from longedit.model_extras import LoraSpec
from longedit.models import load_backbone
from longedit.random_models import TINY_SD_UNET, build_tiny_components, random_vae, save_tiny_model
from longedit.samples import make_clip
from single_file_helpers import save_single_file

PROMPTS = ["--source-prompt", "a car on a road", "--prompt", "a robot on a road"]
QUICK = ["--quiet", "--steps", "2", "--size", "64", "--window", "4", "--object", "robot=8,8,40,40", *PROMPTS]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("formats") / "clip.mp4", frames=4, width=64, height=64).path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The tiny model as a diffusers folder and as one original-layout .safetensors / .ckpt file."""
    root = tmp_path_factory.mktemp("tiny-models")
    folder = save_tiny_model(root / "tiny")
    components = build_tiny_components()
    return {
        "folder": folder,
        "safetensors": save_single_file(components, root / "tiny.safetensors"),
        "ckpt": save_single_file(components, root / "tiny.ckpt"),
    }


def _lora(folder: Path, unet_config: dict = TINY_SD_UNET, seed: int = 1) -> Path:
    """A LoRA made with peft on a tiny UNet (B random, so it changes the output), saved as diffusers does."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def _unet_output(backbone) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, backbone.unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return backbone.unet(x, 500, encoder_hidden_states=text).sample


def _edit(capsys, clip: Path, out: Path, *args: str) -> tuple[int, str, dict | None]:
    report = out.with_suffix(".json")
    code = main(["edit", str(clip), "-o", str(out), "--report", str(report), *QUICK, *args])
    err = capsys.readouterr().err
    return code, err, json.loads(report.read_text()) if report.exists() else None


def _refused(capsys, clip: Path, tmp_path: Path, *args: str) -> str:
    """Run an edit that must be refused: exit 2, one line, nothing written; returns the line."""
    out = tmp_path / "refused.mp4"
    code, err, report = _edit(capsys, clip, out, *args)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not out.exists() and report is None and not any(p.name.startswith(".refused") for p in tmp_path.iterdir())
    return lines[0]


@pytest.fixture
def no_decoding(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the video was decoded before the model was refused")

    monkeypatch.setattr(engine, "encode_video", forbidden)


# ------------------------------------------------------------------------------------ single file
@pytest.mark.parametrize("suffix", ["safetensors", "ckpt"])
def test_a_single_file_checkpoint_loads_the_same_weights_as_its_folder(models, suffix):
    folder = load_backbone(str(models["folder"]), device="cpu")
    single = load_backbone(str(models[suffix]), device="cpu", local_files_only=True, checkpoint_config=str(models["folder"]))
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert dict(single.scheduler.config) == dict(folder.scheduler.config)


def test_a_single_file_checkpoint_edits_like_its_folder(models, clip, tmp_path, capsys):
    code, err, from_folder = _edit(capsys, clip, tmp_path / "folder.mp4", "--model", str(models["folder"]))
    assert code == 0, err
    code, err, from_file = _edit(
        capsys, clip, tmp_path / "file.mp4", "--model", str(models["safetensors"]),
        "--checkpoint-config", str(models["folder"]), "--local-files-only",
    )
    assert code == 0, err
    assert from_file["latent_checksum"] == from_folder["latent_checksum"]
    assert from_file["model_extras"]["checkpoint_config"] == str(models["folder"])


def test_weights_mapped_at_unaligned_offsets_get_their_own_aligned_memory():
    """The reason the two edits above agree bit for bit: a mapped file's tensors sit at their file offsets."""
    from longedit.models import own_aligned_storage

    layer = torch.nn.Linear(16, 16)
    flat = torch.randn(16 * 16 + 1)
    layer.weight.data = flat[1:].view(16, 16)  # 4 bytes past an aligned start, as a tensor inside a mapped file
    expected = layer.weight.detach().clone()
    assert layer.weight.data_ptr() % 64
    own_aligned_storage(layer)
    assert layer.weight.data_ptr() % 64 == 0 and layer.bias.data_ptr() % 64 == 0
    assert torch.equal(layer.weight, expected)


def test_a_single_file_offline_without_its_config_says_what_it_needs(models, clip, tmp_path, capsys, monkeypatch, no_decoding):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    line = _refused(capsys, clip, tmp_path, "--model", str(models["safetensors"]), "--local-files-only")
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in line and "--local-files-only" in line
    assert "--checkpoint-config DIR_OR_ID" in line


def _fake_checkpoint(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    save_file({name: torch.zeros(shape) for name, shape in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize("kind, tensors, says", [
    ("sdxl", {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (4,)}, "is SDXL"),
    ("inpainting", {"model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3)}, "inpainting"),
])
def test_unsupported_single_files_are_refused_before_decoding(kind, tensors, says, clip, tmp_path, capsys, no_decoding):
    checkpoint = _fake_checkpoint(tmp_path / f"{kind}.safetensors", tensors)
    line = _refused(capsys, clip, tmp_path, "--model", str(checkpoint), "--local-files-only")
    assert says in line


# ---------------------------------------------------------------------------------- unsupported
def _variant(models, tmp_path: Path, folder: str, file: str, **changes) -> Path:
    target = tmp_path / folder
    shutil.copytree(models["folder"], target)
    config_path = target / folder.split("-")[0] / file
    config = json.loads(config_path.read_text())
    config.update(changes)
    config_path.write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("folder, file, changes, says", [
    ("unet-sdxl", "config.json", {"addition_embed_type": "text_time"}, "is SDXL"),
    ("unet-inpaint", "config.json", {"in_channels": 9}, "inpainting UNet with 9 input channels"),
    ("scheduler-flow", "scheduler_config.json", {"_class_name": "FlowMatchEulerDiscreteScheduler"}, "flow-matching"),
    ("scheduler-exp", "scheduler_config.json", {"beta_schedule": "exp"}, "DDIM cannot build"),
    ("scheduler-flowpred", "scheduler_config.json", {"prediction_type": "flow_prediction"}, "cannot read"),
])
def test_models_longedit_cannot_edit_with_are_refused_before_decoding(
    models, clip, tmp_path, capsys, no_decoding, folder, file, changes, says
):
    model = _variant(models, tmp_path, folder, file, **changes)
    assert says in _refused(capsys, clip, tmp_path, "--model", str(model))


# ------------------------------------------------------------------------------------------ LoRA
def test_a_lora_changes_the_output_and_at_scale_zero_does_not(models, tmp_path):
    lora = _lora(tmp_path / "lora")
    plain = _unet_output(load_backbone(str(models["folder"]), device="cpu"))
    fused = load_backbone(str(models["folder"]), device="cpu", loras=[LoraSpec(str(lora), 1.0)])
    zero = load_backbone(str(models["folder"]), device="cpu", loras=[LoraSpec(str(lora), 0.0)])
    assert (_unet_output(fused) - plain).abs().mean() > 1e-3
    assert torch.equal(_unet_output(zero), plain)
    assert not any("lora" in name for name, _ in fused.unet.named_modules())  # fused: plain layers, full speed
    assert fused.loras == (LoraSpec(str(lora), 1.0),)


def test_lora_and_vae_are_in_the_report_and_the_inversion_key(models, clip, tmp_path, capsys):
    lora = _lora(tmp_path / "lora")
    vae_folder = tmp_path / "vae"
    torch.manual_seed(3)
    random_vae(64, block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=16).save_pretrained(vae_folder)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    code, err, plain = _edit(capsys, clip, tmp_path / "plain.mp4", "--model", str(models["folder"]), *cache)
    assert code == 0, err
    code, err, extra = _edit(capsys, clip, tmp_path / "extra.mp4", "--model", str(models["folder"]), *cache,
                             "--lora", f"{lora}:0.5", "--vae", str(vae_folder))
    assert code == 0, err
    assert extra["model_extras"] == {"checkpoint_config": None, "loras": [{"path": str(lora), "scale": 0.5}], "vae": str(vae_folder)}
    assert extra["inversion"]["cache"]["state"] != "hit" and plain["inversion"]["cache"]["key"] != extra["inversion"]["cache"]["key"]
    assert extra["latent_checksum"] != plain["latent_checksum"]


def test_a_lora_for_another_architecture_is_refused_before_decoding(models, clip, tmp_path, capsys, no_decoding):
    lora = _lora(tmp_path / "wide", {**TINY_SD_UNET, "cross_attention_dim": 48, "block_out_channels": (32, 64, 96, 96)})
    line = _refused(capsys, clip, tmp_path, "--model", str(models["folder"]), "--lora", str(lora))
    assert "does not fit this model" in line


def test_missing_lora_and_vae_files_are_one_line_in_validate(clip, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {clip}\nmodel: tiny\nsource_prompt: a car\nprompt: a robot\nlora: [missing.safetensors:0.7]\n")
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"LoRA '{tmp_path / 'missing.safetensors'}' does not exist" in err
    job.write_text(f"input: {clip}\nmodel: tiny\nsource_prompt: a car\nprompt: a robot\nvae: ./no-such-vae\n")
    assert main(["validate", str(job)]) == 2
    assert "VAE './no-such-vae' does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- processing size
def _job(clip: Path, tmp_path: Path, **keys) -> EditJob:
    return EditJob(input=clip, output=tmp_path / "o.mp4", source_prompt="a car", prompt="a robot", **keys)


@pytest.mark.parametrize("model, native", [("toy", 128), ("tiny", 64)])
def test_the_processing_size_defaults_to_the_models_native_size(model, native, clip, tmp_path):
    prepared = engine.prepare(_job(clip, tmp_path, model=model))
    assert prepared.processed_size == (native, native)
    assert prepared.size_choice.native == native and "native" in prepared.size_choice.reason
    assert not [n for n in prepared.notices if "--size" in n]


def test_the_native_size_of_a_folder_is_sample_size_times_the_vae_scale(models, clip, tmp_path):
    model = _variant(models, tmp_path, "unet-768", "config.json", sample_size=96)  # SD 2.x 768-v: 96 x 8
    prepared = engine.prepare(_job(clip, tmp_path, model=str(model)))
    assert prepared.processed_size == (768, 768) and "sample_size 96 x VAE scale 8" in prepared.size_choice.reason


def test_a_size_far_from_native_is_warned_about_once_and_a_near_one_is_not(clip, tmp_path):
    far = engine.prepare(_job(clip, tmp_path, model="toy", size=512))
    assert far.processed_size == (512, 512) and far.size_choice.reason == "--size"
    assert len([n for n in far.notices if "--size 512 is far from the model's native 128 px" in n]) == 1
    near = engine.prepare(_job(clip, tmp_path, model="toy", size=192))
    assert near.processed_size == (192, 192) and not [n for n in near.notices if "--size" in n]


def test_validate_refuses_a_model_longedit_cannot_edit_with(models, clip, tmp_path, capsys):
    model = _variant(models, tmp_path, "scheduler-flow", "scheduler_config.json", _class_name="FlowMatchEulerDiscreteScheduler")
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {clip}\nmodel: {model}\nsource_prompt: a car\nprompt: a robot\n")
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1 and "flow-matching scheduler" in err


def test_a_lora_with_text_encoder_layers_is_fused_into_the_text_encoder_too(models, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(2)
    text_encoder = inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]), build_tiny_components()["text_encoder"]
    )
    with torch.no_grad():
        for name, parameter in text_encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "te", text_encoder_lora_layers=get_peft_model_state_dict(text_encoder), safe_serialization=True
    )
    plain = load_backbone(str(models["folder"]), device="cpu")
    fused = load_backbone(str(models["folder"]), device="cpu", loras=[LoraSpec(str(tmp_path / "te"), 1.0)])
    ids = plain.tokenizer("a car", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        assert (plain.text_encoder(ids)[0] - fused.text_encoder(ids)[0]).abs().mean() > 1e-3
    assert torch.equal(_unet_output(fused), _unet_output(plain))  # no UNet layers in this LoRA
    assert not any("lora" in name for name, _ in fused.text_encoder.named_modules())
