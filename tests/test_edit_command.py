"""`longedit edit` end to end on generated clips, and its one-line errors for bad input."""

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from longedit.cli import main
from longedit.samples import make_clip
from longedit.video import iter_frames, probe


def edit_args(clip: Path, out: Path, *extra: str, model: str = "tiny") -> list[str]:
    return [
        "edit", str(clip), "-o", str(out), "--model", model, "--quiet",
        "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
        "--steps", "2", "--size", "64", "--window", "4", "--stride", "2", *extra,
    ]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """11 frames at 30000/1001 with audio: longer than two 4-frame windows."""
    folder = tmp_path_factory.mktemp("edit")
    return make_clip(folder / "clip.mp4", frames=11, width=96, height=72, fps=Fraction(30000, 1001), audio=True).path


@pytest.mark.slow
def test_edit_writes_a_playable_video_and_the_report(clip, tmp_path, tiny_model_dir):
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    before = clip.read_bytes()
    code = main(edit_args(clip, out, "--object", "duck=10,10,50,40", "--report", str(report_path), model=str(tiny_model_dir)))
    assert code == 0
    assert clip.read_bytes() == before  # input untouched
    source, edited = probe(clip), probe(out)
    assert edited.frames == source.frames == 11
    assert edited.fps == Fraction(30000, 1001)
    assert (edited.width, edited.height) == (96, 72)
    assert edited.has_audio
    frames = list(iter_frames(out))
    assert len(frames) == 11 and frames[0].shape == (72, 96, 3)
    report = json.loads(report_path.read_text())
    assert report["frames"] == 11 and report["fps"] == pytest.approx(30000 / 1001)
    assert report["windows"] == [[0, 4], [2, 6], [4, 8], [6, 10], [7, 11]]
    assert report["processed_size"] == [64, 64] or min(report["processed_size"]) == 64
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    assert set(report["timing"]) >= {"decode_s", "inversion_s", "edit_s", "encode_s", "frames_per_s"}
    assert report["memory"]["peak_rss_bytes"] > 0 and report["memory"]["peak_vram_bytes"] is None
    assert len(report["rad"]["attention_in_mask"]["duck"]) == 2
    assert report["irjs"]["background_latent_mae"] < 1e-6
    assert not list(tmp_path.glob(".*part"))


def test_unknown_word_exits_2_with_one_line(clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = main(edit_args(clip, out, "--object", "robot=10,10,50,40"))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: word 'robot' is not in the prompt") and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--object", "duck=10,10,500,40"], "outside the 96x72 frame"),
        (["--object", "duck=10,10,10,40"], "is empty"),
        (["--object", "duck=10,10,50,40@40"], "past the end of the video"),
        (["--object", "duck=1,2"], "four numbers"),
        (["--steps", "0", "--object", "duck=10,10,50,40"], "'steps'"),
    ],
)
def test_bad_regions_and_values_exit_2(clip, tmp_path, capsys, extra, message):
    out = tmp_path / "out.mp4"
    code = main(edit_args(clip, out, *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_bad_files_exit_2(clip, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    cases = [
        (edit_args(tmp_path / "missing.mp4", tmp_path / "a.mp4"), "does not exist"),
        (edit_args(corrupt, tmp_path / "b.mp4"), "corrupt"),
        (edit_args(clip, clip), "is the input video"),
        (edit_args(clip, tmp_path / "no-such-dir" / "c.mp4"), "folder"),
        (edit_args(clip, tmp_path / "d.mp4", model=str(tmp_path / "no-model")), "does not exist"),
    ]
    before = clip.read_bytes()
    for args, message in cases:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err.lower(), err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert clip.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.mp4"]


def test_offline_hub_model_gives_a_clear_error(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(edit_args(clip, tmp_path / "e.mp4", "--object", "duck=10,10,50,40", "--local-files-only", model="nobody/no-such-model"))
    err = capsys.readouterr().err
    assert code == 2 and "cannot load model 'nobody/no-such-model'" in err and "--model" in err
    assert not (tmp_path / "e.mp4").exists()


def test_help_explains_the_command():
    with pytest.raises(SystemExit) as exit_:
        from longedit.cli import app, _register_commands

        _register_commands()
        app(["edit", "--help"])
    assert exit_.value.code == 0


def test_no_rad_is_recorded_for_comparison(clip, tmp_path):
    report_path = tmp_path / "r.json"
    code = main(edit_args(clip, tmp_path / "f.mp4", "--object", "duck=10,10,50,40", "--no-rad", "--report", str(report_path)))
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["rad"]["enabled"] is False and len(report["rad"]["attention_in_mask"]["duck"]) == 2
    assert all(loss is None for loss in report["rad"]["loss"])
    assert report["output_size"] == [96, 72] and report["output_cropped"] is None  # even: kept exactly


def test_keep_size_writes_the_processing_size(clip, tmp_path):
    out = tmp_path / "g.mp4"
    assert main(edit_args(clip, out, "--object", "duck=10,10,50,40", "--keep-size", "--steps", "1")) == 0
    info = probe(out)
    assert min(info.width, info.height) == 64 and info.width % 64 == 0 and info.height % 64 == 0
    assert np.asarray(next(iter_frames(out))).shape[:2] == (info.height, info.width)


def test_an_odd_source_size_is_cropped_to_even_and_the_summary_says_so(tmp_path, capsys):
    """H.264 4:2:0 crops in 2-pixel steps: 145x177 cannot be kept exactly (issue 12); the output line, the
    report and the file agree on 144x176."""
    odd = make_clip(tmp_path / "odd.mp4", frames=3, width=145, height=177).path
    out, report_path = tmp_path / "odd-edited.mp4", tmp_path / "r.json"
    code = main(edit_args(odd, out, "--object", "duck=10,10,50,40", "--steps", "1", "--preset", "fast", "--report", str(report_path)))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith(
        f"wrote {out}: 3 frames at 24.000 fps, cropped 145x177 -> 144x176 (H.264 4:2:0 needs even sizes), "
    )
    assert "cropped" not in captured.err  # said once, in the summary line
    assert (probe(out).width, probe(out).height) == (144, 176)
    report = json.loads(report_path.read_text())
    assert report["size"] == [145, 177] and report["output_size"] == [144, 176]
    assert report["output_cropped"] == "cropped 145x177 -> 144x176 (H.264 4:2:0 needs even sizes)"

