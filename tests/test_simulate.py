"""The memory simulation (`longedit bench memory`, `longedit.bench.simulate`): fake tensors count the bytes
the same ops hold for real, and the command writes its JSON."""

from __future__ import annotations

import json

import pytest

from longedit.bench.simulate import simulate_preset as simulate_window
from longedit.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("setting", ["official", "optimized"])
def test_fake_count_equals_the_cpu_trackers_exact_count(setting: str) -> None:
    """Same model, same ops, fp32, no allocator rounding: the simulation's per-phase peaks are the real run's, to the byte.

    The optimized settings' fused op takes its fake implementation in the simulation and the eager
    reference on a real CPU run (no Triton there): in the tiny model's guided pass the reference's
    extra [B, H, Q, 77] probabilities stay below the CFG forward's peak, so the totals still agree.
    """
    kwargs = dict(preset="tiny", window=2, dtype="float32", setting=setting, size=64, round_to=1)
    fake = simulate_window(fake=True, **kwargs)
    real = simulate_window(fake=False, **kwargs)
    assert fake["method"] == "fake-cuda" and real["method"] == "cpu-exact"
    assert fake["peak_bytes"] == real["peak_bytes"]
    assert fake["resident_bytes"] == real["resident_bytes"] > 0
    phases = ("vae_encode", "inversion", "cfg", "vae_decode") + (("guided", "edit_step") if setting == "official" else ())
    for phase in phases:
        assert fake["by_phase"][phase]["peak_bytes"] == real["by_phase"][phase]["peak_bytes"], phase
    assert fake["by_phase"]["guided"]["calls"] == 2  # refinement at step 0 (one iteration) + the main update
    assert fake["flops"]["cfg"] == real["flops"]["cfg"] > 0


def test_bench_memory_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "memory.json"
    code = main(["bench", "memory", "--preset", "tiny", "--window", "2", "--size", "64", "--dtype", "float16",
                 "--settings", "both", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tiny window 2 float16 optimized: peak" in printed and "official: peak" in printed
    document = json.loads(out.read_text())
    assert document["method"] == "fake-cuda" and document["window"] == 2 and document["dtype"] == "float16"
    assert document["settings"]["name"] == "optimized" and document["official"]["settings"]["name"] == "official"
    assert document["peak_bytes"] == max(p["peak_bytes"] for p in document["by_phase"].values())
    assert document["peak_bytes"] % 512 == document["resident_bytes"] % 512  # allocator rounding of tracked blocks
    assert document["flops"]["total"] > 0 and set(document["by_phase"]) >= {"guided", "cfg", "vae_decode"}


def test_bench_memory_bad_size_is_one_line(tmp_path, capsys) -> None:
    out = tmp_path / "memory.json"
    code = main(["bench", "memory", "--preset", "tiny", "--size", "100", "--json", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--size 100 is not a multiple of 64" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_validate_plans_a_gpu_job_by_simulation(tmp_path, monkeypatch) -> None:
    """`vram` on a machine without CUDA: the window a GPU run would use, from the simulation, with its reason."""
    from test_jobs_helpers import make_video, write_job

    from longedit.engine import preflight
    from longedit.gpu_plan import CUDA_RESERVE_BYTES
    from longedit.errors import UserError
    from longedit.jobs.jobfile import load_job
    from longedit.planner import HEADROOM, parse_size

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    make_video(tmp_path / "clip.mp4", frames=12)
    job = load_job(write_job(tmp_path / "job.yaml", input="clip.mp4", vram="1100MB"))
    window = preflight(job)["window"]
    assert window["source"] == "planner" and window["method"] == "fake-cuda simulation" and window["dtype"] == "float16"
    assert "less 1.00 GiB for the CUDA context" in window["reason"]
    assert "simulated on fake tensors" in window["reason"] and "VAE decode chunk peaks at" in window["reason"]
    assert 4 <= window["length"] <= 12 and window["stride"] == max(1, window["length"] // 2)
    assert window["vae_chunk_peak_bytes"] <= HEADROOM * (parse_size("1100MB") - CUDA_RESERVE_BYTES)

    small = load_job(write_job(tmp_path / "small.yaml", input="clip.mp4", vram="1000MB"))
    with pytest.raises(UserError, match="below the 1.00 GiB a CUDA context"):
        preflight(small)
