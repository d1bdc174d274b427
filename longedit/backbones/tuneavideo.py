"""Tune-A-Video checkpoints on diffusers' `UNet2DConditionModel`, without a forked UNet file.

A Tune-A-Video (TAV) UNet is a Stable Diffusion UNet fine-tuned on one clip, saved by TAV's own
`UNet3DConditionModel` (diffusers 0.11 era). Compared with the SD UNet it differs in four places;
this module maps each onto stock diffusers modules plus one small module of ours:

1. Convolutions are `InflatedConv3d`: an `nn.Conv2d` applied to every frame. Same weights and keys as
   the 2D convs; frames as batch rows give the same result. Nothing to do.
2. `attn1` is sparse-causal attention (anchor = first frame, plus the previous frame): exactly
   `longedit.attention.CrossFrameAttnProcessor`, which the editor installs anyway. Same keys.
3. Every `BasicTransformerBlock` adds temporal attention after its feed-forward:
   `h = h + attn_temp(norm_temp(h))` over the frames of each spatial position. These weights live in
   `TuneAVideoTemporal` (a child module `tuneavideo_temporal` of the UNet, one `TemporalAttention`
   per block) and run from a forward hook on the block (the block's output is exactly the point after
   its feed-forward). `attn_temp` is a diffusers `Attention`, so it shows up in `attn_processors`
   (as a temporal layer the editor leaves alone).
4. Its ResNet `GroupNorm`s (`resnets.*.norm1/norm2`) and `conv_norm_out` see 5D `[B, C, F, H, W]`
   tensors, so their statistics span all frames of the clip. A per-frame 2D GroupNorm would change the
   activations; those modules are swapped for `FrameGroupNorm` (same parameters and keys) that
   normalises over the frames of each video. (The transformers' own `norm` sees frames as batch rows
   in TAV too and stays per frame.)

Checkpoint key mapping (`tuneavideo_target_key`), TAV -> this model:

* `<block>.attn_temp.<rest>`  -> `tuneavideo_temporal.layers.<block with . as _>.attn_temp.<rest>`
* `<block>.norm_temp.<rest>`  -> `tuneavideo_temporal.layers.<block with . as _>.norm_temp.<rest>`
* `...downsamplers.N.Conv2d_0.<rest>` -> `...downsamplers.N.conv.<rest>` (old diffusers registered the
  downsampling conv under both names when built with name="conv"; duplicates must be equal)
* every other key is the same in diffusers' UNet2DConditionModel.

Frame count: the temporal layers and the clip-wise GroupNorms need the number of frames per video;
the adapter (`TuneAVideoAdapter`) sets `unet.tuneavideo_temporal.frames` before every forward. The
anchor is kept: Tune-A-Video's own sparse-causal attention uses the clip's first frame as anchor. Its
temporal attention and clip-wise GroupNorms then see the anchor as one extra frame of the window (TAV
itself runs on contiguous clips; the shared anchor is what ties windows together).

Detection: TAV saves its UNet as a `UNet3DConditionModel` whose config carries the SD UNet keys that
diffusers' UNet3D does not take (`TUNEAVIDEO_CONFIG_KEYS`), and whose weights have `attn_temp`/`norm_temp`.
Random models (`random_tuneavideo_unet`): the random SD UNet with TAV's temporal layers attached
(random, non-zero `attn_temp`, unlike TAV's zero init, so the temporal path is exercised).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from longedit.backbones.kind import UNET_3D, BackboneKind, UNetAdapter
from longedit.backbones.sd import save_sd_folder
from longedit.backbones.unet_files import WEIGHT_NAMES, read_unet_config, unet_weight_file
from longedit.errors import UserError

TEMPORAL_CHILD = "tuneavideo_temporal"
_TEMPORAL_KEY = re.compile(r"^(?P<block>.+\.transformer_blocks\.\d+)\.(?P<part>attn_temp|norm_temp)\.(?P<rest>.+)$")
_DOWNSAMPLER_ALIAS = re.compile(r"(\.downsamplers\.\d+\.)Conv2d_0\.")
_CLIP_NORM = re.compile(r"(^|\.)resnets\.\d+\.norm[12]$|^conv_norm_out$")
#: Keys of Tune-A-Video's UNet3DConditionModel config (inherited from the SD UNet) that diffusers'
#: text-to-video UNet3DConditionModel does not take.
TUNEAVIDEO_CONFIG_KEYS = frozenset(
    {
        "mid_block_type", "flip_sin_to_cos", "freq_shift", "center_input_sample", "only_cross_attention",
        "dual_cross_attention", "use_linear_projection", "upcast_attention", "class_embed_type",
        "num_class_embeds", "resnet_time_scale_shift",
    }
)


@dataclass
class FrameCount:
    """Frames per video of the current forward, shared by the temporal layers and the clip-wise norms."""

    frames: int = 1


def layer_id(block_path: str) -> str:
    """ModuleDict key of the temporal layer of transformer block `block_path` (dots are not allowed)."""
    return block_path.replace(".", "_")


def _videos(total: int, frames: int) -> int | None:
    """Videos in a batch of `total` rows, or None when the rows are not whole `frames`-frame videos."""
    if frames <= 1 or total % frames:
        return None
    return total // frames


class TemporalAttention(nn.Module):
    """Tune-A-Video's temporal attention of one transformer block: h + attn_temp(norm_temp(h)) over frames."""

    def __init__(self, dim: int, heads: int, dim_head: int, upcast_attention: bool = False) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = Attention(
            query_dim=dim, heads=heads, dim_head=dim_head, bias=False, upcast_attention=upcast_attention
        )

    def forward(self, hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
        """[videos*frames, tokens, C] -> same shape; attention runs over the frames of each token."""
        total, tokens, channels = hidden_states.shape
        videos = _videos(total, frames)
        if videos is None:
            videos, frames = total, 1
        x = hidden_states.reshape(videos, frames, tokens, channels).transpose(1, 2).reshape(videos * tokens, frames, channels)
        x = x + self.attn_temp(self.norm_temp(x))
        return x.reshape(videos, tokens, frames, channels).transpose(1, 2).reshape(total, tokens, channels)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span all frames of a video, as TAV's GroupNorm on [B, C, F, H, W]."""

    def __init__(self, source: nn.GroupNorm, clock: FrameCount) -> None:
        super().__init__(source.num_groups, source.num_channels, source.eps, source.affine)
        if source.affine:
            self.weight, self.bias = source.weight, source.bias
        self.clock = clock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.clock.frames
        videos = _videos(x.shape[0], frames)
        if videos is None:
            return super().forward(x)
        clip = x.reshape(videos, frames, *x.shape[1:]).transpose(1, 2)
        clip = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)
        return clip.transpose(1, 2).reshape(x.shape)


