"""`longedit tune`: one-shot Tune-A-Video tuning on the tiny model (windows, latent cache, what trains,
the loss, resume, the written folder, the optimizers' availability messages)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from longedit.cli import main
from longedit.config import TuneSettings
from longedit.errors import JobInterrupted, UserError
from longedit.tune import optim
from longedit.tune.clip import LATENTS_PREFIX, WindowPlan, encode_clip, latents_path
from longedit.tune.trainer import STATE_NAME, TUNE_INFO, tune_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a red square on a road"
#: Small and fast, with a learning rate large enough to see the loss move in a few steps.
FAST = dict(steps=8, lr=1e-2, frames=4, size=64, checkpoint_every=3)


# ------------------------------------------------------------------------------------ windows
def test_windows_are_drawn_across_the_whole_clip_with_the_stride():
    plan = WindowPlan.fit(100, 16, 2)
    assert (plan.frames, plan.stride, plan.starts, plan.note) == (16, 2, 70, None)
    generator = torch.Generator().manual_seed(0)
    windows = [plan.sample(generator) for _ in range(300)]
    assert all(np.diff(w).tolist() == [2] * 15 for w in windows)
    seen = {frame for window in windows for frame in window}
    assert min(seen) == 0 and max(seen) == 99  # the first and the last frame both get trained on
    assert len({w[0] for w in windows}) > 50  # not only the first frames, as the official dataset


def test_a_clip_shorter_than_a_window_gives_every_frame_it_has():
    plan = WindowPlan.fit(6, 16, 1)
    assert (plan.frames, plan.starts) == (6, 1) and "6 frames" in plan.note
    assert plan.sample(torch.Generator().manual_seed(1)) == [0, 1, 2, 3, 4, 5]
    strided = WindowPlan.fit(7, 16, 3)
    assert strided.frames == 3 and strided.sample(torch.Generator()) == [0, 3, 6]


def test_the_clip_is_encoded_once_into_a_cache_on_disk(clip, tiny_backbone, tmp_path, monkeypatch):
    from longedit.video import probe

    info = probe(clip)
    vae = tiny_backbone.vae
    posterior = encode_clip(vae, info, (64, 64), tmp_path, torch.device("cpu"), "k1", progress=False)
    assert latents_path(tmp_path, "k1").is_file() and posterior.array.shape == (6, 2, 4, 8, 8)
    assert [p.name for p in tmp_path.iterdir()] == [latents_path(tmp_path, "k1").name]  # no temp file left
    from longedit.video import iter_frames

    first = torch.from_numpy(next(iter(iter_frames(clip, size=(64, 64))))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        mean = vae.encode(first).latent_dist.mean[0] * vae.config.scaling_factor
    assert torch.allclose(torch.tensor(posterior.array[0, 0], dtype=torch.float32), mean, atol=2e-3)
    calls = []
    encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    again = encode_clip(vae, info, (64, 64), tmp_path, torch.device("cpu"), "k1", progress=False)
    assert np.array_equal(np.asarray(again.array), np.asarray(posterior.array)) and calls == []
    other = encode_clip(vae, info, (128, 128), tmp_path, torch.device("cpu"), "k2", progress=False)  # another size
    assert other.array.shape == (6, 2, 4, 16, 16) and calls == [1]


# ------------------------------------------------------------------------------------ a tuning
class Counted:
    """Counts how often the tiny model's VAE encoder and text encoder run during a tuning."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import longedit.models

        self.vae_calls = self.text_calls = 0
        original = longedit.models.load_components

        def load(*args, **kwargs):
            components = original(*args, **kwargs)
            components["vae"].encoder.register_forward_hook(lambda *_: self._count("vae_calls"))
            components["text_encoder"].register_forward_hook(lambda *_: self._count("text_calls"))
            return components

        monkeypatch.setattr(longedit.models, "load_components", load)

    def _count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, clip):
    """One tuning of the session clip (6 frames) with the tiny model, and how often its encoders ran."""
    monkeypatch = pytest.MonkeyPatch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counted = Counted(monkeypatch)
        folder = tmp_path_factory.mktemp("tuned") / "tav"
        work = folder.parent / "work"
        info = tune_clip(clip, PROMPT, folder, TuneSettings(**FAST), model="tiny", work_dir=work, progress=False)
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
    return folder, info, counted, work


