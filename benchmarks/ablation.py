"""The ReAtCo paper's ablation (its Table 2, Figure 7) in miniature, on held-out toy clips, with the toy model.

Three tables, each a set of edits measured by `longedit eval`'s code with the toy world's detector:

- `main`: rows baseline (no RAD, no IRJS), +RAD, +IRJS, RAD+IRJS, RAD+IRJS+pixel paste (longedit's default),
  the same with RAD's maps normalised over the prompt's columns only, and FateZero; columns placement (edited object, colour and shape, inside its region), VISOR-like
  relation (two-object prompts), background PSNR outside the regions, weights-free temporal consistency
  (frame-to-frame change outside the regions relative to the source's) and seconds per frame.
  Clips: single-object scenes (the object is repainted as another colour and shape in its path) and
  two-object scenes with a left/right relation (the first object is repainted; the relation must survive).
- `long`: one long single-object clip edited with windowed co-denoising (stride L/2 and 3L/4), independent
  windows (stride L), the largest window longedit allows (32; one window over 96 frames is outside the
  4-32 range), `--anchor video`, pyramid overlap weights; plus the seam ratio (largest frame-to-frame
  change at window boundaries over the median elsewhere).
- `topk`: RAD's top-k ratio 10%, 20%, 40%, 100% (the paper's Figure 7) on the single-object clips.
- `binding`: two objects side by side, both repainted, the prompt naming the right-hand one first; each word
  has its region, so only RAD's word-to-region binding says which new object goes where (placement averaged
  over both words), with and without RAD and IRJS.

Every edit's measurements go to OUT/runs/NAME.json as soon as it finishes; a rerun skips finished edits, so
an interrupted ablation resumes. The tables (mean +- std over clips and seeds) go to OUT/TABLE.md.

    python benchmarks/ablation.py main --out ablation/ [--clips 5 --seeds 2 --frames 8 --steps 10]
    python benchmarks/ablation.py long --out ablation/ [--frames 96]
    python benchmarks/ablation.py topk --out ablation/
    python benchmarks/ablation.py binding --out ablation/
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from longedit.atomic import write_json
from longedit.config import EditJob, ObjectSpec
from longedit.engine import preflight, run_edit
from longedit.evaluation.evaluate import EvalSettings, evaluate_videos
from longedit.toyworld.render import ToyClip, render_clip, write_clip
from longedit.toyworld.scoring import seam_ratio
from longedit.toyworld.world import COLOURS, SHAPES, Scene, ToyObject

HELD_OUT_SEED = 20261130  # scene seeds far from the training run's (seed 0 + small offsets)
SIZE = 128


@dataclass
class ToyEdit:
    """A held-out toy clip and the edit asked of it: `word` (colour `colour`) in `boxes[word]` per frame."""

    name: str
    clip: ToyClip
    source_prompt: str
    prompt: str
    words: list[str]
    boxes: dict[str, list[tuple[int, int, int, int]]]
    relation: bool
    colour: str  # the edited object's new colour (the toy model draws colours far better than shapes)
    colours: dict[str, str] | None = None  # every scored word's new colour (default: words[0] -> colour)
    scored: int = 1  # how many of `words` (from the first) are measured for placement

    def scored_colours(self) -> dict[str, str]:
        return self.colours or {self.words[0]: self.colour}


def _other(options, *avoid: str, rng: np.random.Generator) -> str:
    return str(rng.choice([o for o in options if o not in avoid]))


def make_edit(index: int, frames: int, two_objects: bool) -> ToyEdit:
    """Held-out clip `index`: one object (or two, side by side, with 'to the left of'), the first repainted."""
    rng = np.random.default_rng(HELD_OUT_SEED + index)
    background = str(rng.choice(["grass", "sand", "water", "sky", "road"]))
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    side = SIZE * (0.3 if two_objects else 0.4)
    first = ToyObject(colour, shape, SIZE * (0.27 if two_objects else float(rng.uniform(0.35, 0.65))), SIZE * float(rng.uniform(0.4, 0.6)), side)
    objects = [first]
    if two_objects:
        objects.append(ToyObject(_other(COLOURS, colour, rng=rng), str(rng.choice(SHAPES)), SIZE * 0.75, SIZE * float(rng.uniform(0.4, 0.6)), side))
    scene = Scene(background, tuple(objects), "to the left of" if two_objects else None, int(rng.integers(2**31)))
    clip = render_clip(scene, frames=frames, size=SIZE, pan=0.08, seed=index, travel=0.12 if two_objects else 0.3)
    new_colour = _other(COLOURS, *(o.colour for o in objects), rng=rng)
    new_shape = _other(SHAPES, shape, *(o.shape for o in objects[1:]), rng=rng)
    edited = ToyObject(new_colour, new_shape, first.cx, first.cy, first.size)
    prompt = Scene(background, (edited, *objects[1:]), scene.relation).caption
    words = [new_shape] + [o.shape for o in objects[1:]]
    boxes = {word: clip.boxes(i) for i, word in enumerate(words)}
    return ToyEdit(f"clip{index}", clip, scene.caption, prompt, words, boxes, two_objects, new_colour)


def make_binding_edit(index: int, frames: int) -> ToyEdit:
    """Held-out clip `index` with two objects side by side, *both* repainted with new colours and shapes,
    the prompt naming the right-hand one first ("a X and a Y on ..."): each word has its own region, and
    nothing but the binding of word to region says which object becomes which."""
    rng = np.random.default_rng(HELD_OUT_SEED + 1000 + index)
    background = str(rng.choice(["grass", "sand", "water", "sky", "road"]))
    left_colour, right_colour = (str(c) for c in rng.choice(list(COLOURS), size=2, replace=False))
    left = ToyObject(left_colour, str(rng.choice(SHAPES)), SIZE * 0.27, SIZE * float(rng.uniform(0.4, 0.6)), SIZE * 0.3)
    right = ToyObject(right_colour, str(rng.choice(SHAPES)), SIZE * 0.75, SIZE * float(rng.uniform(0.4, 0.6)), SIZE * 0.3)
    scene = Scene(background, (left, right), None, int(rng.integers(2**31)))
    clip = render_clip(scene, frames=frames, size=SIZE, pan=0.08, seed=1000 + index, travel=0.12)
    new_right, new_left = (str(c) for c in rng.choice([c for c in COLOURS if c not in (left_colour, right_colour)], size=2, replace=False))
    shape_right, shape_left = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    prompt = Scene(background, (ToyObject(new_right, shape_right, right.cx, right.cy, right.size),
                                ToyObject(new_left, shape_left, left.cx, left.cy, left.size))).caption
    boxes = {shape_right: clip.boxes(1), shape_left: clip.boxes(0)}
    return ToyEdit(f"bind{index}", clip, scene.caption, prompt, [shape_right, shape_left], boxes, False, new_right,
                   colours={shape_right: new_right, shape_left: new_left}, scored=2)


def keyframed(boxes: list[tuple[int, int, int, int]], every: int = 4) -> dict[int, tuple[int, int, int, int]]:
    frames = sorted(set(range(0, len(boxes), every)) | {len(boxes) - 1})
    return {f: boxes[f] for f in frames}


ROWS: dict[str, dict] = {
    "baseline": {"rad": False, "irjs": False, "paste_background": False},
    "+RAD": {"rad": True, "irjs": False, "paste_background": False},
    "+IRJS": {"rad": False, "irjs": True, "paste_background": False},
    "RAD+IRJS": {"rad": True, "irjs": True, "paste_background": False},
    "RAD+IRJS+paste": {"rad": True, "irjs": True, "paste_background": True},
    # the official maps are a x100 softmax over all 75 text columns; on the toy model's 24-word prompts
    # most columns are padding, so the word's share (and RAD's gradient) is small: the prompt-only variant
    "RAD+IRJS+paste, --attention-norm prompt": {"rad": True, "irjs": True, "paste_background": True, "attention_norm": "prompt"},
    "FateZero": {"method": "fatezero"},
}


def run_one(edit: ToyEdit, source: Path, name: str, settings: dict, args: argparse.Namespace) -> dict:
    """Edit `source` with `settings`, measure it; cached in OUT/runs/NAME.json."""
    record_path = args.out / "runs" / f"{name}.json"
    output = args.out / "videos" / f"{name}.mp4"
    run_args = {"model": args.model, "steps": args.steps, "frames": args.frames, "window": args.window, "preset": args.preset}
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("args", run_args) != run_args:
            raise SystemExit(f"{record_path} was measured with {record['args']}, not {run_args}: use another --out")
        if "colour_placement" not in record:  # a record from before that column: measure its video again
            record["colour_placement"] = colour_placement(edit, source, output)
            write_json(record_path, record, what="ablation record")
        return record
    output.parent.mkdir(parents=True, exist_ok=True)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    objects = [ObjectSpec(word=w, keyframes=keyframed(b)) for w, b in edit.boxes.items()]
    values = dict(
        input=source, output=output, model=args.model, source_prompt=edit.source_prompt, prompt=edit.prompt,
        steps=args.steps, size=SIZE, window=args.window, stride=max(1, args.window // 2), preset=args.preset,
        objects=objects, seed=0,
    )
    values.update(settings)
    if values.get("method") == "fatezero":
        values.pop("objects")
    job = EditJob(**values)
    preflight(job)
    clock = time.perf_counter()
    report = run_edit(job, progress=False)
    seconds = time.perf_counter() - clock
    measured = evaluate_videos(source, output, EvalSettings(prompt=edit.prompt, object_specs=objects, detector="toy", lpips="none"))
    record = {
        "name": name,
        "args": run_args,
        "settings": settings,
        "s_per_frame": seconds / report["frames"],
        "unet_forwards": report["unet_forwards"],
        "placement": {w: measured["placement"][w]["value"] for w in edit.words[: edit.scored]},
        "colour_placement": colour_placement(edit, source, output),
        "relations": {k: v["value"] for k, v in measured["relations"].items()},
        "background_psnr": measured["background"]["psnr"]["value"],
        "temporal_outside_relative": measured["temporal"]["outside"].get("relative"),
        "temporal_inside_relative": measured["temporal"]["inside"].get("relative"),
        "windows": report["windows"],
    }
    write_json(record_path, record, what="ablation record")
    print(f"{name}: {json.dumps({k: v for k, v in record.items() if k not in ('windows', 'settings')})}", flush=True)
    return record


def colour_placement(edit: ToyEdit, source: Path, output: Path) -> float | None:
    """Share of frames where each scored word's new colour (any shape) lies in its region, averaged over words."""
    specs = [ObjectSpec(word=colour, keyframes=keyframed(edit.boxes[word])) for word, colour in edit.scored_colours().items()]
    measured = evaluate_videos(source, output, EvalSettings(prompt=edit.prompt, object_specs=specs, detector="toy", lpips="none"))
    values = [measured["placement"][spec.word]["value"] for spec in specs]
    return None if any(v is None for v in values) else float(np.mean(values))


