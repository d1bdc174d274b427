"""Long measurements moved out of the test suite (issue 22 family 8): each took minutes of CI for one figure.

The tests keep each property fast (fewer frames, a slope instead of a long run); these scripts measure it
at full length and print the figures recorded in benchmarks/RESULTS.md ("Long runs moved out of the tests").

    python benchmarks/long_runs.py segmentation-memory   # SAM2 tracking, 2,000 frames vs their first 200
    python benchmarks/long_runs.py fatezero-1000         # `longedit edit --method fatezero` of 1,000 frames

Both run on the CPU with one torch thread, on the tiny random models (no download).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch


def random_frames(count: int, size: int = 64, seed: int = 0):
    """Work-size random frames (what tests/test_segmentation.py feeds the tracker)."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        frame[0, 0, 0] = index % 256
        yield frame


def segmentation_memory(frames: int = 2000, short: int = 200, chunk: int = 64) -> dict:
    """One `frames`-frame tracking run; its first `short` frames are exactly a `short`-frame run. Peaks of the
    session's tensor bytes (every frame) and of the Python heap after gc (every 100 frames), both parts."""
    from longedit.segmentation import HFSam2Backend, Prompt, build_random_sam2, load_sam2_model, track_stream

    with tempfile.TemporaryDirectory() as folder:
        model = load_sam2_model(str(build_random_sam2(Path(folder))), local_files_only=True)
    backend = HFSam2Backend(model, torch.device("cpu"))
    peaks = {"short": {"heap": 0, "tensors": 0}, "long": {"heap": 0, "tensors": 0}}
    prompts = {0: [Prompt(1, box=(10, 10, 40, 40))]}
    started = time.perf_counter()
    tracemalloc.start()
    try:
        for step in track_stream(backend, random_frames(frames), prompts, chunk=chunk):
            parts = [peaks["long"]] if step.position >= short else [peaks["short"], peaks["long"]]
            footprint = backend.footprint()
            tensors = footprint.tensor_bytes if footprint is not None else 0
            heap = None
            if step.position % 100 == 99:
                gc.collect()
                heap = tracemalloc.get_traced_memory()[0]
            for part in parts:
                part["tensors"] = max(part["tensors"], tensors)
                if heap is not None:
                    part["heap"] = max(part["heap"], heap)
    finally:
        tracemalloc.stop()
    return {
        "frames": frames, "short_frames": short, "chunk": chunk, "seconds": round(time.perf_counter() - started, 1), **peaks,
        "tensor_ratio": peaks["long"]["tensors"] / max(1, peaks["short"]["tensors"]),
        "heap_growth_bytes": peaks["long"]["heap"] - peaks["short"]["heap"],
        "target": "tensors <= 1.2x, heap <= 1.2x + 256 KiB (a leaked 64x64 mask per frame would add ~7 MB)",
    }


def fatezero_1000(frames: int = 1000) -> dict:
    """`longedit edit --method fatezero` of a `frames`-frame 64x64 clip with a 100 MB fusion budget: which source
    the planner picks and the fusion data per frame."""
    from longedit.cli import main
    from longedit.samples import make_clip

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clip = make_clip(folder / "long.mp4", frames=frames, width=64, height=64).path
        report_path = folder / "report.json"
        started = time.perf_counter()
        code = main([
            "edit", str(clip), "-o", str(folder / "out.mp4"), "--model", "tiny", "--quiet", "--method", "fatezero",
            "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road", "--steps", "2",
            "--size", "64", "--window", "16", "--stride", "16", "--fuse-disk-budget", "100MB", "--report", str(report_path),
        ])
        seconds = time.perf_counter() - started
        report = json.loads(report_path.read_text()) if code == 0 else {}
    fusion = report.get("fatezero") or {}
    return {
        "exit_code": code, "frames": report.get("frames"), "seconds": round(seconds, 1), "source": fusion.get("source"),
        "store_bytes_per_frame": (fusion.get("modes") or {}).get("store", {}).get("disk_bytes_per_frame"),
        "recompute_bytes_per_frame": fusion.get("disk_bytes_per_frame"), "disk_bytes": fusion.get("disk_bytes"),
        "target": "recompute chosen (the store would exceed 100 MB), under 1 MB of fusion data per frame",
    }


MEASUREMENTS = {"segmentation-memory": segmentation_memory, "fatezero-1000": fatezero_1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurement", choices=sorted(MEASUREMENTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads [1, as CI's workers]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(MEASUREMENTS[args.measurement](), indent=2))


if __name__ == "__main__":
    main()