class TuneAVideoTemporal(nn.Module):
    """Tune-A-Video's extra pieces for a UNet2DConditionModel (see the module docstring)."""

    def __init__(self, blocks: dict[str, tuple[int, int, int]], upcast_attention: bool = False) -> None:
        """`blocks`: transformer block path -> (dim, heads, dim_head)."""
        super().__init__()
        self.clock = FrameCount()
        self.block_paths = {layer_id(path): path for path in blocks}
        self.layers = nn.ModuleDict(
            {layer_id(path): TemporalAttention(*shape, upcast_attention=upcast_attention) for path, shape in blocks.items()}
        )
        self._handles: list = []

    @property
    def frames(self) -> int:
        return self.clock.frames

    @frames.setter
    def frames(self, value: int) -> None:
        self.clock.frames = int(value)


def _transformer_blocks(unet: nn.Module) -> dict[str, nn.Module]:
    from diffusers.models.attention import BasicTransformerBlock

    return {name: module for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)}


def attach_tuneavideo(unet: nn.Module, upcast_attention: bool = False, identity: bool = False) -> TuneAVideoTemporal:
    """Give a UNet2DConditionModel Tune-A-Video's temporal layers and clip-wise GroupNorms.

    Adds the child module `tuneavideo_temporal` (so `.to()`, `eval()`, `state_dict()` cover it),
    a forward hook on every transformer block, and swaps the ResNet/out GroupNorms for FrameGroupNorm.
    The temporal layers are random; `identity=True` is TAV's own init for tuning
    (`nn.init.zeros_(attn_temp.to_out[0].weight)`): each temporal layer then adds only to_out's bias, the
    same for every frame, so no frame sees another through it until tuning trains it.
    """
    if hasattr(unet, TEMPORAL_CHILD):
        return getattr(unet, TEMPORAL_CHILD)
    blocks = _transformer_blocks(unet)
    shapes = {}
    for path, block in blocks.items():
        attn = block.attn1
        shapes[path] = (attn.query_dim, attn.heads, attn.inner_dim // attn.heads)
    temporal = TuneAVideoTemporal(shapes, upcast_attention)
    if identity:
        for layer in temporal.layers.values():
            nn.init.zeros_(layer.attn_temp.to_out[0].weight)
    for path, block in blocks.items():
        layer = temporal.layers[layer_id(path)]

        def hook(module, args, output, layer=layer, clock=temporal.clock):
            return layer(output, clock.frames)

        temporal._handles.append(block.register_forward_hook(hook))
    for name, module in list(unet.named_modules()):
        if isinstance(module, nn.GroupNorm) and _CLIP_NORM.search(name):
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, FrameGroupNorm(module, temporal.clock))
    unet.add_module(TEMPORAL_CHILD, temporal)
    return temporal


