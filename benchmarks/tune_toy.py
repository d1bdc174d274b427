"""Does one-shot tuning change the edits of the toy model? The demo edit with and without Tune-A-Video tuning.

    python benchmarks/tune_toy.py --out /tmp/tune-toy [--steps 200] [--lr 3e-5] [--edit-steps 15]

Renders the demo's toy clip (a red circle crossing grass, 16 frames, 128x128), then edits it
("a red circle on grass" -> "a blue square on grass", the square keyframed along the circle's path, as
`longedit demo`) with three backbones made from the trained toy model:

* `toy`: the toy model itself (SD layout; sparse-causal cross-frame attention only);
* `tav-init`: Tune-A-Video's temporal layers at TAV's init (attn_temp output weights zero) and clip-wise
  GroupNorms, not tuned: separates what the architecture changes from what tuning changes;
* `tav-tuned`: `longedit tune` on the clip with the source prompt (official settings but 128 px).

Per variant: temporal MAD inside and outside the regions, relative to the source's own frame-to-frame
change (`longedit eval`, weights-free), the share of frames with a blue square (or anything blue)
inside its region (the toy detector) and background PSNR; one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import torch

from longedit.config import EditJob, TuneSettings, parse_object_args


def tav_at_init(folder: Path, seed: int) -> Path:
    """The toy model with TAV's temporal layers at their init, written as a TAV folder (0 steps of tuning)."""
    from longedit.models import load_components
    from longedit.tune.trainer import build_tuneavideo_unet, write_tuned_folder

    if folder.exists():
        return folder
    components = load_components("toy")
    unet = build_tuneavideo_unet(components, seed)
    return write_tuned_folder(components, unet, folder, {"base_model": "toy", "settings": {"steps": 0}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200, help="tuning steps")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--edit-steps", type=int, default=15)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", default="toy,tav-init,tav-tuned")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from longedit.engine import run_edit
    from longedit.toyworld.demo_clip import demo_edit
    from longedit.toyworld.render import write_clip
    from longedit.toyworld.scoring import background_psnr, placement_share
    from longedit.tune.trainer import tune_clip
    from longedit.video import iter_frames

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    demo = demo_edit(frames=args.frames)
    clip = write_clip(demo.clip, out / "toy.mp4", fps=Fraction(8))
    settings = TuneSettings(steps=args.steps, lr=args.lr, frames=args.frames, size=128)
    models = {"toy": "toy", "tav-init": None, "tav-tuned": None}
    tune_info = None
    for name in args.variants.split(","):
        started = time.perf_counter()
        if name == "tav-init":
            models[name] = str(tav_at_init(out / "tav-init", settings.seed))
        elif name == "tav-tuned":
            folder = out / f"tav-tuned-{args.steps}-{args.lr:g}"
            if not folder.exists():
                tune_info = tune_clip(clip, demo.source_prompt, folder, settings, model="toy", work_dir=out / "tune-work", progress=False)
            tune_info = tune_info or json.loads((folder / "tune_info.json").read_text())
            models[name] = str(folder)
            print(f"tuned in {time.perf_counter() - started:.0f} s: loss on fixed draws "
                  f"{tune_info['loss']['fixed_before']:.4f} -> {tune_info['loss']['fixed_after']:.4f}", flush=True)
        job = EditJob(
            input=clip, output=out / f"edit-{name}.mp4", report=out / f"edit-{name}.json", model=models[name],
            source_prompt=demo.source_prompt, prompt=demo.prompt, steps=args.edit_steps, size=128, window=8, stride=4,
            objects=parse_object_args(demo.object_args()), eval=True,
        )
        started = time.perf_counter()
        report = run_edit(job, progress=False)
        frames, sources = list(iter_frames(job.output)), list(iter_frames(clip))
        temporal = report["eval"]["temporal"]
        row = {
            "variant": name, "model": models[name], "edit_s": round(time.perf_counter() - started, 1),
            "temporal_inside": temporal["inside"]["value"], "temporal_inside_relative": temporal["inside"]["relative"],
            "temporal_outside": temporal["outside"]["value"], "temporal_outside_relative": temporal["outside"]["relative"],
            "square_in_region": placement_share(frames, demo.boxes, demo.colour, demo.shape),
            "blue_in_region": placement_share(frames, demo.boxes, demo.colour, None),
            "background_psnr_db": background_psnr(frames, sources, demo.boxes),
            "tune": None if name != "tav-tuned" else {k: tune_info["loss"][k] for k in ("fixed_before", "fixed_after")}
            | {"steps": args.steps, "lr": args.lr, "train_s": tune_info["timing"]["train_s"]},
        }
        print(json.dumps(row), flush=True)
        with (out / "rows.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
