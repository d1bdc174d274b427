"""FateZero against its official code (github ChenyangQiQi/FateZero, `video_diffusion/prompt_attention/`).

Each `ref_*` function below transcribes the official computation (prompt-to-prompt's `seq_aligner.py`
and `ptp_utils.py`, `attention_util.py`'s controllers and `get_equalizer`, `spatial_blend.py`'s mask),
changed only where noted (einops written out as permute/reshape); the tests compare longedit's
implementation with it on the tiny tokenizer and on random attention maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longedit.fatezero import (
    AttentionDiskStore,
    AttentionFusion,
    FusedLayer,
    FusionSettings,
    Slot,
    align_prompts,
    build_cross_edit,
    fused_layers,
    replacement_mapper,
    word_indices,
)
from longedit.errors import UserError


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def tokenizer():
    from longedit.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


# ----------------------------------------------------------------------------- official code
def ref_get_word_inds(text, word_place, tokenizer):
    """ptp_utils.get_word_inds."""
    split_text = text.split(" ")
    if type(word_place) is str:
        word_place = [i for i, word in enumerate(split_text) if word_place == word]
    elif type(word_place) is int:
        word_place = [word_place]
    out = []
    if len(word_place) > 0:
        words_encode = [tokenizer.decode([item]).strip("#") for item in tokenizer.encode(text)][1:-1]
        cur_len, ptr = 0, 0
        for i in range(len(words_encode)):
            cur_len += len(words_encode[i])
            if ptr in word_place:
                out.append(i + 1)
            if cur_len >= len(split_text[ptr]):
                ptr += 1
                cur_len = 0
    return np.array(out)


def ref_get_replacement_mapper_(x, y, tokenizer, max_len=77):
    """seq_aligner.get_replacement_mapper_ (including its `mapper[j, j]` after the last swapped word)."""
    words_x = x.split(" ")
    words_y = y.split(" ")
    inds_replace = [i for i in range(len(words_y)) if words_y[i] != words_x[i]]
    inds_source = [ref_get_word_inds(x, i, tokenizer) for i in inds_replace]
    inds_target = [ref_get_word_inds(y, i, tokenizer) for i in inds_replace]
    mapper = np.zeros((max_len, max_len))
    i = j = 0
    cur_inds = 0
    while i < max_len and j < max_len:
        if cur_inds < len(inds_source) and inds_source[cur_inds][0] == i:
            inds_source_, inds_target_ = inds_source[cur_inds], inds_target[cur_inds]
            if len(inds_source_) == len(inds_target_):
                mapper[inds_source_, inds_target_] = 1
            else:
                ratio = 1 / len(inds_target_)
                for i_t in inds_target_:
                    mapper[inds_source_, i_t] = ratio
            cur_inds += 1
            i += len(inds_source_)
            j += len(inds_target_)
        elif cur_inds < len(inds_source):
            mapper[i, j] = 1
            i += 1
            j += 1
        else:
            mapper[j, j] = 1
            i += 1
            j += 1
    return torch.from_numpy(mapper).float()


def ref_global_align(x, y):
    """seq_aligner.global_align with ScoreParams(gap=0, match=1, mismatch=-1)."""
    gap, match, mismatch = 0, 1, -1
    matrix = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int32)
    matrix[0, 1:] = (np.arange(len(y)) + 1) * gap
    matrix[1:, 0] = (np.arange(len(x)) + 1) * gap
    trace_back = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int32)
    trace_back[0, 1:] = 1
    trace_back[1:, 0] = 2
    trace_back[0, 0] = 4
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left = matrix[i, j - 1] + gap
            up = matrix[i - 1, j] + gap
            diag = matrix[i - 1, j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            matrix[i, j] = max(left, up, diag)
            if matrix[i, j] == left:
                trace_back[i, j] = 1
            elif matrix[i, j] == up:
                trace_back[i, j] = 2
            else:
                trace_back[i, j] = 3
    return matrix, trace_back


def ref_get_mapper(x, y, tokenizer, max_len=77):
    """seq_aligner.get_mapper (with get_aligned_sequences): the refinement mapper and alphas."""
    x_seq = tokenizer.encode(x)
    y_seq = tokenizer.encode(y)
    _, trace_back = ref_global_align(x_seq, y_seq)
    i, j = len(x_seq), len(y_seq)
    mapper_y_to_x = []
    while i > 0 or j > 0:
        if trace_back[i, j] == 3:
            i, j = i - 1, j - 1
            mapper_y_to_x.append((j, i))
        elif trace_back[i][j] == 1:
            j = j - 1
            mapper_y_to_x.append((j, -1))
        elif trace_back[i][j] == 2:
            i = i - 1
        elif trace_back[i][j] == 4:
            break
    mapper_y_to_x.reverse()
    mapper_base = torch.tensor(mapper_y_to_x, dtype=torch.int64)
    alphas = torch.ones(max_len)
    alphas[: mapper_base.shape[0]] = mapper_base[:, 1].ne(-1).float()
    mapper = torch.zeros(max_len, dtype=torch.int64)
    mapper[: mapper_base.shape[0]] = mapper_base[:, 1]
    mapper[mapper_base.shape[0] :] = len(y_seq) + torch.arange(max_len - len(y_seq))
    return mapper, alphas


def ref_get_equalizer(text, word_select, values, tokenizer):
    """attention_util.get_equalizer."""
    equalizer = torch.ones(1, 77)
    for word, val in zip(word_select, values):
        inds = ref_get_word_inds(text, word, tokenizer)
        equalizer[:, inds] = val
    return equalizer


def ref_replace_cross(attn_base, mapper):
    """AttentionReplace.replace_cross_attention, 4-dim base [t, h, p, w]; mapper [1, 77, 77]."""
    return torch.einsum("thpw,bwn->bthpn", attn_base, mapper)


def ref_refine_cross(attn_base, att_replace, mapper, alphas):
    """AttentionRefine.replace_cross_attention; mapper [1, 77], alphas [1, 77] reshaped to [1, 1, 1, 77]."""
    alphas = alphas.reshape(alphas.shape[0], 1, 1, alphas.shape[1])
    attn_base_replace = attn_base[:, :, :, mapper].permute(3, 0, 1, 2, 4)
    return attn_base_replace * alphas + att_replace * (1 - alphas)


def ref_reweight(replaced, equalizer):
    """AttentionReweight.replace_cross_attention after its previous controller."""
    return replaced[None, :, :, :] * equalizer[:, None, None, :]


def ref_cross_steps(num_steps, cross_replace_steps, self_replace_steps):
    """Which edit steps fuse cross- and self-attention (get_time_words_attention_alpha, num_self_replace)."""
    alpha = torch.zeros(num_steps + 1, 1, 77)
    start, end = 0, int(cross_replace_steps * alpha.shape[0])
    alpha[:start], alpha[start:end], alpha[end:] = 0, 1, 0
    cross = [step for step in range(num_steps) if bool(alpha[step].any())]
    low, high = int(num_steps * 0.0), int(num_steps * self_replace_steps)
    self_ = [step for step in range(num_steps) if low <= step < high]
    return cross, self_


def ref_blend_mask(layer_maps, alpha_layers, h, w, th):
    """SpatialBlender.__call__ + get_mask, prompt_choose='source', use_pool=True.

    `layer_maps`: the stored cross maps of down_cross[2:4] + up_cross[:3], each [c, heads, res*res, 77];
    returns the reshaped mask of replace_self_attention: [c, 1, h*w, 1].
    """
    rearranged = []
    for item in layer_maps:
        item = item[None, ...]
        p, c, heads, r, words = item.shape
        res = int(np.sqrt(r))
        # "p c h (res_h res_w) w -> p h c res_h res_w w"
        rearranged.append(item.reshape(p, c, heads, res, res, words).permute(0, 2, 1, 3, 4, 5))
    maps = torch.cat(rearranged, dim=1)
    alpha = alpha_layers[0:1]
    maps = (maps * alpha).sum(-1).mean(1)
    maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
    mask = F.interpolate(maps, size=(h, w))
    mask = mask / mask.max(-2, keepdims=True)[0].max(-1, keepdims=True)[0]
    mask = mask.gt(th).float()
    # rearrange(mask, "d c h w -> c d (h w)")[..., None]
    return mask.permute(1, 0, 2, 3).reshape(mask.shape[1], mask.shape[0], h * w)[..., None]


# ----------------------------------------------------------------------------------- tokens
SWAPS = [  # swapped words of equal token counts in the tiny vocabulary
    ("a car on a road", "a robot on a road"),
    ("a dog on a road", "a horse in a field"),
    ("a white bird on the water", "a black duck on the water"),
    ("a red square on a road", "a blue square on a road"),
]
EDITS = SWAPS + [
    ("a car on a road", "a red robot on a road"),
    ("a car on a road", "a car on a road in a city"),
    ("a red square on a road", "a square on a road"),
    ("a man walking in a park", "a robot running in the city with a dog"),
    ("a red square on a road", "a yellow duck on a road"),
]


@pytest.mark.parametrize("text", ["a red square on a road", "a zebra and a zebra on a road", "a car on a road"])
def test_word_indices_match_get_word_inds(tokenizer, text):
    for word in set(text.split(" ")):
        assert word_indices(tokenizer, text, word) == tuple(ref_get_word_inds(text, word, tokenizer).tolist())
    # a word with trailing punctuation is also found without it (the official code needs "road,")
    assert word_indices(tokenizer, "a car on a road,", "road") == tuple(ref_get_word_inds("a car on a road,", "road,", tokenizer).tolist())


@pytest.mark.parametrize("source,target", SWAPS)
def test_replacement_mapper_is_the_official_one_for_word_swaps(tokenizer, source, target):
    assert len(tokenizer.encode(source)) == len(tokenizer.encode(target))
    assert torch.equal(replacement_mapper(tokenizer, source, target), ref_get_replacement_mapper_(source, target, tokenizer))


def test_replacement_mapper_fixes_the_shift_after_a_swap_that_changes_the_token_count(tokenizer):
    source, target = "a red square on a road", "a yellow duck on a road"  # "square" is two tokens, "duck" one
    ours, official = replacement_mapper(tokenizer, source, target), ref_get_replacement_mapper_(source, target, tokenizer)
    assert torch.equal(ours[:, :4], official[:, :4])  # up to and including the swapped words
    assert ours[2, 2] == 1 and ours[3:5, 3].tolist() == [1.0, 1.0]  # red -> yellow, squ+are -> duck
    for j in range(4, 76):  # then target j takes source j + 1 ("on" takes "on"); the official takes source j
        assert ours[j + 1, j] == 1 and official[j, j] == 1


@pytest.mark.parametrize("source,target", EDITS)
def test_refine_mapping_is_the_official_global_alignment(tokenizer, source, target):
    align = align_prompts(tokenizer, source, target)
    mapper, alphas = ref_get_mapper(source, target, tokenizer)
    assert torch.equal(torch.tensor(align.alphas), alphas)
    kept = alphas.bool()
    assert torch.equal(torch.tensor(align.mapper)[kept], mapper[kept])


def test_equalizer_and_blend_words_are_the_official_token_sets(tokenizer):
    source, target = "a red square on a road", "a yellow zebra on a road"
    edit = build_cross_edit(tokenizer, source, target, equalize={"zebra": 4.0, "yellow": 0.5}, blend_words=["square", "red"])
    assert torch.equal(edit.equalizer[None], ref_get_equalizer(target, ["zebra", "yellow"], [4.0, 0.5], tokenizer))
    expected = [*ref_get_word_inds(source, "square", tokenizer).tolist(), *ref_get_word_inds(source, "red", tokenizer).tolist()]
    assert list(edit.blend_tokens) == expected == [3, 4, 2]
    default = build_cross_edit(tokenizer, source, target)
    assert default.blend_tokens == align_prompts(tokenizer, source, target).changed == (2, 3, 4)
    assert torch.equal(default.equalizer, torch.ones(77))


def test_controller_choice_and_word_errors(tokenizer):
    assert build_cross_edit(tokenizer, "a car on a road", "a robot on a road").kind == "replace"
    assert build_cross_edit(tokenizer, "a car on a road", "a red robot on a road").kind == "refine"
    assert build_cross_edit(tokenizer, "a car on a road", "a robot on a road", controller="refine").kind == "refine"
    with pytest.raises(UserError, match="as many words"):
        build_cross_edit(tokenizer, "a car on a road", "a red robot on a road", controller="replace")
    with pytest.raises(UserError, match="--equalize word 'car' is not in the edited prompt"):
        build_cross_edit(tokenizer, "a car on a road", "a robot on a road", equalize={"car": 2.0})
    with pytest.raises(UserError, match="--blend-word 'robot' is not in the source prompt"):
        build_cross_edit(tokenizer, "a car on a road", "a robot on a road", blend_words=["robot"])


# ------------------------------------------------------------------------------- controllers
def _random_maps(generator, *shape, sharpness=4.0):
    return (torch.randn(*shape, generator=generator) * sharpness).softmax(-1)


@pytest.mark.parametrize("source,target", [("a car on a road", "a robot on a road"), ("a car on a road", "a red robot on a road")])
@pytest.mark.parametrize("equalize", [None, {"robot": 3.0, "road": 0.5}])
def test_cross_attention_controller_matches_the_official_one(tokenizer, source, target, equalize):
    generator = torch.Generator().manual_seed(0)
    base, current = _random_maps(generator, 3, 2, 16, 77), _random_maps(generator, 3, 2, 16, 77)  # [frames, heads, queries, tokens]
    edit = build_cross_edit(tokenizer, source, target, equalize=equalize)
    if edit.kind == "replace":
        expected = ref_replace_cross(base, ref_get_replacement_mapper_(source, target, tokenizer)[None])
    else:
        mapper, alphas = ref_get_mapper(source, target, tokenizer)
        expected = ref_refine_cross(base, current[None], mapper[None], alphas[None])
    if equalize:
        expected = ref_reweight(expected, ref_get_equalizer(target, list(equalize), list(equalize.values()), tokenizer))[0]
    assert torch.allclose(edit.apply(base, current), expected[0], atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 50])
@pytest.mark.parametrize("cross,self_", [(0.8, 0.5), (0.7, 0.7), (1.0, 0.9), (0.2, 0.0), (0.5, 1.0)])
def test_fused_steps_are_the_official_ones(steps, cross, self_):
    cross_steps, self_steps = ref_cross_steps(steps, cross, self_)
    settings = FusionSettings(cross_replace_steps=cross, self_replace_steps=self_)
    assert settings.step_counts(steps) == (len(cross_steps), len(self_steps))
    assert cross_steps == list(range(len(cross_steps))) and self_steps == list(range(len(self_steps)))


# ---------------------------------------------------------------------------- blending mask
MASK_LAYERS = [  # the official down_cross[2:4] + up_cross[:3] (the H/32 cross layers of SD), and the mid block
    FusedLayer("down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor", "cross", 4, 2, "down_blocks"),
    FusedLayer("down_blocks.2.attentions.1.transformer_blocks.0.attn2.processor", "cross", 4, 2, "down_blocks"),
    FusedLayer("mid_block.attentions.0.transformer_blocks.0.attn2.processor", "cross", 4, 2, "mid_block"),
    FusedLayer("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor", "cross", 4, 2, "up_blocks"),
    FusedLayer("up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor", "cross", 4, 2, "up_blocks"),
    FusedLayer("up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor", "cross", 4, 2, "up_blocks"),
    FusedLayer("up_blocks.2.attentions.0.transformer_blocks.0.attn1.processor", "self", 2, 2, "up_blocks"),
]


def test_self_attention_blending_is_the_official_masked_replacement(tokenizer, tmp_path):
    source, target = "a red square on a road", "a yellow duck on a road"
    edit = build_cross_edit(tokenizer, source, target, blend_words=["square"])
    rows, heads, latent = 3, 2, (16, 16)  # H/32 maps 4x4, the self layer at 8x8
    slots = [Slot(l.name, l.kind, 1, heads, 16, 77) for l in MASK_LAYERS if l.kind == "cross"]
    slots.append(Slot(MASK_LAYERS[-1].name, "self", 1, heads, 64, 128))
    store = AttentionDiskStore(tmp_path / "maps", slots, [rows])
    generator = torch.Generator().manual_seed(1)
    stored = {}
    for slot in slots:
        maps = _random_maps(generator, rows, heads, slot.queries, slot.keys, sharpness=3.0)
        store.put(slot.name, 0, 0, maps)
        stored[slot.name] = store.get(slot.name, 0, 0).float()
    fusion = AttentionFusion(MASK_LAYERS, store, edit, FusionSettings(), steps=2)

    alpha_layers = torch.zeros(1, 1, 1, 1, 1, 77)
    alpha_layers[..., ref_get_word_inds(source, "square", tokenizer)] = 1
    official_layers = [stored[l.name] for l in MASK_LAYERS if l.kind == "cross" and l.block != "mid_block"]
    expected_mask = ref_blend_mask(official_layers, alpha_layers, 8, 8, 0.3)  # [frames, 1, 64, 1]
    assert 0 < expected_mask.sum() < expected_mask.numel()  # a partial mask: both branches matter

    q, k, v = (torch.randn(2 * rows, heads, n, 8, generator=generator) for n in (64, 128, 128))
    with fusion.active("fuse", 0, 0, latent):
        assert torch.equal(fusion.blend_mask(2, 64), expected_mask)
        out = fusion.attend(MASK_LAYERS[-1].name, "self", q, k, v, 0.35)
    current = (q[rows:] @ k[rows:].transpose(-1, -2) * 0.35).softmax(-1)
    # AttentionControlEdit.replace_self_attention: reshaped_mask * att_replace + (1 - reshaped_mask) * attn_base
    blended = expected_mask * current + (1 - expected_mask) * stored[MASK_LAYERS[-1].name]
    assert torch.allclose(out[rows:], blended @ v[rows:], atol=1e-5)
    store.close(delete=True)


# ------------------------------------------------------------------------------------ layers
def test_fused_layers_are_those_with_at_most_32x32_queries_at_512(tmp_path):
    """The official `attn.shape[-2] <= 32 ** 2` at 512x512, checked on the query counts of a real forward."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # the SD 1.x layout (attention at full latent size too), tiny channels
        block_out_channels=(32, 32, 32, 32), layers_per_block=1, cross_attention_dim=16, attention_head_dim=2,
        norm_num_groups=8, sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    queries = {}

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
            queries[self.name] = hidden_states.shape[1]
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            return attn.to_out[0](attn.to_v(context)[:, :1].expand(-1, hidden_states.shape[1], -1))

    unet.set_attn_processor({name: Recorder(name) for name in unet.attn_processors})
    side = 16  # latent 16x16 here; at 512x512 the latent is 64x64, 4x larger per side
    with torch.no_grad():
        unet(torch.zeros(1, 4, side, side), 1, torch.zeros(1, 77, 16))
    at_512 = {name: count * (64 // side) ** 2 for name, count in queries.items()}
    official = {name for name, count in at_512.items() if count <= 32**2}
    assert {l.name for l in fused_layers(unet, FusionSettings().min_scale)} == official
    assert {count for name, count in at_512.items() if name in official} == {32**2, 16**2, 8**2}
    assert len(official) < len(at_512)  # the 64x64 layers are not fused
