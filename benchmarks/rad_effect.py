"""Does RAD do anything on a model? Three paired tables of RAD on minus off (issue 25), on the toy world.

Every sample is run twice with the same noise, RAD on and off (all else equal), and scored by the toy
detector (`longedit.toyworld.detect`); a table gives each arm's mean, the mean paired difference with a
paired bootstrap 95% interval, and how many samples an interval of half-width 0.1 would need at the
observed spread (`n_for_0.1`).

- `t2i`: text to image from noise (no source, no IRJS), one object named by the prompt, its region the left
  or the right half (alternating): does the object (colour; colour and shape) land in its region?
- `binding`: edits of a scene with two *identical* source objects (same colour and shape, left and right);
  the prompt names two different new objects and each noun gets one object's region, both assignments:
  does each new object land in its own region (0.5 = chance when both are drawn)? With IRJS.
- `move`: the object's noun gets a region away from the source object, the old object's area freed (the
  background word gets it, so IRJS lets it change); start latents as inverted, and re-noised inside the
  regions (`--region-start noise`): does the object's colour land in the target region?

Options go to every arm (e.g. `--attention-temperature 10 --step-norm rms`), so a lever is measured as
RAD on minus off under it. Each sample's scores go to OUT/TABLE.jsonl as they finish (a rerun skips them).

    python benchmarks/rad_effect.py t2i --out rad-effect/ --samples 64 [--model PATH] [--steps 10]
    python benchmarks/rad_effect.py binding --out rad-effect/ --samples 32
    python benchmarks/rad_effect.py move --out rad-effect/ --samples 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from longedit.editor import LoopSettings, VideoEditor
from longedit.masks import ObjectMasks
from longedit.models import load_backbone
from longedit.rad_diagnostics import rad_summary, renoise_regions, step_diagnostics
from longedit.sampling import SourceLevels, denoise, invert
from longedit.toyworld import resolve_model_name
from longedit.toyworld.detect import detect, find
from longedit.toyworld.pipeline import decode_latents, encode_images
from longedit.toyworld.render import render_scene
from longedit.toyworld.scoring import paired_interval
from longedit.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, Scene, ToyObject
from longedit.words import word_tokens

SIZE = 128
LEFT, RIGHT = (4, 32, 60, 96), (68, 32, 124, 96)  # x0, y0, x1, y1 in pixels (exclusive)
SEED = 20261206  # sample seeds far from the training run's
DIAGNOSTICS: list[dict] = []  # the RAD-on runs' `rad_summary` of the current sample (the script's own log)


def box_mask(boxes: list[tuple[int, int, int, int]], scale: int) -> torch.Tensor:
    """Bool [1, J, H/scale, W/scale] latent masks of pixel boxes (any touch, as longedit's box masks)."""
    side = SIZE // scale
    mask = torch.zeros(1, len(boxes), side, side, dtype=torch.bool)
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        mask[0, j, y0 // scale : -(-y1 // scale), x0 // scale : -(-x1 // scale)] = True
    return mask


def landed(image: np.ndarray, colour: str, shape: str | None, box) -> float:
    """1 when the detector finds the object (colour, and shape if given) with its centre inside `box`."""
    found = find(detect(image), colour, shape)
    if found is None:
        return 0.0
    x, y = found.centre
    return float(box[0] <= x < box[2] and box[1] <= y < box[3])


def settings(args, rad: bool, irjs: bool) -> LoopSettings:
    guided = args.guided_steps if args.guided_steps is not None else max(1, args.steps // 2)
    return LoopSettings(
        steps=args.steps, guidance=args.guidance, rad=rad, guided_steps=guided, step_size=args.step_size, refine=False,
        attention_norm=args.attention_norm, irjs=irjs, seed=0, kernel_backend="reference",
        attention_temperature=args.attention_temperature, step_norm=args.step_norm, rad_cells=args.rad_cells,
        rad_diagnostics=rad,
    )


def edit(backbone, args, rad: bool, source_prompt: str, prompt: str, words: list[str], boxes, start, source=None, region_start=None):
    """One run of the editor loop on one frame: from `start` (noise, or the inverted source) with RAD on/off."""
    irjs = source is not None
    tokens = [word_tokens(backbone.tokenizer, prompt, w) for w in words]
    editor = VideoEditor(backbone, settings(args, rad, irjs), source_prompt, prompt, tokens)
    masks = ObjectMasks(list(words), box_mask(boxes, backbone.vae_scale), ["src"] * len(words))
    latents = start
    if region_start is not None:
        latents = renoise_regions(latents, masks.union(), region_start, seed=0)
    source_at = SourceLevels(editor.schedule, source, "fresh", 0) if irjs else None
    steps: list[dict] = []
    out = denoise(editor, latents, [(0, 1)], masks, source_at,
                  callback=lambda i, x, stats: steps.append(step_diagnostics(stats.rad)) if stats.rad else None)
    if rad:
        DIAGNOSTICS.append(rad_summary(steps))
    return decode_latents(backbone, out.float())[0]


def t2i_sample(backbone, args, i: int) -> dict:
    rng = np.random.default_rng(SEED + i)
    colour, shape, background = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(BACKGROUNDS)
    box = LEFT if i % 2 == 0 else RIGHT
    prompt = f"a {colour} {shape} on {background}"
    noise = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(SEED + i))
    scores = {}
    for arm, rad in (("on", True), ("off", False)):
        image = edit(backbone, args, rad, prompt, prompt, [shape], [box], noise)
        scores[f"colour_{arm}"] = landed(image, colour, None, box)
        scores[f"colour_shape_{arm}"] = landed(image, colour, shape, box)
    return {"prompt": prompt, "region": "left" if box is LEFT else "right", **scores}


def inverted(backbone, args, image: np.ndarray, source_prompt: str):
    source = encode_images(backbone, image[None]).float()
    editor = VideoEditor(backbone, settings(args, False, False), source_prompt, source_prompt, [])
    return source, invert(editor, source, [(0, 1)])


def binding_sample(backbone, args, i: int) -> dict:
    rng = np.random.default_rng(SEED + 1000 + i)
    background, shape = rng.choice(BACKGROUNDS), rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    size = float(rng.integers(30, 42))
    objects = (ToyObject(colour, shape, 32, 64, size), ToyObject(colour, shape, 96, 64, size))
    image, _ = render_scene(Scene(background, objects, texture_seed=int(rng.integers(1 << 30))), SIZE)
    others = [c for c in COLOURS if c != colour]
    new_colours = rng.choice(others, size=2, replace=False)
    new_shapes = rng.choice(SHAPES, size=2, replace=False)
    source_prompt = f"a {colour} {shape} and a {colour} {shape} on {background}"
    prompt = f"a {new_colours[0]} {new_shapes[0]} and a {new_colours[1]} {new_shapes[1]} on {background}"
    source, start = inverted(backbone, args, image, source_prompt)
    boxes = [tuple(int(v) for v in o.box) for o in objects]
    assignment = [boxes, boxes[::-1]][i % 2]  # word 0 -> left, or word 0 -> right
    scores = {}
    for arm, rad in (("on", True), ("off", False)):
        out = edit(backbone, args, rad, source_prompt, prompt, list(new_shapes), assignment, start, source)
        scores[f"colour_{arm}"] = float(np.mean([landed(out, c, None, b) for c, b in zip(new_colours, assignment)]))
        scores[f"colour_shape_{arm}"] = float(np.mean([landed(out, c, s, b) for c, s, b in zip(new_colours, new_shapes, assignment)]))
    return {"prompt": prompt, "word0": "left" if i % 2 == 0 else "right", **scores}


def move_sample(backbone, args, i: int) -> dict:
    rng = np.random.default_rng(SEED + 2000 + i)
    background, shape, colour = rng.choice(BACKGROUNDS), rng.choice(SHAPES), rng.choice(list(COLOURS))
    left = i % 2 == 0
    obj = ToyObject(colour, shape, 32 if left else 96, 64, float(rng.integers(30, 42)))
    image, _ = render_scene(Scene(background, (obj,), texture_seed=int(rng.integers(1 << 30))), SIZE)
    target = RIGHT if left else LEFT
    prompt = f"a {colour} {shape} on {background}"
    source, start = inverted(backbone, args, image, prompt)
    freed = tuple(int(v) for v in obj.box)
    scores = {}
    for start_kind, strength in (("inverted", None), ("noise", args.region_start_strength)):
        for arm, rad in (("on", True), ("off", False)):
            out = edit(backbone, args, rad, prompt, prompt, [shape, background], [target, freed], start, source, strength)
            scores[f"{start_kind}_colour_{arm}"] = landed(out, colour, None, target)
    return {"prompt": prompt, "moved_to": "right" if left else "left", **scores}


SAMPLERS = {"t2i": t2i_sample, "binding": binding_sample, "move": move_sample}
METRICS = {"t2i": ("colour", "colour_shape"), "binding": ("colour", "colour_shape"), "move": ("inverted_colour", "noise_colour")}


def table(name: str, rows: list[dict]) -> str:
    lines = [f"| {name}: metric | n | RAD on | RAD off | on - off [95% CI] | n for +-0.1 |", "|---|---|---|---|---|---|"]
    for metric in METRICS[name]:
        r = paired_interval([row[f"{metric}_on"] for row in rows], [row[f"{metric}_off"] for row in rows])
        lines.append(f"| {metric} | {r['n']} | {r['on']:.3f} | {r['off']:.3f} | {r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
                     f" | {r['n_for_0.1']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(SAMPLERS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guided-steps", type=int)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--step-size", type=float, default=20.0)
    parser.add_argument("--attention-norm", default="official")
    parser.add_argument("--attention-temperature", type=float, default=100.0)
    parser.add_argument("--step-norm", default="none")
    parser.add_argument("--rad-cells", default="official")
    parser.add_argument("--region-start-strength", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_backbone(resolve_model_name(args.model), device="cpu", dtype="fp32")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.table}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {row["sample"] for row in rows}
    for i in range(args.samples):
        if i in done:
            continue
        started = time.perf_counter()
        DIAGNOSTICS.clear()
        row = {"sample": i, **SAMPLERS[args.table](backbone, args, i), "s": round(time.perf_counter() - started, 1)}
        row["rad"] = {k: float(np.mean([d[k] for d in DIAGNOSTICS if d[k] is not None] or [np.nan]))
                      for k in ("mean_loss_drop", "mean_grad_over_z", "mean_saturated", "mean_update_survives_paste")}
        with path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
        print(f"{args.table} {i + 1}/{args.samples} {row}", file=sys.stderr, flush=True)
    rows = [row for row in rows if row["sample"] < args.samples]
    rad = {k: float(np.nanmean([row["rad"][k] for row in rows])) for k in rows[0]["rad"]} if rows else {}
    diagnostics = ", ".join(f"{k.removeprefix('mean_')} {v:.3g}" for k, v in rad.items())
    text = (f"model {args.model}, map level latent/{backbone.map_scale}, {args.steps} steps; RAD-on runs' diagnostics"
            f" (means): {diagnostics}\n\n" + table(args.table, rows))
    (args.out / f"{args.table}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
