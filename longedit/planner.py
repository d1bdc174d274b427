"""Window planner: the largest co-denoising window that fits a memory budget, from a measured probe.

What: a window of L frames (plus the shared anchor frame) costs, per step, one guided pass
(RAD: cond-only forward with gradients) and one classifier-free-guided forward (no gradients)
at batch 2 (L + 1). Their peak memory is, to a very good approximation, linear in L:

    memory(L) = fixed + per_frame * L

`fixed` holds the weights, the prompt embeddings, the anchor frame and workspaces; `per_frame`
the activations one more frame adds. The planner measures both on the actual model, resolution,
dtype and loop settings by running the guided pass + the CFG forward of one window at two small
lengths (`PROBE_LENGTHS`), fits the line, and picks the largest L in [4, 32] whose predicted
memory stays under `HEADROOM` of the budget. Stride is L/2 (Gen-L-Video).

How memory is measured (see `longedit.memory`):
* CUDA: `torch.cuda.max_memory_allocated` (absolute, so the resident weights are in `fixed`).
* elsewhere: the peak bytes of tensors created during the probe (`TensorMemoryTracker`),
  plus the resident bytes of the model's parameters and buffers. A CPU budget is therefore
  compared with tensor bytes, not with the process's RSS (the interpreter and libraries, about
  0.5 GB, and allocator slack are not in it).

Budget: `--vram SIZE` ("24GB", "12GiB", "800MB"; GB/MB = powers of 1000, GiB/MiB = powers of
1024); on CUDA it is capped by what the device can give (free memory + what this process has
reserved). Without `--vram`: on CUDA the device's free memory; on CPU there is no planning and
the fixed default window is used, because CPU runs are bound by time, not memory (system RAM
dwarfs a window's needs) and probing a full-size model on a CPU takes minutes. `--vram` on a
CPU device plans against that budget with the tensor tracker.

`--window` always wins (reason "--window"), and then nothing is probed.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from pydantic import ByteSize, TypeAdapter, ValidationError

from longedit.config import field_bounds
from longedit.errors import UserError

MIN_WINDOW, MAX_WINDOW = (int(bound) for bound in field_bounds("window"))  # the --window range, one declaration
HEADROOM = 0.9  # keep 10% of the budget for the CUDA context, allocator fragmentation and probe error
PROBE_LENGTHS = (2, 4)

_BYTE_SIZE = TypeAdapter(ByteSize)  # pydantic's parser: GB/MB/KB/TB powers of 1000, GiB/MiB/KiB/TiB of 1024
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)  # a number and one unit word


def _byte_size(number: str, unit: str) -> int | None:
    """pydantic's ByteSize of `number` `unit` (a bare k/m/g/t is kB/MB/GB/TB), None for a unit it does not know."""
    unit = f"{unit}b" if unit.lower() in ("k", "m", "g", "t") else unit
    try:
        return int(_BYTE_SIZE.validate_python(f"{number}{unit}"))
    except ValidationError:
        return None


def parse_size(text: str) -> int:
    """Bytes of a size like "24GB", "12GiB", "800MB", "1.5 GB" or "1000000" (bytes).

    GB/MB/KB/TB (and the bare letters G/M/K/T) are powers of 1000, GiB/MiB/KiB/TiB powers of 1024.
    Raises UserError on anything else, and on zero.
    """
    match = _SIZE_RE.match(str(text))
    value = None if match is None else _byte_size(*match.groups())
    if value is None:
        raise UserError(f"cannot read the memory size '{text}'", "write it like 24GB, 12GiB or 800MB")
    if value <= 0:
        raise UserError(f"the memory size '{text}' is zero", "give a positive size like 24GB")
    return value


