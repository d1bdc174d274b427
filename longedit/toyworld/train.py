"""Train the toy model: `python -m longedit.toyworld.train --config CONFIG --work WORK --out MODEL_DIR`.

Stages, each resumable from `WORK/state.pt` (written every `checkpoint_every_s` and at stage ends):
1. `vae`: AutoencoderKL on random crops of rendered scenes and unconstrained `wild` textures (fully
   convolutional, so crops train it for the full frame; wild textures make unseen backgrounds encode).
2. `data`: render the captioned training scenes and cache their VAE latents (posterior means) and
   token ids, so the UNet stage never touches pixels.
3. `unet`: UNet2DConditionModel and CLIPTextModel trained jointly (epsilon prediction, min-SNR
   weighting, caption dropout to the empty prompt for classifier-free guidance), EMA weights exported.
Then the diffusers folder is written to `--out`. `--vae-steps/--unet-steps` override the config (e.g.
to finish early on resume); creating the file `WORK/STOP` ends the running stage at its next step.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from longedit.toyworld import components
from longedit.toyworld.grounding import grounding_losses, sink_losses
from longedit.toyworld.render import render_scene, shape_coverage
from longedit.toyworld.textures import texture
from longedit.toyworld.world import SHAPES, sample_scene

DEFAULT_CONFIG = Path(__file__).with_name("train_config.json")
STAGES = ("vae", "data", "unet", "done")
MAP_LEVEL_FILE = "attention_map.json"  # the model folder names its RAD map level (longedit.models reads it)


def map_scale(config: dict) -> int:
    """Latent downsampling of the cross-attention level the grounding losses (and RAD) use: 4 (H/32) by
    default, 1 (H/8) for a UNet with `full_resolution_attention`."""
    return int(config.get("attention_map_scale", 4))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 -> float N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def cosine_factor(step: int, steps: int, ratio: float) -> float:
    """1 at step 0 down to `ratio` at `steps`, along half a cosine (the last steps polish, not hop)."""
    return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))


def unet_lr(cfg: dict, step: int, steps: int) -> float:
    """Linear warmup, then constant, or a cosine decay to `min_lr_ratio` x lr over the run when the
    config sets it (a continued run settles into a minimum instead of hopping around it)."""
    lr = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])
    ratio = cfg.get("min_lr_ratio")
    return lr if ratio is None else lr * cosine_factor(step, steps, ratio)


class Trainer:
    """Holds the run's state; every stage reads and writes `self.state` so a checkpoint resumes it."""

    def __init__(self, config: dict, work: Path, log) -> None:
        self.config, self.work, self.log = config, work, log
        self.state_path = work / "state.pt"
        self.data_path = work / "latents.pt"
        self.loss_path = work / "loss.jsonl"
        self.tokenizer = components.build_tokenizer()
        self.vae = components.build_vae(config["vae"])
        self.text_encoder = components.build_text_encoder(config["text"], self.tokenizer)
        self.unet = components.build_unet(config["unet"])
        self.state: dict = {"stage": "vae", "step": 0, "elapsed": {}, "scaling_factor": None}
        self._last_save = time.monotonic()

    # ---- checkpoints -------------------------------------------------------------------------
    def load(self) -> None:
        if not self.state_path.exists():
            return
        saved = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self.state = saved["state"]
        self.vae.load_state_dict(saved["vae"])
        # untouched (fresh init) before the UNet stage, unless continued from a model (`init_from`)
        if self.state["stage"] in ("unet", "done") or self.state.get("init_from"):
            self.unet.load_state_dict(saved["unet"])
            self.text_encoder.load_state_dict(saved["text_encoder"])
        self._optim_state = saved.get("optim")
        self._ema_state = saved.get("ema")
        torch.set_rng_state(saved["torch_rng"])
        self.log(f"resumed at stage {self.state['stage']} step {self.state['step']}")

    def init_from(self, model: Path) -> None:
        """Continue from an exported model folder (its VAE, UNet and text encoder; fresh optimizer and EMA):
        the VAE stage is skipped, the latents are cached again with that VAE, and the UNet stage trains
        `unet.steps` more steps on top of the folder's own (`train_info.json`), which the export adds up."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        vae = AutoencoderKL.from_pretrained(model / "vae")
        self.vae.load_state_dict(vae.state_dict())
        grown = components.grow_unet(self.unet, UNet2DConditionModel.from_pretrained(model / "unet").float().state_dict())
        if grown:
            self.log(f"grown UNet: {len(grown)} new parameters (attention blocks starting as identities)")
        self.text_encoder.load_state_dict(CLIPTextModel.from_pretrained(model / "text_encoder").float().state_dict())
        earlier = json.loads((model / "train_info.json").read_text())
        self.state.update(
            stage="data", step=0, vae_steps_done=earlier["vae_steps"], earlier_unet_steps=earlier["unet_steps"],
            elapsed={f"earlier_{k}": v for k, v in earlier["elapsed_s"].items()}, init_from=str(model),
            scaling_factor=float(vae.config.scaling_factor),  # the UNet was trained at this scale: keep it
        )
        self.log(f"continuing {model}: VAE {earlier['vae_steps']} steps, UNet {earlier['unet_steps']} steps before")

    def save(self, optim=None, ema=None) -> None:
        payload = {
            "state": self.state,
            "vae": self.vae.state_dict(),
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "optim": optim.state_dict() if optim is not None else None,
            "ema": ema,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.state_path)
        self._last_save = time.monotonic()

    def maybe_save(self, optim=None, ema=None) -> None:
        if time.monotonic() - self._last_save >= self.config["checkpoint_every_s"]:
            self.save(optim, ema)

    def stop_requested(self) -> bool:
        return (self.work / "STOP").exists()

    def record(self, stage: str, step: int, **values: float) -> None:
        with self.loss_path.open("a") as file:
            file.write(json.dumps({"stage": stage, "step": step, **values}) + "\n")

    def _tick(self, stage: str, started: float) -> None:
        self.state["elapsed"][stage] = self.state["elapsed"].get(stage, 0.0) + time.monotonic() - started

    # ---- stage 1: VAE --------------------------------------------------------------------------
    def _vae_pool(self) -> np.ndarray:
        cfg, size = self.config["vae"], self.config["size"]
        rng = np.random.default_rng(self.config["seed"] + 1)
        images = [render_scene(sample_scene(rng, size), size)[0] for _ in range(cfg["pool_scenes"])]
        for i in range(cfg["pool_wild"]):
            images.append((texture("wild", size, size, 10_000_000 + i) * 255).round().astype(np.uint8))
        return np.stack(images)

    def train_vae(self, steps: int) -> None:
        cfg = self.config["vae"]
        pool = self._vae_pool()
        optim = torch.optim.AdamW(self.vae.parameters(), lr=cfg["lr"], weight_decay=0.0)
        if getattr(self, "_optim_state", None):
            optim.load_state_dict(self._optim_state)
        rng = np.random.default_rng(self.config["seed"] + 2 + self.state["step"])
        self.vae.train()
        crop, size = cfg["crop"], self.config["size"]
        bar = tqdm(total=steps, initial=self.state["step"], desc="vae", mininterval=20, file=sys.stderr)
        started = time.monotonic()
        while self.state["step"] < steps and not self.stop_requested():
            idx = rng.integers(len(pool), size=cfg["batch"])
            ys, xs = rng.integers(0, size - crop + 1, size=(2, cfg["batch"]))
            batch = np.stack([pool[i, y : y + crop, x : x + crop] for i, y, x in zip(idx, ys, xs)])
            flip = rng.random(cfg["batch"]) < 0.5
            batch[flip] = batch[flip, :, ::-1]
            images = to_tensor(batch)
            posterior = self.vae.encode(images).latent_dist
            # decoding the mean (not a sample) keeps the early, untrained posterior variance from drowning
            # the latents in noise: with a tiny KL weight the model is close to a plain autoencoder anyway
            latent = posterior.mean if cfg.get("decode_mean", False) else posterior.sample()
            recon = self.vae.decode(latent).sample
            rec = F.mse_loss(recon, images) + 0.5 * F.l1_loss(recon, images)
            kl = posterior.kl().mean() / images[0].numel()
            loss = rec + cfg["kl_weight"] * kl * images[0].numel()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            optim.step()
            self.state["step"] += 1
            bar.update(1)
            if self.state["step"] % 25 == 0:
                psnr = -10 * math.log10(max(F.mse_loss(recon, images).item() / 4, 1e-10))
                self.record("vae", self.state["step"], loss=loss.item(), psnr=psnr, kl=kl.item())
                bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
            self._tick("vae", started)
            started = time.monotonic()
            self.maybe_save(optim)
        bar.close()
        self.vae.eval()
        self._optim_state = None
        self.state.update(stage="data", vae_steps_done=self.state["step"], step=0)
        self.save()

    # ---- stage 2: latents ----------------------------------------------------------------------
    @torch.no_grad()
    def cache_latents(self) -> None:
        cfg, size = self.config["data"], self.config["size"]
        cache = torch.load(self.data_path, weights_only=True) if self.data_path.exists() else {"latents": [], "captions": []}
        rng = np.random.default_rng(self.config["seed"] + 3)
        done = sum(len(c) for c in cache["latents"])
        scenes = [sample_scene(rng, size) for _ in range(cfg["scenes"])]  # same sequence on resume
        self.vae.eval()
        bar = tqdm(total=cfg["scenes"], initial=done, desc="latents", mininterval=20, file=sys.stderr)
        started = time.monotonic()
        while done < cfg["scenes"]:
            chunk = scenes[done : done + cfg["chunk"]]
            images = to_tensor(np.stack([render_scene(s, size)[0] for s in chunk]))
            means = torch.cat([self.vae.encode(part).latent_dist.mean for part in images.split(50)])
            cache["latents"].append(means.half())
            cache["captions"].extend(s.caption for s in chunk)
            done += len(chunk)
            torch.save(cache, self.data_path)
            bar.update(len(chunk))
        bar.close()
        latents = torch.cat(cache["latents"]).float()
        if self.state.get("scaling_factor") is None:  # a continued model keeps its own
            self.state["scaling_factor"] = float(1.0 / latents.std())
        self._tick("data", started)
        self.log(f"latent std {latents.std():.4f} -> scaling_factor {self.state['scaling_factor']:.4f}")
        self.state.update(stage="unet", step=0)
        self.save()

    # ---- stage 3: UNet + text encoder -------------------------------------------------------------
    def _token_ids(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    def _grounding(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cached scene: the shape noun's token column of each object (0: none) and the cells of
        its mask on the map level `map_scale` (coverage / max coverage), for the attention grounding loss."""
        size, grid = self.config["size"], self.config["size"] // (8 * map_scale(self.config))
        rng = np.random.default_rng(self.config["seed"] + 3)  # the scenes cache_latents rendered
        columns = torch.zeros(count, 3, dtype=torch.long)
        cells = torch.zeros(count, 3, grid * grid)
        for n in range(count):
            scene = sample_scene(rng, size)
            nouns = [i + 1 for i, w in enumerate(scene.caption.split()) if w in SHAPES]  # one token per word
            for k, (obj, column) in enumerate(zip(scene.objects, nouns)):
                cover = torch.from_numpy(shape_coverage(obj.shape, obj.cx, obj.cy, obj.size, size, size))
                pooled = F.adaptive_avg_pool2d(cover[None, None], grid).flatten()
                columns[n, k], cells[n, k] = column, pooled / pooled.max().clamp_min(1e-6)
        return columns, cells

    def train_unet(self, steps: int) -> None:
        cfg = self.config["unet"]
        cache = torch.load(self.data_path, weights_only=True)
        latents = torch.cat(cache["latents"]).float() * self.state["scaling_factor"]
        ids = self._token_ids(cache["captions"])
        empty = self._token_ids([""])[0]
        scheduler = components.build_scheduler("ddpm")
        alphas = scheduler.alphas_cumprod
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        optim = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.01)
        if getattr(self, "_optim_state", None):
            optim.load_state_dict(self._optim_state)
        ema = getattr(self, "_ema_state", None) or [p.detach().clone() for p in params]
        rng = torch.Generator().manual_seed(self.config["seed"] + 4 + self.state["step"])
        grounding = cfg.get("attention_loss", 0.0)
        dominance = cfg.get("noun_dominance_loss", 0.0) if grounding else 0.0
        sink_weight = cfg.get("sink_loss", 0.0) if grounding else 0.0
        noun_share_weight = cfg.get("noun_share_loss", 0.0) if grounding else 0.0
        if grounding:
            from longedit.attention import AttentionContext, install_processors

            context = AttentionContext()
            install_processors(self.unet, context, scale=map_scale(self.config), sparse_causal=False)
            noun_columns, noun_cells = self._grounding(len(latents))
        self.unet.train()
        self.text_encoder.train()
        bar = tqdm(total=steps, initial=self.state["step"], desc="unet", mininterval=20, file=sys.stderr)
        started = time.monotonic()
        running = None
        while self.state["step"] < steps and not self.stop_requested():
            step = self.state["step"]
            for group in optim.param_groups:
                group["lr"] = unet_lr(cfg, step, steps)
            idx = torch.randint(len(latents), (cfg["batch"],), generator=rng)
            x0 = latents[idx]
            tokens = ids[idx].clone()
            drop = torch.rand(cfg["batch"], generator=rng) < cfg["caption_dropout"]
            tokens[drop] = empty
            noise = torch.randn(x0.shape, generator=rng)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg["batch"],), generator=rng)
            noisy = scheduler.add_noise(x0, noise, t)
            text = self.text_encoder(tokens)[0]
            if grounding:
                context.reset()
                context.capture, context.columns = True, torch.arange(77)
            pred = self.unet(noisy, t, text).sample
            snr = alphas[t] / (1 - alphas[t])
            weight = torch.clamp(snr, max=cfg["min_snr_gamma"]) / snr
            loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
            if grounding:
                maps = torch.stack(context.maps).mean(0)  # [batch, cells, 77]
                columns = noun_columns[idx]
                valid = (columns > 0) & ~drop[:, None]
                attention_loss, dominance_loss = grounding_losses(maps, columns, noun_cells[idx], valid)
                loss = loss + grounding * attention_loss + dominance * dominance_loss
                if sink_weight or noun_share_weight:
                    sink_loss, noun_share_loss = sink_losses(maps, columns, noun_cells[idx], valid, cfg)
                    loss = loss + sink_weight * sink_loss + noun_share_weight * noun_share_loss
                context.reset()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            decay = min(cfg["ema_decay"], (1 + step) / (10 + step))
            with torch.no_grad():
                for shadow, param in zip(ema, params):
                    shadow.lerp_(param.detach(), 1 - decay)
            self.state["step"] += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            if self.state["step"] % 25 == 0:
                extra = {"attention_loss": attention_loss.item()} if grounding else {}
                if dominance:
                    extra["noun_dominance_loss"] = dominance_loss.item()
                if sink_weight or noun_share_weight:
                    extra.update(sink_loss=sink_loss.item(), noun_share_loss=noun_share_loss.item())
                self.record("unet", self.state["step"], loss=loss.item(), smoothed=running, **extra)
                bar.set_postfix(loss=f"{running:.4f}")
            self._tick("unet", started)
            started = time.monotonic()
            self.maybe_save(optim, ema)
        bar.close()
        with torch.no_grad():  # export the EMA weights
            for shadow, param in zip(ema, params):
                param.copy_(shadow)
        self.state.update(stage="done", unet_steps_done=self.state["step"], step=0)
        self.save()

    # ---- export ----------------------------------------------------------------------------------
    def export(self, out: Path) -> None:
        """Write the diffusers folder (fp16 UNet and text encoder, fp32 VAE) and `train_info.json`."""
        out.mkdir(parents=True, exist_ok=True)
        if self.state["stage"] == "unet" and getattr(self, "_ema_state", None):  # stopped mid-stage
            params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
            with torch.no_grad():
                for shadow, param in zip(self._ema_state, params):
                    param.copy_(shadow)
            self.state["unet_steps_done"] = self.state["step"]
        self.vae.register_to_config(scaling_factor=self.state["scaling_factor"])
        self.vae.eval().save_pretrained(out / "vae")
        copy.deepcopy(self.unet).eval().half().save_pretrained(out / "unet")
        copy.deepcopy(self.text_encoder).eval().half().save_pretrained(out / "text_encoder")
        self.tokenizer.save_pretrained(out / "tokenizer")
        components.build_scheduler("ddim").save_pretrained(out / "scheduler")
        model_index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": __import__("diffusers").__version__,
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        (out / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
        scale = map_scale(self.config)
        (out / MAP_LEVEL_FILE).write_text(json.dumps({"rad_map_scale": scale, "note": (
            f"RAD's cross-attention maps: latent/{scale} = frame/{8 * scale}")}, indent=2) + "\n")
        earlier = self.state.get("earlier_unet_steps") or 0
        info = {
            "config": self.config,
            "vae_steps": self.state.get("vae_steps_done"),
            "unet_steps": earlier + (self.state.get("unet_steps_done") or 0),
            "continued_from": {"model": self.state["init_from"], "unet_steps": earlier} if earlier else None,
            "elapsed_s": {k: round(v) for k, v in self.state["elapsed"].items()},
            "scaling_factor": self.state["scaling_factor"],
            "device": f"cpu ({torch.get_num_threads()} torch threads)",
            "torch": torch.__version__,
        }
        (out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
        if self.loss_path.exists():
            (out / "loss.jsonl").write_text(self.loss_path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--work", type=Path, required=True, help="checkpoint folder (not committed)")
    parser.add_argument("--out", type=Path, required=True, help="diffusers folder to write at the end")
    parser.add_argument("--vae-steps", type=int, help="override the config's VAE steps")
    parser.add_argument("--unet-steps", type=int, help="override the config's UNet steps")
    parser.add_argument("--export-only", action="store_true", help="export the checkpoint as it is")
    parser.add_argument("--init-from", type=Path, help="continue training an exported model folder (UNet stage only)")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())
    for stage, override in (("vae", args.vae_steps), ("unet", args.unet_steps)):
        if override is not None:
            config[stage]["steps"] = override
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    args.work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    trainer = Trainer(config, args.work, log)
    trainer.load()
    if args.init_from is not None and not trainer.state_path.exists():
        trainer.init_from(args.init_from)
    if not args.export_only:
        if trainer.state["stage"] == "vae":
            trainer.train_vae(config["vae"]["steps"])
            (args.work / "STOP").unlink(missing_ok=True)
        if trainer.state["stage"] == "data":
            trainer.cache_latents()
        if trainer.state["stage"] == "unet":
            trainer.train_unet(config["unet"]["steps"])
    trainer.export(args.out)
    log(f"exported to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
