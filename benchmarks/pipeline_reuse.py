"""What keeping the model loaded saves: `LongEditPipeline` calls vs `run_edit` (which loads the model each time).

Renders the demo's toy clip, then times, in one process: `run_edit` of the edit twice (load + edit, what one
`longedit edit` does; the first pays the process's one-time imports and warm-up), `LongEditPipeline.from_pretrained`, the pipeline's first call and its second
call (another seed: the sweep a notebook does). Each line gives wall and CPU (user + system of this
process) seconds; on a shared machine CPU time is the steadier. Example (the numbers in RESULTS.md):

    python benchmarks/pipeline_reuse.py --model toy --frames 8 --steps 10 --size 128
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def timed(label: str, action):
    wall, cpu = time.perf_counter(), sum(os.times()[:2])
    result = action()
    print(f"{label:46s} wall {time.perf_counter() - wall:7.2f} s   cpu {sum(os.times()[:2]) - cpu:7.2f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    import numpy as np

    from longedit import LongEditPipeline
    from longedit.config import EditJob
    from longedit.engine import run_edit
    from longedit.toyworld.demo_clip import demo_edit
    from longedit.toyworld.render import write_clip

    toy = demo_edit(frames=args.frames, size=args.size)
    folder = Path(tempfile.mkdtemp(prefix="pipeline-reuse-"))
    clip = write_clip(toy.clip, folder / "toy.mp4")
    settings = {"steps": args.steps, "size": args.size, "window": min(8, args.frames)}
    objects = {"square": [(toy.boxes[0], 0), (toy.boxes[-1], args.frames - 1)]}
    prompts = {"source_prompt": toy.source_prompt, "prompt": toy.prompt}
    print(f"{args.model}: {args.frames} frames, {args.size}x{args.size}, {args.steps} steps, window {settings['window']}")
    job = EditJob(input=clip, output=folder / "cli.mp4", model=args.model, device="cpu", **prompts, **settings,
                  objects=[{"word": "square", "keyframes": {f: b for b, f in objects["square"]}}])
    for call in ("first (cold process)", "second"):
        timed(f"run_edit {call}, loads the model", lambda: run_edit(job, progress=False))
    pipe = timed("LongEditPipeline.from_pretrained", lambda: LongEditPipeline.from_pretrained(args.model, device="cpu"))
    video = np.stack(toy.clip.frames)
    for call, seed in (("first", 0), ("second", 1)):
        timed(f"pipe(...) {call} call (seed {seed})",
              lambda: pipe(video=video, objects=objects, seed=seed, progress=False, **prompts, **settings))


if __name__ == "__main__":
    main()
