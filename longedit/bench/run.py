"""Run the product's diffusion loop in a benchmark mode and measure it.

Modes (same model, prompts, latents, masks and steps; only the loop settings differ):

* `optimized`: this project's memory plan (DESIGN.md section 3): windows of L frames (from
  `--window`, else the window planner) with stride L/2, RAD on the first half of the steps,
  the guided forward truncated after the last H/32 capture layer, gradient checkpointing, the
  fused word-attention op (`kernel_backend="auto"`: Triton on CUDA, reference elsewhere).
* `reference`: the official ReAtCo settings: 4-frame windows with stride 1, RAD at every step,
  the full UNet forward on the gradient path, no checkpointing, eager full attention maps.

Both run the engine's own loop drivers (`longedit.sampling.invert` then `denoise`) over
`plan_windows` windows, on random source latents with a moving box mask, RAD and IRJS on,
refinement as the product's default (on; `refine=False` measures without it). Time covers inversion + edit; the VAE and video I/O are not part of it.
`seconds_per_frame` is wall time; `cpu_seconds_per_frame` is this process's CPU time (all its
threads), which other processes on a shared machine disturb much less (with `--threads 1` it is
the compute itself; on CUDA it is only the host side, so compare wall time there).

Memory: each mode runs in its own subprocess (`python -m longedit.bench.run SPEC OUT`) so its
peak is its own: `peak_vram_bytes` = `torch.cuda.max_memory_allocated` on CUDA; on CPU
`peak_rss_bytes` = the child's peak RSS (`ru_maxrss`, the whole process: interpreter, torch and
weights included) and `loop_rss_bytes` = that peak minus the RSS just before the loop (what the
loop itself added). Run in-process (`isolate=False`) the CPU peak RSS of a later mode would
include the earlier one's, so it is reported as None there.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from longedit.memory import TensorMemoryTracker, current_rss_bytes, peak_rss_bytes, saved_tensor_bytes
from longedit.bench.presets import PRESETS, BenchPreset, build_backbone
from longedit.config import ObjectSpec
from longedit.editor import LoopSettings, VideoEditor
from longedit.errors import UserError
from longedit.masks import ObjectMasks, build_object_masks
from longedit.models import resolve_device, resolve_dtype
from longedit.sampling import SourceLevels, denoise, invert
from longedit.windows import plan_windows
from longedit.words import word_tokens

SOURCE_PROMPT = "a car on a road"
PROMPT = "a robot on a road"
WORD = "robot"
MODES = ("optimized", "reference")
REFERENCE_WINDOW, REFERENCE_STRIDE = 4, 1


@dataclass(frozen=True)
class RunSpec:
    """One measured run: a mode of the loop on a preset model (JSON-serialisable for the worker)."""

    preset: str
    mode: str
    frames: int
    steps: int
    size: int
    device: str = "auto"
    dtype: str = "auto"
    window: int | None = None
    stride: int | None = None
    seed: int = 0
    progress: bool = True
    vram: str | None = None
    threads: int | None = None
    backbone: str = "sd"
    refine: bool = True


def mode_settings(mode: str, steps: int, refine: bool = True) -> LoopSettings:
    """Loop settings of a benchmark mode (see the module docstring)."""
    if mode == "optimized":
        return LoopSettings(
            steps=steps, guided_steps=max(1, steps // 2), truncate_guided_forward=True,
            gradient_checkpointing=True, kernel_backend="auto", record_attention=True, seed=0, refine=refine,
        )
    if mode == "reference":
        return LoopSettings(
            steps=steps, guided_steps=steps, truncate_guided_forward=False,
            gradient_checkpointing=False, kernel_backend="reference", record_attention=False, seed=0, refine=refine,
        )
    raise UserError(f"unknown bench mode '{mode}'", f"use one of {', '.join(MODES)}")


def bench_inputs(frames: int, size: int, seed: int) -> tuple[torch.Tensor, ObjectMasks]:
    """Random source latents [F, 4, size/8, size/8] and a box mask moving left to right."""
    side = size // 8
    latents = torch.randn(frames, 4, side, side, generator=torch.Generator().manual_seed(seed))
    first, last = (0.1 * size, 0.25 * size, 0.5 * size, 0.75 * size), (0.5 * size, 0.25 * size, 0.9 * size, 0.75 * size)
    keyframes = {0: first} if frames == 1 else {0: first, frames - 1: last}
    obj = ObjectSpec(word=WORD, keyframes=keyframes)
    masks = build_object_masks([obj], frames, (size, size), (side, side))
    return latents, masks


def _window_plan(spec: RunSpec, backbone, settings: LoopSettings, device: torch.device):
    """(length, stride, planner report) of the optimized mode: --window, else the planner."""
    from longedit.engine import DEFAULT_WINDOW
    from longedit.planner import plan_window, probe_window_costs

    side = spec.size // 8

    def probe(lengths):
        return probe_window_costs(backbone, settings, SOURCE_PROMPT, PROMPT, [WORD], side, side, lengths)

    plan = plan_window(
        frames=spec.frames, device=device, window=spec.window, stride=spec.stride, vram=spec.vram, probe=probe,
        default_length=DEFAULT_WINDOW.get(device.type, 8),
    )
    return plan.length, plan.stride, plan.to_report()


def _guided_pass_bytes(editor: VideoEditor, latents: torch.Tensor, masks: ObjectMasks, windows) -> dict:
    """Tensor bytes of one guided pass (rad_gradient) on the mode's second window (it has an anchor).

    Device independent: the peak of live tensor bytes (`TensorMemoryTracker`) and the bytes saved
    for backward (`saved_tensors_hooks`, resident weights not counted).
    """
    start, end = windows[1] if len(windows) > 1 else windows[0]
    anchor, own = editor.window_inputs(latents, start, end)
    masks_map = masks.at_map_resolution(start, end, editor.map_scale)
    timestep = editor.schedule.timesteps[0]
    with saved_tensor_bytes(editor.backbone.unet) as saved, TensorMemoryTracker() as tracker:
        editor.rad_gradient(anchor, own, timestep, masks_map)
    return {"guided_pass_tensor_peak_bytes": tracker.peak, "guided_pass_saved_bytes": saved["bytes"]}


def run_mode(spec: RunSpec) -> dict:
    """Build the preset's model, run inversion + edit in `spec.mode` and return the measurements."""
    threads = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        return _run_mode(spec)
    finally:
        torch.set_num_threads(threads)


