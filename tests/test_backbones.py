"""Backbones beyond SD: detection, the text-to-video UNet3D adapter, Tune-A-Video checkpoint loading."""

import json

import pytest
import torch

from longedit.attention import CaptureCrossAttnProcessor, CrossFrameAttnProcessor
from longedit.backbones.adapters import adapter_for
from longedit.backbones.detect import detect_backbone_kind
from longedit.backbones.tuneavideo import (
    TEMPORAL_CHILD,
    FrameGroupNorm,
    attach_tuneavideo,
    load_tuneavideo_unet,
    map_tuneavideo_state_dict,
    tuneavideo_config,
    tuneavideo_target_key,
)
from longedit.bench.presets import PRESETS, build_backbone
from longedit.cli import main
from longedit.editor import MAP_SCALE, LoopSettings, VideoEditor
from longedit.errors import UserError
from longedit.masks import ObjectMasks
from longedit.models import load_backbone
from longedit.random_models import build_tiny_components, build_tiny_tokenizer, save_tiny_model
from longedit.words import word_tokens
from rad_helpers import one_rad_step

SOURCE, PROMPT = "a car on a road", "a robot on a road"


def bench_backbone(kind: str):
    """The tiny bench model of `kind` on CPU (what `longedit bench backbones --preset tiny` runs)."""
    return build_backbone(PRESETS["tiny"], torch.device("cpu"), torch.float32, kind=kind)