# ------------------------------------------------------------------------------------- checkpoints
def tuneavideo_target_key(key: str) -> str:
    """Where TAV state-dict key `key` goes in a UNet2DConditionModel with `attach_tuneavideo` applied."""
    match = _TEMPORAL_KEY.match(key)
    if match:
        return f"{TEMPORAL_CHILD}.layers.{layer_id(match['block'])}.{match['part']}.{match['rest']}"
    return _DOWNSAMPLER_ALIAS.sub(r"\1conv.", key)


def tuneavideo_source_key(key: str, temporal: TuneAVideoTemporal) -> str:
    """Inverse of `tuneavideo_target_key` (for writing TAV-layout checkpoints)."""
    prefix = f"{TEMPORAL_CHILD}.layers."
    if not key.startswith(prefix):
        return key
    ident, _, rest = key[len(prefix) :].partition(".")
    return f"{temporal.block_paths[ident]}.{rest}"


def map_tuneavideo_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TAV checkpoint -> state dict of the attached UNet; every key must land, every expected key be filled.

    `expected` is the target model's `state_dict()` (names and shapes). Raises UserError naming the
    first keys that do not fit, so a checkpoint of another layout never loads half-way.
    """
    mapped: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, tensor in state.items():
        target = tuneavideo_target_key(key)
        if target not in expected:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[target].shape):
            mismatched.append(f"{key} {tuple(tensor.shape)} vs {tuple(expected[target].shape)}")
            continue
        if target in mapped:
            if not torch.equal(mapped[target], tensor):
                raise UserError(f"Tune-A-Video checkpoint has two different tensors for '{target}'")
            continue
        mapped[target] = tensor
    missing = sorted(set(expected) - set(mapped))
    if unexpected or mismatched or missing:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} unknown key(s), e.g. {unexpected[0]}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[0]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        raise UserError("the Tune-A-Video checkpoint does not fit its config: " + "; ".join(parts))
    return mapped


def unet2d_config(config: dict) -> dict:
    """TAV UNet3DConditionModel config -> UNet2DConditionModel keyword arguments (3D block names -> 2D)."""
    from diffusers import UNet2DConditionModel

    accepted = inspect.signature(UNet2DConditionModel.__init__).parameters
    converted = {}
    for key, value in config.items():
        if key.startswith("_") or key not in accepted:
            continue
        if key in ("down_block_types", "up_block_types"):
            value = [v.replace("3D", "2D") for v in value]
        elif key == "mid_block_type" and isinstance(value, str):
            value = value.replace("3D", "2D")
        converted[key] = value
    return converted


def tuneavideo_config(unet2d_config_: dict) -> dict:
    """The config TAV's UNet3DConditionModel saves for an SD UNet (inverse of `unet2d_config`)."""
    keys = (
        "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
        "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
        "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups",
        "norm_eps", "cross_attention_dim", "attention_head_dim", "dual_cross_attention", "use_linear_projection",
        "class_embed_type", "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
    )
    config = {"_class_name": UNET_3D, "_diffusers_version": "0.11.1"}
    for key in keys:
        value = unet2d_config_.get(key)
        if key in ("down_block_types", "up_block_types"):
            value = [v.replace("2D", "3D") for v in value]
        elif key == "mid_block_type":
            value = (value or "UNetMidBlock2DCrossAttn").replace("2D", "3D")
        elif isinstance(value, tuple):
            value = list(value)
        config[key] = value
    return config


