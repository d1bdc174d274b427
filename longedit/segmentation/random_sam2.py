"""A small random SAM2 video model (`--sam2-model tiny`), for smoke runs and tests without weights.

Its masks are meaningless (random weights); it exists so the whole tracking path (prompting,
streaming, chunk re-seeding, export) runs on a 2-core CPU in milliseconds per frame and loads
through the same `Sam2VideoModel.from_pretrained` path as `facebook/sam2.1-hiera-tiny`.

Constraints of transformers' Sam2VideoModel that shape these numbers (found by building it):
- the memory attention reads memories with a hard-coded key/value width of 64, so
  `memory_encoder_output_channels` must be 64;
- object pointers are split into `hidden / 64` memory tokens, and the code only reshapes them when
  the FPN width is larger than 64, so `fpn_hidden_size` must be a multiple of 64 above 64 (128);
- the mask down-sampler output is added to the projected image features, so
  `mask_downsampler_embed_dim == memory_encoder_hidden_size == fpn_hidden_size`;
- a global-attention Hiera block must not be the first (query-pooling) block of a stage.

One deliberate change from a plain random init: the object-score head's output bias is set to
`OBJECT_SCORE_BIAS`, so the tiny model says "the object is here" on most frames, as a trained model does
while it can see the object. With the default init about half the frames come out empty, and re-seeding
(which keeps an object's last non-empty mask) would rarely be exercised by the tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_IMAGE_SIZE = 64
TINY_NAME = "tiny"
OBJECT_SCORE_BIAS = 4.0


def random_sam2_config(image_size: int = TINY_IMAGE_SIZE):
    """Sam2VideoConfig of a ~0.9M-parameter SAM2: 4 one-block Hiera stages, one memory layer."""
    from transformers import Sam2VideoConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    if image_size % 64:
        raise ValueError(f"tiny SAM2 image_size must be a multiple of 64, got {image_size}")
    hidden = 128
    stride4 = image_size // 4  # patch embedding stride 4, then three 2x query-pooling stages
    backbone = Sam2HieraDetConfig(
        hidden_size=8,
        image_size=[image_size, image_size],
        blocks_per_stage=[1, 1, 1, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[],
        window_positional_embedding_background_size=[2, 2],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[stride4, stride4], [stride4 // 2, stride4 // 2], [stride4 // 4, stride4 // 4]],
        fpn_hidden_size=hidden,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={
            "hidden_size": hidden,
            "image_size": image_size,
            "patch_size": 16,
            "mask_input_channels": 8,
        },
        mask_decoder_config={
            "hidden_size": hidden,
            "mlp_dim": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 16,
        },
        image_size=image_size,
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[stride4 // 4, stride4 // 4],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )


def build_random_sam2(folder: str | Path | None = None, seed: int = 0):
    """A random ~0.9M-parameter Sam2VideoModel; with `folder`, saved there (`save_pretrained`) and the folder returned.

    The init is seeded without touching the caller's global RNG state, so two builds are identical.
    """
    from transformers import Sam2VideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2VideoModel(random_sam2_config()).eval()
        with torch.no_grad():
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_SCORE_BIAS)
    if folder is None:
        return model
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    return folder
