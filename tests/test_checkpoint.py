"""The typed run state: atomic save, load by fingerprint, progress read from the header only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longedit import checkpoint
from longedit.checkpoint import CHECKPOINT_NAME, RunState, Trajectory
from longedit.errors import UserError


def _state(fingerprint: str = "abc") -> RunState:
    source = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    return RunState(fingerprint=fingerprint, source=source, latents=source * 2, windows=[(0, 3)], window_plan=None)


class _Payload:
    """Unpickling this runs `touch(marker)`: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_pickle(path: Path, marker: Path) -> None:
    """A checkpoint-shaped file whose unpickling would create `marker` (the issue 22 probe)."""
    torch.save({"fingerprint": "abc", "phase": "edit", "step": 1, "payload": _Payload(marker)}, path)


def test_save_then_load_round_trips_every_field(tmp_path: Path) -> None:
    state = _state()
    state.phase, state.step, state.losses, state.refinements = "edit", 7, [0.5, None], [3, 0]
    checkpoint.save(tmp_path, state)
    loaded = checkpoint.load(tmp_path, "abc")
    assert loaded is not None
    for name, value in state.as_dict().items():
        got = getattr(loaded, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(got, value), name
        else:
            assert got == value, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left


def test_another_jobs_or_a_torn_checkpoint_is_not_loaded(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state("abc"))
    assert checkpoint.load(tmp_path, "other") is None
    assert checkpoint.load(None, "abc") is None
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"torn")
    with pytest.warns(UserWarning, match="ignoring the checkpoint .*: it is unreadable"):
        assert checkpoint.load(tmp_path, "abc") is None


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    checkpoint.save(tmp_path, _state())

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(UserError, match="cannot write the checkpoint"):
        checkpoint.save(tmp_path, _state())
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert checkpoint.load(tmp_path, "abc") is not None


def test_read_progress_gives_phase_and_step(tmp_path: Path) -> None:
    assert checkpoint.read_progress(tmp_path) is None
    state = _state()
    state.phase, state.step = "edit", 4
    checkpoint.save(tmp_path, state)
    assert checkpoint.read_progress(tmp_path) == ("edit", 4)


def test_trajectory_reopens_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "t.f16"
    latents = torch.randn(3, 4, 2, 2)
    Trajectory(path, 5, tuple(latents.shape), create=True).put(2, latents)
    again = Trajectory(path, 5, tuple(latents.shape), create=False)
    assert torch.equal(again.get(2), latents.half().float())


def test_a_planted_pickle_is_never_run_and_is_treated_as_absent_with_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    plant_pickle(tmp_path / CHECKPOINT_NAME, marker)
    with pytest.warns(UserWarning) as caught:
        assert checkpoint.load(tmp_path, "abc") is None
    assert checkpoint.read_progress(tmp_path) is None
    assert not marker.exists()
    [message] = [str(w.message) for w in caught]
    assert "\n" not in message and "ignoring the checkpoint" in message and "more than tensors and plain values" in message


def test_an_old_pickle_format_checkpoint_is_ignored_with_one_line(tmp_path: Path) -> None:
    from longedit.planner import WindowPlan

    state = _state()  # what the old `save` wrote: the dataclass-holding dict, pickled
    old = {**state.as_dict(), "window_plan": WindowPlan(length=8, stride=4, reason="default", source="default")}
    torch.save(old, tmp_path / CHECKPOINT_NAME)
    with pytest.warns(UserWarning, match="more than tensors and plain values"):
        assert checkpoint.load(tmp_path, "abc") is None
    torch.save(_state().as_dict(), tmp_path / CHECKPOINT_NAME)  # plain, but old (no format, no checksum)
    with pytest.warns(UserWarning, match="not a longedit-state/1 file"):
        assert checkpoint.load(tmp_path, "abc") is None


def test_garbled_but_loadable_latents_are_refused_by_the_checksum(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _state())
    record = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    record["state"]["latents"] = torch.zeros_like(record["state"]["latents"])  # still a valid file
    torch.save(record, tmp_path / CHECKPOINT_NAME)
    with pytest.warns(UserWarning, match="do not match its checksum"):
        assert checkpoint.load(tmp_path, "abc") is None
    record["state"]["latents"] = _state().latents  # the same bytes again: accepted
    torch.save(record, tmp_path / CHECKPOINT_NAME)
    assert torch.equal(checkpoint.load(tmp_path, "abc").latents, _state().latents)


def test_the_window_plan_round_trips_as_plain_values(tmp_path: Path) -> None:
    from longedit.planner import ProbeResult, WindowPlan

    state = _state()
    probe = ProbeResult(lengths=(8, 16), peaks=(100, 180), resident_bytes=5, metric="tracker", seconds=0.5)
    state.window_plan = WindowPlan(length=16, stride=8, reason="fits", source="planner", budget_bytes=10, probe=probe)
    checkpoint.save(tmp_path, state)
    assert checkpoint.load(tmp_path, "abc").window_plan == state.window_plan


def test_a_hand_made_checkpoint_with_a_valid_checksum_but_nonsense_inside_is_ignored(tmp_path: Path) -> None:
    from longedit.statefile import save_state

    good = _state().as_dict()
    for change, reason in [({"latents": torch.zeros(2, 4, 2, 2)}, "differ in shape"), ({"step": "7"}, "phase or step"),
                           ({"windows": [(0, 9)]}, "frame ranges"), ({"source": "x"}, "not tensors")]:
        save_state(tmp_path / CHECKPOINT_NAME, {**good, **change}, what="the checkpoint")  # checksum and all
        notices: list[str] = []
        assert checkpoint.load(tmp_path, "abc", notices) is None
        assert len(notices) == 1 and reason in notices[0] and notices[0].startswith("ignoring the checkpoint"), notices
def test_a_finished_edit_leaves_only_its_progress_file_in_the_work_folder(clip, tmp_path, one_torch_thread) -> None:
    """Issue 22 family 7: `--work-dir` kept checkpoint.pt (the latents of the whole video), the inversion
    trajectory and the attention maps after a successful edit; now only `progress.json` (for `status`) stays."""
    from longedit.cli import main
    from longedit.progress import read_progress_file

    work, out = tmp_path / "work", tmp_path / "out.mp4"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "mine.txt").write_text("not the engine's")  # a shared folder keeps what is not ours
    code = main(["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--steps", "2", "--size", "64",
                 "--source-prompt", "a car on a road", "--prompt", "a red car on a road", "--object", "car=1,1,30,30",
                 "--source-noise", "inversion", "--attention-strips", "--checkpoint-every", "1", "--work-dir", str(work)])
    assert code == 0 and out.is_file() and (tmp_path / "out.attention-car.png").is_file()
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == ["notes", "notes/mine.txt", "progress.json"]
    assert read_progress_file(work)["fraction"] == 1.0


def test_remove_run_state_deletes_only_its_own_files(tmp_path: Path) -> None:
    for name in (CHECKPOINT_NAME, checkpoint.TRAJECTORY_NAME, "maps.f16", "progress.json", "other.pt"):
        (tmp_path / name).write_bytes(b"x")
    removed = checkpoint.remove_run_state(tmp_path, also=("maps.f16", "absent.f16"))
    assert removed == [CHECKPOINT_NAME, checkpoint.TRAJECTORY_NAME, "maps.f16"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt", "progress.json"]
    assert checkpoint.remove_run_state(None) == []
