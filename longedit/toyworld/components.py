"""Build the toy model's components (SD 1.x layout) from the training config; the tokenizer over the world.

Kept apart from the training loop so the gates and tests can rebuild the exact architecture.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from longedit.toyworld.world import VOCABULARY

SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _write_files(folder: Path, merges: list[tuple[str, str]]) -> None:
    from longedit.random_models import _bytes_to_unicode  # CLIP's byte alphabet, defined once there

    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    for first, second in merges:
        vocab.setdefault(first + second, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("".join(["#version: 0.2\n", *(f"{a} {b}\n" for a, b in merges)]))


def _load(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def write_tokenizer_files(folder: Path, words: tuple[str, ...] = VOCABULARY) -> None:
    """vocab.json/merges.txt of a CLIP BPE tokenizer where every one of `words` is exactly one token.

    BPE applies the lowest-ranked merge first, so merges made for one word can split another ("r i" of
    "right" breaks "t r" of "triangle"); we add merges of the real tokenizer's leftmost two pieces
    until every word comes out whole.
    """
    merges: list[tuple[str, str]] = []
    for _ in range(20 * sum(len(w) for w in words)):
        _write_files(folder, merges)
        tokenizer = _load(folder)
        split = [tokenizer.tokenize(w) for w in words]
        broken = [pieces for pieces in split if len(pieces) > 1]
        if not broken:
            return
        pair = (broken[0][0], broken[0][1])
        if pair in merges:
            raise RuntimeError(f"cannot make {broken[0]} one token")
        merges.append(pair)
    raise RuntimeError("tokenizer merges did not converge")


def build_tokenizer():
    """CLIPTokenizer over the world's vocabulary (every world word one token, 77 positions, as SD)."""
    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer_files(Path(folder))
        return _load(Path(folder))


def build_vae(config: dict):
    from diffusers import AutoencoderKL

    channels = tuple(config["block_out_channels"])
    return AutoencoderKL(
        block_out_channels=channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        latent_channels=4,
        layers_per_block=config["layers_per_block"],
        norm_num_groups=config["norm_num_groups"],
        sample_size=config["sample_size"],
    )


def build_text_encoder(config: dict, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_attention_heads=config["num_attention_heads"],
            num_hidden_layers=config["num_hidden_layers"],
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )


def unet_block_types(config: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down and up block types: cross-attention at H/16 and H/32 (and the mid block); with
    `full_resolution_attention` also in the first down and last up block (latent/1 = H/8, the 16x16 map
    at 128 px that SD 1.5 gives RAD at 512 px). The resnet and sampler names are the same either way, so
    a model without them loads into one with them (`grow_unet`)."""
    full = "CrossAttnDownBlock2D" if config.get("full_resolution_attention") else "DownBlock2D"
    full_up = "CrossAttnUpBlock2D" if config.get("full_resolution_attention") else "UpBlock2D"
    return (full, "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"), (
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", full_up)


def grow_unet(unet, state: dict) -> list[str]:
    """Load `state` (a UNet without some attention blocks) into `unet`; the attention blocks it lacks start
    as identities (their output projection zeroed: the residual adds nothing), so the grown UNet computes
    exactly what the smaller one did. Returns the names of the new parameters."""
    import torch

    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"parameters the grown UNet does not have: {unexpected[:5]}")
    with torch.no_grad():
        for name in {m.rsplit(".proj_out.", 1)[0] for m in missing if ".proj_out." in m}:
            projection = unet.get_submodule(name + ".proj_out")
            projection.weight.zero_()
            projection.bias.zero_()
    return missing


def build_unet(config: dict):
    """4-level UNet of `unet_block_types`."""
    from diffusers import UNet2DConditionModel

    down, up = unet_block_types(config)
    return UNet2DConditionModel(
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config["layers_per_block"],
        sample_size=config["sample_size"],
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config["cross_attention_dim"],
        attention_head_dim=config["attention_head_dim"],
        norm_num_groups=config["norm_num_groups"],
    )


def build_scheduler(kind: str = "ddim"):
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    config = dict(SCHEDULER_CONFIG)
    if kind != "ddim":
        config.pop("set_alpha_to_one")
        config.pop("steps_offset")
    return cls(**config)
