"""Quality gates of the toy model, measured on held-out renders, and its model card.

`python -m longedit.toyworld.gates --model DIR [--card]` measures
* VAE reconstruction PSNR on held-out scenes, on the trained background kinds and on kinds it never saw;
* text -> image: on held-out captions, the share of caption objects whose colour *and* shape the
  detector finds (target >= 80%), and how often stated relations hold;
* cross-attention localisation: each object word's H/32 attention share inside its object's mask
  (noised held-out renders, averaged over the timesteps of a DDIM schedule) vs the mask's area fraction;
writes `gates.json` and, with `--card`, `README.md` and `samples.png` into the model folder.
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

from longedit.toyworld.detect import agreement, detect, find
from longedit.toyworld.pipeline import encode_images, encode_prompts, decode_latents, generate
from longedit.toyworld.render import render_scene
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


def _lr_decay(info: dict) -> str:
    ratio = info["config"]["unet"].get("min_lr_ratio")
    return "" if ratio is None else f" (cosine decay to {ratio}x over the continued run)"


def _attention_levels(info: dict) -> str:
    if info["config"]["unet"].get("full_resolution_attention"):
        return "at latent/1 (= H/8, a 16x16 map at 128 px, as SD 1.5's H/32 at 512 px), latent/2 and latent/4"
    return "at latent/2 and latent/4 (= H/32, a 4x4 map at 128 px)"


def _continue_config(info: dict) -> str:
    if not info.get("continued_from"):
        return ""
    if info["config"]["unet"].get("full_resolution_attention"):
        return (", then `continue_config.json`, then `grow16_config.json` (cross-attention grown to latent/1, the new"
                " blocks starting as identities), each with `--init-from`")
    return ", then `continue_config.json` with `--init-from`"


def _dominance_training(info: dict, last) -> str:
    unet = info["config"]["unet"]
    if unet.get("sink_loss"):
        low, high = unet["sink_object"]
        return (f"; in the grown run also an SD-like start-token sink (`longedit.toyworld.grounding.sink_losses`, weights"
                f" {unet['sink_loss']} and {unet.get('noun_share_loss', 0)}): background cells give column 0 at least"
                f" {unet['sink_background']} of their attention, object cells {low}-{high}, and the noun takes the most of what"
                f" the sink leaves in its object's cells; final values {last('unet', 'sink_loss')} and {last('unet', 'noun_share_loss')}")
    weight = unet.get("noun_dominance_loss")
    if not weight:
        return ""
    return (f"; in the continued run also (weight {weight}) 1 - the noun's mean attention probability over its mask's cells,"
            f" so that the object's cells attend to their noun most, as RAD's official map needs; final value {last('unet', 'noun_dominance_loss')}")


def _limits(results: dict, info: dict) -> str:
    """The card's closing paragraph, from the measurements: what the model gets wrong and what would fix it."""
    t2i, att = results["text_to_image"], results["attention"]
    ceiling = results.get("vae_detector_agreement")
    relations = "n/a" if t2i["relations_hold"] is None else f"{100 * t2i['relations_hold']:.0f}%"
    lines = [f"It draws the colour it is asked for in {100 * t2i['colour_found']:.0f}% of objects, colour and shape together in"
             f" {100 * t2i['object_agreement']:.0f}%, and every object of a caption in {100 * t2i['images_all_objects']:.0f}% of images;"
             f" stated relations hold in {relations} of the"
             f" {t2i['relations_checked']} cases where both objects were found."]
    if t2i["object_agreement"] < TEXT_TO_IMAGE_TARGET:
        gap = 100 * (TEXT_TO_IMAGE_TARGET - t2i["object_agreement"])
        what = [f"more UNet steps ({info['unet_steps']} here) or a wider UNet"]
        if ceiling is not None and ceiling < 0.9:
            what.append(f"a sharper VAE (the detector finds only {100 * ceiling:.0f}% of objects in its own reconstructions;"
                        " small triangles and squares decode with round corners)")
        lines.append(f"The text -> image gate is missed by {gap:.1f} points; what would close it: {' and '.join(what)}.")
    if "official_map_inside" in att:
        lines.append(f"Its {att['map']} cross-attention (RAD's level) localises words (share inside {att['mean_share_inside']:.2f} vs area"
                     f" {att['mean_area_fraction']:.2f}) and, under RAD's official normalisation, an object's cells point at"
                     f" its noun ({att['official_map_inside']:.2f} of 1), which is what RAD's gradient needs.")
    coarse = (" the 4x4 H/32 map makes attention coarse by construction." if att.get("map") == "4x4" else
              f" RAD's {att.get('map')} map is as fine as SD 1.5's at 512 px; the H/32 level stays 4x4.")
    lines.append("Only the world's words mean anything; everything else tokenises to characters it never saw. 128x128 is its"
                 " native size;" + coarse)
    return "\n".join(lines)


