"""Simulated GPU memory and FLOPs of SD 1.5 at 512x512 (fake tensors, `longedit.bench.simulate`), checked
against exact CPU runs of the same ops, and the FLOPs per edited frame they imply.

    python benchmarks/simulate_table.py table  --json benchmarks/results/simulate-sd15.json   # ~5 min
    python benchmarks/simulate_table.py check  --preset small --window 4                        # fake vs real CPU
    python benchmarks/simulate_table.py flops  benchmarks/results/simulate-sd15.json
    python benchmarks/simulate_table.py plan   benchmarks/results/simulate-sd15.json --budgets 12GB,16GB,24GB

`table`: windows 4/8/16/32 x optimized/official, fp16 peak, phases, the layers at the peak.
`check`: the same preset and ops in fp32 on fake tensors and for real on the CPU (no allocator rounding).
`flops`: FLOPs per edited frame of a long video (inversion, guided passes, refinement, CFG, VAE) for the
official ReAtCo settings (window 4, stride 1, RAD at every step) and longedit's defaults on CUDA (window 16,
stride 8, RAD on the first 25 steps), and the lower bound in seconds per frame they imply on an RTX 4090
(165 dense fp16 TFLOP/s) and an H100 SXM (989).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from longedit.bench.simulate import simulate_preset

GIB = 2**30
PEAK_TFLOPS = {"RTX 4090": 165.0, "H100 SXM": 989.0}
STEPS = 50
REFINEMENT_STEPS = 3  # {0, 10, 20} of 50
MAX_REFINEMENTS = 20
#: (window, stride, RAD steps) per setting: the bench's `reference` mode and the product on CUDA
LOOPS = {"official": (4, 1, 50), "optimized": (16, 8, 25)}


def table(json_path: Path | None, windows: list[int]) -> dict:
    rows = {}
    for setting in ("optimized", "official"):
        for window in windows:
            result = simulate_preset("sd15", window, "float16", setting)
            rows[f"{setting}-{window}"] = result
            phases = {k: round(v["peak_bytes"] / GIB, 2) for k, v in result["by_phase"].items()}
            print(f"{setting:9s} L={window:2d}: peak {result['peak_bytes'] / GIB:6.2f} GiB in {result['peak_phase']:10s} "
                  f"{phases}  ({result['seconds']:.0f} s)", flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1))
    return rows


def check(preset: str, window: int, size: int | None, settings: list[str]) -> int:
    worst = 0.0
    for setting in settings:
        kwargs = dict(preset=preset, window=window, dtype="float32", setting=setting, size=size, round_to=1)
        fake = simulate_preset(fake=True, **kwargs)
        real = simulate_preset(fake=False, **kwargs)
        for phase in fake["by_phase"]:
            a, b = fake["by_phase"][phase]["peak_bytes"], real["by_phase"][phase]["peak_bytes"]
            worst = max(worst, abs(a - b) / b)
            print(f"{preset} L={window} {setting:9s} {phase:10s} fake {a:>14,d}  real {b:>14,d}  diff {100 * (a - b) / b:+.3f}%")
        print(f"{preset} L={window} {setting:9s} peak fake {fake['peak_bytes']:,d} real {real['peak_bytes']:,d} "
              f"({fake['seconds']:.0f} s fake, {real['seconds']:.0f} s real)", flush=True)
    print(f"largest difference: {100 * worst:.3f}%")
    return 0 if worst <= 0.05 else 1


def flops_per_frame(result: dict, setting: str) -> dict:
    """FLOPs per edited frame of a long video from one simulated window (see the module docstring)."""
    window, stride, rad_steps = LOOPS[setting]
    per_frame = result["flops"]
    coverage = window / stride  # windows each frame is in, per step
    guided_pass = per_frame["guided"] / result["by_phase"]["guided"]["calls"]
    chunk = min(window, 8)
    parts = {
        "inversion": STEPS * coverage * per_frame["inversion"] / window,
        "guided": rad_steps * coverage * guided_pass / window,
        "refinement_max": REFINEMENT_STEPS * MAX_REFINEMENTS * coverage * guided_pass / window,
        "cfg": STEPS * coverage * per_frame["cfg"] / window,
        "vae": (per_frame["vae_encode"] + per_frame["vae_decode"]) / chunk,
    }
    parts["total_without_refinement"] = sum(v for k, v in parts.items() if k != "refinement_max")
    parts["total_with_max_refinement"] = parts["total_without_refinement"] + parts["refinement_max"]
    return parts


def flops(json_path: Path) -> None:
    rows = json.loads(json_path.read_text())
    for setting, (window, stride, rad_steps) in LOOPS.items():
        result = rows[f"{setting}-{window}"]
        parts = flops_per_frame(result, setting)
        print(f"{setting} (window {window}, stride {stride}, RAD {rad_steps} of {STEPS} steps), TFLOP per frame:")
        for name, value in parts.items():
            print(f"  {name:26s} {value / 1e12:9.2f}")
        for card, peak in PEAK_TFLOPS.items():
            low, high = parts["total_without_refinement"], parts["total_with_max_refinement"]
            print(f"  floor on {card} ({peak:g} TFLOP/s): {low / peak / 1e12:.2f} s/frame "
                  f"({high / peak / 1e12:.2f} s with 20 refinements at each of 3 steps)")


def plan(json_path: Path, budgets: list[str]) -> None:
    """The window `longedit validate` (longedit.gpu_plan) picks per budget, from the table's L=4 and L=8 rows:
    the same line through the UNet phases' peaks, 1 GiB reserve, 10% headroom, VAE chunk checked."""
    from longedit.gpu_plan import CUDA_RESERVE_BYTES, SIMULATED_PROBE_LENGTHS
    from longedit.planner import HEADROOM, fit_costs, largest_window, parse_size

    rows = json.loads(json_path.read_text())
    for setting in ("optimized", "official"):
        unet = [max(rows[f"{setting}-{n}"]["by_phase"][p]["peak_bytes"] for p in ("inversion", "edit_step"))
                for n in SIMULATED_PROBE_LENGTHS]
        vae = rows[f"{setting}-8"]["by_phase"]["vae_decode"]["peak_bytes"]
        cost = fit_costs(SIMULATED_PROBE_LENGTHS, unet)
        for budget in budgets:
            usable = parse_size(budget) - CUDA_RESERVE_BYTES
            try:
                length = largest_window(cost, usable, frames=1000)
            except Exception as error:  # UserError: not even 4 frames fit
                print(f"{setting:9s} {budget}: none ({error})")
                continue
            vae_ok = vae <= HEADROOM * usable
            print(f"{setting:9s} {budget}: window {length} ({cost.bytes_for(length) / GIB:.2f} GiB predicted; "
                  f"VAE chunk {vae / GIB:.2f} GiB {'fits' if vae_ok else 'does NOT fit'})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("table")
    t.add_argument("--json", type=Path)
    t.add_argument("--windows", default="4,8,16,32")
    c = sub.add_parser("check")
    c.add_argument("--preset", default="small")
    c.add_argument("--window", type=int, default=4)
    c.add_argument("--size", type=int)
    c.add_argument("--settings", default="official,optimized", help="optimized's real CPU run takes the eager maps, not the fused op")
    f = sub.add_parser("flops")
    f.add_argument("json", type=Path)
    pl = sub.add_parser("plan")
    pl.add_argument("json", type=Path)
    pl.add_argument("--budgets", default="12GB,16GB,24GB")
    args = parser.parse_args(argv)
    if args.what == "table":
        table(args.json, [int(w) for w in args.windows.split(",")])
    elif args.what == "check":
        return check(args.preset, args.window, args.size, args.settings.split(","))
    elif args.what == "plan":
        plan(args.json, args.budgets.split(","))
    else:
        flops(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
