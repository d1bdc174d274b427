"""Tables, targets and the JSON document of `longedit bench` (formatting only, no measuring)."""

from __future__ import annotations

import datetime
import os
import platform

import torch

from longedit.planner import format_bytes

SPEEDUP_TARGET = 2.0  # optimized at least 2x faster per frame than the reference settings
SWEEP_TOLERANCE = 0.10  # peak memory at the longest video within 10% of the shortest


def machine_info(device: str) -> dict:
    """Where the numbers were taken (goes into the JSON next to them)."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(index).total_memory
    return info


def timestamp() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _bytes(value: int | None) -> str:
    return "-" if value is None else format_bytes(value)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def modes_table(results: dict[str, dict], label: str = "mode") -> str:
    """One row per mode: window, forwards, time per frame, peak memory, guided-pass tensor bytes."""
    any_result = next(iter(results.values()))
    cuda = any_result.get("peak_vram_bytes") is not None
    header = [label, "window", "stride", "windows", "UNet fwd", "s/frame", "cpu s/frame", "peak VRAM" if cuda else "peak RSS"]
    header += [] if cuda else ["loop RSS"]
    header += ["guided-pass peak", "saved for bwd"]
    rows = []
    for name, r in results.items():
        row = [name, str(r["window"]), str(r["stride"]), str(r["windows"]), str(r["unet_forwards"]),
               f"{r['seconds_per_frame']:.3f}", f"{r['cpu_seconds_per_frame']:.3f}",
               _bytes(r["peak_vram_bytes"] if cuda else r["peak_rss_bytes"])]
        row += [] if cuda else [_bytes(r["loop_rss_bytes"])]
        row += [_bytes(r["guided_pass_tensor_peak_bytes"]), _bytes(r["guided_pass_saved_bytes"])]
        rows.append(row)
    return text_table(header, rows)


def targets(ratio: dict) -> dict:
    """The issue's targets for the optimized mode against the reference settings."""
    speedup, memory = ratio.get("speedup"), ratio.get("peak_memory")
    verdicts = {f"speedup_at_least_{SPEEDUP_TARGET:g}x": None if speedup is None else speedup >= SPEEDUP_TARGET}
    if ratio.get("memory_metric") == "peak_rss_bytes":  # CPU: CPU time is the steadier clock on a shared machine
        cpu = ratio.get("cpu_speedup")
        verdicts[f"cpu_time_speedup_at_least_{SPEEDUP_TARGET:g}x"] = None if cpu is None else cpu >= SPEEDUP_TARGET
    verdicts["peak_memory_not_higher"] = None if memory is None else memory <= 1.0
    return verdicts


def ratio_lines(ratio: dict) -> list[str]:
    def fmt(value: float | None, suffix: str = "x") -> str:
        return "n/a" if value is None else f"{value:.2f}{suffix}"

    memory_name = "peak VRAM" if ratio["memory_metric"] == "peak_vram_bytes" else "peak RSS"
    lines = [
        f"optimized/reference: time per frame {fmt(ratio['seconds_per_frame'])} (speedup {fmt(ratio['speedup'])}; "
        f"CPU time {fmt(ratio['cpu_seconds_per_frame'])}, speedup {fmt(ratio['cpu_speedup'])}), "
        f"{memory_name} {fmt(ratio['peak_memory'])}, guided-pass tensor peak {fmt(ratio['guided_pass_tensor_peak'])}, "
        f"UNet forwards {fmt(ratio['unet_forwards'])}"
    ]
    verdicts = targets(ratio)
    lines.append("targets: " + ", ".join(f"{k}: {'n/a' if v is None else ('met' if v else 'MISSED')}" for k, v in verdicts.items()))
    return lines


def sweep_table(rows: list[dict]) -> str:
    cuda = rows[0].get("peak_vram_bytes") is not None
    key = "peak_vram_bytes" if cuda else "peak_rss_bytes"
    first = rows[0][key]
    header = ["frames", "window", "windows", "s/frame", "peak VRAM" if cuda else "peak RSS", "vs first"]
    header += [] if cuda else ["loop RSS"]
    table = []
    for r in rows:
        row = [str(r["frames"]), str(r["window"]), str(r["windows"]), f"{r['seconds_per_frame']:.3f}", _bytes(r[key]),
               f"{r[key] / first:.3f}x" if first else "n/a"]
        row += [] if cuda else [_bytes(r["loop_rss_bytes"])]
        table.append(row)
    return text_table(header, table)


def sweep_summary(rows: list[dict]) -> dict:
    """Largest peak over the first length's peak, and whether it stays within SWEEP_TOLERANCE."""
    key = "peak_vram_bytes" if rows[0].get("peak_vram_bytes") is not None else "peak_rss_bytes"
    first = rows[0][key]
    worst = max(r[key] for r in rows)
    growth = worst / first - 1 if first else None
    return {
        "memory_metric": key,
        "max_growth_vs_first": growth,
        f"within_{int(SWEEP_TOLERANCE * 100)}_percent": None if growth is None else growth <= SWEEP_TOLERANCE,
        "loop_rss_bytes": [r.get("loop_rss_bytes") for r in rows],
    }
