"""`longedit.atomic`: files appear whole or not at all, and a full or read-only disk is one line.

Every writer that publishes a file goes through it (reports, job JSON, the FateZero manifest, the
video writer, the masks export); each is tried here with a write that fails with ENOSPC or EROFS.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from longedit import atomic, engine
from longedit.atomic import atomic_folder, atomic_write, disk_error, parse_temp_name, remove_foreign_temps, remove_stale_temps, write_json
from longedit.errors import UserError
from longedit.jobs.spool import write_json_atomic
from longedit.video import VideoWriter


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_publishes_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_write(target) as handle:
        handle.write("new")
        assert not target.exists() and len(_names(tmp_path)) == 1  # only the hidden temp so far
    assert target.read_text() == "new" and _names(tmp_path) == ["a.txt"]
    with pytest.raises(RuntimeError), atomic_write(target, "wb") as handle:
        handle.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "new" and _names(tmp_path) == ["a.txt"]
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_write(target, "a"):
            pass


def test_atomic_folder_publishes_a_whole_folder_by_one_rename(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as temp:
        (temp / "unet").mkdir()
        (temp / "unet" / "w.bin").write_bytes(b"123")
        assert not target.exists() and temp.parent == tmp_path and temp.name.startswith(".model.")
    assert (target / "unet" / "w.bin").read_bytes() == b"123" and _names(tmp_path) == ["model"]
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "other") as temp:
        (temp / "half").write_text("x")
        raise RuntimeError("stopped half-way")
    assert _names(tmp_path) == ["model"]  # nothing of the failed folder, not even its temp


def test_atomic_folder_refuses_to_replace_a_folder_another_writer_published(tmp_path):
    with pytest.raises(FileExistsError, match="the tuned model '.*model' already exists"):
        with atomic_folder(tmp_path / "model", what="the tuned model") as temp:
            (temp / "mine").write_text("late")
            (tmp_path / "model").mkdir()
            (tmp_path / "model" / "theirs").write_text("first")
    assert _names(tmp_path) == ["model"] and _names(tmp_path / "model") == ["theirs"]


def test_atomic_folder_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(UserError, match=r"^cannot write the tuned model '.*model': no space left on device"):
        with atomic_folder(tmp_path / "model", what="the tuned model"):
            _full()
    assert _names(tmp_path) == []


def test_a_full_disk_is_one_line_naming_what_where_and_how_much(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(UserError) as caught, atomic_write(target, what="the report", needed=2_500_000) as handle:
        handle.write("x")
        _full()
    assert str(caught.value) == (
        f"cannot write the report '{target}': no space left on device; it needs about 2.5 MB "
        "(free some space or pick a folder on another disk)"
    )
    assert target.read_text() == "old" and _names(tmp_path) == ["report.json"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_disk_errors_become_user_errors_and_others_stay(code, tmp_path):
    error = disk_error(OSError(code, os.strerror(code)), "file", tmp_path / "x")
    assert isinstance(error, UserError) and "\n" not in str(error)
    assert disk_error(OSError(errno.EIO, "I/O error"), "file", tmp_path / "x") is None


@pytest.mark.parametrize(
    "writer",
    [
        lambda path: write_json(path, {"a": 1}),
        lambda path: write_json_atomic(path, {"a": 1}),  # job folders: meta, report, error
        lambda path: engine.write_json_atomic(path, {"a": 1}),  # the edit report
    ],
    ids=["write_json", "spool", "engine-report"],
)
def test_json_writers_turn_a_failing_rename_into_a_user_error(writer, tmp_path, monkeypatch):
    target = tmp_path / "doc.json"
    writer(target)
    assert json.loads(target.read_text()) == {"a": 1} and _names(tmp_path) == ["doc.json"]
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(UserError, match="read-only file system"):
        writer(target)
    assert json.loads(target.read_text()) == {"a": 1} and _names(tmp_path) == ["doc.json"]


def test_the_fatezero_manifest_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from longedit.fatezero.store import AttentionDiskStore, Slot

    slots = [Slot(name="up.attn1", kind="self", steps=1, heads=1, queries=4, keys=4)]
    AttentionDiskStore(tmp_path / "maps", slots, [2]).close(delete=False)
    assert json.loads((tmp_path / "maps" / "manifest.json").read_text())["window_rows"] == [2]
    monkeypatch.setattr(atomic.os, "replace", _full)
    with pytest.raises(UserError, match="cannot write the FateZero manifest .*no space left on device"):
        AttentionDiskStore(tmp_path / "maps", slots, [3])
    assert json.loads((tmp_path / "maps" / "manifest.json").read_text())["window_rows"] == [2]
    assert [p.name for p in (tmp_path / "maps").iterdir() if p.name.startswith(".")] == []


def _frames(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(count)]


def test_the_video_writer_on_a_full_disk_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, 32, 32, Fraction(24))
    monkeypatch.setattr(writer, "_mux", _full)
    with pytest.raises(UserError, match=f"cannot write video '{out}': no space left on device"):
        with writer:
            for frame in _frames():
                writer.write(frame)
    assert _names(tmp_path) == []


def test_a_new_video_writer_removes_partials_of_killed_runs(tmp_path):
    out = tmp_path / "out.mp4"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.mp4.{dead.pid}.part"  # the old naming, and the new one
    stale_new = tmp_path / f".out.mp4.{dead.pid}.0a1b2c3d.part"
    live = tmp_path / f".out.mp4.{os.getppid()}.part"  # a live process's partial stays
    other = tmp_path / f".other.mp4.{dead.pid}.part"
    for path in (stale, stale_new, live, other):
        path.write_bytes(b"partial")
    with VideoWriter(out, 32, 32, Fraction(24)) as writer:
        for frame in _frames():
            writer.write(frame)
    assert _names(tmp_path) == sorted([out.name, live.name, other.name])
    assert remove_stale_temps(tmp_path / "other.mp4") == [other]


def test_the_masks_export_on_a_full_disk_is_one_line_and_leaves_nothing(clip_factory, tmp_path, monkeypatch):
    import longedit.segmentation.mask_folder as mask_folder
    from longedit.commands.masks import export_masks
    from longedit.config import ObjectSpec

    clip = clip_factory("c.mp4", frames=3, width=32, height=32)
    monkeypatch.setattr(mask_folder.MaskFolderWriter, "write", _full)
    out = tmp_path / "masks"
    with pytest.raises(UserError, match=f"cannot write masks '{out}': no space left on device"):
        export_masks(clip.path, [ObjectSpec(word="cat", box=(0, 0, 10, 10))], out, model="tiny", progress=False)
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".masks.")] == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KB tmpfs, where the test may mount one (root on Linux); skipped otherwise."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs here ({type(error).__name__}); the fault-injection tests cover the same paths")
    yield mount
    subprocess.run(["umount", str(mount)], check=False, capture_output=True, timeout=10)


def test_a_real_full_disk(tiny_tmpfs):
    target = tiny_tmpfs / "big.bin"
    with pytest.raises(UserError, match="no space left on device"):
        with atomic_write(target, "wb") as handle:
            handle.write(os.urandom(256 * 1024))
    out = tiny_tmpfs / "noise.mp4"
    rng = np.random.default_rng(1)
    with pytest.raises(UserError, match=f"cannot write video '{out}': no space left on device"):
        with VideoWriter(out, 256, 256, Fraction(24)) as writer:
            for _ in range(30):
                writer.write((rng.random((256, 256, 3)) * 255).astype(np.uint8))
    assert list(tiny_tmpfs.iterdir()) == []


def test_temp_names_of_every_writer_are_recognised():
    assert parse_temp_name(".out.mp4.123.0a1b2c3d.part") == ("out.mp4", 123)
    assert parse_temp_name(".out.mp4.123.part") == ("out.mp4", 123)
    assert parse_temp_name(".report.json.77.deadbeef.tmp") == ("report.json", 77)
    assert parse_temp_name(".clip.2.mp4.4567.12345678.part") == ("clip.2.mp4", 4567)
    assert parse_temp_name(".out.mp4.99.trajectory") == ("out.mp4", 99)
    assert parse_temp_name(".out.mp4.99.attention") == ("out.mp4", 99)
    for other in ("out.mp4", ".hidden", ".out.mp4.old-12", ".claim-a.json.0a1b2c3d0a1b2c3d.tmp", ".out.mp4.12.mp4"):
        assert parse_temp_name(other) is None, other


def _dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def test_a_rerun_removes_stale_partials_of_its_output_and_report_before_the_long_work(clip, tmp_path, monkeypatch):
    """Partial video, report, trajectory and FateZero store of a killed run go when the job runs again,
    before the model loads (they also free disk space for the check); a live process's partial stays."""
    from longedit import engine
    from longedit.config import EditJob

    pid = _dead_pid()
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    stale = [tmp_path / f".out.mp4.{pid}.0a1b2c3d.part", tmp_path / f".report.json.{pid}.0a1b2c3d.tmp",
             tmp_path / f".out.mp4.{pid}.trajectory"]
    for path in stale:
        path.write_bytes(b"partial")
    store = tmp_path / f".out.mp4.{pid}.attention"
    (store / "maps").mkdir(parents=True)
    (store / "maps" / "0.f16").write_bytes(b"\0" * 128)
    live = tmp_path / f".out.mp4.{os.getppid()}.0a1b2c3d.part"
    live.write_bytes(b"someone else's")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.runner, "load_backbone", stop)
    job = EditJob(input=clip, output=out, report=report, model="tiny", source_prompt="a car", prompt="a red car")
    with pytest.raises(KeyboardInterrupt):
        engine.run_edit(job, progress=False)
    assert _names(tmp_path) == [live.name]
    assert clip.exists()


def test_a_finished_job_folder_loses_every_temp_file_but_its_own(tmp_path):
    pid = _dead_pid()
    (tmp_path / f".a.mp4.{pid}.0a1b2c3d.part").write_bytes(b"x")
    (tmp_path / f".b.json.{os.getppid()}.0a1b2c3d.tmp").write_bytes(b"x")  # alive but not ours: still stale here
    (tmp_path / f".a.mp4.{pid}.attention").mkdir()
    own = tmp_path / f".c.json.{os.getpid()}.0a1b2c3d.tmp"
    own.write_bytes(b"being written")
    (tmp_path / "a.mp4").write_bytes(b"result")
    (tmp_path / ".keep").write_bytes(b"not a temp name")
    removed = remove_foreign_temps(tmp_path)
    assert len(removed) == 3
    assert _names(tmp_path) == sorted([".keep", "a.mp4", own.name])