def _ceiling_line(results: dict) -> str:
    if "vae_detector_agreement" not in results:
        return ""
    return (f"\n- The detector on the VAE's reconstructions of the {results['text_to_image']['captions']} held-out caption scenes (100% on"
            f" the renders): colour and shape right for **{100 * results['vae_detector_agreement']:.1f}%** of objects, the ceiling of"
            f" the text -> image gate below.")


def _sharpen_note(folder: Path) -> str:
    path = folder / "vae" / "sharpen_info.json"
    if not path.exists():
        return ""
    info = json.loads(path.read_text())
    return (f"\n- VAE decoder sharpened afterwards with the encoder frozen (so the latents, the scale and the UNet stay valid):"
            f" `python -m longedit.toyworld.sharpen`, {info['decoder_steps']} steps, batch {info['batch']} full 128-px"
            f" renders ({info['scenes']} scenes, {info['wild']} wild textures), object pixels weighted {1 + info['object_weight']:.0f}x,"
            f" {info['elapsed_s']} s on {info['threads']} thread(s).")


def _dominance_line(att: dict) -> str:
    if "official_map_inside" not in att:
        return ""
    return (f"\n- RAD's view of the same maps (softmax(100 A) over columns 1-75, as the official code): the object word's value"
            f" averaged over its mask's cells is **{att['official_map_inside']:.3f}** (1 = the word is the column its object"
            f" attends to most; RAD's inner loss is 1 minus its top-k mean); there the word gets"
            f" {att['word_probability_inside']:.3f} of each cell's attention and the padding columns {att['padding_probability_inside']:.3f}.{_sink_line(att)}")


def _sink_line(att: dict) -> str:
    if att.get("sink_share_background") is None or att.get("near_tie_share_object") is None:
        return ""
    return (f"\n- SD-likeness of that map: the start token (column 0) takes **{att['sink_share_background']:.3f}** of background"
            f" cells' attention and {att['sink_share_object']:.3f} of object cells' (SD: most of every cell's); softmax(100 A)'s"
            f" entropy on object cells {att['official_map_entropy_object']:.2f} nats (0: a hard argmax, 4.3: flat); the word within"
            f" 1/100 of the top other column (graded, RAD's gradient not zero) in {att['near_tie_share_object']:.3f} of object cells.")