def with_seams(record: dict, video: Path) -> dict:
    """`record` plus the seam ratios of its video (worst and mean boundary; see toyworld.scoring.seam_ratio)."""
    from longedit.video import iter_frames

    frames = list(iter_frames(video))
    edges = {int(edge) for start, end in record["windows"] for edge in (start, end)} - {0, len(frames)}
    boundaries = sorted(edges)
    return {
        **record,
        "seam_max": seam_ratio(frames, boundaries, statistic="max"),
        "seam_mean": seam_ratio(frames, boundaries, statistic="mean"),
    }


def _fmt(values: list[float | None], digits: int) -> str:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return "n/a"
    return f"{np.mean(kept):.{digits}f} ± {np.std(kept):.{digits}f}" if len(kept) > 1 else f"{kept[0]:.{digits}f}"


def table(records: dict[str, list[dict]], columns: list[tuple[str, str, int]]) -> str:
    """Markdown table: one row per key of `records`, mean +- std (over its records) per column."""
    lines = ["| row | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row, recs in records.items():
        cells = []
        for _, key, digits in columns:
            values = []
            for rec in recs:
                value = rec.get(key)
                if isinstance(value, dict):
                    values.extend(v for v in value.values())
                else:
                    values.append(value)
            cells.append(_fmt(values, digits))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = [
    ("placement (colour and shape)", "placement", 2),
    ("placement (colour)", "colour_placement", 2),
    ("relation holds", "relations", 2),
    ("background PSNR dB", "background_psnr", 1),
    ("temporal change outside (x source)", "temporal_outside_relative", 2),
    ("s/frame", "s_per_frame", 2),
]


def _clip_file(args: argparse.Namespace, edit: ToyEdit, frames: int) -> Path:
    """The edit's source clip, written once into OUT/clips."""
    path = args.out / "clips" / f"{edit.name}-{frames}f.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clip(edit.clip, path, fps=Fraction(8))
    return path


def _clips(args: argparse.Namespace, count: int, frames: int, two_every: int | None) -> list[tuple[ToyEdit, Path]]:
    out = []
    for index in range(count):
        two = two_every is not None and index % two_every == two_every - 1
        edit = make_edit(index, frames, two)
        out.append((edit, _clip_file(args, edit, frames)))
    return out


def main_table(args: argparse.Namespace) -> str:
    records: dict[str, list[dict]] = {row: [] for row in ROWS}
    for seed in range(args.seeds):
        for edit, path in _clips(args, args.clips, args.frames, two_every=2):
            for row, settings in ROWS.items():
                records[row].append(run_one(edit, path, f"main-{edit.name}-s{seed}-{row}", {**settings, "seed": seed}, args))
    return table(records, COLUMNS)


def long_table(args: argparse.Namespace) -> str:
    (edit, path), = _clips(args, 1, args.frames, two_every=None)
    window = args.window
    variants = {
        f"stride L/2 ({window // 2})": {"stride": window // 2},
        f"stride 3L/4 ({3 * window // 4})": {"stride": 3 * window // 4},
        f"independent windows (stride {window})": {"stride": window},
        "window 32 (the largest allowed), stride 16": {"window": 32, "stride": 16},
        "stride L/2, --anchor video": {"stride": window // 2, "anchor": "video"},
        "stride L/2, pyramid weights": {"stride": window // 2, "overlap_weights": "pyramid"},
    }
    records = {}
    for i, (label, settings) in enumerate(variants.items()):
        name = f"long-{args.frames}f-{i}"
        records[label] = [with_seams(run_one(edit, path, name, settings, args), args.out / "videos" / f"{name}.mp4")]
    columns = [("seam, worst boundary", "seam_max", 2), ("seam, mean boundary", "seam_mean", 2)]
    return table(records, [*columns, ("temporal change inside (x source)", "temporal_inside_relative", 2), *[c for c in COLUMNS if c[1] != "relations"]])


def topk_table(args: argparse.Namespace) -> str:
    records = {}
    for ratio in (0.1, 0.2, 0.4, 1.0):
        records[f"top-k {int(ratio * 100)}%"] = [
            run_one(edit, path, f"topk-{edit.name}-{ratio}", {"topk_ratio": ratio}, args)
            for edit, path in _clips(args, args.clips, args.frames, two_every=None)
        ]
    return table(records, [c for c in COLUMNS if c[1] != "relations"])


BINDING_ROWS: dict[str, dict] = {row: ROWS[row] for row in ("baseline", "+RAD", "RAD+IRJS+paste")}
BINDING_ROWS["IRJS+paste (no RAD)"] = {"rad": False, "irjs": True, "paste_background": True}


def binding_table(args: argparse.Namespace) -> str:
    records: dict[str, list[dict]] = {row: [] for row in BINDING_ROWS}
    for seed in range(args.seeds):
        for index in range(args.clips):
            edit = make_binding_edit(index, args.frames)
            path = _clip_file(args, edit, args.frames)
            for row, settings in BINDING_ROWS.items():
                records[row].append(run_one(edit, path, f"binding-{edit.name}-s{seed}-{row}", {**settings, "seed": seed}, args))
    return table(records, [c for c in COLUMNS if c[1] != "relations"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["main", "long", "topk", "binding"])
    parser.add_argument("--out", type=Path, default=Path("ablation"))
    parser.add_argument("--model", default="toy")
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=None, help="clip length (main/topk: 8, long: 96)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--preset", choices=["paper", "fast"], default="fast", help="fast: no refinement (CPU budget)")
    args = parser.parse_args(argv)
    args.frames = args.frames or (96 if args.table == "long" else 8)
    builders = {"main": main_table, "long": long_table, "topk": topk_table, "binding": binding_table}
    text = builders[args.table](args)
    header = (
        f"`python benchmarks/ablation.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"(model {args.model}, {args.frames} frames {SIZE}x{SIZE}, {args.steps} steps, window {args.window}, preset {args.preset})"
    )
    (args.out / f"{args.table}.md").write_text(header + "\n\n" + text + "\n")
    print(header + "\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
