"""Every random diffusion model longedit builds in code (no downloads): the one home for them.

* `build_tiny_components(seed, kind)`: the tiny model of a backbone kind; `--model tiny` is the `sd`
  one. Its output is not a meaningful edit (the weights are random), but it has the SD 1.x layout the
  engine relies on: a VAE that downsamples by 8, a 4-level UNet (so a cross-attention map at H/32
  exists), a CLIP text encoder and a CLIP BPE tokenizer whose small vocabulary is made here in code.
  Other kinds share its VAE, text encoder, tokenizer and scheduler; only the UNet differs (the kind's
  `random_unet`, see `longedit.backbones.kind`).
* `build_random_components(kind, architecture, device, seed)`: benchmark models at real sizes
  (`longedit.bench.presets`): SD-layout UNet/text encoder/VAE settings, made directly on the device.
* `save_tiny_model(folder, kind, seed)`: the tiny model as a model folder of that kind, loaded back
  through `longedit.models.load_backbone` (the same `from_pretrained` path a real model takes).

Default init gives near-uniform cross-attention (every token about 1/77), so RAD's gradient would be
~1e-4 and move nothing. Trained models have peaky attention; the tiny models imitate that by scaling
the init of every spatial `attn2` `to_q`/`to_k` by `ATTENTION_SHARPNESS` (DESIGN.md section 4: share
in mask 0.19 -> 0.51 after one step of 20), so RAD visibly moves attention and a broken loss is caught.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from longedit.backbones.registry import backbone_kind, temporal_layer_pattern

ATTENTION_SHARPNESS = 4.0
TINY_WORDS = (
    "a an the of on in at with and is are to by man woman person robot dog cat car bike boat bird ball "
    "square circle box flower tree house phone talking walking running jumping red blue green yellow "
    "white black orange purple road street sky water field park city room table chair horse cow bear "
    "fish duck lion tiger monkey panda rabbit plane train bus truck swan shape object video photo"
).split()

SD_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
#: The tiny SD UNet: no attention at full latent resolution (too slow on CPU); the H/32 capture level keeps it.
#: sample_size 8 (latents 8x8 = 64 px, its native processing size: `longedit.model_info`) only sets the
#: default size of smoke runs; the weights do not depend on it.
TINY_SD_UNET = dict(
    block_out_channels=(32, 64, 64, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
)
#: A scaled-down SD 1.x UNet that runs on a CPU in minutes.
SMALL_SD_UNET = dict(
    block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
    sample_size=32, down_block_types=SD_DOWN_BLOCKS, up_block_types=SD_UP_BLOCKS, norm_num_groups=32,
)
#: The Stable Diffusion 1.5 UNet architecture.
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
    sample_size=64, down_block_types=SD_DOWN_BLOCKS, up_block_types=SD_UP_BLOCKS, norm_num_groups=32,
)
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
#: CLIP ViT-L/14's text encoder (SD 1.x).
CLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
TINY_VAE = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=16)
#: SD's VAE.
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


@dataclass(frozen=True)
class RandomArchitecture:
    """A benchmark-size model: SD-layout UNet kwargs, CLIPTextConfig and AutoencoderKL overrides.

    Kinds other than `sd` build their own full-size UNet (their `random_unet("full", ...)`); a text
    encoder whose width does not fit that UNet's cross-attention becomes a 2-layer stand-in of the right width.
    """

    unet: dict
    text: dict = field(default_factory=dict)
    vae: dict = field(default_factory=lambda: dict(TINY_VAE))
    text_vocab: int | None = None
    sample_size: int = 64


# ------------------------------------------------------------------------------------ tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (same as GPT-2)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_tiny_tokenizer_files(folder: Path, words: tuple[str, ...] | list[str] = TINY_WORDS) -> None:
    """Write vocab.json/merges.txt of a CLIP BPE tokenizer where each of `words` is one token.

    Other words fall back to one token per character, which exercises multi-token words.
    """
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = f"{current} {piece}"
            current = current + piece
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(current, len(vocab))
        vocab.setdefault(current, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def build_tiny_tokenizer():
    """A CLIPTokenizer over the tiny vocabulary, built through the real file-based loader."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_tokenizer_files(Path(folder))
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


# ------------------------------------------------------------------------------------ parts
def ddim_scheduler():
    """SD 1.x's DDIM scheduler config (scaled-linear betas, clip_sample off, steps_offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )


def random_text_encoder(tokenizer, vocab_size: int | None = None, **config):
    """A random CLIPTextModel for `tokenizer` (77 positions); `config`: CLIPTextConfig overrides."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, vocab_size=vocab_size or len(tokenizer), max_position_embeddings=77,
            layer_norm_eps=1e-5, **config,
        )
    )


def random_vae(sample_size: int, **settings):
    """A random AutoencoderKL (3 -> 4 latent channels); `settings`: channels, layers, norm groups."""
    from diffusers import AutoencoderKL

    levels = len(settings["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=sample_size,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels, **settings,
    )


def sharpen_cross_attention(unet: torch.nn.Module, factor: float = ATTENTION_SHARPNESS) -> None:
    """Scale the `to_q`/`to_k` init of every spatial `attn2` (peaky attention, as trained models have)."""
    temporal = temporal_layer_pattern()
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2") and not temporal.search(name):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)


# ------------------------------------------------------------------------------------ models
def build_tiny_components(seed: int = 0, kind: str = "sd") -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler of the tiny model of `kind` (deterministic in `seed`)."""
    from diffusers import UNet2DConditionModel

    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd_unet = UNet2DConditionModel(**TINY_SD_UNET)
        vae = random_vae(64, **TINY_VAE)
        text_encoder = random_text_encoder(tokenizer, **TINY_TEXT)
    unet = backbone_kind(kind).random_unet("tiny", seed, lambda: sd_unet)
    sharpen_cross_attention(unet)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": ddim_scheduler()}


def build_random_components(kind: str, architecture: RandomArchitecture, device: torch.device, seed: int = 0) -> dict:
    """Random benchmark-size components of `kind`, created directly on `device` (fast init on a GPU)."""
    from diffusers import UNet2DConditionModel

    tokenizer = build_tiny_tokenizer()  # the bench prompts are made of its words
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        unet = backbone_kind(kind).random_unet(
            "full", seed, lambda: UNet2DConditionModel(in_channels=4, out_channels=4, **architecture.unet)
        )
        width = unet.config.cross_attention_dim
        text = architecture.text
        if text.get("hidden_size") != width:
            text = dict(hidden_size=width, intermediate_size=width, num_attention_heads=8, num_hidden_layers=2)
        text_encoder = random_text_encoder(tokenizer, architecture.text_vocab, **text)
        vae = random_vae(architecture.sample_size, **architecture.vae)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": ddim_scheduler()}


def save_tiny_model(folder: str | Path, kind: str = "sd", seed: int = 0, safe_serialization: bool = True) -> Path:
    """Write the tiny model of `kind` as that kind's model folder (model_index.json, unet/, vae/, ...)."""
    return backbone_kind(kind).save_folder(build_tiny_components(seed, kind), Path(folder), safe_serialization)
