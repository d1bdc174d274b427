"""What the shared inversion cache saves: 4 prompts on one clip through `longedit run`, with and without it.

Writes a synthetic clip and four job files (one clip, four edited prompts, as the paper edits each
video), runs `longedit run` on them twice, `--no-cache` and with the cache starting empty, and prints
per job the UNet forwards (the report's count), the inversion's time and the job's time, and the wall
and CPU time (user + system, of the child process) of each whole command. On a shared machine the CPU
time is the steadier of the two. Example (the numbers in benchmarks/RESULTS.md):

    python benchmarks/shared_inversion.py --out /tmp/shared-inversion --frames 16 --size 64 --steps 20 --window 8
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import yaml

WORDS = ("robot", "dog", "cat", "bear")
SOURCE = "a man talking on a phone in a car"


def write_jobs(folder: Path, frames: int, size: int, steps: int, window: int, model: str, preset: str) -> list[Path]:
    """The clip and one job file per word of WORDS."""
    from longedit.samples import make_clip

    folder.mkdir(parents=True, exist_ok=True)
    make_clip(folder / "clip.mp4", frames=frames, width=size, height=size, fps=Fraction(24))
    box = [size // 8, size // 8, size * 5 // 8, size * 5 // 8]
    files = []
    for word in WORDS:
        job = {
            "input": "clip.mp4", "output": f"out/{word}.mp4", "report": f"out/{word}.json", "model": model,
            "source_prompt": SOURCE, "prompt": SOURCE.replace("man", word), "objects": [{"word": word, "box": box}],
            "steps": steps, "size": size, "window": window, "preset": preset,
        }
        path = folder / f"{word}.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
        files.append(path)
    (folder / "out").mkdir(exist_ok=True)
    return files


def run(folder: Path, files: list[Path], cache: bool) -> dict:
    """`longedit run` on the files; the wall time of the command and each job's report."""
    command = [sys.executable, "-m", "longedit.cli", "run", "--quiet", *(["--cache"] if cache else ["--no-cache"]), *map(str, files)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=folder)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    reports = {f.stem: json.loads((folder / "out" / f"{f.stem}.json").read_text()) for f in files}
    return {"command": " ".join(["longedit", *command[3:]]), "wall_s": wall, "cpu_s": cpu, "reports": reports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (emptied first)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--preset", default="paper", choices=("paper", "fast"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    rows = {}
    for cache in (False, True):
        folder = args.out / ("cache" if cache else "no-cache")
        files = write_jobs(folder, args.frames, args.size, args.steps, args.window, args.model, args.preset)
        rows[cache] = run(folder, files, cache)
    for cache, result in rows.items():
        print(f"{'with' if cache else 'without'} cache: `{result['command']}` wall {result['wall_s']:.1f} s, "
              f"CPU {result['cpu_s']:.1f} s")
        total = 0
        for word, report in result["reports"].items():
            total += report["unet_forwards"]
            timing = report["timing"]
            print(f"  {word}: {report['unet_forwards']} UNet forwards, inversion {timing['inversion_s']:.2f} s, "
                  f"key {timing.get('cache_key_s', 0):.2f} s, job {timing['total_s']:.1f} s, "
                  f"cache {report['inversion']['cache']['state']}, windows {len(report['windows'])}")
        print(f"  total {total} UNet forwards")
    same = all(rows[True]["reports"][w]["latent_checksum"] == rows[False]["reports"][w]["latent_checksum"] for w in WORDS)
    print(f"edited latents identical with and without the cache: {same}")


if __name__ == "__main__":
    main()
