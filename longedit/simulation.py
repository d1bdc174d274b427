"""Memory and FLOPs of one window of an edit at real size, simulated on fake tensors (no GPU, seconds).

What: the per-window work of an edit, run through the product's own code (`VideoEditor.edit_step`:
RAD's guided pass with the refinement, IRJS, the classifier-free-guided forward, the DDIM step and
the merge), plus one inversion forward and the VAE encode/decode of the window's frames, with the
models resident, on `torch._subclasses.fake_tensor.FakeTensorMode` tensors: every aten op runs its
meta implementation (exact shapes and dtypes, no compute, no memory), under a byte tracker
(`longedit.memory.TensorMemoryTracker`, rounded to the CUDA caching allocator's 512-byte blocks)
and `torch.utils.flop_counter.FlopCounterMode`. SD 1.5 at 512x512, 16 frames, fp16: seconds.

How it takes CUDA's path on a CPU-only torch build:

* The fake tensors live on a fake *CPU* device. Fake ``device="cuda"`` tensors do run forwards on
  the CPU build (SDPA too), but autograd on them aborts the process (torch 2.13 CPU:
  ``InputMetadata`` asks for the CUDA device guard, "PyTorch is not linked with support for cuda
  devices"), and their SDPA falls back to the math backend (a [B, H, Q, K] matrix a GPU never
  materialises). On the fake CPU device SDPA takes the flash path (`_scaled_dot_product_flash_attention_for_cpu`:
  output + fp32 logsumexp saved, as CUDA's flash kernel saves).
* The fused word-attention op runs its registered fake implementation (`kernel_backend="triton"`,
  what `auto` picks on CUDA); fp16 everywhere the GPU run is fp16 (the VAE stays fp32, as
  `frozen_backbone` keeps it).
* Data-dependent reads (`float(loss)`, `bool(torch.isfinite(g).all())`) have no value on fake
  tensors: `ScalarOracle` answers them (floats 1.0: every refinement check says "refine"; the
  editor's refinement is capped at one iteration: the others repeat the identical pass, same bytes,
  and their FLOPs are counted by multiplying, see `longedit.bench.simulate`).

What CUDA does that the count does not see (kernel workspaces, cuDNN, flash backward's fp32 dq
accumulator, allocator fragmentation) is the headroom the planner keeps (`SIMULATION_HEADROOM`).
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from longedit.memory import TensorMemoryTracker, module_bytes

CUDA_BLOCK = 512  # the CUDA caching allocator rounds every block up to a multiple of 512 bytes
SIM_DEVICE = torch.device("cpu")  # see the module docstring: fake CPU tensors taking CUDA's paths
PHASES = ("vae_encode", "inversion", "guided", "cfg", "edit_step", "vae_decode")
_LAYER_RE = re.compile(r"^((?:down_blocks|up_blocks)\.\d+\.(?:attentions|resnets|downsamplers|upsamplers)\.\d+|mid_block|conv_in|conv_out|time_embedding|encoder|decoder|text_model)")


class ScalarOracle(TorchDispatchMode):
    """Answers `.item()`-style reads of fake tensors as a healthy run would: `any(...)` False
    (no frame left uncovered), other bools True (`isfinite(...).all()`), integers 0, floats `value`."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.value = value
        self.reads = 0
        self._from_any: dict[int, weakref.ref] = {}  # by id: a tensor's == is an op, not identity

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
            tensor = args[0]
            if tensor.dtype == torch.bool:
                known = self._from_any.get(id(tensor))
                return not (known is not None and known() is tensor)
            return self.value if tensor.dtype.is_floating_point else 0
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket is torch.ops.aten.any and isinstance(out, torch.Tensor):
            key = id(out)
            self._from_any[key] = weakref.ref(out, lambda _, key=key: self._from_any.pop(key, None))
        return out


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP is counted under `Global` only."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class LayerLabels:
    """The layer (UNet block, VAE half, text model) that creates each tensor, from module pre-hooks;
    tensors made during a backward pass are labelled `backward`."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.current = "outside"
        self._handles = []
        for root in modules:
            prefix = type(root).__name__
            for name, module in root.named_modules():
                match = _LAYER_RE.match(name)
                if match:
                    label = f"{prefix}.{match.group(1)}"
                    self._handles.append(module.register_forward_pre_hook(lambda *_, label=label: self._enter(label)))

    def _enter(self, label: str) -> None:
        self.current = label

    def __call__(self) -> str:
        return "backward" if torch._C._current_graph_task_id() != -1 else self.current

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class PhaseMeter:
    """Peak tracked bytes and FLOPs per named phase (phases may nest; a parent's peak includes its children)."""

    tracker: TensorMemoryTracker
    flops: object
    peaks: dict[str, int] = field(default_factory=dict)
    phase_flops: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    best: int = 0
    best_labels: dict[str, int] = field(default_factory=dict)
    best_phase: str = ""
    phase_labels: dict[str, dict[str, int]] = field(default_factory=dict)
    _stack: list = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str):
        outer_peak = self.tracker.peak
        self.tracker.reset_peak()
        flops_before = self.flops.get_total_flops()
        try:
            yield
        finally:
            peak = self.tracker.peak
            if peak >= self.peaks.get(name, 0):
                self.phase_labels[name] = dict(self.tracker.at_peak)
            self.peaks[name] = max(self.peaks.get(name, 0), peak)
            self.phase_flops[name] = self.phase_flops.get(name, 0) + self.flops.get_total_flops() - flops_before
            self.calls[name] = self.calls.get(name, 0) + 1
            if peak > self.best:
                self.best, self.best_labels, self.best_phase = peak, dict(self.tracker.at_peak), name
            self.tracker.peak = max(outer_peak, peak)

    def wrap(self, name: str, method):
        def phased(*args, **kwargs):
            with self.phase(name):
                return method(*args, **kwargs)

        return phased


