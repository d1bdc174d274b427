"""`tune_clip`: one-shot Tune-A-Video tuning of a clip on a Stable Diffusion base, written as a model folder.

As the official `train_tuneavideo.py`: the base UNet gets Tune-A-Video's temporal layers (ours,
`longedit.backbones.tuneavideo.attach_tuneavideo`, TAV's init: `attn_temp.to_out[0].weight` zero) and
sparse-causal `attn1` (`longedit.attention`); everything is frozen except the modules whose names end
with one of `settings.trainable`; each step draws a timestep for the window, noises the window's
latents and regresses the noise (or v) with MSE against the source prompt's embedding; AdamW, gradient
norm clipped to 1, constant learning rate. Differences, each for memory or long clips: the VAE and the
text encoder run once (`longedit.tune.clip`), and a window is anywhere in the clip.

Every step draws its window, posterior sample, noise and timestep from a generator seeded by
(seed, step), so a run resumed from a checkpoint (`work_dir/tune-state.pt`, written atomically every
`checkpoint_every` steps and when stopped) is bit-identical on CPU to one that never stopped. The
checkpoint holds tensors and plain values only, with a checksum (`longedit.statefile`): the tuning cache
is shared, and a planted or damaged file there is ignored with one warning line, never unpickled.

The result is a Tune-A-Video model folder (`longedit.backbones.tuneavideo.save_tuneavideo_folder`: the
base's VAE, text encoder, tokenizer and scheduler, the tuned UNet in TAV's layout) plus `tune_info.json`
(base model, clip, settings, loss per step, optimizer state bytes, timing), published by one rename.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from longedit.atomic import atomic_folder, write_json
from longedit.config import TuneSettings
from longedit.errors import JobInterrupted, UserError
from longedit.statefile import load_state, save_state
from longedit.tune.clip import ClipPosterior, WindowPlan, encode_clip
from longedit.tune.optim import (
    MAX_GRAD_NORM,
    Precision,
    accelerator_for,
    check_request,
    make_optimizer,
    optimizer_state_bytes,
    parameter_bytes,
)

TUNE_INFO = "tune_info.json"
STATE_NAME = "tune-state.pt"
DEEPSPEED_STATE = "deepspeed-state"
FORMAT = 1
#: `longedit tune` trains at this short side unless --size says otherwise (the official 512x512).
DEFAULT_SIZE = 512
#: Fixed draws whose mean loss is measured before and after tuning (tune_info.json `loss`).
FIXED_SAMPLES = 4


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model: str) -> str:
    """The base model as the key sees it: a local folder's absolute path, else the name (hub id, tiny, toy)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if model not in ("tiny", "toy") and path.exists() else model


def resolved_settings(settings: TuneSettings) -> TuneSettings:
    """`settings` with the training size filled in (`size: None` trains at `DEFAULT_SIZE`)."""
    return settings if settings.size is not None else settings.model_copy(update={"size": DEFAULT_SIZE})


def tune_key(clip_sha256: str, model: str, prompt: str, settings: TuneSettings) -> str:
    """What a tuned model depends on, hashed: clip bytes, base model, prompt and settings (size resolved)."""
    payload = {
        "format": FORMAT, "clip": clip_sha256, "model": model_identity(model), "prompt": prompt,
        "settings": resolved_settings(settings).key_settings(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def trainable_parameters(unet: torch.nn.Module, names: list[str]) -> dict[str, torch.nn.Parameter]:
    """Freeze `unet` except the modules whose names end with one of `names` (TAV's rule); name -> parameter.

    A name that matches no module is a UserError (a typo would otherwise train nothing of it).
    """
    unet.requires_grad_(False)
    chosen: dict[str, torch.nn.Parameter] = {}
    for name in names:
        modules = [(path, module) for path, module in unet.named_modules() if path.endswith(name)]
        if not modules:
            raise UserError(
                f"--trainable '{name}' matches no module of the UNet",
                "name module paths by their end, e.g. attn1.to_q,attn2.to_q,attn_temp",
            )
        for path, module in modules:
            chosen.update(module.named_parameters(prefix=path))
    for parameter in chosen.values():
        parameter.requires_grad_(True)
    if not chosen:
        raise UserError(f"--trainable {','.join(names)} names modules without parameters", "name layers such as attn1.to_q")
    return dict(sorted(chosen.items()))


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder: torch.nn.Module, prompt: str, device: torch.device) -> torch.Tensor:
    """The prompt's text-encoder hidden states [1, 77, D] (fp32), computed once for the whole tuning."""
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0].float()


