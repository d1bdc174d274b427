"""benchmarks/ablation.py: held-out toy edits, the table arithmetic, and a resumable smoke run on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("ablation", None)


def test_held_out_edits_ask_for_a_new_object_in_the_source_objects_path(ablation):
    for index in range(4):
        edit = ablation.make_edit(index, frames=6, two_objects=index % 2 == 1)
        first = edit.clip.objects[0][0]
        assert edit.source_prompt == edit.clip.caption and edit.source_prompt != edit.prompt
        word = edit.words[0]
        assert f"{word} " in edit.prompt and f"{first.colour} {first.shape}" not in edit.prompt
        assert edit.boxes[word] == edit.clip.boxes(0) and len(edit.boxes[word]) == 6
        if edit.relation:
            second = edit.clip.objects[0][1]
            assert "to the left of" in edit.prompt and f"{second.colour} {second.shape}" in edit.prompt
            assert all(a.cx < b.cx for a, b in edit.clip.objects)  # the relation holds in the source
    assert ablation.make_edit(0, 6, False).prompt == ablation.make_edit(0, 6, False).prompt  # reproducible


def test_binding_edits_repaint_both_objects_and_name_the_right_one_first(ablation):
    for index in range(4):
        edit = ablation.make_binding_edit(index, frames=6)
        left, right = edit.clip.objects[0]
        first, second = edit.words
        assert edit.scored == 2 and first != second and set(edit.boxes) == {first, second}
        assert edit.boxes[first] == edit.clip.boxes(1) and edit.boxes[second] == edit.clip.boxes(0)  # first word: right object
        colours = edit.scored_colours()
        assert edit.prompt.startswith(f"a {colours[first]} {first} and a {colours[second]} {second} on ")
        assert colours[first] != colours[second] and not {left.colour, right.colour} & set(colours.values())
        assert left.cx < right.cx


def test_table_is_mean_and_std_over_records_with_missing_values_skipped(ablation):
    records = {
        "a": [{"x": 1.0, "d": {"w": 0.0}}, {"x": 3.0, "d": {"w": 1.0}}],
        "b": [{"x": None, "d": {}}],
    }
    text = ablation.table(records, [("x", "x", 1), ("d", "d", 2)])
    lines = text.splitlines()
    assert lines[0] == "| row | x | d |"
    assert lines[2] == "| a | 2.0 ± 1.0 | 0.50 ± 0.50 |"
    assert lines[3] == "| b | n/a | n/a |"


@pytest.mark.slow
def test_main_table_runs_measures_and_resumes_on_the_tiny_model(ablation, tmp_path):
    args = ["main", "--out", str(tmp_path), "--model", "tiny", "--clips", "2", "--seeds", "1", "--frames", "4", "--steps", "1", "--window", "4"]
    assert ablation.main(args) == 0
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 2 * len(ablation.ROWS)
    record = json.loads((tmp_path / "runs" / "main-clip1-s0-RAD+IRJS+paste.json").read_text())
    assert record["unet_forwards"] > 0 and record["s_per_frame"] > 0
    assert list(record["relations"]) == [next(iter(record["relations"]))] and "to the left of" in next(iter(record["relations"]))
    baseline = json.loads((tmp_path / "runs" / "main-clip1-s0-baseline.json").read_text())
    assert record["background_psnr"] > baseline["background_psnr"]  # the paste restores the source's background
    table = (tmp_path / "main.md").read_text()
    assert all(f"| {row} |" in table for row in ablation.ROWS)
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    assert ablation.main(args) == 0  # a rerun measures nothing again
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps


@pytest.mark.slow
def test_binding_table_measures_both_words_on_the_tiny_model(ablation, tmp_path):
    args = ["binding", "--out", str(tmp_path), "--model", "tiny", "--clips", "1", "--seeds", "1", "--frames", "4", "--steps", "1", "--window", "4"]
    assert ablation.main(args) == 0
    record = json.loads((tmp_path / "runs" / "binding-bind0-s0-RAD+IRJS+paste.json").read_text())
    edit = ablation.make_binding_edit(0, 4)
    assert list(record["placement"]) == edit.words  # both words scored
    table = (tmp_path / "binding.md").read_text()
    assert all(f"| {row} |" in table for row in ablation.BINDING_ROWS) and "relation holds" not in table


def test_seam_ratio_worst_and_mean_boundary_against_a_hand_count():
    from longedit.toyworld.scoring import seam_ratio

    levels = [0, 1, 2, 6, 7, 8, 10, 11]  # frame-to-frame changes 1,1,4,1,1,2,1; boundaries at 3 (4) and 6 (2)
    frames = [np.full((4, 4, 3), v, np.uint8) for v in levels]
    assert seam_ratio(frames, [3, 6]) == pytest.approx(4.0)  # worst boundary 4 over the median 1
    assert seam_ratio(frames, [3, 6], statistic="mean") == pytest.approx(3.0)
    assert seam_ratio(frames, []) == 1.0