def _base_tuneavideo_state(seed: int = 33) -> dict[str, torch.Tensor]:
    """The state the tuning starts from: the tiny UNet with TAV's temporal layers, TAV's init."""
    from longedit.backbones.tuneavideo import attach_tuneavideo
    from longedit.random_models import build_tiny_components

    unet = build_tiny_components()["unet"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attach_tuneavideo(unet, identity=True)
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_tuning_changes_exactly_the_named_modules_and_lowers_the_loss(tuned):
    from longedit.backbones.tuneavideo import load_tuneavideo_unet

    folder, info, counted, work = tuned
    after = load_tuneavideo_unet(str(folder)).state_dict()
    before = _base_tuneavideo_state()
    assert set(after) == set(before)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    named = {key for key in before if key.rpartition(".")[0].endswith(("attn1.to_q", "attn2.to_q", "attn_temp.to_q",
             "attn_temp.to_k", "attn_temp.to_v", "attn_temp.to_out.0"))}
    assert changed == named and len(changed) == info["trainable"]["tensors"]
    assert any(".attn_temp." in key for key in changed) and not any("norm_temp" in key for key in changed)
    loss = info["loss"]
    assert loss["fixed_after"] < loss["fixed_before"] - 0.01, loss
    assert len(loss["per_step"]) == 8 and all(np.isfinite(loss["per_step"]))
    assert not work.exists()  # the latent cache and checkpoints go when the folder is published


def test_the_clip_is_encoded_once_and_the_prompt_once(tuned):
    _, info, counted, _ = tuned
    assert counted.vae_calls == 1  # 6 frames: one chunk of the streaming encode, never again per step
    assert counted.text_calls == 1
    assert info["window"] == {"frames": 4, "stride": 1, "starts": 3, "note": None}


def test_the_folder_records_its_base_model_and_settings_and_loads_as_tuneavideo(tuned, clip):
    from longedit.models import load_backbone

    folder, info, _, _ = tuned
    written = json.loads((folder / TUNE_INFO).read_text())
    assert written["base_model"] == "tiny" and written["prompt"] == PROMPT
    assert written["settings"]["steps"] == 8 and written["settings"]["trainable"] == ["attn1.to_q", "attn2.to_q", "attn_temp"]
    assert written["clip"]["frames"] == 6 and written["optimizer"]["state_bytes"] == info["optimizer"]["state_bytes"]
    # AdamW keeps two fp32 moments per trainable parameter and one fp32 step counter per tensor
    trainable = written["trainable"]
    assert written["optimizer"]["state_bytes"] == 8 * trainable["parameters"] + 4 * trainable["tensors"]
    backbone = load_backbone(str(folder), device="cpu")
    assert backbone.kind == "tuneavideo" and hasattr(backbone.unet, "tuneavideo_temporal")
    assert json.loads((folder / "unet" / "config.json").read_text())["_class_name"] == "UNet3DConditionModel"


def test_an_interrupted_tuning_resumes_bit_identical(tuned, clip, tmp_path):
    folder, info, _, _ = tuned
    stop = threading.Event()
    out, work = tmp_path / "tav", tmp_path / "work"

    def stop_at_four(step: int, loss: float) -> None:
        if step == 4:
            stop.set()

    settings = TuneSettings(**FAST)
    with pytest.raises(JobInterrupted, match="tuning stopped at step 4"):
        tune_clip(clip, PROMPT, out, settings, model="tiny", work_dir=work, progress=False, stop_event=stop, on_step=stop_at_four)
    assert (work / STATE_NAME).is_file() and len(list(work.glob(f"{LATENTS_PREFIX}*.npy"))) == 1 and not out.exists()
    resumed = tune_clip(clip, PROMPT, out, settings, model="tiny", work_dir=work, progress=False)
    assert resumed["resumed_from_step"] == 4
    assert resumed["loss"]["per_step"] == info["loss"]["per_step"]
    from safetensors.torch import load_file

    reference, again = (load_file(str(f / "unet" / "diffusion_pytorch_model.safetensors")) for f in (folder, out))
    assert reference.keys() == again.keys() and all(torch.equal(reference[k], again[k]) for k in reference)


class _Payload:
    """Unpickling this runs `touch(marker)`: a planted tuning checkpoint (issue 22)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_tuning_checkpoint_is_not_run_and_the_tuning_starts_afresh(tuned, clip, tmp_path):
    _, info, _, _ = tuned
    work, marker = tmp_path / "work", tmp_path / "pwned"
    work.mkdir()
    torch.save({"fingerprint": "x", "step": 4, "payload": _Payload(marker)}, work / STATE_NAME)
    with pytest.warns(UserWarning, match="ignoring the tuning checkpoint .*more than tensors and plain values") as caught:
        again = tune_clip(clip, PROMPT, tmp_path / "tav", TuneSettings(**FAST), model="tiny", work_dir=work, progress=False)
    assert not marker.exists()
    assert again["resumed_from_step"] is None and again["loss"]["per_step"] == info["loss"]["per_step"]
    assert len([w for w in caught if "tuning checkpoint" in str(w.message)]) == 1


def test_a_tuning_checkpoint_round_trips_and_a_garbled_one_is_refused(tmp_path):
    from types import SimpleNamespace

    from longedit.tune.trainer import Checkpoints, Progress

    weight = torch.nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(0)))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    accelerator = SimpleNamespace(scaler=None)
    saved = Checkpoints(tmp_path, "fp", {"w": weight}, deepspeed=False)
    saved.save(accelerator, optimizer, Progress(step=3, losses=[0.5, 0.25, 0.125], train_s=1.5))

    fresh = torch.nn.Parameter(torch.zeros(3, 2))
    other = torch.optim.AdamW([fresh], lr=0.1)
    restored = Checkpoints(tmp_path, "fp", {"w": fresh}, deepspeed=False).restore(accelerator, other)
    assert (restored.step, restored.losses, restored.resumed_from) == (3, [0.5, 0.25, 0.125], 3)
    assert torch.equal(fresh, weight) and torch.equal(other.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])

    record = torch.load(tmp_path / STATE_NAME, weights_only=True)
    record["state"]["params"]["w"] = torch.zeros(3, 2)  # overwritten weights, still a loadable file
    torch.save(record, tmp_path / STATE_NAME)
    untouched = torch.nn.Parameter(torch.full((3, 2), 7.0))
    with pytest.warns(UserWarning, match="do not match its checksum"):
        progress = Checkpoints(tmp_path, "fp", {"w": untouched}, deepspeed=False).restore(accelerator, torch.optim.AdamW([untouched]))
    assert progress.step == 0 and torch.equal(untouched, torch.full((3, 2), 7.0))


def test_the_identity_init_lets_no_frame_see_another_through_the_temporal_layers():
    from longedit.backbones.tuneavideo import TemporalAttention

    torch.manual_seed(0)
    layer = TemporalAttention(8, 2, 4)
    torch.nn.init.zeros_(layer.attn_temp.to_out[0].weight)
    x = torch.randn(3, 5, 8)
    changed = x.clone()
    changed[2] += 1
    a, b = layer(x, 3), layer(changed, 3)
    assert torch.equal(a[:2], b[:2]) and torch.allclose(a - x, layer.attn_temp.to_out[0].bias.expand_as(x))


# ------------------------------------------------------------------------------------ the command
def tune_args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["tune", str(clip), "--prompt", PROMPT, "-o", str(out), "--model", "tiny", "--size", "64", "--frames", "4", *extra]


@pytest.mark.slow
def test_tune_then_edit_end_to_end(clip, tmp_path, capsys):
    out = tmp_path / "tuned"
    assert main(tune_args(clip, out, "--steps", "3", "--lr", "1e-3")) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}: Tune-A-Video on tiny, 3 steps on 4-frame windows" in captured.out
    assert "loss=" in captured.err and "<" in captured.err  # the progress bar shows the loss and an ETA
    assert not (tmp_path / ".tuned.tune-work").exists()
    edited, report = tmp_path / "edited.mp4", tmp_path / "report.json"
    code = main([
        "edit", str(clip), "-o", str(edited), "--model", str(out), "--quiet", "--source-prompt", PROMPT,
        "--prompt", "a yellow duck on a road", "--object", "duck=10,10,40,40", "--steps", "2", "--size", "64",
        "--window", "4", "--stride", "2", "--report", str(report),
    ])
    assert code == 0 and edited.is_file()
    assert json.loads(report.read_text())["backbone"] == "tuneavideo"


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_adamw8bit_without_bitsandbytes_is_a_one_line_error(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(optim, "_installed", lambda name: False)
    line = _refused(tune_args(clip, tmp_path / "t", "--optimizer", "adamw8bit"), capsys)
    assert line == (
        "error: --optimizer adamw8bit needs bitsandbytes, which is not installed "
        "(pip install 'longedit[quant]', or use --optimizer adamw)"
    )
    assert list(tmp_path.iterdir()) == []


def test_adamw8bit_that_cannot_run_here_is_a_one_line_error(monkeypatch):
    import sys
    import types

    broken = types.SimpleNamespace(optim=types.SimpleNamespace(AdamW8bit=lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no kernel"))))
    monkeypatch.setitem(sys.modules, "bitsandbytes", broken)
    monkeypatch.setattr(optim, "_installed", lambda name: True)
    with pytest.raises(UserError, match=r"^--optimizer adamw8bit: bitsandbytes does not run on cpu here \(no kernel\) \(use --optimizer adamw\)$"):
        optim.check_bitsandbytes(torch.device("cpu"))


def test_deepspeed_messages(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(optim, "_installed", lambda name: False)
    line = _refused(tune_args(clip, tmp_path / "t", "--deepspeed"), capsys)
    assert line == "error: --deepspeed needs the deepspeed package, which is not installed (pip install 'longedit[deepspeed]' on a CUDA machine, or drop --deepspeed)"
    monkeypatch.setattr(optim, "_installed", lambda name: True)
    line = _refused(tune_args(clip, tmp_path / "t", "--deepspeed", "--device", "cpu"), capsys)
    assert line == "error: --deepspeed (ZeRO-2 with optimizer offload) needs a CUDA device, not cpu (drop --deepspeed on a CPU)"
    assert list(tmp_path.iterdir()) == []


def test_deepspeed_with_the_8bit_optimizer_is_refused(monkeypatch):
    monkeypatch.setattr(optim, "_installed", lambda name: True)
    with pytest.raises(UserError, match="cannot be combined with --optimizer adamw8bit"):
        optim.check_deepspeed(torch.device("cuda"), TuneSettings(deepspeed=True, optimizer="adamw8bit"))


def test_bf16_mixed_precision_trains_on_a_cpu(tuned, clip, tmp_path):
    settings = TuneSettings(**{**FAST, "steps": 2, "mixed_precision": "bf16", "gradient_checkpointing": False})
    info = tune_clip(clip, PROMPT, tmp_path / "tav", settings, model="tiny", work_dir=tmp_path / "w", progress=False)
    assert info["mixed_precision"] == "bf16" and all(np.isfinite(info["loss"]["per_step"]))
    # the same draws through the same initial model as the fp32 run: close, but computed in bf16
    fp32 = tuned[1]["loss"]["fixed_before"]
    assert info["loss"]["fixed_before"] != fp32 and info["loss"]["fixed_before"] == pytest.approx(fp32, rel=0.02)


def test_a_stopped_tuning_says_how_to_resume_and_exits_130(clip, tmp_path, capsys, monkeypatch):
    import longedit.tune.trainer as trainer

    def stopped(clip, prompt, output, settings, *, work_dir, **kwargs):
        work_dir.mkdir()
        (work_dir / STATE_NAME).write_bytes(b"checkpoint")
        raise JobInterrupted("tuning stopped at step 3")

    monkeypatch.setattr(trainer, "tune_clip", stopped)
    assert main(tune_args(clip, tmp_path / "t")) == 130
    err = capsys.readouterr().err
    assert f"interrupted; rerun the same command to resume (checkpoint in {tmp_path / '.t.tune-work'})" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mixed-precision", "fp16", "--device", "cpu"], "error: --mixed-precision fp16 needs a CUDA device"),
        (["--trainable", "attn1.to_q,attn9.to_q"], "error: --trainable 'attn9.to_q' matches no module of the UNet"),
        (["--trainable", " , "], "error: --trainable: name at least one module to train"),
        (["--steps", "0"], "error: --steps: Input should be greater than or equal to 1"),
    ],
    ids=["fp16-on-cpu", "unknown-module", "no-module", "zero-steps"],
)
def test_bad_settings_are_one_line_errors_and_leave_nothing(clip, tmp_path, capsys, extra, message):
    line = _refused(tune_args(clip, tmp_path / "t", *extra), capsys)
    assert line.startswith(message), line
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_folder_is_refused_before_any_work(clip, tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "keep.txt").write_text("mine")
    line = _refused(tune_args(clip, tmp_path / "t"), capsys)
    assert line == f"error: '{tmp_path / 't'}' already exists (pick a new folder for -o or remove the old one)"
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["keep.txt"]


def test_a_video_model_is_not_a_base_to_tune(clip, tmp_path, capsys):
    from longedit.random_models import save_tiny_model

    folder = save_tiny_model(tmp_path / "tav-base", "tuneavideo")
    line = _refused(["tune", str(clip), "--prompt", PROMPT, "-o", str(tmp_path / "t"), "--model", str(folder), "--size", "64"], capsys)
    assert line.startswith(f"error: --model {folder} is a tuneavideo model; tuning starts from a Stable Diffusion model")


# ------------------------------------------------------------------------------------ optimizers
def test_optimizer_state_bytes_sum_the_optimizers_own_tensors():
    params = [torch.nn.Parameter(torch.ones(10)), torch.nn.Parameter(torch.ones(4, 5))]
    optimizer = optim.make_optimizer(TuneSettings(), params)
    assert optim.optimizer_state_bytes(optimizer) == 0  # nothing before the first step
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert optim.optimizer_state_bytes(optimizer) == 2 * 30 * 4 + 2 * 4  # exp_avg, exp_avg_sq fp32 + step


def test_adamw8bit_keeps_a_quarter_of_the_state_when_bitsandbytes_runs():
    pytest.importorskip("bitsandbytes")
    try:
        optim.check_bitsandbytes(torch.device("cpu"))
    except UserError as error:
        pytest.skip(str(error))
    big, small = torch.nn.Parameter(torch.ones(8192)), torch.nn.Parameter(torch.ones(100))
    optimizer = optim.make_optimizer(TuneSettings(optimizer="adamw8bit", lr=1e-2), [big, small])
    big.grad, small.grad = torch.full_like(big, 0.5), torch.full_like(small, 0.5)
    optimizer.step()
    # >= 4096 elements: two uint8 moments + a 256-entry fp32 quantisation map each + fp32 absmax per 256-block;
    # smaller tensors stay fp32 (bitsandbytes' min_8bit_size)
    assert optim.optimizer_state_bytes(optimizer) == 2 * 8192 + 2 * 256 * 4 + 2 * (8192 // 256) * 4 + 2 * 100 * 4
    assert torch.allclose(big, torch.full_like(big, 1 - 1e-2 * 1e-2 - 1e-2), atol=1e-3)  # decay, then -lr * sign


def test_an_8bit_tuning_resumes_bit_identical_when_bitsandbytes_runs(clip, tmp_path):
    pytest.importorskip("bitsandbytes")
    try:
        optim.check_bitsandbytes(torch.device("cpu"))
    except UserError as error:
        pytest.skip(str(error))
    settings = TuneSettings(**{**FAST, "steps": 4, "optimizer": "adamw8bit", "checkpoint_every": 2})
    whole = tune_clip(clip, PROMPT, tmp_path / "whole", settings, model="tiny", work_dir=tmp_path / "w1", progress=False)
    stop = threading.Event()
    with pytest.raises(JobInterrupted):
        tune_clip(clip, PROMPT, tmp_path / "parts", settings, model="tiny", work_dir=tmp_path / "w2", progress=False,
                  stop_event=stop, on_step=lambda step, loss: step == 2 and stop.set())
    parts = tune_clip(clip, PROMPT, tmp_path / "parts", settings, model="tiny", work_dir=tmp_path / "w2", progress=False)
    assert parts["resumed_from_step"] == 2 and parts["loss"]["per_step"] == whole["loss"]["per_step"]
    assert whole["optimizer"]["state_bytes"] < whole["trainable"]["parameter_bytes"]  # < 4 B per parameter (AdamW: 8)


@pytest.mark.slow
def test_edit_with_the_tune_flag_tunes_first_and_caches_beside_the_output(clip, tmp_path):
    edited, report = tmp_path / "edited.mp4", tmp_path / "report.json"
    argv = [
        "edit", str(clip), "-o", str(edited), "--model", "tiny", "--quiet", "--source-prompt", PROMPT,
        "--prompt", "a yellow duck on a road", "--object", "duck=10,10,40,40", "--steps", "2", "--size", "64",
        "--window", "4", "--stride", "2", "--tune", "2", "--report", str(report),
    ]
    assert main(argv) == 0 and edited.is_file()
    assert json.loads(report.read_text())["backbone"] == "tuneavideo"
    tuned = [p for p in (tmp_path / ".longedit-tuned").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(tuned) == 1 and json.loads((tuned[0] / TUNE_INFO).read_text())["settings"]["steps"] == 2


@pytest.mark.slow
def test_a_job_that_tunes_first_says_so_in_its_progress_file(clip, tmp_path):
    """`longedit status` reads progress.json: during the tuning it holds phase 'tune' with its share and ETA."""
    from longedit.commands.edit import build_job
    from longedit.config import parse_object_args
    from longedit.engine import tuned_model
    from longedit.progress import PROGRESS_NAME

    job = build_job(dict(
        input=clip, output=tmp_path / "edited.mp4", model="tiny", source_prompt=PROMPT, prompt="a yellow duck on a road",
        objects=parse_object_args(["duck=10,10,40,40"]), steps=2, size=64, window=4, stride=2, tune={"steps": 3},
    ))
    folder = tuned_model(job, False, None, tmp_path / "work")
    assert (Path(folder) / TUNE_INFO).is_file()
    final = json.loads((tmp_path / "work" / PROGRESS_NAME).read_text())
    assert final["phase"] == "tune" and final["fraction"] == 1.0
    assert final["phases"] == [{"name": "tune", "done": 3, "total": 3}]


def test_quiet_tune_prints_only_its_summary(clip, tmp_path):
    """Issue 22 family 7: `tune --quiet` printed transformers' notices and a "Writing model shards" bar."""
    from test_jobs_helpers import run_cli

    result = run_cli("tune", str(clip), "--prompt", PROMPT, "-o", str(tmp_path / "tav"), "--model", "tiny",
                     "--steps", "1", "--frames", "4", "--size", "64", "--quiet", OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""  # no library warning, no progress bar
    assert result.stdout.startswith(f"wrote {tmp_path / 'tav'}: Tune-A-Video on tiny, 1 steps") and len(result.stdout.splitlines()) == 3


def test_quiet_libraries_restores_what_it_found():
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from longedit.quiet import quiet_libraries

    before = (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled(), diffusers_logging.get_verbosity())
    with quiet_libraries():
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled() and not diffusers_logging.is_progress_bar_enabled()
    assert (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled(), diffusers_logging.get_verbosity()) == before