def build_tuneavideo_unet(components: dict, seed: int) -> torch.nn.Module:
    """The base SD UNet with Tune-A-Video's temporal layers (TAV's init, seeded) and sparse-causal attn1."""
    from longedit.attention import AttentionContext, install_processors
    from longedit.backbones.tuneavideo import attach_tuneavideo

    unet = components["unet"].float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attach_tuneavideo(unet, upcast_attention=bool(unet.config.get("upcast_attention", False)), identity=True)
    install_processors(unet, AttentionContext())
    return unet


def _set_frames(unet: torch.nn.Module, frames: int) -> None:
    """Frames per video for the temporal layers, clip-wise norms and the sparse-causal processors."""
    from longedit.backbones.tuneavideo import TEMPORAL_CHILD

    getattr(unet, TEMPORAL_CHILD).frames = frames
    for processor in unet.attn_processors.values():
        context = getattr(processor, "context", None)
        if context is not None:
            context.frames = frames


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step `step`: window, posterior sample, noise and timestep depend on (seed, step) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


@dataclass
class Progress:
    """What a tuning has done so far (checkpointed)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    train_s: float = 0.0
    resumed_from: int | None = None
    fixed_loss_before: float | None = None


class Checkpoints:
    """Save/restore the trainable weights, the optimizer (and loss scaler) and the progress in `work`."""

    def __init__(self, work: Path, fingerprint: str, params: dict[str, torch.nn.Parameter], deepspeed: bool) -> None:
        self.work = work
        self.fingerprint = fingerprint
        self.params = params
        self.deepspeed = deepspeed

    @property
    def path(self) -> Path:
        return self.work / STATE_NAME

    def save(self, accelerator, optimizer, progress: Progress) -> None:
        state = {
            "fingerprint": self.fingerprint, "step": progress.step, "losses": progress.losses,
            "train_s": progress.train_s, "fixed_loss_before": progress.fixed_loss_before,
        }
        if self.deepspeed:  # ZeRO partitions the optimizer: accelerate writes it
            accelerator.save_state(str(self.work / DEEPSPEED_STATE))
        else:
            state["params"] = {name: p.detach().cpu().clone() for name, p in self.params.items()}
            state["optimizer"] = optimizer.state_dict()
            state["scaler"] = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        save_state(self.path, state, what="the tuning checkpoint")

    def restore(self, accelerator, optimizer) -> Progress:
        """The saved progress (weights and optimizer restored), or a fresh one when there is none for this run
        (or it is unusable: old format, planted, torn or damaged, said in one warning line by `load_state`)."""
        state = load_state(self.path, what="the tuning checkpoint")
        if state is None or state.get("fingerprint") != self.fingerprint:
            return Progress()
        saved = state.get("params") if isinstance(state.get("params"), dict) else {}
        counts = type(state.get("step")) is int and isinstance(state.get("losses"), list)
        if not counts or (not self.deepspeed and any(getattr(saved.get(n), "shape", None) != p.shape for n, p in self.params.items())):
            warnings.warn(f"ignoring the tuning checkpoint '{self.path}': its step or weights do not fit this run; starting afresh")
            return Progress()
        if self.deepspeed:
            accelerator.load_state(str(self.work / DEEPSPEED_STATE))
        else:
            with torch.no_grad():
                for name, parameter in self.params.items():
                    parameter.copy_(state["params"][name])
            optimizer.load_state_dict(state["optimizer"])
            if accelerator.scaler is not None and state.get("scaler"):
                accelerator.scaler.load_state_dict(state["scaler"])
        return Progress(
            step=state["step"], losses=list(state["losses"]), train_s=state["train_s"], resumed_from=state["step"],
            fixed_loss_before=state.get("fixed_loss_before"),
        )


@dataclass
class TuneRun:
    """Everything one training loop needs (built by `tune_clip`)."""

    unet: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    posterior: ClipPosterior
    plan: WindowPlan
    embedding: torch.Tensor
    scheduler: object
    settings: TuneSettings
    device: torch.device
    precision: Precision
    checkpoints: Checkpoints


def _target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise UserError(f"the base model's scheduler predicts '{kind}'", "tune a model that predicts epsilon or v")


def _window_loss(run: TuneRun, model, generator: torch.Generator, timestep: int | None = None) -> torch.Tensor:
    """The training loss of one window drawn from `generator` (timestep drawn too unless given)."""
    frames, device = run.plan.frames, run.device
    indices = run.plan.sample(generator)
    latents = run.posterior.sample(indices, generator)
    noise = torch.randn(latents.shape, generator=generator)
    if timestep is None:
        timestep = int(torch.randint(0, int(run.scheduler.config.num_train_timesteps), (1,), generator=generator))
    timesteps = torch.full((frames,), timestep, dtype=torch.long)
    noisy = run.scheduler.add_noise(latents, noise, timesteps)
    target = _target(run.scheduler, latents, noise, timesteps)
    embedding = run.embedding.to(device).expand(frames, -1, -1)
    prediction = model(noisy.to(device), timesteps.to(device), encoder_hidden_states=embedding).sample
    return F.mse_loss(prediction.float(), target.to(device).float())


@torch.no_grad()
def fixed_loss(run: TuneRun, model, samples: int = FIXED_SAMPLES) -> float:
    """Mean loss over `samples` fixed draws (windows, noise; timesteps spread evenly over the schedule).

    The same draws before and after tuning, so the two numbers compare the model, not the sampling.
    """
    total = int(run.scheduler.config.num_train_timesteps)
    losses = []
    for index in range(samples):
        generator = step_generator(run.settings.seed, -1 - index)
        losses.append(float(_window_loss(run, model, generator, int((index + 0.5) / samples * total))))
    return sum(losses) / len(losses)


def train(
    run: TuneRun,
    progress_bar: bool = True,
    stop_event: threading.Event | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Progress, int, float]:
    """The loop from the last checkpoint to `settings.steps`; returns (progress, optimizer state bytes, fixed loss after).

    Raises `JobInterrupted` after checkpointing when `stop_event` is set.
    """
    settings, device, unet = run.settings, run.device, run.unet
    optimizer = make_optimizer(settings, list(run.params.values()))
    unet.to(device)
    unet.train()
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    _set_frames(unet, run.plan.frames)
    with accelerator_for(device, run.precision, settings.deepspeed) as accelerator:
        model, optimizer = accelerator.prepare(unet, optimizer)
        progress = run.checkpoints.restore(accelerator, optimizer)
        if progress.fixed_loss_before is None:
            progress.fixed_loss_before = fixed_loss(run, model)
        bar = tqdm(total=settings.steps, initial=progress.step, desc="tune", unit="step", disable=not progress_bar)
        clock = time.perf_counter()
        while progress.step < settings.steps:
            loss = _window_loss(run, model, step_generator(settings.seed, progress.step))
            accelerator.backward(loss)
            if not settings.deepspeed:  # DeepSpeed clips by its config
                accelerator.clip_grad_norm_(list(run.params.values()), MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            progress.step += 1
            progress.losses.append(value)
            now = time.perf_counter()
            progress.train_s += now - clock
            clock = now
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if on_step is not None:
                on_step(progress.step, value)
            stopping = stop_event is not None and stop_event.is_set()
            if progress.step < settings.steps and (stopping or progress.step % settings.checkpoint_every == 0):
                run.checkpoints.save(accelerator, optimizer, progress)
            if stopping and progress.step < settings.steps:
                bar.close()
                raise JobInterrupted(f"tuning stopped at step {progress.step}; checkpoint in {run.checkpoints.work}")
        bar.close()
        state_bytes = optimizer_state_bytes(optimizer)
        after = fixed_loss(run, model)
    unet.disable_gradient_checkpointing()
    unet.eval()
    return progress, state_bytes, after


def _info(run: TuneRun, progress: Progress, state_bytes: int, after: float, context: dict) -> dict:
    """tune_info.json: what was tuned, how, and what it measured."""
    losses = progress.losses
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10) :]
    settings = run.settings
    return {
        "format": FORMAT,
        "kind": "tuneavideo",
        **context,
        "settings": {**settings.key_settings(), "checkpoint_every": settings.checkpoint_every},
        "window": {"frames": run.plan.frames, "stride": run.plan.stride, "starts": run.plan.starts, "note": run.plan.note},
        "device": str(run.device),
        "mixed_precision": run.precision.name,
        "trainable": {
            "names": settings.trainable,
            "tensors": len(run.params),
            "parameters": sum(p.numel() for p in run.params.values()),
            "parameter_bytes": parameter_bytes(run.params.values()),
        },
        "unet_parameters": sum(p.numel() for p in run.unet.parameters()),
        "optimizer": {
            "name": "deepspeed-cpu-adamw (ZeRO-2 offload)" if settings.deepspeed else settings.optimizer,
            "state_bytes": state_bytes,
            "state_on": "cpu" if settings.deepspeed else str(run.device),
        },
        "loss": {
            "fixed_samples": FIXED_SAMPLES, "fixed_before": progress.fixed_loss_before, "fixed_after": after,
            "first_tenth_mean": sum(head) / len(head), "last_tenth_mean": sum(tail) / len(tail), "per_step": losses,
        },
        "resumed_from_step": progress.resumed_from,
        "peak_vram_bytes": int(torch.cuda.max_memory_allocated(run.device)) if run.device.type == "cuda" else None,
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                     "accelerate": __import__("accelerate").__version__},
    }


def write_tuned_folder(components: dict, unet: torch.nn.Module, output: Path, info: dict) -> Path:
    """Publish the Tune-A-Video folder + tune_info.json at `output` by one rename (FileExistsError if taken)."""
    from longedit.backbones.tuneavideo import save_tuneavideo_folder

    parts = {key: components[key] for key in ("vae", "text_encoder", "tokenizer", "scheduler")}
    with atomic_folder(output, what="the tuned model") as temp:
        save_tuneavideo_folder({**parts, "unet": unet}, temp, safe_serialization=True)
        write_json(temp / TUNE_INFO, info, what="the tuning record")
    return output


def read_tune_info(folder: Path) -> dict | None:
    """A tuned folder's tune_info.json, None when it has none."""
    try:
        return json.loads((Path(folder) / TUNE_INFO).read_text())
    except (OSError, ValueError):
        return None