def _card(folder: Path, results: dict) -> str:
    info = json.loads((folder / "train_info.json").read_text())
    t2i, att, vae = results["text_to_image"], results["attention"], results["vae_psnr_db"]
    losses = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()] if (folder / "loss.jsonl").exists() else []

    def last(stage: str, key: str, n: int = 8) -> str:
        values = [r[key] for r in losses if r["stage"] == stage and key in r][-n:]
        return f"{np.mean(values):.4f}" if values else "n/a"

    def continued_note(info: dict) -> str:
        earlier = info.get("continued_from")
        if not earlier:
            return ""
        return (f" Continued (`train --init-from`) from a model of {earlier['unet_steps']} UNet steps with a fresh optimizer"
                f" and EMA for {info['unet_steps'] - earlier['unet_steps']} more, {info['device']}.")

    passed = t2i["object_agreement"] >= TEXT_TO_IMAGE_TARGET
    gap = "" if passed else f" (missed by {100 * (TEXT_TO_IMAGE_TARGET - t2i['object_agreement']):.1f} points)"
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    return f"""# toy: a small Stable-Diffusion-layout model of the toy world

Trained here by `python -m longedit.toyworld.train` (config `longedit/toyworld/train_config.json`{_continue_config(info)}, seed
{info['config']['seed']}) on procedurally rendered 128x128 scenes of the toy world (`longedit.toyworld`):
coloured circles, squares and triangles on textured grass / sand / water / sky / road. It is an
*instrument* for measuring edits on machines without downloaded weights, not a general image model.

Load it with `--model toy` (this folder, shipped in the package) or `--model PATH`.

## Architecture
- VAE: `AutoencoderKL` {info['config']['vae']['block_out_channels']}, 8x downsampling, 4 latent channels, scaling factor {info['scaling_factor']:.4f} (fp32).
- Text: `CLIPTextModel` ({info['config']['text']['num_hidden_layers']} layers, width {info['config']['text']['hidden_size']}) with a `CLIPTokenizer` over the world's {len(__import__('longedit.toyworld.world', fromlist=['VOCABULARY']).VOCABULARY)} words (one token each), 77 positions (fp16).
- UNet: `UNet2DConditionModel` {info['config']['unet']['block_out_channels']}, cross-attention {_attention_levels(info)} and the mid block (fp16); RAD reads latent/{info['config'].get('attention_map_scale', 4)} (`attention_map.json`).
- Scheduler: DDIM as SD 1.x (scaled_linear 0.00085-0.012, clip_sample false, set_alpha_to_one false, steps_offset 1).
- Folder size: {size_mb:.1f} MB.

## Training
- Device: {info['device']}, torch {info['torch']}; a 2-core CPU, at times shared with other jobs.
- VAE: {info['vae_steps']} steps, batch {info['config']['vae']['batch']} random {info['config']['vae']['crop']}-px crops of rendered scenes and unconstrained random textures; final loss {last('vae', 'loss')}, train-crop PSNR {last('vae', 'psnr')} dB.
- Latents: {info['config']['data']['scenes']} captioned scenes encoded once (posterior means).
- UNet + text encoder jointly: {info['unet_steps']} steps, batch {info['config']['unet']['batch']}, AdamW lr {info['config']['unet']['lr']}{_lr_decay(info)}, min-SNR-5 weighting, caption dropout {info['config']['unet']['caption_dropout']}, EMA {info['config']['unet']['ema_decay']} (exported); final smoothed loss {last('unet', 'smoothed', 1)}.
- Attention grounding (weight {info['config']['unet'].get('attention_loss', 0)}): the UNet loss adds, for each object, 1 - the share of its shape noun's latent/{info['config'].get('attention_map_scale', 4)} cross-attention inside the object's mask (TokenCompose-style token grounding; final value {last('unet', 'attention_loss')}){_dominance_training(info, last)}.
- Run notes: {info['config'].get('_comment', '')}{continued_note(info)}
- Wall time per stage (s): {info['elapsed_s']}. Loss log: `loss.jsonl`.{_sharpen_note(folder)}

## Quality gates (`python -m longedit.toyworld.gates --model longedit/toyworld/model --card`)
Held-out renders (seeds disjoint from training), detector `longedit.toyworld.detect`:
- VAE reconstruction PSNR: {vae['trained_backgrounds']:.2f} dB on held-out scenes, {vae['unseen_backgrounds']:.2f} dB on scenes over background kinds never seen in training (bricks, checker, marble).{_ceiling_line(results)}
- Text -> image, {t2i['captions']} held-out captions ({t2i['objects']} objects), DDIM {t2i['steps']} steps, guidance {t2i['guidance']}: colour and shape agree for **{100 * t2i['object_agreement']:.1f}%** of objects (target {100 * TEXT_TO_IMAGE_TARGET:.0f}%{gap}); colour alone found {100 * t2i['colour_found']:.1f}%; all objects right in {100 * t2i['images_all_objects']:.1f}% of images; stated relations hold in {'n/a' if t2i['relations_hold'] is None else f"{100 * t2i['relations_hold']:.1f}%"} of {t2i['relations_checked']} checkable cases.
- Cross-attention localisation, {att['objects']} objects in {att['scenes']} noised held-out renders, {att['map']} maps (RAD's level) averaged over {att['timesteps']} DDIM timesteps: the object word's attention share inside its mask is **{att['mean_share_inside']:.3f}** vs a mask area fraction of {att['mean_area_fraction']:.3f} ({att['ratio']:.2f}x); share above area for {100 * att['objects_share_above_area']:.0f}% of objects.{_dominance_line(att)}

![samples](samples.png)

## What it cannot do
{_limits(results, info)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path(__file__).with_name("model")))
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--attention-scenes", type=int, default=60)
    parser.add_argument("--card", action="store_true", help="write README.md and samples.png into the model folder")
    parser.add_argument("--card-only", action="store_true", help="rewrite README.md from the folder's gates.json")
    args = parser.parse_args(argv)
    folder = Path(args.model)
    if args.card_only:
        (folder / "README.md").write_text(_card(folder, json.loads((folder / "gates.json").read_text())))
        return 0
    torch.set_num_threads(1)
    results = measure(args.model, args.captions, args.steps, args.guidance, args.attention_scenes)
    samples = results["text_to_image"].pop("samples")
    (folder / "gates.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if args.card:
        sample_grid(samples, folder / "samples.png")
        (folder / "README.md").write_text(_card(folder, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
