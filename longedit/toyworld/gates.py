"""Quality gates of the toy model, measured on held-out renders, and its model card.

`python -m longedit.toyworld.gates --model DIR [--card]` measures
* VAE reconstruction PSNR on held-out scenes, on the trained background kinds and on kinds it never saw;
* text -> image: on held-out captions, the share of caption objects whose colour *and* shape the
  detector finds (target >= 80%), and how often stated relations hold;
* cross-attention localisation: each object word's attention share (at RAD's map level) inside its object's mask
  (noised held-out renders, averaged over the timesteps of a DDIM schedule) vs the mask's area fraction;
writes `gates.json` and, with `--card`, `README.md` (`longedit.toyworld.card`) and `samples.png` into the model
folder; `--baseline DIR` also measures another model's text -> image on the same captions and seeds and gives
the paired difference with its bootstrap interval (a grown model must not draw worse than its parent).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from longedit.toyworld.card import model_card
from longedit.toyworld.detect import agreement, detect, find
from longedit.toyworld.pipeline import encode_images, encode_prompts, decode_latents, generate
from longedit.toyworld.render import render_scene
from longedit.toyworld.scoring import paired_interval
from longedit.toyworld.world import BACKGROUNDS, UNSEEN_BACKGROUNDS, Scene, relation_holds, sample_scene

HELD_OUT_SEED = 1_000_000  # training draws from seeds 1..4 (see train.py)
TEXT_TO_IMAGE_TARGET = 0.80


def held_out_scenes(count: int, backgrounds=BACKGROUNDS, seed: int = HELD_OUT_SEED, size: int = 128) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, size, backgrounds=backgrounds) for _ in range(count)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def vae_psnr(backbone, scenes: list[Scene], size: int = 128) -> float:
    """Mean PSNR (dB) of encode -> decode over the scenes' renders."""
    images = np.stack([render_scene(s, size)[0] for s in scenes])
    values = []
    for start in range(0, len(images), 25):
        part = images[start : start + 25]
        recon = decode_latents(backbone, encode_images(backbone, part))
        values += [psnr(a, b) for a, b in zip(part, recon)]
    return float(np.mean(values))


def vae_detector_agreement(backbone, scenes: list[Scene], size: int = 128) -> float:
    """Share of objects whose colour and shape the detector finds in the VAE's reconstructions of the
    scenes' renders (100% in the renders themselves): the ceiling of the text -> image gate, since
    every generated image goes through the same decoder."""
    hits = []
    for start in range(0, len(scenes), 25):
        part = scenes[start : start + 25]
        images = np.stack([render_scene(s, size)[0] for s in part])
        for scene, recon in zip(part, decode_latents(backbone, encode_images(backbone, images))):
            hits += agreement(detect(recon), scene.objects)
    return float(np.mean(hits))


def text_to_image(backbone, scenes: list[Scene], steps: int, guidance: float, size: int = 128) -> dict:
    """Generate every scene's caption; score objects (colour and shape), full images and relations."""
    objects_ok, images_ok, colour_ok, relations, samples = [], [], [], [], []
    for start in range(0, len(scenes), 25):
        part = scenes[start : start + 25]
        images = generate(backbone, [s.caption for s in part], size, steps, guidance, seed=start)
        for scene, image in zip(part, images):
            found = detect(image)
            hits = agreement(found, scene.objects)
            objects_ok += hits
            images_ok.append(all(hits))
            colour_ok += [find(found, o.colour) is not None for o in scene.objects]
            if scene.relation is not None:
                a, b = (find(found, o.colour, o.shape) for o in scene.objects[:2])
                if a is not None and b is not None:
                    relations.append(relation_holds(scene.relation, a.centre, b.centre))
            samples.append((scene.caption, image))
    return {
        "captions": len(scenes),
        "objects": len(objects_ok),
        "object_agreement": float(np.mean(objects_ok)),
        "colour_found": float(np.mean(colour_ok)),
        "images_all_objects": float(np.mean(images_ok)),
        "relations_checked": len(relations),
        "relations_hold": float(np.mean(relations)) if relations else None,
        "hits": [int(hit) for hit in objects_ok],  # per object, in caption order: a paired comparison reads these
        "samples": samples,
    }