def format_bytes(count: float) -> str:
    """Human size in binary units (what nvidia-smi and torch report): 1.50 GiB, 300.0 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}" if unit == "GiB" else f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


@dataclass(frozen=True)
class CostModel:
    """memory(L) = fixed_bytes + per_frame_bytes * L for a window of L frames (anchor in `fixed`)."""

    fixed_bytes: int
    per_frame_bytes: int

    def bytes_for(self, length: int) -> int:
        return self.fixed_bytes + self.per_frame_bytes * length


def fit_costs(lengths: Sequence[int], peaks: Sequence[int]) -> CostModel:
    """Least-squares line through (length, peak bytes); at least two distinct lengths.

    A non-positive slope (measurement noise) is replaced by the conservative peak / length of the
    largest probe, so a window never looks free.
    """
    if len(lengths) != len(peaks) or len(set(lengths)) < 2:
        raise ValueError("fit_costs needs peaks at two or more distinct window lengths")
    n = len(lengths)
    mean_x, mean_y = Fraction(sum(lengths), n), Fraction(sum(peaks), n)  # exact: bytes are integers
    var = sum((x - mean_x) ** 2 for x in lengths)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(lengths, peaks)) / var
    if slope <= 0:
        largest = max(range(n), key=lambda i: lengths[i])
        return CostModel(0, math.ceil(Fraction(peaks[largest], lengths[largest])))
    return CostModel(max(0, round(mean_y - slope * mean_x)), math.ceil(slope))


@dataclass(frozen=True)
class ProbeResult:
    """Peak bytes of one window's guided pass + CFG forward at each probed length.

    `resident_bytes` is added to the fitted intercept: the weights when the peaks exclude them
    (tensor tracker), 0 when they include them (CUDA allocator peak).
    """

    lengths: tuple[int, ...]
    peaks: tuple[int, ...]
    resident_bytes: int
    metric: str
    seconds: float

    def cost_model(self) -> CostModel:
        fit = fit_costs(self.lengths, self.peaks)
        return CostModel(fit.fixed_bytes + self.resident_bytes, fit.per_frame_bytes)

    def to_report(self) -> dict:
        return {
            "lengths": list(self.lengths), "peak_bytes": list(self.peaks), "resident_bytes": self.resident_bytes,
            "metric": self.metric, "seconds": round(self.seconds, 3),
        }


Probe = Callable[[Sequence[int]], ProbeResult]


@dataclass(frozen=True)
class WindowPlan:
    """The window the run uses and why (goes into the report as `window`)."""

    length: int
    stride: int
    reason: str
    source: str  # "--window", "planner" or "default"
    budget_bytes: int | None = None
    fixed_bytes: int | None = None
    per_frame_bytes: int | None = None
    predicted_bytes: int | None = None
    probe: ProbeResult | None = None

    def to_report(self) -> dict:
        return {
            "source": self.source,
            "length": self.length,
            "stride": self.stride,
            "budget_bytes": self.budget_bytes,
            "headroom": HEADROOM if self.source == "planner" else None,
            "fixed_bytes": self.fixed_bytes,
            "per_frame_bytes": self.per_frame_bytes,
            "predicted_bytes": self.predicted_bytes,
            "probe": None if self.probe is None else self.probe.to_report(),
        }


def largest_window(
    cost: CostModel, budget: int, frames: int, minimum: int = MIN_WINDOW, maximum: int = MAX_WINDOW,
    headroom: float = HEADROOM,
) -> int:
    """The largest L in [minimum, maximum] (capped at `frames`) with cost(L) <= headroom * budget.

    Raises UserError naming what the smallest window needs when even that does not fit.
    """
    upper = max(1, min(maximum, frames))
    lower = max(1, min(minimum, upper))
    usable = headroom * budget
    for length in range(upper, lower - 1, -1):
        if cost.bytes_for(length) <= usable:
            return length
    need = cost.bytes_for(lower)
    raise UserError(
        f"the memory budget {format_bytes(budget)} is too small: the minimum window of {lower} frames needs about "
        f"{format_bytes(need / headroom)} ({format_bytes(cost.fixed_bytes)} fixed + {format_bytes(cost.per_frame_bytes)} "
        f"per frame, {int(headroom * 100)}% of the budget usable)",
        "give a larger --vram, a smaller --size, or --dtype fp16 on a GPU",
    )


def device_budget(device: torch.device) -> int:
    """What this process can use on a CUDA device: its free memory plus what torch already reserved."""
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device))


def _budget(vram: str | None, device: torch.device) -> tuple[int | None, str]:
    """(budget bytes or None for "no planning", where it came from)."""
    if vram is not None:
        budget = parse_size(vram)
        if device.type == "cuda" and torch.cuda.is_available():  # a GPU planned from elsewhere is not capped
            available = device_budget(device)
            if available < budget:
                return available, f"--vram {vram} capped to the {format_bytes(available)} {device} can give"
        return budget, f"--vram {vram}"
    if device.type == "cuda":
        budget = device_budget(device)
        return budget, f"free memory of {device}"
    return None, f"no --vram on {device.type}"


def plan_window(
    *,
    frames: int,
    device: torch.device,
    window: int | None = None,
    stride: int | None = None,
    vram: str | None = None,
    probe: Probe | None = None,
    default_length: int = 8,
    probe_lengths: Sequence[int] = PROBE_LENGTHS,
    native_length: int | None = None,
) -> WindowPlan:
    """Pick the window length and stride of a run (see the module docstring for the rules).

    `probe(lengths)` measures the model and is only called when planning happens. `native_length`:
    the clip length a video backbone was trained on (text-to-video: 16); it is the default and the
    planner's maximum.
    """
    if native_length is not None:
        default_length = native_length
    clipped = f" (clipped to the video's {frames} frames)" if frames < (window or 0) else ""
    if window is not None:
        return WindowPlan(window, stride or max(1, window // 2), "--window" + clipped, "--window")
    budget, budget_source = _budget(vram, device)
    if budget is None or probe is None:
        kind = "the backbone's native length" if native_length is not None else f"default for {device.type}"
        why = f"{kind} ({budget_source}: no planning, pass --vram to plan)"
        if budget is not None:
            why = f"{kind} (no model to probe)"
        if frames < default_length:
            why += f" (clipped to the video's {frames} frames)"
        return WindowPlan(default_length, stride or max(1, default_length // 2), why, "default")
    result = probe(tuple(probe_lengths))
    cost = result.cost_model()
    maximum = min(MAX_WINDOW, native_length or MAX_WINDOW)
    length = largest_window(cost, budget, frames, maximum=maximum)
    predicted = cost.bytes_for(length)
    why = (
        f"largest window that fits {format_bytes(budget)} ({budget_source}, {int(HEADROOM * 100)}% used): "
        f"{format_bytes(cost.fixed_bytes)} fixed + {format_bytes(cost.per_frame_bytes)}/frame "
        f"{'simulated on fake tensors' if result.metric == 'fake-cuda' else 'measured'} -> "
        f"{length} frames need {format_bytes(predicted)}"
    )
    if length == maximum and native_length is not None:
        why += f" (capped at the backbone's native {native_length} frames)"
    elif length == MAX_WINDOW:
        why += f" (the planner's maximum is {MAX_WINDOW})"
    elif length >= frames:
        why += f" (the whole {frames}-frame video in one window)"
    return WindowPlan(
        length, stride or max(1, length // 2), why, "planner", budget_bytes=budget, fixed_bytes=cost.fixed_bytes,
        per_frame_bytes=cost.per_frame_bytes, predicted_bytes=predicted, probe=result,
    )


def probe_window_costs(
    backbone,
    settings,
    source_prompt: str,
    prompt: str,
    words,
    height: int,
    width: int,
    lengths: Sequence[int] = PROBE_LENGTHS,
    seed: int = 0,
) -> ProbeResult:
    """Measure one window's peak memory at each of `lengths` on the real model and loop settings.

    Per length: a window of L frames after the first (so it carries the anchor frame where the
    backbone uses one), random latents, a centred box mask, and one step of the editor's own loop
    (`longedit.sampling.denoise`): RAD's guided update (when there are words) then the CFG forward, the
    two passes of an edit step. `height`/`width` are latent sizes.
    """
    from longedit.editor import VideoEditor
    from longedit.sampling import denoise
    from longedit.memory import DevicePeak, module_bytes
    from longedit.masks import ObjectMasks
    from longedit.words import WordTokens, word_tokens

    tokens = [w if isinstance(w, WordTokens) else word_tokens(backbone.tokenizer, prompt, w) for w in words]
    # One edit step (RAD where there are words, then the CFG forward); refinement repeats the same pass
    # (same memory), IRJS only pastes: neither changes the peak.
    probe_settings = replace(settings, refine=False, irjs=False, guided_steps=max(1, settings.guided_steps))
    editor = VideoEditor(backbone, probe_settings, source_prompt, prompt, tokens)
    device = backbone.device
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    peaks = []
    for length in lengths:
        latents = torch.randn(length + 1, 4, height, width, generator=generator)
        box = torch.zeros(length + 1, max(1, len(tokens)), height, width, dtype=torch.bool)
        box[:, :, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
        masks = ObjectMasks([w.word for w in tokens] or ["none"], box, ["box"] * box.shape[1])
        try:
            # The measured window starts after frame 0, so it carries the anchor where one is used; the
            # 1-frame window before it only covers frame 0 (its passes are smaller, never the peak).
            with DevicePeak(device) as meter:
                denoise(editor, latents, [(0, 1), (1, length + 1)], masks, None, start=0, stop=1)
        except torch.cuda.OutOfMemoryError as error:
            raise UserError(
                f"out of GPU memory while probing a {length}-frame window: the model does not fit this device",
                "use a smaller --size, --dtype fp16, or a GPU with more memory",
            ) from error
        peaks.append(meter.peak)
        del latents
    if device.type == "cuda":
        torch.cuda.empty_cache()
    resident = 0 if device.type == "cuda" else module_bytes(backbone.unet, backbone.text_encoder, backbone.vae)
    return ProbeResult(tuple(lengths), tuple(peaks), resident, DevicePeak(device).metric, time.perf_counter() - started)