def to_fake(module: torch.nn.Module, fake_mode) -> None:
    """Replace the parameters and buffers of `module` (real or meta) by fake tensors on `SIM_DEVICE`:
    a full-size model costs no memory (built on the meta device) and its weights join the simulation."""
    converter = fake_mode.fake_tensor_converter
    for sub in module.modules():
        for table in (sub._parameters, sub._buffers):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                if tensor.device.type == "meta":
                    fake = converter.from_meta_and_device(fake_mode, tensor, SIM_DEVICE)
                else:
                    fake = fake_mode.from_tensor(tensor)
                table[name] = torch.nn.Parameter(fake, requires_grad=False) if table is sub._parameters else fake


def fake_backbone(backbone, dtype: torch.dtype, fake_mode):
    """A copy of `backbone`'s architecture (from its configs, built on the meta device) with fake weights
    on `SIM_DEVICE` in `dtype` (the VAE in fp32 under fp16, as `frozen_backbone` keeps it). No weight is read
    or allocated: a model folder's configs are enough. Raises TypeError for a UNet class that cannot be
    rebuilt from its config."""
    from longedit.models import frozen_backbone

    components = {"tokenizer": backbone.tokenizer, "scheduler": backbone.scheduler}
    with torch.device("meta"):
        for key in ("unet", "vae"):
            module = getattr(backbone, key)
            if not hasattr(type(module), "from_config"):
                raise TypeError(f"{type(module).__name__} cannot be rebuilt from its config")
            components[key] = type(module).from_config(module.config)
        components["text_encoder"] = type(backbone.text_encoder)(backbone.text_encoder.config)
    copy = frozen_backbone(components, backbone.name, torch.device("meta"), dtype, backbone.kind)
    for module in (copy.unet, copy.text_encoder, copy.vae):
        to_fake(module, fake_mode)
    copy.device = SIM_DEVICE
    return copy


