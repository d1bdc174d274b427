"""The toy model's card (its folder's README.md), written from the gates' measurements
(`longedit.toyworld.gates`), the training run's `train_info.json` and its loss log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from longedit.toyworld.world import VOCABULARY


def _baseline_line(results: dict) -> str:
    paired = results.get("text_to_image_vs_baseline")
    if paired is None:
        return ""
    return (f" Against the model it was grown from (same captions and seeds, {paired['n']} objects): {100 * paired['on']:.1f}%"
            f" vs {100 * paired['off']:.1f}%, paired difference {100 * paired['diff']:+.1f} points (bootstrap 95% interval"
            f" {100 * paired['low']:+.1f} to {100 * paired['high']:+.1f}).")


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
    target = t2i["target"]
    ceiling = results.get("vae_detector_agreement")
    relations = "n/a" if t2i["relations_hold"] is None else f"{100 * t2i['relations_hold']:.0f}%"
    lines = [f"It draws the colour it is asked for in {100 * t2i['colour_found']:.0f}% of objects, colour and shape together in"
             f" {100 * t2i['object_agreement']:.0f}%, and every object of a caption in {100 * t2i['images_all_objects']:.0f}% of images;"
             f" stated relations hold in {relations} of the"
             f" {t2i['relations_checked']} cases where both objects were found."]
    if t2i["object_agreement"] < target:
        gap = 100 * (target - t2i["object_agreement"])
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


def model_card(folder: Path, results: dict) -> str:
    """The model folder's README.md, from its `train_info.json`, `loss.jsonl` and the gates' results."""
    info = json.loads((folder / "train_info.json").read_text())
    t2i, att, vae = results["text_to_image"], results["attention"], results["vae_psnr_db"]
    target = t2i["target"]
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

    passed = t2i["object_agreement"] >= target
    gap = "" if passed else f" (missed by {100 * (target - t2i['object_agreement']):.1f} points)"
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    return f"""# toy: a small Stable-Diffusion-layout model of the toy world

Trained here by `python -m longedit.toyworld.train` (config `longedit/toyworld/train_config.json`{_continue_config(info)}, seed
{info['config']['seed']}) on procedurally rendered 128x128 scenes of the toy world (`longedit.toyworld`):
coloured circles, squares and triangles on textured grass / sand / water / sky / road. It is an
*instrument* for measuring edits on machines without downloaded weights, not a general image model.

Load it with `--model toy` (this folder, shipped in the package) or `--model PATH`.

## Architecture
- VAE: `AutoencoderKL` {info['config']['vae']['block_out_channels']}, 8x downsampling, 4 latent channels, scaling factor {info['scaling_factor']:.4f} (fp32).
- Text: `CLIPTextModel` ({info['config']['text']['num_hidden_layers']} layers, width {info['config']['text']['hidden_size']}) with a `CLIPTokenizer` over the world's {len(VOCABULARY)} words (one token each), 77 positions (fp16).
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
- Text -> image, {t2i['captions']} held-out captions ({t2i['objects']} objects), DDIM {t2i['steps']} steps, guidance {t2i['guidance']}: colour and shape agree for **{100 * t2i['object_agreement']:.1f}%** of objects (target {100 * target:.0f}%{gap}); colour alone found {100 * t2i['colour_found']:.1f}%; all objects right in {100 * t2i['images_all_objects']:.1f}% of images; stated relations hold in {'n/a' if t2i['relations_hold'] is None else f"{100 * t2i['relations_hold']:.1f}%"} of {t2i['relations_checked']} checkable cases.{_baseline_line(results)}
- Cross-attention localisation, {att['objects']} objects in {att['scenes']} noised held-out renders, {att['map']} maps (RAD's level) averaged over {att['timesteps']} DDIM timesteps: the object word's attention share inside its mask is **{att['mean_share_inside']:.3f}** vs a mask area fraction of {att['mean_area_fraction']:.3f} ({att['ratio']:.2f}x); share above area for {100 * att['objects_share_above_area']:.0f}% of objects.{_dominance_line(att)}

![samples](samples.png)

## What it cannot do
{_limits(results, info)}
"""
