"""Window planner: size parsing, the fit and the choice of L, the probe on the tiny model, the engine hook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longedit.config import EditJob
from longedit.editor import LoopSettings
from longedit.engine import choose_windows
from longedit.errors import UserError
from longedit.models import load_backbone
from longedit.planner import (
    HEADROOM,
    MAX_WINDOW,
    CostModel,
    ProbeResult,
    fit_costs,
    largest_window,
    parse_size,
    plan_window,
    probe_window_costs,
)

GB, GIB, MB = 10**9, 2**30, 10**6
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "text, expected",
    [("24GB", 24 * GB), ("12GiB", 12 * GIB), ("800MB", 800 * MB), ("1.5 GB", 1_500_000_000), ("512mib", 512 * 2**20),
     ("1000", 1000), ("2g", 2 * GB), (" 3 TB ", 3 * 10**12)],
)
def test_parse_size_reads_decimal_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "24XB", "-5GB", "0GB", "twelve", "24 G B", "1e9"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(UserError, match="memory size"):
        parse_size(text)


def test_fit_recovers_a_line_and_never_gives_a_free_frame():
    cost = fit_costs([2, 4, 8], [3 * GB + 2 * 100 * MB, 3 * GB + 4 * 100 * MB, 3 * GB + 8 * 100 * MB])
    assert cost == CostModel(3 * GB, 100 * MB)
    noisy = fit_costs([2, 4], [5 * GB, 4 * GB])  # slope <= 0: conservative peak / length of the largest probe
    assert noisy.fixed_bytes == 0 and noisy.per_frame_bytes == GB
    with pytest.raises(ValueError):
        fit_costs([4, 4], [1, 2])


def test_largest_window_is_the_largest_that_fits_the_usable_budget():
    cost = CostModel(fixed_bytes=1 * GB, per_frame_bytes=500 * MB)
    # usable 0.9 * 10 GB = 9 GB -> (9 - 1) / 0.5 = 16 frames exactly
    assert largest_window(cost, 10 * GB, frames=1000) == 16
    assert largest_window(cost, 10 * GB - 1, frames=1000) == 15
    assert largest_window(cost, 1000 * GB, frames=1000) == MAX_WINDOW
    assert largest_window(cost, 1000 * GB, frames=10) == 10  # never longer than the video
    assert largest_window(cost, 1000 * GB, frames=2) == 2


def test_too_small_budget_names_the_minimum_window():
    cost = CostModel(fixed_bytes=4 * GB, per_frame_bytes=1 * GB)
    with pytest.raises(UserError) as error:
        largest_window(cost, 8 * GB, frames=100)  # 4 frames need 8 GB, only 7.2 usable
    message = str(error.value)
    assert "minimum window of 4 frames" in message and "too small" in message and "--vram" in message


class FakeProbe:
    """Peaks on an exact line: memory = fixed + per_frame * L (counts its calls)."""

    def __init__(self, fixed: int, per_frame: int, resident: int = 0) -> None:
        self.fixed, self.per_frame, self.resident, self.calls = fixed, per_frame, resident, 0

    def __call__(self, lengths):
        self.calls += 1
        peaks = tuple(self.fixed + self.per_frame * n for n in lengths)
        return ProbeResult(tuple(lengths), peaks, self.resident, "fake", 0.0)


def test_plan_with_a_budget_uses_the_probe_fit():
    probe = FakeProbe(fixed=2 * GB, per_frame=1 * GB, resident=1 * GB)  # 3 GB fixed in all
    plan = plan_window(frames=500, device=CPU, vram="24GB", probe=probe)
    # usable 21.6 GB: 3 + L <= 21.6 -> L = 18
    assert (plan.length, plan.stride, plan.source) == (18, 9, "planner")
    assert plan.fixed_bytes == 3 * GB and plan.per_frame_bytes == GB and plan.budget_bytes == 24 * GB
    assert plan.predicted_bytes == 21 * GB <= HEADROOM * plan.budget_bytes
    assert "--vram 24GB" in plan.reason and "18 frames" in plan.reason
    report = plan.to_report()
    assert report["probe"]["lengths"] == [2, 4] and report["per_frame_bytes"] == GB


def test_native_length_of_a_video_backbone_is_the_default_and_the_cap():
    probe = FakeProbe(fixed=2 * GB, per_frame=1 * GB, resident=1 * GB)  # would fit 18 frames in 24GB
    capped = plan_window(frames=500, device=CPU, vram="24GB", probe=probe, native_length=16)
    assert capped.length == 16 and "native 16 frames" in capped.reason
    default = plan_window(frames=500, device=CPU, probe=probe, native_length=16)
    assert default.length == 16 and "native length" in default.reason


def test_window_flag_wins_and_cpu_without_budget_does_not_probe():
    probe = FakeProbe(GB, GB)
    flagged = plan_window(frames=100, device=CPU, window=6, vram="1MB", probe=probe)
    assert (flagged.length, flagged.stride, flagged.reason) == (6, 3, "--window")
    default = plan_window(frames=100, device=CPU, probe=probe, default_length=8)
    assert (default.length, default.stride, default.source) == (8, 4, "default")
    assert "pass --vram" in default.reason
    assert probe.calls == 0
    with pytest.raises(UserError, match="minimum window"):
        plan_window(frames=100, device=CPU, vram="5GB", probe=probe)


def test_engine_choose_windows_reports_the_plan():
    job = EditJob(input=Path("in.mp4"), output=Path("out.mp4"), source_prompt="a car", prompt="a robot", vram="12GiB", stride=2)
    windows, plan = choose_windows(job, 40, CPU, FakeProbe(1 * GB, 500 * MB))
    assert plan.source == "planner" and plan.stride == 2
    assert windows[0] == (0, plan.length) and windows[1][0] == 2
    job = job.model_copy(update={"window": 5, "vram": None, "stride": None})
    windows, plan = choose_windows(job, 40, CPU)
    assert plan.reason == "--window" and windows[:2] == [(0, 5), (2, 7)]


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny", "cpu", "fp32")


def test_probe_on_the_tiny_model_gives_positive_costs(tiny):
    settings = LoopSettings(steps=4, guided_steps=2, gradient_checkpointing=True)
    result = probe_window_costs(tiny, settings, "a car on a road", "a robot on a road", ["robot"], 8, 8, lengths=(1, 3))
    cost = result.cost_model()
    assert result.metric == "tensor_live_bytes" and result.lengths == (1, 3)
    assert result.peaks[1] > result.peaks[0] > 0
    assert cost.per_frame_bytes > 0 and cost.fixed_bytes >= result.resident_bytes > 0
    tiny.unet.disable_gradient_checkpointing()