@pytest.fixture(scope="module")
def t2v_dir(tmp_path_factory):
    """The tiny text-to-video model saved with save_pretrained (TextToVideoSDPipeline layout)."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-t2v", "t2v")


@pytest.fixture(scope="module")
def t2v_backbone(t2v_dir):
    return load_backbone(str(t2v_dir), device="cpu")


def edit_args(clip, out, model, *extra):
    return [
        "edit", str(clip), "-o", str(out), "--model", str(model), "--quiet",
        "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
        "--steps", "2", "--size", "64", "--window", "4", "--stride", "2", *extra,
    ]


# ------------------------------------------------------------------------------------ detection
def test_detection_reads_the_unet_class_and_the_tuneavideo_keys():
    assert detect_backbone_kind({"_class_name": "UNet2DConditionModel"}) == "sd"
    diffusers_3d = {"_class_name": "UNet3DConditionModel", "attention_head_dim": 64, "block_out_channels": [320]}
    assert detect_backbone_kind(diffusers_3d) == "t2v"
    assert detect_backbone_kind({**diffusers_3d, "mid_block_type": "UNetMidBlock3DCrossAttn"}) == "tuneavideo"
    # A bare UNet3D config: the weight names decide.
    assert detect_backbone_kind(diffusers_3d, ["down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight"]) == "tuneavideo"
    assert detect_backbone_kind(diffusers_3d, ["transformer_in.proj_in.weight"]) == "t2v"


def test_unknown_unet_class_is_a_one_line_user_error(tmp_path, clip, capsys):
    (tmp_path / "odd" / "unet").mkdir(parents=True)
    (tmp_path / "odd" / "vae").mkdir()
    (tmp_path / "odd" / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNetMotionModel"}))
    build_tiny_tokenizer().save_pretrained(tmp_path / "odd" / "tokenizer")  # only the UNet is odd
    with pytest.raises(UserError, match="unknown class 'UNetMotionModel'"):
        load_backbone(str(tmp_path / "odd"), device="cpu")
    code = main(edit_args(clip, tmp_path / "out.mp4", tmp_path / "odd", "--object", "duck=10,10,40,40"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown class 'UNetMotionModel'" in err and "\n" not in err


def test_forced_backbone_must_fit_the_model(t2v_dir):
    with pytest.raises(UserError, match="--backbone sd does not fit"):
        load_backbone(str(t2v_dir), device="cpu", backbone="sd")
    with pytest.raises(UserError, match="has the t2v layout"):
        load_backbone(str(t2v_dir), device="cpu", backbone="tuneavideo")


# ------------------------------------------------------------------------------- text-to-video
def test_t2v_folder_loads_as_unet3d_with_temporal_layers_untouched(t2v_backbone):
    from diffusers import UNet3DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    assert t2v_backbone.kind == "t2v" and isinstance(t2v_backbone.unet, UNet3DConditionModel)
    editor = VideoEditor(t2v_backbone, LoopSettings(steps=2, kernel_backend="reference"), SOURCE, PROMPT, [])
    processors = t2v_backbone.unet.attn_processors
    temporal = [n for n in processors if n.startswith("transformer_in.") or ".temp_attentions." in n]
    assert temporal and all(isinstance(processors[n], AttnProcessor2_0) for n in temporal)
    spatial_self = [n for n in processors if ".attentions." in n and n.endswith("attn1.processor")]
    assert all(isinstance(processors[n], CrossFrameAttnProcessor) and not processors[n].sparse_causal for n in spatial_self)
    assert all(isinstance(processors[n], CaptureCrossAttnProcessor) for n in editor.capture_layers)
    assert editor.capture_layers == [
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor",
    ]
    assert not editor.adapter.uses_anchor and editor.adapter.native_window == 16


def test_t2v_adapter_feeds_videos_of_frames_to_the_unet3d(t2v_backbone):
    unet = t2v_backbone.unet
    frames, emb = 3, torch.randn(2, 77, 32)
    x = torch.randn(2 * frames, 4, 8, 8)
    with torch.no_grad():
        through_adapter = adapter_for("t2v").forward(unet, x, 500, emb.repeat_interleave(frames, 0), frames)
        direct = unet(x.view(2, frames, 4, 8, 8).permute(0, 2, 1, 3, 4), 500, encoder_hidden_states=emb).sample
    assert torch.allclose(through_adapter, direct.permute(0, 2, 1, 3, 4).reshape(2 * frames, 4, 8, 8), atol=1e-5)


def test_t2v_guided_step_lowers_the_rad_loss_and_moves_attention_into_the_mask(t2v_backbone):
    words = [word_tokens(t2v_backbone.tokenizer, PROMPT, "robot")]
    editor = VideoEditor(t2v_backbone, LoopSettings(steps=4, guided_steps=2, kernel_backend="reference"), SOURCE, PROMPT, words)
    latents = torch.randn(4, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(4, 1, 32, 32, dtype=torch.bool)
    mask[:, :, 4:16, 6:18] = True
    step = one_rad_step(editor, latents, ObjectMasks(["robot"], mask, ["box"]).at_map_resolution(0, 4, MAP_SCALE))
    assert step.grad.abs().sum() > 0
    # measured 0.997 -> 0.950 with the official normalisation and smoothing (the step moves the loss ~0.05)
    assert step.loss_after < step.loss_before - 0.02
    assert step.share_after > step.share_before


@pytest.mark.slow
def test_edit_command_runs_on_the_tiny_t2v_model(clip, tmp_path, t2v_dir):
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(edit_args(clip, out, t2v_dir, "--object", "duck=10,10,40,40", "--report", str(report_path)))
    assert code == 0 and out.is_file()
    report = json.loads(report_path.read_text())
    assert report["backbone"] == "t2v" and report["frames"] == 6
    assert len(report["rad"]["attention_in_mask"]["duck"]) == 2
    assert report["irjs"]["background_latent_mae"] < 1e-6


# ------------------------------------------------------------------------------- Tune-A-Video
def fake_tuneavideo_state(seed: int = 0):
    """A TAV-layout checkpoint made by hand from the tiny SD UNet: its keys + attn_temp/norm_temp tensors."""
    unet = build_tiny_components(seed)["unet"]
    generator = torch.Generator().manual_seed(seed + 1)
    state = dict(unet.state_dict())
    blocks = sorted({k.split(".attn1.")[0] for k in state if ".transformer_blocks." in k and ".attn1." in k})
    for block in blocks:
        dim = state[f"{block}.attn1.to_q.weight"].shape[0]
        for name in ("to_q", "to_k", "to_v"):
            state[f"{block}.attn_temp.{name}.weight"] = torch.randn(dim, dim, generator=generator) * 0.2
        state[f"{block}.attn_temp.to_out.0.weight"] = torch.randn(dim, dim, generator=generator) * 0.2
        state[f"{block}.attn_temp.to_out.0.bias"] = torch.randn(dim, generator=generator) * 0.1
        state[f"{block}.norm_temp.weight"] = 1 + torch.randn(dim, generator=generator) * 0.1
        state[f"{block}.norm_temp.bias"] = torch.randn(dim, generator=generator) * 0.1
    return unet, state, blocks


def write_tav_unet(folder, config: dict, state: dict, safetensors: bool):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(state, folder / "diffusion_pytorch_model.bin")


@pytest.mark.parametrize("safetensors", [False, True])
def test_tuneavideo_checkpoint_maps_every_key_and_loads_the_same_weights(tmp_path, safetensors):
    unet2d, state, blocks = fake_tuneavideo_state()
    config = tuneavideo_config(dict(unet2d.config))
    assert config["_class_name"] == "UNet3DConditionModel" and config["mid_block_type"] == "UNetMidBlock3DCrossAttn"
    assert config["down_block_types"][1] == "CrossAttnDownBlock3D"
    write_tav_unet(tmp_path / "tav" / "unet", config, state, safetensors)
    assert detect_backbone_kind(config) == "tuneavideo"

    loaded = load_tuneavideo_unet(str(tmp_path / "tav"))
    loaded_state = loaded.state_dict()
    targets = {key: tuneavideo_target_key(key) for key in state}
    assert set(targets.values()) == set(loaded_state)  # the mapping covers every key both ways
    for key, target in targets.items():
        assert torch.equal(loaded_state[target], state[key]), key
    temporal = getattr(loaded, TEMPORAL_CHILD)
    assert len(temporal.layers) == len(blocks) == 7
    assert targets[f"{blocks[0]}.attn_temp.to_q.weight"].startswith(f"{TEMPORAL_CHILD}.layers.")


def test_tuneavideo_mapping_accepts_the_old_downsampler_alias_and_refuses_foreign_keys():
    unet2d, state, _ = fake_tuneavideo_state()
    model = type(unet2d).from_config(unet2d.config)
    attach_tuneavideo(model)
    expected = model.state_dict()
    aliased = dict(state)
    key = "down_blocks.0.downsamplers.0.conv.weight"
    aliased[key.replace(".conv.", ".Conv2d_0.")] = state[key]  # old diffusers wrote the conv twice
    assert set(map_tuneavideo_state_dict(aliased, expected)) == set(expected)
    with pytest.raises(UserError, match="unknown key"):
        map_tuneavideo_state_dict({**state, "extra.weight": torch.zeros(1)}, expected)
    missing = {k: v for k, v in state.items() if ".norm_temp." not in k}
    with pytest.raises(UserError, match="missing key"):
        map_tuneavideo_state_dict(missing, expected)


def test_tuneavideo_temporal_layers_mix_frames_and_norms_span_the_clip():
    backbone = bench_backbone("tuneavideo")
    unet = backbone.unet
    norms = [m for n, m in unet.named_modules() if isinstance(m, FrameGroupNorm)]
    assert norms and any(n == "conv_norm_out" for n, m in unet.named_modules() if isinstance(m, FrameGroupNorm))
    x = torch.randn(2, 3, 32, 4, 4)  # videos, frames, C, h, w
    unet.tuneavideo_temporal.frames = 3
    clip_wise = torch.nn.functional.group_norm(x.transpose(1, 2), 32, norms[0].weight, norms[0].bias, norms[0].eps)
    assert torch.allclose(norms[0](x.reshape(6, 32, 4, 4)), clip_wise.transpose(1, 2).reshape(6, 32, 4, 4), atol=1e-5)

    editor = VideoEditor(backbone, LoopSettings(steps=2, kernel_backend="reference"), SOURCE, PROMPT, [])
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    changed = latents.clone()
    changed[2] += 1.0
    editor.context.frames = 3
    with torch.no_grad():
        a = editor._unet(latents, 500, editor.cond)
        b = editor._unet(changed, 500, editor.cond)
    # Sparse-causal attn1 alone never lets a later frame reach frame 0; the temporal layers do.
    assert (a[0] - b[0]).abs().max() > 1e-4


@pytest.mark.slow
def test_edit_command_runs_on_a_tuneavideo_folder(clip, tmp_path):
    folder = save_tiny_model(tmp_path / "tiny-tav", "tuneavideo")
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(edit_args(clip, out, folder, "--object", "duck=10,10,40,40", "--report", str(report_path)))
    assert code == 0 and out.is_file()
    assert json.loads(report_path.read_text())["backbone"] == "tuneavideo"


# ------------------------------------------------------------------------------------- bench
@pytest.mark.parametrize("kind", ["sd", "t2v", "tuneavideo"])
def test_bench_backbones_run_an_edit_step(kind):
    backbone = bench_backbone(kind)
    assert backbone.kind == kind and not any(p.requires_grad for p in backbone.unet.parameters())
    words = [word_tokens(backbone.tokenizer, PROMPT, "robot")]
    editor = VideoEditor(backbone, LoopSettings(steps=2, guided_steps=1, kernel_backend="reference"), SOURCE, PROMPT, words)
    latents = torch.randn(3, 4, 8, 8)
    mask = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6, 2:6] = True
    out, stats = editor.edit_step(latents, 0, [(0, 2), (1, 3)], ObjectMasks(["robot"], mask, ["box"]), lambda i: latents)
    assert out.shape == latents.shape and torch.isfinite(out).all() and stats.losses
