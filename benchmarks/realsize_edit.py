"""A real-size edit end to end on the CPU: a random-weights SD 1.5 folder, a 512x512 clip, `longedit edit --model DIR`.

    python benchmarks/realsize_edit.py                      # sd15, 4 frames, 512x512, 2 steps, window 4 (minutes, ~10 GB)
    python benchmarks/realsize_edit.py --preset small --size 256   # the plumbing in seconds

The model folder is written by the project (`save_pretrained` of `random_models`' components of the
preset, in a temporary folder that is removed afterwards: 4.3 GB for sd15, never committed); the edit
runs as a user runs it, in its own process, through the same `from_pretrained` loading a downloaded SD
1.5 takes. The prompts use the random tokenizer's words. Prints one JSON line: wall time, the child's
peak RSS, the report's timings, whether the video was written.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from longedit.backbones.registry import backbone_kind
from longedit.bench.presets import PRESETS
from longedit.random_models import build_random_components
from longedit.samples import make_clip


def write_model(preset: str, folder: Path) -> Path:
    """The preset's random components as a diffusers SD folder (fp32 safetensors)."""
    components = build_random_components("sd", PRESETS[preset].model, torch.device("cpu"), seed=0)
    return backbone_kind("sd").save_folder(components, folder, True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sd15", choices=("sd15", "small"))
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--preset-loop", default="fast", choices=("fast", "paper"),
                        help="fast: no refinement (each of its up to 20 iterations is a full-size guided pass, minutes on a CPU)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="longedit-realsize-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        model = write_model(args.preset, folder / "model")
        written_s = time.perf_counter() - started
        clip = folder / "clip.mp4"
        make_clip(clip, frames=args.frames, width=args.size, height=args.size, fps=Fraction(24), seed=0)
        box = f"{args.size // 4},{args.size // 4},{3 * args.size // 4},{3 * args.size // 4}"
        output, report = folder / "edited.mp4", folder / "report.json"
        command = [
            sys.executable, "-c", "import sys; from longedit.cli import main; sys.exit(main())", "edit", str(clip),
            "-o", str(output), "--source-prompt", "a car on a road", "--prompt", "a robot on a road",
            "--object", f"robot={box}", "--model", str(model), "--steps", str(args.steps), "--window", str(args.window),
            "--size", str(args.size), "--preset", args.preset_loop, "--device", "cpu", "--report", str(report), "--quiet",
        ]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        edit_s = time.perf_counter() - started
        result = {
            "preset": args.preset, "frames": args.frames, "size": args.size, "steps": args.steps, "window": args.window,
            "loop_preset": args.preset_loop, "exit_code": completed.returncode, "model_write_s": round(written_s, 1),
            "edit_wall_s": round(edit_s, 1), "child_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
            "output_written": output.is_file() and output.stat().st_size > 0,
            "stderr_tail": completed.stderr.strip().splitlines()[-3:],
        }
        if report.is_file():
            data = json.loads(report.read_text())
            result["report_timing"] = data.get("timing")
            result["report_memory"] = data.get("memory")
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if completed.returncode == 0 and result["output_written"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