def _run_mode(spec: RunSpec) -> dict:
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    preset = PRESETS[spec.preset]
    torch.manual_seed(spec.seed)
    backbone = build_backbone(preset, device, dtype, spec.seed, kind=spec.backbone)
    settings = mode_settings(spec.mode, spec.steps, spec.refine)
    planner = None
    if spec.mode == "reference":
        length, stride = REFERENCE_WINDOW, REFERENCE_STRIDE
    else:
        length, stride, planner = _window_plan(spec, backbone, settings, device)
    source, masks = bench_inputs(spec.frames, spec.size, spec.seed)
    words = [word_tokens(backbone.tokenizer, PROMPT, WORD)]
    editor = VideoEditor(backbone, settings, SOURCE_PROMPT, PROMPT, words)
    windows = plan_windows(spec.frames, length, stride)
    source_at = SourceLevels(editor.schedule, source, settings.source_noise, settings.seed)

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_bytes()
    bar = tqdm(total=2 * spec.steps * len(windows), desc=f"{spec.preset}/{spec.mode}", unit="window", disable=not spec.progress)
    cpu_clock = time.process_time()
    clock = time.perf_counter()
    latents = invert(editor, source.clone(), windows, advance=lambda: bar.update(1))
    _sync(device)
    inversion_s = time.perf_counter() - clock
    inversion_forwards = editor.unet_forwards
    clock = time.perf_counter()
    latents = denoise(editor, latents, windows, masks, source_at, advance=lambda: bar.update(1))
    _sync(device)
    edit_s = time.perf_counter() - clock
    cpu_s = time.process_time() - cpu_clock
    bar.close()
    peak_vram = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    peak_rss = peak_rss_bytes()
    result = {
        "mode": spec.mode,
        "preset": spec.preset,
        "backbone": spec.backbone,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "frames": spec.frames,
        "steps": spec.steps,
        "size": spec.size,
        "window": min(length, spec.frames),
        "stride": stride,
        "windows": len(windows),
        "unet_forwards": editor.unet_forwards,
        "inversion_unet_forwards": inversion_forwards,
        "inversion_s": round(inversion_s, 3),
        "edit_s": round(edit_s, 3),
        "seconds_per_frame": (inversion_s + edit_s) / spec.frames,
        "cpu_seconds_per_frame": cpu_s / spec.frames,
        "peak_vram_bytes": peak_vram,
        "peak_rss_bytes": peak_rss,
        "loop_rss_bytes": max(0, peak_rss - rss_before),
        "settings": {k: v for k, v in asdict(settings).items() if k in _REPORTED_SETTINGS},
        "latents_finite": bool(torch.isfinite(latents).all()),
    }
    if planner is not None:
        result["planner"] = planner
    result.update(_guided_pass_bytes(editor, source, masks, windows))
    return result


