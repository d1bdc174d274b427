"""The shared inversion cache: its key, torn and damaged entries, concurrent writers, the LRU cap, and
end to end on the tiny model (`longedit run`, `watch`, `edit --cache-dir`, `--no-cache`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from test_jobs_helpers import REPO, TESTS, cli_env, longedit_cmd, make_video, write_job

from longedit.config import CACHE_FOLDER
from longedit.editor import LoopSettings, VideoEditor
from longedit.inversion_cache import ENTRY_SUFFIX, InversionCache, SharedInversion, cache_key, key_parts

JOB = {"steps": 3, "size": 64, "refine": False}
KEY = "a" * 64


def _entry_size(tmp_path: Path, latents: torch.Tensor) -> int:
    probe = InversionCache(tmp_path / "probe", 1 << 30)
    probe.put(KEY, latents)
    return probe.path(KEY).stat().st_size


# ------------------------------------------------------------------------------------------- key
def _parts(backbone, video: Path, source: str, prompt: str, inversion: str | None, **settings) -> dict:
    editor = VideoEditor(backbone, LoopSettings(**{"steps": 2, **settings}), source, prompt, [], inversion_prompt=inversion)
    text = source if inversion is None else inversion
    return key_parts(video=video, processed_size=(64, 64), frames=6, backbone=backbone, editor=editor,
                     windows=[(0, 6)], inversion_prompt=text, trajectory=False)


def test_the_key_ignores_the_edited_prompt_but_not_what_the_inversion_depends_on(tiny_backbone, clip, tmp_path):
    base = cache_key(_parts(tiny_backbone, clip, "a man in a car", "a robot in a car", ""))
    assert cache_key(_parts(tiny_backbone, clip, "a man in a car", "a dog in a car", "")) == base
    assert cache_key(_parts(tiny_backbone, clip, "a cat on a road", "a dog in a car", "")) == base  # empty prompt
    # a source-prompt inversion depends on the source prompt: same prompt, same key; another, another key
    source = cache_key(_parts(tiny_backbone, clip, "a man in a car", "a robot in a car", None))
    assert source != base
    assert cache_key(_parts(tiny_backbone, clip, "a man in a car", "a dog in a car", None)) == source
    assert cache_key(_parts(tiny_backbone, clip, "a cat on a road", "a dog in a car", None)) != source
    assert cache_key(_parts(tiny_backbone, clip, "a man in a car", "a robot in a car", "", steps=3)) != base
    assert cache_key(_parts(tiny_backbone, clip, "a man in a car", "a robot in a car", "", anchor="video")) != base
    other = tmp_path / "other.mp4"
    other.write_bytes(clip.read_bytes() + b"\0")  # one byte more: another video
    assert cache_key(_parts(tiny_backbone, other, "a man in a car", "a robot in a car", "")) != base
    parts = _parts(tiny_backbone, clip, "a man in a car", "a robot in a car", "")
    assert cache_key({**parts, "windows": [[0, 4], [2, 6]]}) != base and cache_key({**parts, "size": [128, 64]}) != base
    assert len(parts["unet"]) == 64 and parts["inversion_prompt"] == "" and parts["trajectory"] is False


# ---------------------------------------------------------------------------------------- entries
def test_an_entry_round_trips_bit_for_bit_with_its_trajectory(tmp_path):
    cache = InversionCache(tmp_path, 1 << 30)
    latents = torch.randn(3, 4, 8, 8).to(memory_format=torch.channels_last)  # the layout the VAE and merge give
    trajectory = torch.randn(2, 3, 4, 8, 8).half()
    assert cache.get(KEY) is None
    assert cache.put(KEY, latents, trajectory, {"video_sha256": "x"})
    entry = cache.get(KEY)
    assert torch.equal(entry.latents, latents) and torch.equal(entry.trajectory, trajectory)
    assert entry.latents.stride() == latents.stride()  # the UNet's kernels follow the layout: same bits need it
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}{ENTRY_SUFFIX}"]  # no temp file left
    shared = SharedInversion(cache, KEY, {})
    assert shared.load((3, 4, 8, 8), needs_trajectory=True) is not None
    assert shared.load((4, 4, 8, 8), needs_trajectory=False) is None  # another shape is a miss


def test_a_torn_damaged_or_foreign_entry_is_never_read(tmp_path):
    cache = InversionCache(tmp_path, 1 << 30)
    latents = torch.arange(4 * 4 * 16 * 16, dtype=torch.float32).reshape(4, 4, 16, 16)
    cache.put(KEY, latents)
    whole = cache.path(KEY).read_bytes()
    for cut in (0, 10, len(whole) // 3, len(whole) // 2, len(whole) - 100, len(whole) - 1):
        cache.path(KEY).write_bytes(whole[:cut])  # what a non-atomic copy or a crash mid-write would leave
        assert cache.get(KEY) is None, f"read a file torn at {cut} of {len(whole)} bytes"
    data = bytearray(whole)
    at = data.find(latents[1].numpy().tobytes()[:64])
    assert at > 0
    data[at + 5] ^= 0x40  # one flipped bit in the payload
    cache.path(KEY).write_bytes(bytes(data))
    assert cache.get(KEY) is None
    cache.path(KEY).write_bytes(whole)
    assert torch.equal(cache.get(KEY).latents, latents)
    os.replace(cache.path(KEY), cache.path("b" * 64))  # a file under another key's name
    assert cache.get("b" * 64) is None


_WRITER = """
import sys, torch
from longedit.inversion_cache import InversionCache
cache = InversionCache(sys.argv[1], 1 << 30)
latents = torch.arange(16 * 4 * 32 * 32, dtype=torch.float32).reshape(16, 4, 32, 32)
trajectory = torch.linspace(-1, 1, 8 * 16 * 4 * 32 * 32).reshape(8, 16, 4, 32, 32).half()
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    cache.put(sys.argv[3], latents, trajectory)
"""


def test_two_writer_processes_of_one_key_never_corrupt_it_and_readers_see_whole_entries(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), "6", KEY], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for writer in writers:
        assert writer.stdout.readline().strip() == "ready"
    latents = torch.arange(16 * 4 * 32 * 32, dtype=torch.float32).reshape(16, 4, 32, 32)
    trajectory = torch.linspace(-1, 1, 8 * 16 * 4 * 32 * 32).reshape(8, 16, 4, 32, 32).half()
    cache = InversionCache(tmp_path, 1 << 30)
    reads = 0
    while any(w.poll() is None for w in writers):
        entry = cache.get(KEY)
        if entry is not None:  # a read sees the whole entry or none
            assert torch.equal(entry.latents, latents) and torch.equal(entry.trajectory, trajectory)
            reads += 1
    assert [w.wait() for w in writers] == [0, 0]
    assert reads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{KEY}{ENTRY_SUFFIX}"]  # no temp file left behind
    entry = cache.get(KEY)
    assert torch.equal(entry.latents, latents) and torch.equal(entry.trajectory, trajectory)


def test_the_cap_evicts_the_least_recently_used_entries(tmp_path):
    latents = torch.randn(2, 4, 8, 8)
    size = _entry_size(tmp_path, latents)
    cache = InversionCache(tmp_path / "cache", 2 * size + size // 2)  # room for two entries
    keys = [c * 64 for c in "abcd"]
    for key in keys[:2]:
        assert cache.put(key, latents)
        time.sleep(0.02)
    assert cache.get(keys[0]) is not None  # a hit makes `a` the most recently used
    time.sleep(0.02)
    cache.put(keys[2], latents)
    assert [cache.get(k) is not None for k in keys[:3]] == [True, False, True]  # `b` went, not `a`
    assert cache.total_bytes() <= cache.max_bytes
    small = InversionCache(tmp_path / "small", size // 2)
    assert small.put(keys[3], latents) is False and not small.path(keys[3]).exists()  # bigger than the cap
    assert "larger than the cache cap" in SharedInversion(small, keys[3], {}).store(latents, None)


def test_eviction_leaves_the_temp_file_of_a_live_writer_and_removes_a_dead_ones(tmp_path):
    cache = InversionCache(tmp_path, 1)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        writing = tmp_path / f".{KEY}{ENTRY_SUFFIX}.{live.pid}.0123abcd.tmp"
        left = tmp_path / f".{'b' * 64}{ENTRY_SUFFIX}.{dead.pid}.0123abcd.tmp"
        for path in (writing, left):
            path.write_bytes(b"x" * 1000)
        cache.evict()
        assert writing.exists() and not left.exists()
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cache-size", "lots"], "error: cannot read the cache size 'lots' (write it like 20GB, 500MB or 2GiB)"),
        (["--cache-dir", "{file}"], "error: cache folder '{file}' is a file (give --cache-dir a folder; it is created when missing)"),
    ],
)
def test_a_bad_cache_flag_is_one_line_and_exit_2_before_any_work(flags, message, clip, tmp_path, capsys):
    from longedit.cli import main

    (tmp_path / "a-file").write_text("x")
    flags = [f.format(file=tmp_path / "a-file") for f in flags]
    args = ["edit", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "tiny", "--source-prompt", "a man",
            "--prompt", "a robot", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == message.format(file=tmp_path / "a-file") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written


def test_run_and_watch_hand_jobs_their_work_folders_cache_and_no_cache_takes_it_away(tmp_path, clip):
    from longedit.jobs.batch import work_dir_for
    from longedit.jobs.executor import LocalExecutor
    from longedit.jobs.jobfile import load_job
    from longedit.jobs.watcher import Watcher, WatchOptions

    execute = LocalExecutor(lambda job, **kwargs: {})
    assert Watcher(tmp_path / "w", execute).processor.inversion_cache == (tmp_path / "w").absolute() / CACHE_FOLDER
    assert Watcher(tmp_path / "w", execute, WatchOptions(cache=False)).processor.inversion_cache is None
    path = write_job(tmp_path / "a.yaml", input=str(clip))
    job, folder = load_job(path), tmp_path / "work" / CACHE_FOLDER
    assert job.cache_dir is None and job.with_inversion_cache(folder).cache_dir == folder
    own = load_job(write_job(tmp_path / "b.yaml", input=str(clip), cache_dir="shared"))
    assert own.cache_dir == tmp_path / "shared"  # relative to the job file, like its input
    assert own.with_inversion_cache(folder).cache_dir == tmp_path / "shared"  # the job's own folder wins
    assert own.with_inversion_cache(None).cache_dir is None  # --no-cache
    # where the inversion is shared never changes the job's checkpoint folder (a rerun still resumes)
    assert work_dir_for(job.with_inversion_cache(folder), path, None) == work_dir_for(job, path, None)
    from longedit.engine import job_fingerprint
    from longedit.video import probe

    info = probe(clip)
    assert job_fingerprint(job.with_inversion_cache(folder), info) == job_fingerprint(job, info)
    assert job_fingerprint(job.model_copy(update={"steps": 4}), info) != job_fingerprint(job, info)


# ------------------------------------------------------------------------------------ end to end
def _report(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _prompt_job(folder: Path, word: str, **keys) -> Path:
    return write_job(
        folder / f"{word}.yaml", input="clip.mp4", output=f"out/{word}.mp4", report=f"out/{word}.json",
        prompt=f"a {word} talking on a phone in a car", objects=[{"word": word, "box": [8, 8, 40, 40]}], **{**JOB, **keys},
    )


@pytest.mark.slow
def test_run_shares_the_inversion_between_prompts_and_no_cache_recomputes_it(tmp_path):
    """Two prompts on one clip: the second job takes the first one's inversion (bit-identical, fewer UNet
    forwards); `--no-cache` recomputes it and gets the same numbers, end to end."""
    from longedit.cli import main

    make_video(tmp_path / "clip.mp4", frames=4)
    files = [_prompt_job(tmp_path, word) for word in ("robot", "dog")]
    (tmp_path / "out").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", "--quiet", *map(str, files)]) == 0
    robot, dog = _report(tmp_path / "out" / "robot.json"), _report(tmp_path / "out" / "dog.json")
    cache_folder = tmp_path / "out" / ".longedit-work" / CACHE_FOLDER
    assert robot["inversion"]["cache"]["state"] == "stored" and dog["inversion"]["cache"]["state"] == "hit"
    assert robot["inversion"]["cache"]["folder"] == str(cache_folder)
    assert robot["inversion"]["checksum"] == dog["inversion"]["checksum"]
    windows = len(robot["windows"])
    assert robot["unet_forwards"] - dog["unet_forwards"] == JOB["steps"] * windows  # the inversion's forwards
    assert [p.name for p in cache_folder.iterdir()] == [f"{dog['inversion']['cache']['key']}{ENTRY_SUFFIX}"]

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "clip.mp4").write_bytes((tmp_path / "clip.mp4").read_bytes())
    again = _prompt_job(fresh, "dog")
    (fresh / "out").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", "--quiet", "--no-cache", str(again)]) == 0
    uncached = _report(fresh / "out" / "dog.json")
    assert uncached["inversion"]["cache"]["state"] == "off"
    assert not (fresh / "out" / ".longedit-work").exists()
    assert uncached["inversion"]["checksum"] == dog["inversion"]["checksum"]
    assert uncached["latent_checksum"] == dog["latent_checksum"]  # the whole edit, bit for bit
    assert uncached["unet_forwards"] == dog["unet_forwards"] + JOB["steps"] * windows


@pytest.mark.slow
def test_edit_cache_dir_shares_the_trajectory_of_source_noise_inversion(tmp_path):
    """`longedit edit --cache-dir`: with `--source-noise inversion` the entry holds the trajectory too,
    and the edit from a cache hit equals the edit without the cache."""
    from longedit.cli import main

    clip = make_video(tmp_path / "clip.mp4", frames=4)
    common = ["--model", "tiny", "--steps", "3", "--size", "64", "--no-refine", "--source-noise", "inversion", "--quiet",
              "--source-prompt", "a man talking on a phone in a car"]

    def edit(word: str, *extra: str) -> dict:
        report = tmp_path / f"{word}{len(extra)}.json"
        args = ["edit", str(clip), "-o", str(tmp_path / f"{word}{len(extra)}.mp4"), "--prompt", f"a {word} in a car",
                "--object", f"{word}=8,8,40,40", "--report", str(report), *common, *extra]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(args) == 0
        return _report(report)

    cache = ["--cache-dir", str(tmp_path / "cache")]
    first, second, alone = edit("robot", *cache), edit("dog", *cache), edit("dog")
    assert (first["inversion"]["cache"]["state"], second["inversion"]["cache"]["state"]) == ("stored", "hit")
    assert alone["inversion"]["cache"]["state"] == "off"
    assert second["latent_checksum"] == alone["latent_checksum"]  # IRJS read the cached trajectory
    assert second["unet_forwards"] == alone["unet_forwards"] - 3


@pytest.mark.slow
def test_watch_workers_share_the_inversion_in_the_watched_folder(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_video(inbox / "clip.mp4", frames=4)
    for word in ("robot", "dog"):
        write_job(inbox / f"{word}.yaml", input="clip.mp4", prompt=f"a {word} talking on a phone in a car",
                  objects=[{"word": word, "box": [8, 8, 40, 40]}], **JOB)
    result = subprocess.run(
        longedit_cmd("watch", str(tmp_path), "--once", "--settle", "0.1", "--poll", "0.1"),
        capture_output=True, text=True, timeout=300, env=cli_env(), cwd=str(TESTS),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    states = sorted(_report(tmp_path / "done" / w / "report.json")["inversion"]["cache"]["state"] for w in ("robot", "dog"))
    assert states == ["hit", "stored"]  # one worker: the second job found the first one's inversion
    assert len(list((tmp_path / CACHE_FOLDER).glob(f"*{ENTRY_SUFFIX}"))) == 1
