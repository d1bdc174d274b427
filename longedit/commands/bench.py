"""`longedit bench`: the optimized loop against the official ReAtCo settings, a frame sweep, and the kernel.

    longedit bench --preset small --json small.json          # optimized vs reference, one run
    longedit bench --preset tiny --size 64 --steps 2 --frames-sweep 16,100,1000
    longedit bench kernel                                     # fused word-attention op vs eager

Each mode (and each sweep length) runs in its own subprocess so that its peak memory is its
own; see `longedit.bench.run` for what the modes are and how memory is measured.
"""

from __future__ import annotations

from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from longedit.errors import UserError

bench_app = typer.Typer(
    help="Benchmark the diffusion loop (optimized vs the official ReAtCo settings), its memory over video length, and the fused kernel.",
    add_completion=False,
)


class PresetName(str, Enum):
    tiny = "tiny"
    small = "small"
    sd15 = "sd15"


class KernelShapes(str, Enum):
    tiny = "tiny"
    sd15 = "sd15"


TINY_KERNEL_SHAPES = [{"B": 2, "H": 2, "Q": 16, "D": 8, "T": 77, "C": 2}, {"B": 3, "H": 2, "Q": 24, "D": 16, "T": 77, "C": 3}]


def parse_frames_list(text: str) -> list[int]:
    """"16,100,1000" -> [16, 100, 1000] (UserError on anything else)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise UserError(f"cannot read --frames-sweep '{text}'", "give frame counts like 16,100,1000")
    return values


def _check_device(preset, device: str, force: bool) -> None:
    from longedit.models import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda" and not preset.cpu_ok and not force:
        raise UserError(
            f"the {preset.name} preset is the full-size model at {preset.size}x{preset.size}: on a CPU one run takes hours",
            "run it on a CUDA GPU, use --preset small, or pass --force",
        )


def _write_json(path: Path | None, document: dict) -> None:
    if path is None:
        return
    from longedit.atomic import write_json

    write_json(Path(path), document, what="the bench results")
    typer.echo(f"wrote {path}")


def _spec_fields(spec) -> dict:
    """The run's settings for the JSON (the mode is per result, the frames per row in a sweep)."""
    return {k: v for k, v in asdict(spec).items() if k != "mode"}


def _header(preset, spec, results_device: str, dtype: str, threads: int) -> list[str]:
    lines = [
        f"bench {preset.name}: {preset.description}",
        f"{spec.frames} frames, {spec.steps} steps, {spec.size}x{spec.size}, {results_device} {dtype}, {threads} torch threads",
    ]
    lines += [f"note: {note}" for note in preset.notes()]
    return lines


def _run_modes(spec, modes: tuple[str, ...], isolate: bool, json_path: Path | None) -> None:
    from longedit.bench import report
    from longedit.bench.presets import PRESETS
    from longedit.bench.run import preset_info, ratios, run_modes

    preset = PRESETS[spec.preset]
    results = run_modes(spec, modes, isolate=isolate)
    first = next(iter(results.values()))
    lines = _header(preset, spec, first["device"], first["dtype"], first["threads"])
    lines += ["", report.modes_table(results)]
    document = {
        "kind": "modes", "date": report.timestamp(), "machine": report.machine_info(first["device"]),
        "spec": _spec_fields(spec), "preset": preset_info(preset), "modes": results,
    }
    if "optimized" in results and "reference" in results:
        ratio = ratios(results["optimized"], results["reference"])
        document["ratios"] = ratio
        document["targets"] = report.targets(ratio)
        lines += [""] + report.ratio_lines(ratio)
    planner = results.get("optimized", {}).get("planner")
    if planner is not None:
        lines.append(f"optimized window: {results['optimized']['window']} ({planner['source']})")
    typer.echo("\n".join(lines))
    _write_json(json_path, document)


