"""Check the window planner's linear cost model against measurements at larger windows.

Probes a bench preset at the planner's lengths (2 and 4 frames), fits memory = fixed + per_frame * L,
then measures the same passes (RAD guided update + CFG forward) at `--check` lengths and prints
predicted vs measured peaks, and the window the planner would pick for a few budgets.

    python benchmarks/planner_check.py --preset small --check 8,16
    python benchmarks/planner_check.py --preset sd15 --device cuda --check 8,16,32   # on a GPU

Memory is the CUDA allocator peak on CUDA, else the tensor tracker's peak plus the resident weights.
"""

from __future__ import annotations

import argparse

import torch

from longedit.bench.presets import PRESETS, build_backbone
from longedit.bench.run import PROMPT, SOURCE_PROMPT, WORD, mode_settings
from longedit.errors import UserError
from longedit.models import resolve_device, resolve_dtype
from longedit.planner import PROBE_LENGTHS, format_bytes, plan_window, probe_window_costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--check", default="8,16", help="window lengths to measure against the prediction")
    parser.add_argument("--budgets", default="1GB,2GB,4GB,24GB", help="budgets to plan for")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    device = resolve_device(args.device)
    backbone = build_backbone(preset, device, resolve_dtype(args.dtype, device))
    settings = mode_settings("optimized", 50)
    side = preset.size // 8

    def probe(lengths):
        return probe_window_costs(backbone, settings, SOURCE_PROMPT, PROMPT, [WORD], side, side, lengths)

    fitted = probe(PROBE_LENGTHS)
    cost = fitted.cost_model()
    print(f"{preset.name} at {preset.size}x{preset.size}, {device}: probe {fitted.metric} at {list(fitted.lengths)} "
          f"in {fitted.seconds:.1f} s -> fixed {format_bytes(cost.fixed_bytes)} (weights {format_bytes(fitted.resident_bytes)}), "
          f"per frame {format_bytes(cost.per_frame_bytes)}")
    checks = [int(x) for x in args.check.split(",")]
    measured = probe(checks)
    for length, peak in zip(checks, measured.peaks):
        actual = peak + measured.resident_bytes
        predicted = cost.bytes_for(length)
        print(f"  L={length:>2}: predicted {format_bytes(predicted)}, measured {format_bytes(actual)} "
              f"(prediction / measured = {predicted / actual:.3f})")
    for budget in args.budgets.split(","):
        try:
            plan = plan_window(frames=1000, device=device, vram=budget, probe=lambda lengths: fitted)
            print(f"  --vram {budget}: window {plan.length}, stride {plan.stride}")
        except UserError as error:
            print(f"  --vram {budget}: {error}")


if __name__ == "__main__":
    main()
