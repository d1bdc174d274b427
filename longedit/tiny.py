"""The built-in tiny random Stable Diffusion model (`--model tiny`), for demos, smoke runs and tests.

Its output is not a meaningful edit: the weights are random. It has the SD 1.x layout that the
engine relies on: a VAE that downsamples by 8, a 4-level UNet (so a cross-attention map at H/32
exists), a CLIP text encoder and a CLIP BPE tokenizer whose small vocabulary is made here in code.

Default init gives near-uniform cross-attention (every token about 1/77), so RAD's gradient would be
~1e-4 and move nothing. Trained models have peaky attention; we imitate that by scaling the init of
every `attn2` `to_q`/`to_k` by `ATTENTION_SHARPNESS` (DESIGN.md section 4: share in mask
0.19 -> 0.51 after one step of 20), so RAD visibly moves attention on the tiny model and a broken
loss is caught by the tests.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

ATTENTION_SHARPNESS = 4.0
TINY_WORDS = (
    "a an the of on in at with and is are to by man woman person robot dog cat car bike boat bird ball "
    "square circle box flower tree house phone talking walking running jumping red blue green yellow "
    "white black orange purple road street sky water field park city room table chair horse cow bear "
    "fish duck lion tiger monkey panda rabbit plane train bus truck swan shape object video photo"
).split()


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


def build_tiny_components(seed: int = 0) -> dict:
    """Random tiny SD components: unet, vae, text_encoder, tokenizer, scheduler (deterministic in `seed`)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64, 64, 64),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            # No attention at full latent resolution (too slow on CPU); the H/32 capture level keeps it.
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        with torch.no_grad():
            for name, module in unet.named_modules():
                if name.endswith("attn2"):
                    module.to_q.weight.mul_(ATTENTION_SHARPNESS)
                    module.to_k.weight.mul_(ATTENTION_SHARPNESS)
        vae = AutoencoderKL(
            block_out_channels=(16, 16, 32, 32),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=16,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=77,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