def build_tuneavideo_unet(config: dict) -> nn.Module:
    """A randomly initialised UNet2DConditionModel + TAV temporal layers for TAV config `config`."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(unet2d_config(config))
    attach_tuneavideo(unet, upcast_attention=bool(config.get("upcast_attention", False)))
    return unet


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .bin weight file (CPU)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _weights_path(source: str, local_files_only: bool) -> Path:
    local = unet_weight_file(source)
    if local is not None:
        return local
    if Path(source).is_dir():
        raise UserError(f"'{source}/unet' holds no {' or '.join(WEIGHT_NAMES)}")
    from huggingface_hub import hf_hub_download

    error: Exception | None = None
    for name in WEIGHT_NAMES:
        try:
            return Path(hf_hub_download(source, name, subfolder="unet", local_files_only=local_files_only))
        except Exception as exc:  # not there in this format, or offline: try the next, report the last
            error = exc
    raise OSError(f"no UNet weights found for '{source}': {error}")


def load_tuneavideo_unet(source: str, local_files_only: bool = False) -> nn.Module:
    """Load a TAV UNet folder (or hub id): diffusers UNet2DConditionModel + TuneAVideoTemporal, strict."""
    config = read_unet_config(source, local_files_only)
    unet = build_tuneavideo_unet(config)
    state = read_state_dict(_weights_path(source, local_files_only))
    mapped = map_tuneavideo_state_dict(state, unet.state_dict())
    unet.load_state_dict(mapped, strict=True)
    return unet


def tuneavideo_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The TAV-layout state dict of an attached UNet (what TAV's own save_pretrained would write)."""
    temporal = getattr(unet, TEMPORAL_CHILD)
    return {tuneavideo_source_key(k, temporal): v for k, v in unet.state_dict().items()}


def save_tuneavideo_unet(unet: nn.Module, folder: str | Path, safe_serialization: bool = False) -> Path:
    """Write `unet` (attached) as a TAV UNet folder: config.json + diffusion_pytorch_model.{bin,safetensors}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in tuneavideo_state_dict(unet).items()}
    (folder / "config.json").write_text(json.dumps(tuneavideo_config(dict(unet.config)), indent=2))
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, str(folder / WEIGHT_NAMES[0]))
    else:
        torch.save(state, folder / WEIGHT_NAMES[1])
    return folder


# ------------------------------------------------------------------------------------- the kind
class TuneAVideoAdapter(UNetAdapter):
    """Tells the temporal layers how many frames a video has, then calls the UNet as SD's adapter does."""

    def call_unet(self, unet, x: torch.Tensor, timestep, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        getattr(unet, TEMPORAL_CHILD).frames = frames
        return unet(x, timestep, encoder_hidden_states=embedding).sample


def random_tuneavideo_unet(size: str, seed: int, sd_unet: Callable[[], nn.Module]) -> nn.Module:
    """The random SD UNet of `size` with random TAV temporal layers (their own seed, `seed + 7`)."""
    unet = sd_unet()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7)
        attach_tuneavideo(unet)
    return unet


def save_tuneavideo_folder(components: dict, folder: Path, safe_serialization: bool = True) -> Path:
    """Write components in Tune-A-Video's checkpoint layout (TAV UNet config and state-dict keys)."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    unet = components["unet"]
    # the pipeline writer wants a plain SD UNet; the TAV UNet is written after
    save_sd_folder({**components, "unet": UNet2DConditionModel.from_config(unet.config)}, folder, True)
    for old in (folder / "unet").iterdir():
        old.unlink()
    save_tuneavideo_unet(unet, folder / "unet", safe_serialization=safe_serialization)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "TuneAVideoPipeline"
    index["unet"] = ["tuneavideo.models.unet", "UNet3DConditionModel"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def has_tuneavideo_layout(config: dict, keys: Iterable[str]) -> bool:
    """TAV's UNet3D: SD-only config keys, or weight names of its temporal layers."""
    if TUNEAVIDEO_CONFIG_KEYS & set(config):
        return True
    return any(".attn_temp." in key or ".norm_temp." in key for key in keys)


BACKBONE = BackboneKind(
    name="tuneavideo",
    title="Tune-A-Video",
    unet_class=UNET_3D,
    adapter=TuneAVideoAdapter("tuneavideo"),
    load_unet=load_tuneavideo_unet,
    random_unet=random_tuneavideo_unet,
    save_folder=save_tuneavideo_folder,
    recognises=has_tuneavideo_layout,
    temporal_layers=(TEMPORAL_CHILD,),
)