def object_word_columns(backbone, scene: Scene) -> list[int]:
    """Token column of each object's shape noun in the scene's caption (world words are single tokens)."""
    words = scene.caption.split()
    ids = backbone.tokenizer(scene.caption).input_ids
    if len(ids) != len(words) + 2:
        raise ValueError(f"caption {scene.caption!r} does not tokenise one token per word")
    shapes = [i for i, w in enumerate(words) if w in ("circle", "square", "triangle")]
    return [i + 1 for i in shapes]


@torch.no_grad()
def attention_localisation(backbone, scenes: list[Scene], steps: int = 10, size: int = 128, seed: int = 0) -> dict:
    """Each object word's H/32 attention, averaged over the timesteps of a DDIM schedule, measured two ways:
    its share of the word's attention mass inside the object's mask vs the mask's area fraction (does the
    word look at its object?), and the value of RAD's official map there, softmax(100 A) over columns 1-75,
    averaged over the mask's cells (is the word the column its object's cells look at most? RAD's inner
    loss is 1 minus the top-k mean of this map, so a map near 0 leaves RAD nothing to follow)."""
    from longedit.attention import AttentionContext, install_processors
    from longedit.ddim import DdimSchedule, add_noise
    from longedit.rad import OFFICIAL_COLUMNS, SOFTMAX_TEMPERATURE

    context = AttentionContext()
    original = dict(backbone.unet.attn_processors)
    install_processors(backbone.unet, context, scale=getattr(backbone, "map_scale", 4), sparse_causal=False)
    schedule = DdimSchedule.from_scheduler(backbone.scheduler, steps)
    generator = torch.Generator().manual_seed(seed)
    official = torch.tensor(OFFICIAL_COLUMNS)
    shares, areas, official_inside, word_probability, padding_probability = [], [], [], [], []
    sink_background, sink_object, entropy, near_tie = [], [], [], []
    try:
        for scene in scenes:
            image, masks = render_scene(scene, size)
            x0 = encode_images(backbone, image[None])
            noise = torch.randn(x0.shape, generator=generator)
            noisy = torch.cat([add_noise(x0, noise, schedule.alpha(t)) for t in schedule.timesteps])
            text = encode_prompts(backbone, [scene.caption]).expand(len(schedule.timesteps), -1, -1)
            context.reset()
            context.capture, context.columns = True, torch.arange(77)
            backbone.unet(noisy.to(backbone.dtype), torch.tensor(schedule.timesteps), text.to(backbone.dtype))
            maps = torch.stack([m.float() for m in context.maps]).mean(0)  # [steps, cells, 77]
            rad_maps = torch.softmax(maps[:, :, official] * SOFTMAX_TEMPERATURE, dim=-1)
            grid = int(round(maps.shape[1] ** 0.5))
            padding = len(scene.caption.split()) + 2  # columns after the end token
            covered = torch.zeros(maps.shape[1])
            for column, mask in zip(object_word_columns(backbone, scene), masks):
                cells = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], grid).flatten()
                attention = maps[:, :, column]
                share = (attention * cells).sum(1) / attention.sum(1).clamp_min(1e-12)
                shares.append(float(share.mean()))
                areas.append(float(cells.mean()))
                weights = cells / cells.sum().clamp_min(1e-12)
                official_inside.append(float((rad_maps[:, :, column - 1] * weights).sum(1).mean()))
                word_probability.append(float((attention * weights).sum(1).mean()))
                padding_probability.append(float((maps[:, :, padding:].sum(-1) * weights).sum(1).mean()))
                inside = cells >= 0.5
                covered = torch.maximum(covered, cells)
                if inside.any():
                    sink_object.append(float(maps[:, inside, 0].mean()))
                    graded = rad_maps[:, inside].clamp_min(1e-12)
                    entropy.append(float(-(graded * graded.log()).sum(-1).mean()))
                    raw = maps[:, inside][..., official]
                    others = raw.clone()
                    others[..., column - 1] = -1
                    near_tie.append(float(((raw[..., column - 1] - others.amax(-1)).abs() * SOFTMAX_TEMPERATURE < 1).float().mean()))
            if (covered == 0).any():
                sink_background.append(float(maps[:, covered == 0, 0].mean()))
    finally:
        context.reset()
        backbone.unet.set_attn_processor(original)
    return {
        "scenes": len(scenes),
        "objects": len(shares),
        "timesteps": steps,
        "map": f"{grid}x{grid}",
        "mean_share_inside": float(np.mean(shares)),
        "mean_area_fraction": float(np.mean(areas)),
        "ratio": float(np.mean(shares) / np.mean(areas)),
        "objects_share_above_area": float(np.mean(np.array(shares) > np.array(areas))),
        "official_map_inside": float(np.mean(official_inside)),
        "word_probability_inside": float(np.mean(word_probability)),
        "padding_probability_inside": float(np.mean(padding_probability)),
        # SD-likeness of the map RAD reads: the start token's share (SD: most of every cell's attention),
        # the entropy (nats) of softmax(100 A) over 1..75 on object cells (0: a hard argmax; log 75 = 4.3:
        # flat), and the share of object cells where the word is within 1/100 of the top other column
        # (softmax(100 A) is graded there, so RAD's gradient is not zero)
        "sink_share_background": float(np.mean(sink_background)) if sink_background else None,
        "sink_share_object": float(np.mean(sink_object)) if sink_object else None,
        "official_map_entropy_object": float(np.mean(entropy)) if entropy else None,
        "near_tie_share_object": float(np.mean(near_tie)) if near_tie else None,
    }