def check_output_folder(output: Path) -> None:
    """`-o` must be a new folder (or an empty one) in a writable place."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"'{output}' already exists", "pick a new folder for -o or remove the old one")
    parent = output.resolve().parent
    if not parent.is_dir():
        raise UserError(f"the folder '{parent}' for -o does not exist", "create it first")


def tune_clip(
    clip: Path,
    prompt: str,
    output: Path,
    settings: TuneSettings,
    *,
    model: str,
    work_dir: Path,
    device: str = "auto",
    local_files_only: bool = False,
    progress: bool = True,
    stop_event: threading.Event | None = None,
    on_step: Callable[[int, float], None] | None = None,
    exist_ok: bool = False,
    clip_sha256: str | None = None,
) -> dict:
    """Tune Tune-A-Video on `clip` with `prompt`, write the model folder `output`; returns its tune_info.

    Input, device, packages and trainable names are checked before any long work. `work_dir` holds the
    latent cache and checkpoints (a rerun with the same arguments resumes) and is removed at the end.
    `exist_ok`: another run that published `output` first is fine (its tune_info is returned).
    `clip_sha256`: the clip's hash when the caller has it already.
    """
    from longedit.models import load_components, resolve_device
    from longedit.video import probe, processing_size

    if not prompt.strip():
        raise UserError("the source prompt must not be empty", "pass --prompt describing the clip")
    output, work_dir = Path(output), Path(work_dir)
    settings = resolved_settings(settings)
    if not exist_ok:
        check_output_folder(output)
    target = resolve_device(device)
    precision = check_request(settings, target)
    info = probe(clip)
    size = processing_size(info.width, info.height, settings.size)
    clip_sha = clip_sha256 or file_sha256(Path(clip))
    fingerprint = tune_key(clip_sha, model, prompt, settings)
    started = time.perf_counter()
    components = load_components(model, local_files_only)
    if components["kind"] != "sd":
        raise UserError(
            f"--model {model} is a {components['kind']} model; tuning starts from a Stable Diffusion model",
            "pass the Stable Diffusion model it was made from",
        )
    unet = build_tuneavideo_unet(components, settings.seed)
    params = trainable_parameters(unet, settings.trainable)
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    vae, text_encoder = components["vae"].to(target).eval(), components["text_encoder"].to(target).eval()
    embedding = encode_prompt(components["tokenizer"], text_encoder, prompt, target).cpu()
    latents_key = hashlib.sha256(f"{clip_sha}|{model_identity(model)}|{size}".encode()).hexdigest()
    posterior = encode_clip(vae, info, size, work_dir, target, latents_key, progress, stop_event)
    vae.cpu()
    text_encoder.cpu()
    encode_s = time.perf_counter() - started
    from diffusers import DDPMScheduler

    run = TuneRun(
        unet=unet, params=params, posterior=posterior, plan=WindowPlan.fit(info.frames, settings.frames, settings.frame_stride),
        embedding=embedding, scheduler=DDPMScheduler.from_config(components["scheduler"].config), settings=settings,
        device=target, precision=precision, checkpoints=Checkpoints(work_dir, fingerprint, params, settings.deepspeed),
    )
    done, state_bytes, after = train(run, progress, stop_event, on_step)
    unet.cpu()
    context = {
        "base_model": model, "prompt": prompt, "key": fingerprint,
        "clip": {"path": str(clip), "sha256": clip_sha, "frames": info.frames, "fps": float(info.fps), "size": [info.width, info.height]},
        "processed_size": list(size),
        "timing": {"load_and_encode_s": round(encode_s, 3), "train_s": round(done.train_s, 3),
                   "s_per_step": round(done.train_s / max(1, len(done.losses)), 4)},
    }
    record = _info(run, done, state_bytes, after, context)
    try:
        write_tuned_folder(components, unet, output, record)
    except FileExistsError:
        if not exist_ok:
            raise UserError(f"'{output}' appeared while tuning", "pick a new folder for -o") from None
        record = read_tune_info(output) or record
    shutil.rmtree(work_dir, ignore_errors=True)
    return record
