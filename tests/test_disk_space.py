"""A run that cannot fit on its disk is refused before the model loads (issue 12 item 2): the estimates of
what a run writes (output, checkpoints, inversion trajectory) bound what a real run writes, and a disk too
small for them ends with one line and exit 2, leaving nothing behind."""

from __future__ import annotations

import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest

from longedit import engine
from longedit.cli import main
from longedit.config import EditJob, parse_object_args
from longedit.diskspace import DiskNeed, check_free_space
from longedit.errors import UserError
from longedit.samples import make_clip

Usage = namedtuple("Usage", "total used free")
PROMPTS = ["--source-prompt", "a car on a road", "--prompt", "a red car on a road"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("disk") / "clip.mp4", frames=8, width=64, height=48, audio=True).path


@pytest.fixture
def no_long_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the disk check")

    monkeypatch.setattr(engine.runner, "load_backbone", forbidden)
    monkeypatch.setattr(engine.source, "encode_video", forbidden)


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))


def _job(clip: Path, out: Path, **keys) -> EditJob:
    return EditJob(input=clip, output=out, model="tiny", steps=2, size=64, source_prompt="a car on a road",
                   prompt="a red car on a road", objects=parse_object_args(["car=1,1,30,30"]), **keys)


def monkeypatch_keep_run_state() -> pytest.MonkeyPatch:
    """Keep a finished job's checkpoint and trajectory (`checkpoint.remove_run_state` a no-op) to measure them."""
    patch = pytest.MonkeyPatch()
    patch.setattr(engine.runner.checkpoint, "remove_run_state", lambda *args, **kwargs: [])
    return patch


def test_the_estimates_bound_what_a_real_run_writes(clip, tmp_path, one_torch_thread):
    work, out = tmp_path / "work", tmp_path / "out.mp4"
    job = _job(clip, out, window=4, checkpoint_every=1, source_noise="inversion", report=tmp_path / "r.json")
    output_need, work_need = engine.disk_needs(job, engine.prepare(job), work)
    assert (output_need.what, output_need.folder) == ("the output video", tmp_path)
    assert (work_need.what, work_need.folder) == ("the checkpoint folder", work)
    kept = monkeypatch_keep_run_state()
    try:
        engine.run_edit(job, work_dir=work, progress=False)  # measured before a finished job's state is removed
    finally:
        kept.undo()
    checkpoint = (work / "checkpoint.pt").stat().st_size
    trajectory = (work / "inversion-trajectory.f16").stat().st_size
    peak = 2 * checkpoint + trajectory  # an atomic save holds the old and the new checkpoint at once
    assert peak <= work_need.nbytes <= 4 * peak
    assert out.stat().st_size <= output_need.nbytes
    # A rerun of the finished job has its files already (checkpoint, trajectory, progress.json): it asks only for the rest.
    written = sum(p.stat().st_size for p in work.iterdir())
    assert written >= checkpoint + trajectory
    assert engine.disk_needs(job, engine.prepare(job), work)[1].nbytes == work_need.nbytes - written


def test_a_full_disk_is_refused_with_one_line_before_the_model_loads(clip, tmp_path, capsys, monkeypatch, no_long_work):
    _free(monkeypatch, 1000)
    out, work = tmp_path / "out.mp4", tmp_path / "work"
    code = main(["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--steps", "2", "--size", "64",
                 "--object", "car=1,1,30,30", "--work-dir", str(work), *PROMPTS])
    err = capsys.readouterr().err
    job = _job(clip, out)
    output_need, work_need = engine.disk_needs(job, engine.prepare(job), work)
    assert code == 2
    assert err.startswith(
        f"error: not enough disk space: the output video needs ~{_kb(output_need.nbytes)} in '{tmp_path}', "
        f"the checkpoint folder needs ~{_kb(work_need.nbytes)} in '{work}' (~{_kb(output_need.nbytes + work_need.nbytes)} in all), "
        "but that disk has 1.0 KB free (free some space, or write -o / --work-dir to a larger disk)"
    ), err
    assert len(err.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def _kb(nbytes: int) -> str:
    return f"{nbytes / 1000:.1f} KB"


def test_just_enough_space_passes_and_one_byte_less_is_refused(tmp_path, monkeypatch):
    needs = [DiskNeed("the output video", tmp_path, 600), DiskNeed("the checkpoint folder", tmp_path / "new" / "work", 400)]
    _free(monkeypatch, 1000)
    check_free_space(needs, "fix")  # the two share the disk: 1000 of 1000
    _free(monkeypatch, 999)
    with pytest.raises(UserError, match=r"\(~1.0 KB in all\), but that disk has 999 bytes free \(fix\)$"):
        check_free_space(needs, "fix")
    check_free_space([DiskNeed("nothing", tmp_path, 0)], "fix")  # nothing to write is never refused


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(result.stderr or 'mount failed').strip()[:80]}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_is_refused_before_anything_is_written(clip, small_tmpfs, capsys):
    filler = small_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as handle:  # fill the disk to the last block
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    assert shutil.disk_usage(small_tmpfs).free < 4096
    out = small_tmpfs / "out.mp4"
    code = main(["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--steps", "2", "--size", "64",
                 "--object", "car=1,1,30,30", *PROMPTS])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: not enough disk space: the output video needs ~") and f"in '{small_tmpfs}'" in err
    assert "free some space" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]