_REPORTED_SETTINGS = (
    "steps", "guided_steps", "truncate_guided_forward", "gradient_checkpointing", "kernel_backend", "record_attention",
    "refine",
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_isolated(spec: RunSpec, timeout: float | None = None) -> dict:
    """`run_mode(spec)` in a fresh Python process, so that its peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="longedit-bench-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", "longedit.bench.run", json.dumps(asdict(spec)), str(out)]
        completed = subprocess.run(command, timeout=timeout, env=_child_env())
        if completed.returncode != 0 or not out.is_file():
            raise UserError(
                f"the bench run {spec.preset}/{spec.mode} ({spec.frames} frames) failed with exit code {completed.returncode}",
                "its error is printed above",
            )
        return json.loads(out.read_text())


def _child_env() -> dict[str, str]:
    """The parent's environment with this checkout importable (the worker runs `-m longedit.bench.run`)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_modes(spec: RunSpec, modes: tuple[str, ...] = MODES, isolate: bool = True) -> dict[str, dict]:
    """Run each mode (same spec otherwise); in-process CPU peak RSS is not per mode, so it is dropped."""
    results = {}
    for mode in modes:
        one = replace(spec, mode=mode)
        if isolate:
            results[mode] = run_isolated(one)
        else:
            results[mode] = run_mode(one)
            if results[mode]["peak_vram_bytes"] is None:
                results[mode].update(peak_rss_bytes=None, loop_rss_bytes=None, rss_note="in-process run: peak RSS is not per mode")
    return results


def memory_metric(result: dict) -> str:
    """The peak-memory key a result is compared on: VRAM on CUDA, process RSS elsewhere."""
    return "peak_vram_bytes" if result.get("peak_vram_bytes") is not None else "peak_rss_bytes"


def ratios(optimized: dict, reference: dict) -> dict:
    """optimized / reference ratios (and the speedup reference / optimized)."""
    metric = memory_metric(optimized)

    def ratio(key: str) -> float | None:
        a, b = optimized.get(key), reference.get(key)
        return None if a is None or not b else a / b

    speed = ratio("seconds_per_frame")
    cpu_speed = ratio("cpu_seconds_per_frame")
    return {
        "seconds_per_frame": speed,
        "speedup": None if not speed else 1 / speed,
        "cpu_seconds_per_frame": cpu_speed,
        "cpu_speedup": None if not cpu_speed else 1 / cpu_speed,
        "peak_memory": ratio(metric),
        "memory_metric": metric,
        "loop_rss": ratio("loop_rss_bytes"),
        "guided_pass_tensor_peak": ratio("guided_pass_tensor_peak_bytes"),
        "unet_forwards": ratio("unet_forwards"),
    }


def sweep(spec: RunSpec, lengths: list[int], isolate: bool = True) -> list[dict]:
    """The optimized mode at each video length, each in its own process (peak memory per length)."""
    rows = []
    for frames in lengths:
        one = replace(spec, mode="optimized", frames=frames)
        rows.append(run_isolated(one) if isolate else run_mode(one))
    return rows


def preset_info(preset: BenchPreset) -> dict:
    return {"name": preset.name, "description": preset.description, "unet": _jsonable(preset.model.unet if preset.model else None), "notes": preset.notes()}


def _jsonable(value):
    return json.loads(json.dumps(value)) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: `python -m longedit.bench.run SPEC_JSON OUT_JSON`."""
    argv = sys.argv[1:] if argv is None else argv
    spec = RunSpec(**json.loads(argv[0]))
    result = run_mode(spec)
    Path(argv[1]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
