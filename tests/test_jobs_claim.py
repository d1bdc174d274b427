"""Claims, the folder layout, the inbox scanner and the ledger, without running any edit."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_jobs_helpers import backdate, write_job

from longedit.errors import UserError
from longedit.jobs.claim import Claim, Owner, read_latest, take_over
from longedit.jobs.ledger import Ledger
from longedit.jobs.scanner import InboxScanner
from longedit.jobs.spool import Spool, adopt_folder, claim_from_inbox, free_folders


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _owner(**changes) -> Owner:
    return dataclasses.replace(Owner.current(), **changes)


# ------------------------------------------------------------------------------------------- claims


def test_claim_liveness_rules(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    mine = Claim.create(folder, Owner.current())
    record = read_latest(folder)
    assert record.generation == 1 and record.owner.token == mine.owner.token
    assert record.liveness(stale_after=60)[0]

    dead = tmp_path / "dead"
    dead.mkdir()
    Claim.create(dead, _owner(pid=_dead_pid()))
    alive, reason = read_latest(dead).liveness(stale_after=60)
    assert not alive and "is gone" in reason

    reused = tmp_path / "reused"  # our pid, but recorded with another start time: a pid reused after reboot
    reused.mkdir()
    Claim.create(reused, _owner(started=Owner.current().started - 1000))
    assert not read_latest(reused).liveness(stale_after=60)[0]

    remote = tmp_path / "remote"  # another host: only the heartbeat tells
    remote.mkdir()
    claim = Claim.create(remote, _owner(host="other-host", pid=1))
    assert read_latest(remote).liveness(stale_after=60)[0]
    backdate(claim.path, seconds=120)
    alive, reason = read_latest(remote).liveness(stale_after=60)
    assert not alive and "no heartbeat" in reason
    claim.heartbeat()
    assert read_latest(remote).liveness(stale_after=60)[0]

    assert mine.release("test")
    alive, reason = read_latest(folder).liveness(stale_after=60)
    assert not alive and "released" in reason


def test_only_one_of_many_takers_wins(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    Claim.create(folder, _owner(pid=_dead_pid()))
    record = read_latest(folder)
    barrier = threading.Barrier(8)
    winners = []

    def take() -> None:
        barrier.wait()
        claim = take_over(folder, record, Owner.current(), "test")
        if claim is not None:
            winners.append(claim)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert read_latest(folder).owner.token == winners[0].owner.token
    assert winners[0].still_held()


# -------------------------------------------------------------------------------------------- spool


def test_claim_from_inbox_moves_job_and_companion_unchanged(tmp_path):
    spool = Spool(tmp_path).create()
    job_file = write_job(spool.inbox / "talk.yaml")
    video = spool.inbox / "talk.mp4"
    video.write_bytes(b"video bytes")
    before = (job_file.read_bytes(), os.stat(video).st_mtime_ns)
    job = claim_from_inbox(spool, job_file, Owner.current(), companion=video)
    assert job.folder == spool.processing / "talk"
    assert sorted(p.name for p in spool.inbox.iterdir()) == []
    assert (job.folder / "talk.yaml").read_bytes() == before[0]
    assert (job.folder / "talk.mp4").read_bytes() == b"video bytes"
    assert os.stat(job.folder / "talk.mp4").st_mtime_ns == before[1]
    assert job.claim.still_held()
    # The loser of a race finds the job file gone and backs off without leaving anything behind.
    assert claim_from_inbox(spool, job_file, Owner.current(), companion=None) is None
    assert [p.name for p in spool.processing.iterdir()] == ["talk"]


def test_same_name_twice_gets_a_new_folder(tmp_path):
    spool = Spool(tmp_path).create()
    first = claim_from_inbox(spool, write_job(spool.inbox / "a.yaml", input="x.mp4"), Owner.current(), None)
    second = claim_from_inbox(spool, write_job(spool.inbox / "a.yaml", input="x.mp4"), Owner.current(), None)
    assert (first.folder.name, second.folder.name) == ("a", "a.2")
    assert first.job_id != second.job_id


def test_dead_claims_are_found_and_adopted_once(tmp_path):
    spool = Spool(tmp_path).create()
    dead = _owner(pid=_dead_pid())
    job = claim_from_inbox(spool, write_job(spool.inbox / "a.yaml", input="x.mp4"), dead, None)
    live = claim_from_inbox(spool, write_job(spool.inbox / "b.yaml", input="x.mp4"), Owner.current(), None)
    free = free_folders(spool, stale_after=60)
    assert [(f.name, "is gone" in why) for f, _, why in free] == [("a", True)]
    folder, record, why = free[0]
    adopted = adopt_folder(spool, folder, record, Owner.current(), why)
    assert adopted is not None and adopted.job_id == job.job_id and adopted.claim.generation == 2
    assert adopt_folder(spool, folder, record, Owner.current(), why) is None  # second taker loses
    assert free_folders(spool, stale_after=60) == []
    assert live.claim.still_held()


def test_staging_folder_of_a_dead_claimer_is_published_or_cleaned(tmp_path):
    spool = Spool(tmp_path).create()
    dead = _owner(pid=_dead_pid())
    # Died after moving the job file in: the job is published under its name.
    staging = spool.processing / ".claiming-dead1"
    staging.mkdir()
    Claim.create(staging, dead)
    (staging / "meta.json").write_text(json.dumps(
        {"id": "a-1", "name": "a", "job_file": "a.yaml", "inbox": str(spool.inbox), "companion": None, "claimed_at": 0}
    ))
    write_job(staging / "a.yaml", input="x.mp4")
    # Died before moving the job file: nothing was claimed, the folder goes away.
    empty = spool.processing / ".claiming-dead2"
    empty.mkdir()
    Claim.create(empty, dead)
    jobs = [adopt_folder(spool, f, r, Owner.current(), why) for f, r, why in free_folders(spool, stale_after=60)]
    assert [j.folder.name for j in jobs if j is not None] == ["a"]
    assert sorted(p.name for p in spool.processing.iterdir()) == ["a"]


# ------------------------------------------------------------------------------------------ scanner


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _states(scanner: InboxScanner) -> dict[str, str]:
    return {e.name: e.state for e in scanner.scan()}


def test_job_file_is_ready_only_after_two_stable_scans(tmp_path):
    spool = Spool(tmp_path).create()
    clock = _Clock()
    scanner = InboxScanner(spool, settle=2.0, probe=lambda path: None, clock=clock)
    (spool.inbox / "v.mp4").write_bytes(b"v")
    path = spool.inbox / "a.yaml"
    path.write_text("input: v.mp4\n")
    assert _states(scanner) == {"a": "settling"}  # first sight
    clock.now += 3
    with path.open("a") as handle:  # still being written: size changes between scans
        handle.write("steps: 3\n")
    assert _states(scanner) == {"a": "settling"}
    clock.now += 1
    assert _states(scanner) == {"a": "settling"}  # unchanged, but not for `settle` seconds yet
    clock.now += 1.5
    assert _states(scanner) == {"a": "ready"}
    os.utime(path)  # touched again (mtime changes): settle again
    clock.now += 0.1
    assert _states(scanner) == {"a": "settling"}


def test_partial_names_are_never_jobs_and_block_their_job(tmp_path):
    spool = Spool(tmp_path).create()
    clock = _Clock()
    scanner = InboxScanner(spool, settle=0.0, probe=lambda path: None, clock=clock)
    write_job(spool.inbox / "a.yaml")  # no input: needs a.mp4
    (spool.inbox / "a.mp4.part").write_bytes(b"half")
    (spool.inbox / "b.yaml.part").write_text("input: x")
    (spool.inbox / ".hidden.yaml").write_text("input: x")
    for _ in range(3):
        entries = scanner.scan()
        clock.now += 1
    assert [(e.name, e.state) for e in entries] == [("a", "waiting")]
    assert "still being written" in entries[0].reason
    os.rename(spool.inbox / "a.mp4.part", spool.inbox / "a.mp4")
    scanner.scan()
    clock.now += 1
    entries = scanner.scan()
    assert [(e.name, e.state) for e in entries] == [("a", "ready")]
    assert entries[0].companion == spool.inbox / "a.mp4"


def test_video_that_does_not_open_waits_then_is_handed_to_the_worker(tmp_path):
    spool = Spool(tmp_path).create()
    clock = _Clock()

    def probe(path: Path) -> None:
        raise UserError(f"cannot read video '{path}': not a readable video file")

    scanner = InboxScanner(spool, settle=1.0, corrupt_after=10.0, probe=probe, clock=clock)
    write_job(spool.inbox / "a.yaml", input="a.mp4")
    (spool.inbox / "a.mp4").write_bytes(b"garbage")
    states = []
    for _ in range(4):
        states.append(_states(scanner)["a"])
        clock.now += 4
    assert states == ["settling", "settling", "settling", "ready"]


def test_a_job_file_that_will_fail_takes_its_companion_video_along(tmp_path):
    spool = Spool(tmp_path).create()
    scanner = InboxScanner(spool, settle=0.0, probe=lambda path: None, clock=_Clock())
    write_job(spool.inbox / "typo.yaml", stepz=3)
    (spool.inbox / "typo.mp4").write_bytes(b"v")
    (spool.inbox / "broken.yaml").write_text("input: [unclosed\n")
    (spool.inbox / "broken.mov").write_bytes(b"v")
    (spool.inbox / "alone.yaml").write_text("steps: [\n")
    scanner.scan()
    entries = {e.name: e for e in scanner.scan()}
    assert {name: e.state for name, e in entries.items()} == {"alone": "ready", "broken": "ready", "typo": "ready"}
    assert entries["typo"].companion == spool.inbox / "typo.mp4"
    assert entries["broken"].companion == spool.inbox / "broken.mov"
    assert entries["alone"].companion is None


def test_missing_input_waits(tmp_path):
    spool = Spool(tmp_path).create()
    scanner = InboxScanner(spool, settle=0.0, probe=lambda path: None, clock=_Clock())
    write_job(spool.inbox / "a.yaml", input="later.mp4")
    scanner.scan()
    entries = scanner.scan()
    assert entries[0].state == "waiting" and "does not exist yet" in entries[0].reason


# ------------------------------------------------------------------------------------------- ledger


def test_ledger_transitions_attempts_and_concurrent_writers(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with ledger._connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.transition("j1", "queued", name="one")
    assert ledger.transition("j1", "running", attempts_delta=1) == 1
    assert ledger.transition("j1", "interrupted", attempts_delta=-1) == 0
    with pytest.raises(ValueError):
        ledger.transition("j1", "exploded")

    def hammer(index: int) -> None:
        other = Ledger(tmp_path / "ledger.sqlite")
        for step in range(20):
            other.transition(f"t{index}", "running", name=f"t{index}", attempts_delta=1)
            other.update(f"t{index}", step=step, total=20)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = {row["id"]: row for row in ledger.jobs()}
    assert all(rows[f"t{i}"]["attempts"] == 20 and rows[f"t{i}"]["step"] == 19 for i in range(4))
    assert [e["state"] for e in ledger.events("j1")] == ["queued", "running", "interrupted"]
    assert time.time() - rows["j1"]["updated_at"] < 60


# ----------------------------------------------------------------------------------------- progress


def test_checkpoint_progress_reads_phase_and_step(tmp_path):
    import torch

    from longedit.jobs.progress import CheckpointProgress
    from longedit.statefile import save_state

    def save(state: dict) -> None:
        save_state(tmp_path / "checkpoint.pt", state, what="the checkpoint")

    progress = CheckpointProgress(tmp_path, steps=5)
    assert progress.read() is None
    save({"phase": "inversion", "step": 2, "latents": torch.zeros(3, 4, 8, 8)})
    assert progress.read() == (2, 10)
    save({"phase": "edit", "step": 4, "latents": torch.zeros(3, 4, 8, 8)})
    assert progress.read() == (9, 10)
    save({"phase": "decode", "step": 5})
    assert progress.read() == (10, 10)
    (tmp_path / "checkpoint.pt").write_bytes(b"torn")  # unreadable: keep the last value
    assert progress.read() == (10, 10)