def box_masks(frames: int, height: int, width: int, words: list[str]):
    """A centred box for every word in every frame (latent resolution), as the planner's probe uses."""
    from longedit.masks import ObjectMasks

    box = torch.zeros(frames, max(1, len(words)), height, width, dtype=torch.bool)
    box[:, :, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    return ObjectMasks(list(words) or ["none"], box, ["box"] * box.shape[1])


def simulate_window(
    backbone,
    settings,
    make_inputs,
    source_prompt: str,
    prompt: str,
    words: list,
    *,
    fake_mode=None,
    round_to: int = CUDA_BLOCK,
    vae: bool = True,
    vae_chunk: int = 8,
    labels: bool = True,
) -> dict:
    """Peak bytes, per-phase peaks and FLOPs of one window of an edit.

    `make_inputs()` gives the window's host latents [L, 4, h, w] and its `ObjectMasks`; it runs inside
    the tracked region (in the fake mode when there is one), so both runs see the same tensors (the host
    latents are then counted too: 1 MiB for 16 frames at 512x512, an overcount of a GPU's bytes).

    `backbone` holds fake weights and `fake_mode` is their FakeTensorMode (None: a real run of the same
    ops, the check of the simulation). Peaks include the resident weights. The work: VAE encode of a
    chunk of the window's frames, one inversion forward, one edit step at step 0 (a refinement step:
    one refinement iteration and the main RAD update, IRJS, the CFG forward, the DDIM step, the merge),
    VAE decode of a chunk (`vae_chunk`: the engine's VAE chunk).
    """
    from torch.utils.flop_counter import FlopCounterMode

    import longedit.kernels.flops  # noqa: F401  registers the fused op's FLOP formulas

    started = time.perf_counter()
    resident = module_bytes(backbone.unet, backbone.text_encoder, backbone.vae)
    layer_labels = LayerLabels(backbone.unet, backbone.vae) if labels else None
    tracker = TensorMemoryTracker(round_to=round_to, label=layer_labels)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # its module tracker's backward hooks break autograd.grad on a leaf
    meter = PhaseMeter(tracker, counter)
    oracle = ScalarOracle(1.0)
    context = fake_mode if fake_mode is not None else contextlib.nullcontext()
    source = None
    try:
        with context, counter, tracker, oracle:
            source, masks = make_inputs()
            _run_window(backbone, settings, source, masks, source_prompt, prompt, words, meter, vae, vae_chunk)
    finally:
        if layer_labels is not None:
            layer_labels.close()
    top_layers = sorted(meter.best_labels.items(), key=lambda kv: -kv[1])[:12]
    return {
        "peak_bytes": resident + meter.best,
        "method": "fake-cuda" if fake_mode is not None else "cpu-exact",
        "fake_device": str(SIM_DEVICE) if fake_mode is not None else None,
        "window": int(source.shape[0]),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "settings": _reported(settings),
        "resident_bytes": resident,
        "peak_phase": meter.best_phase,
        "by_phase": {name: {"peak_bytes": resident + meter.peaks[name], "flops": meter.phase_flops[name], "calls": meter.calls[name],
                            "at_peak_by_layer": _top(meter.phase_labels.get(name, {}), 6)}
                     for name in PHASES if name in meter.peaks},
        "at_peak_by_layer": dict(top_layers),
        "flops": {"total": counter.get_total_flops(), **{n: meter.phase_flops[n] for n in PHASES if n in meter.phase_flops}},
        "allocator_rounding_bytes": round_to,
        "scalar_reads_answered": oracle.reads,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _top(labels: dict[str, int], count: int) -> dict[str, int]:
    return dict(sorted(labels.items(), key=lambda kv: -kv[1])[:count])


def _reported(settings) -> dict:
    keys = ("steps", "guided_steps", "truncate_guided_forward", "gradient_checkpointing", "kernel_backend", "refine", "irjs")
    return {k: getattr(settings, k) for k in keys}


def _run_window(backbone, settings, source, masks, source_prompt, prompt, words, meter: PhaseMeter, vae: bool, vae_chunk: int) -> None:
    """The tracked work: VAE encode, one inversion forward, one edit step (refinement step 0), VAE decode."""
    from longedit.editor import VideoEditor

    frames = source.shape[0]
    editor = VideoEditor(backbone, settings, source_prompt, prompt, words)
    editor.max_refinements = 1  # the others repeat the same pass (same bytes); FLOPs are multiplied out
    editor.rad_gradient = meter.wrap("guided", editor.rad_gradient)
    editor.guided_eps = meter.wrap("cfg", editor.guided_eps)
    if vae:
        with meter.phase("vae_encode"):
            _vae_encode(backbone, min(frames, vae_chunk), source.shape[-2] * backbone.vae_scale, source.shape[-1] * backbone.vae_scale)
    with meter.phase("inversion"):
        editor.source_forward(source, 0, frames, editor.schedule.timesteps[-1])
    with meter.phase("edit_step"):
        editor.edit_step(source, 0, [(0, frames)], masks, lambda index: source)
    if vae:
        with meter.phase("vae_decode"):
            _vae_decode(backbone, source[:vae_chunk])


def _vae_encode(backbone, frames: int, height: int, width: int) -> None:
    """The engine's encode of one chunk of frames (`engine.encode_video`'s flush), pixels made on the host."""
    vae = backbone.vae
    pixels = torch.zeros(frames, height, width, 3, dtype=torch.uint8)
    pixels = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1
    pixels = pixels.to(device=backbone.device, dtype=next(vae.parameters()).dtype)
    with torch.no_grad():
        (vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor).float().cpu()


def _vae_decode(backbone, latents: torch.Tensor) -> None:
    """`latent_decode.decode_latents` of one chunk, up to the uint8 frames (numpy is not reached on fake tensors)."""
    vae = backbone.vae
    batch = latents.to(device=backbone.device, dtype=next(vae.parameters()).dtype).contiguous()
    with torch.no_grad():
        pixels = vae.decode(batch / vae.config.scaling_factor).sample.float()
    ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