def _run_sweep(spec, lengths: list[int], isolate: bool, json_path: Path | None) -> None:
    from longedit.bench import report
    from longedit.bench.presets import PRESETS
    from longedit.bench.run import preset_info, sweep

    preset = PRESETS[spec.preset]
    rows = sweep(spec, lengths, isolate=isolate)
    summary = report.sweep_summary(rows)
    lines = _header(preset, spec, rows[0]["device"], rows[0]["dtype"], rows[0]["threads"])
    lines[1] = lines[1].replace(f"{spec.frames} frames", "frames " + ",".join(map(str, lengths)))
    lines += ["", "optimized mode per video length (each length in its own process):", report.sweep_table(rows)]
    growth = summary["max_growth_vs_first"]
    verdict = summary[f"within_{int(report.SWEEP_TOLERANCE * 100)}_percent"]
    lines.append(
        f"peak memory growth from {lengths[0]} to the largest: {growth * 100:+.1f}% "
        f"(target within {report.SWEEP_TOLERANCE * 100:.0f}%: {'met' if verdict else 'MISSED'})"
    )
    typer.echo("\n".join(lines))
    document = {
        "kind": "sweep", "date": report.timestamp(), "machine": report.machine_info(rows[0]["device"]),
        "spec": _spec_fields(spec), "preset": preset_info(preset), "lengths": lengths, "rows": rows, "summary": summary,
    }
    _write_json(json_path, document)


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    preset: Annotated[PresetName, typer.Option(help="tiny: CI smoke run; small: scaled-down SD UNet at 256x256 (CPU, minutes); sd15: full SD 1.5 UNet at 512x512 (GPU).")] = PresetName.tiny,
    frames: Annotated[Optional[int], typer.Option(min=1, help="Video length in frames (default 16).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="DDIM steps, inversion and edit each (default: tiny 4, small 4, sd15 50).")] = None,
    size: Annotated[Optional[int], typer.Option(min=64, help="Frame size in pixels, square, multiple of 64 (default: tiny 128, small 256, sd15 512).")] = None,
    window: Annotated[Optional[int], typer.Option(min=1, help="Window of the optimized mode (default: the window planner; on CPU without --vram 8).")] = None,
    stride: Annotated[Optional[int], typer.Option(min=1, help="Stride of the optimized mode (default window/2).")] = None,
    vram: Annotated[Optional[str], typer.Option(help="Memory budget for the optimized mode's window planner, e.g. 24GB (default on CUDA: free memory).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")] = "auto",
    mode: Annotated[Optional[list[str]], typer.Option("--mode", help="Run only these modes, in this order: optimized, reference (default both).")] = None,
    frames_sweep: Annotated[Optional[str], typer.Option(help="Instead of comparing modes: the optimized mode at each of these lengths, e.g. 16,100,1000.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads in each run (default: torch's; use 1 on a busy machine).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights, latents and noise.")] = 0,
    refine: Annotated[bool, typer.Option("--refine/--no-refine", help="Official refinement at its steps, as `longedit edit` by default [on].")] = True,
    force: Annotated[bool, typer.Option("--force", help="Run sd15 on a CPU anyway.")] = False,
    in_process: Annotated[bool, typer.Option("--in-process", help="Run modes in this process (faster start; CPU peak RSS is then not per mode).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Optimized loop vs the official ReAtCo settings on a random SD-layout model: time per frame, peak memory, UNet forwards."""
    if ctx.invoked_subcommand is not None:
        return
    from longedit.bench.presets import PRESETS
    from longedit.bench.run import MODES, RunSpec

    chosen = PRESETS[preset.value]
    _check_device(chosen, device, force)
    picked = tuple(mode or MODES)
    unknown = [m for m in picked if m not in MODES]
    if unknown:
        raise UserError(f"unknown --mode {', '.join(unknown)}", f"use {' or '.join(MODES)}")
    size = size or chosen.size
    if size % 64:
        raise UserError(f"--size {size} is not a multiple of 64", "the UNet needs latents divisible by 8 (e.g. 64, 128, 256, 512)")
    if dtype not in ("auto", "fp32", "fp16", "bf16"):
        raise UserError(f"unknown --dtype '{dtype}'", "use auto, fp32, fp16 or bf16")
    if vram is not None:
        from longedit.planner import parse_size

        parse_size(vram)  # fail before any model is built
    spec = RunSpec(
        preset=chosen.name, mode=picked[0], frames=frames or chosen.frames, steps=steps or chosen.steps, size=size,
        device=device, dtype=dtype, window=window, stride=stride, seed=seed, progress=not quiet, vram=vram, threads=threads,
        refine=refine,
    )
    if frames_sweep is not None:
        _run_sweep(spec, parse_frames_list(frames_sweep), not in_process, json_path)
    else:
        _run_modes(spec, picked, not in_process, json_path)


@bench_app.command("backbones")
def backbones(
    preset: Annotated[PresetName, typer.Option(help="tiny: each backbone's tiny model (CPU); sd15: full architectures (GPU).")] = PresetName.tiny,
    frames: Annotated[int, typer.Option(min=1, help="Video length in frames.")] = 16,
    steps: Annotated[int, typer.Option(min=1, help="DDIM steps, inversion and edit each.")] = 2,
    size: Annotated[int, typer.Option(min=64, help="Frame size in pixels, square, multiple of 64.")] = 128,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows as JSON here.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run sd15 on a CPU anyway.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """The optimized loop on each backbone (sd, t2v, tuneavideo): one row per backbone."""
    from longedit.backbones.registry import KINDS
    from longedit.bench import report
    from longedit.bench.presets import PRESETS
    from longedit.bench.run import RunSpec, run_mode

    chosen = PRESETS[preset.value]
    _check_device(chosen, device, force)
    if size % 64:
        raise UserError(f"--size {size} is not a multiple of 64", "e.g. 64, 128, 256, 512")
    results = {}
    for kind in KINDS:
        spec = RunSpec(preset=chosen.name, mode="optimized", frames=frames, steps=steps, size=size, device=device,
                       progress=not quiet, backbone=kind)
        results[kind] = run_mode(spec)
    first = next(iter(results.values()))
    typer.echo(f"optimized loop per backbone, {frames} frames, {steps} steps, {size}x{size}, {first['device']} {first['dtype']}")
    typer.echo(report.modes_table(results, label="backbone"))
    _write_json(json_path, {"kind": "backbones", "date": report.timestamp(), "machine": report.machine_info(first["device"]),
                            "rows": results})


@bench_app.command("kernel")
def kernel(
    shapes: Annotated[KernelShapes, typer.Option(help="sd15: SD 1.5 at 512x512, 16 frames (16x16 and 32x32 levels); tiny: small shapes for a smoke run.")] = KernelShapes.sd15,
    repeats: Annotated[int, typer.Option(min=1, help="Timed forward + backward runs per backend (median reported).")] = 20,
    device: Annotated[Optional[str], typer.Option(help="cuda or cpu (default cuda when available).")] = None,
    dtype: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")] = "auto",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows as JSON here.")] = None,
) -> None:
    """The fused word-attention op against the eager reference: speed ratio and memory saved."""
    import torch

    from longedit.bench import report
    from longedit.kernels.benchmark import benchmark_word_attention
    from longedit.planner import format_bytes

    table = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise UserError(f"unknown --dtype '{dtype}'", "use auto, fp32, fp16 or bf16")
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for but CUDA is not available", "use --device cpu")
    rows = benchmark_word_attention(
        shapes=TINY_KERNEL_SHAPES if shapes is KernelShapes.tiny else None, repeats=repeats, device=device, dtype=table[dtype],
    )
    header = ["shape B,H,Q,D,T,C", "backend", "fused ms", "eager ms", "speedup", "fused saved", "eager saved", "memory saved"]
    lines = []
    for r in rows:
        s = r["shape"]
        saved = r["reference_saved_bytes"] - r["fused_saved_bytes"]
        if "fused_peak_bytes" in r:
            saved = r["reference_peak_bytes"] - r["fused_peak_bytes"]
        lines.append([
            ",".join(str(s[k]) for k in ("B", "H", "Q", "D", "T", "C")), r["backend_fused"], f"{r['fused_ms']:.3f}",
            f"{r['reference_ms']:.3f}", f"{r['speedup']:.2f}x", format_bytes(r["fused_saved_bytes"]),
            format_bytes(r["reference_saved_bytes"]), f"{format_bytes(saved)} ({r['memory_ratio']:.1f}x less, {r['memory_metric']})",
        ])
    typer.echo(f"word-attention maps, forward + backward, {rows[0]['device']} {rows[0]['dtype']}, median of {repeats}")
    typer.echo(report.text_table(header, lines))
    notes = {r["note"] for r in rows if "note" in r}
    for note in notes:
        typer.echo(f"note: {note}")
    _write_json(json_path, {"kind": "kernel", "date": report.timestamp(), "machine": report.machine_info(rows[0]["device"]), "rows": rows})


class SimulatedSettings(str, Enum):
    both = "both"
    optimized = "optimized"
    official = "official"


class SimulatedDtype(str, Enum):
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


@bench_app.command("memory")
def memory(
    preset: Annotated[PresetName, typer.Option(help="Model: sd15 (full SD 1.5 at 512x512, built on the meta device), small, tiny.")] = PresetName.sd15,
    window: Annotated[int, typer.Option(min=1, max=64, help="Frames in the window.")] = 16,
    dtype: Annotated[SimulatedDtype, typer.Option(help="UNet and text encoder precision on the simulated GPU (the VAE stays fp32, as in a run).")] = SimulatedDtype.float16,
    settings: Annotated[SimulatedSettings, typer.Option(help="optimized (longedit on CUDA), official (ReAtCo's settings), or both.")] = SimulatedSettings.both,
    size: Annotated[Optional[int], typer.Option(min=64, help="Frame size in pixels, square, multiple of 64 (default: the preset's).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
) -> None:
    """Simulated GPU memory and FLOPs of one window of an edit step at real size, on fake tensors (seconds, no GPU).

    The product's own code (guided pass with refinement, IRJS, CFG forward, one inversion forward, VAE
    encode/decode of the window's frames, models resident) runs on FakeTensorMode tensors under a byte
    tracker and FlopCounterMode; see longedit/bench/simulate.py for what it counts and what it does not.
    """
    from longedit.bench.presets import PRESETS
    from longedit.bench.simulate import SETTINGS, simulate_preset
    from longedit.planner import format_bytes

    size = size or PRESETS[preset.value].size
    if size % 64:
        raise UserError(f"--size {size} is not a multiple of 64", "the UNet needs latents divisible by 8 (e.g. 256, 512)")
    names = SETTINGS if settings is SimulatedSettings.both else (settings.value,)
    results = {name: simulate_preset(preset.value, window, dtype.value, name, size=size) for name in names}
    for name, result in results.items():
        phases = ", ".join(f"{phase} {format_bytes(v['peak_bytes'])}" for phase, v in result["by_phase"].items())
        typer.echo(f"{preset.value} window {window} {dtype.value} {name}: peak {format_bytes(result['peak_bytes'])} "
                   f"(in {result['peak_phase']}; weights {format_bytes(result['resident_bytes'])}); {phases}; "
                   f"{result['flops']['total'] / 1e12:.2f} TFLOP; {result['seconds']:.0f} s")
    document = results[names[0]] if len(names) == 1 else {**results["optimized"], "official": results["official"]}
    _write_json(json_path, document)


def register(app: typer.Typer) -> None:
    """Add `longedit bench` (and `longedit bench kernel`) to the app."""
    if not any(group.name == "bench" for group in app.registered_groups):
        app.add_typer(bench_app, name="bench")
