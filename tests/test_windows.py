"""Window planning covers every frame; merging averages overlapping predictions."""

import pytest
import torch

from longedit.windows import WindowMerger, plan_windows, window_weights


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 97])
@pytest.mark.parametrize("length,stride", [(8, 4), (8, 1), (4, 2), (16, 8), (8, 8)])
def test_every_frame_is_covered_and_windows_stay_inside(frames, length, stride):
    windows = plan_windows(frames, length, stride)
    covered = torch.zeros(frames, dtype=torch.int64)
    for start, end in windows:
        assert 0 <= start < end <= frames
        assert end - start == min(length, frames)
        covered[start:end] += 1
    assert bool((covered > 0).all())
    assert windows[-1][1] == frames  # the tail is aligned to the end, never dropped
    assert windows[0][0] == 0


def test_long_window_is_a_single_window():
    assert plan_windows(5, 16, 8) == [(0, 5)]


def test_default_stride_is_half_the_window():
    assert plan_windows(20, 8) == [(0, 8), (4, 12), (8, 16), (12, 20)]


def test_pyramid_weights_fall_toward_the_edges():
    weights = window_weights(6, "pyramid")
    assert weights.tolist() == [1, 2, 3, 3, 2, 1]
    assert window_weights(3, "uniform").tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        window_weights(3, "triangle")


@pytest.mark.parametrize("mode", ["uniform", "pyramid"])
def test_merger_averages_overlaps_with_weights(mode):
    like = torch.zeros(6, 2)
    merger = WindowMerger(like, mode)
    merger.add(0, torch.full((4, 2), 1.0))
    merger.add(2, torch.full((4, 2), 3.0))
    out = merger.result(torch.float32)
    assert out[:2].eq(1).all() and out[4:].eq(3).all()
    w_first, w_second = window_weights(4, mode)[2:], window_weights(4, mode)[:2]
    expected = (w_first * 1 + w_second * 3) / (w_first + w_second)
    assert torch.allclose(out[2:4, 0], expected)


def test_merger_refuses_uncovered_frames():
    merger = WindowMerger(torch.zeros(4, 1))
    merger.add(0, torch.ones(2, 1))
    with pytest.raises(RuntimeError):
        merger.result(torch.float32)