def sample_grid(samples: list[tuple[str, np.ndarray]], path: Path, columns: int = 4, rows: int = 3) -> None:
    """A captioned grid of generated images (PNG)."""
    size = samples[0][1].shape[0]
    cell_h = size + 28
    sheet = Image.new("RGB", (columns * size, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (caption, image) in enumerate(samples[: columns * rows]):
        x, y = (i % columns) * size, (i // columns) * cell_h
        sheet.paste(Image.fromarray(image), (x, y))
        words, line = caption.split(), ""
        lines = []
        for word in words:
            if len(line) + len(word) + 1 > 26:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for j, text in enumerate(lines[:2]):
            draw.text((x + 2, y + size + 2 + 12 * j), text, fill="black")
    sheet.save(path)


def measure(model: str, captions: int = 200, steps: int = 25, guidance: float = 7.5, attention_scenes: int = 60) -> dict:
    from longedit.models import load_backbone

    backbone = load_backbone(model, device="cpu")
    started = time.monotonic()
    results = {
        "vae_psnr_db": {
            "trained_backgrounds": vae_psnr(backbone, held_out_scenes(50, seed=HELD_OUT_SEED + 1)),
            "unseen_backgrounds": vae_psnr(backbone, held_out_scenes(50, UNSEEN_BACKGROUNDS, seed=HELD_OUT_SEED + 2)),
        },
        "vae_detector_agreement": vae_detector_agreement(backbone, held_out_scenes(captions)),
        "text_to_image": text_to_image(backbone, held_out_scenes(captions), steps, guidance),
        "attention": attention_localisation(backbone, held_out_scenes(attention_scenes, seed=HELD_OUT_SEED + 3)),
    }
    results["text_to_image"].update(steps=steps, guidance=guidance, target=TEXT_TO_IMAGE_TARGET)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def compare_text_to_image(hits: list[int], baseline: str, captions: int, steps: int, guidance: float) -> dict:
    """The baseline model's text -> image on the same held-out captions and seeds, and the paired difference
    (this model minus the baseline, per object) with its bootstrap 95% interval."""
    from longedit.models import load_backbone

    other = text_to_image(load_backbone(baseline, device="cpu"), held_out_scenes(captions), steps, guidance)
    return {"baseline": str(baseline), **paired_interval(hits, other["hits"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path(__file__).with_name("model")))
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--attention-scenes", type=int, default=60)
    parser.add_argument("--card", action="store_true", help="write README.md and samples.png into the model folder")
    parser.add_argument("--card-only", action="store_true", help="rewrite README.md from the folder's gates.json")
    parser.add_argument("--baseline", help="another model folder: its text -> image on the same captions and seeds, and the"
                        " paired difference with a bootstrap 95%% interval (does the new model draw worse?)")
    args = parser.parse_args(argv)
    folder = Path(args.model)
    if args.card_only:
        (folder / "README.md").write_text(model_card(folder, json.loads((folder / "gates.json").read_text())))
        return 0
    torch.set_num_threads(1)
    results = measure(args.model, args.captions, args.steps, args.guidance, args.attention_scenes)
    samples = results["text_to_image"].pop("samples")
    if args.baseline:
        results["text_to_image_vs_baseline"] = compare_text_to_image(
            results["text_to_image"]["hits"], args.baseline, args.captions, args.steps, args.guidance)
    (folder / "gates.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if args.card:
        sample_grid(samples, folder / "samples.png")
        (folder / "README.md").write_text(model_card(folder, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
