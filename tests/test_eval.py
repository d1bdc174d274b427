"""`longedit eval`: weights-free metrics against hand computations, CLIP on a tiny random model, the CLI."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longedit.cli import main
from longedit.errors import UserError
from longedit.evaluation import clip as clip_module
from longedit.evaluation.clip import ClipMetrics, load_clip
from longedit.evaluation.fidelity import PSNR_CAP, background_psnr, background_ssim, load_lpips, to_tensor
from longedit.evaluation.placement import Placement, load_detector, placed
from longedit.evaluation.regions import box_pixels, iter_regions, resolve_objects
from longedit.evaluation.temporal import TemporalConsistency, masked_mad
from longedit.samples import make_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

C1 = (0.01 * 255) ** 2  # SSIM constants at data range 255


def _frame(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


# ------------------------------------------------------------------------------ background fidelity


def test_identical_frames_give_capped_psnr_and_ssim_one():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    background = np.ones((24, 24), dtype=bool)
    assert background_psnr(to_tensor(frame), to_tensor(frame), background) == PSNR_CAP
    assert background_ssim(to_tensor(frame), to_tensor(frame), background) == pytest.approx(1.0, abs=1e-4)


def test_psnr_of_a_known_change_outside_and_inside_the_region():
    source = _frame(100)
    edited = source.copy()
    edited[0, 0, 1] = 110  # one channel of one background pixel: +10
    edited[6:10, 6:10] = 0  # the region changes completely: must not count
    background = np.ones((16, 16), dtype=bool)
    background[6:10, 6:10] = False
    values = background_psnr(to_tensor(source), to_tensor(edited), background)
    mse = 10**2 / ((16 * 16 - 16) * 3)
    assert values == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-4)


def test_ssim_of_a_constant_offset_is_the_luminance_term():
    source, edited = _frame(100), _frame(110)
    background = np.ones((16, 16), dtype=bool)
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)  # zero variance: the structure term is 1
    ssim = background_ssim(to_tensor(source), to_tensor(edited), background)
    assert ssim == pytest.approx(expected, abs=5e-4)  # float32: variances E[x^2] - mu^2 lose ~1e-2 of 58.5


def test_no_background_gives_none():
    frame = to_tensor(_frame(5))
    nothing = np.zeros((16, 16), dtype=bool)
    assert background_psnr(frame, frame, nothing) is None
    assert background_ssim(frame, frame, nothing) is None


def test_lpips_without_weights_is_null_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    metric, reason = load_lpips("alex", local_files_only=True)
    assert metric is None and reason  # torchvision missing, or its weights not cached
    assert load_lpips("none", local_files_only=True) == (None, "disabled by --lpips none")


# ------------------------------------------------------------------------------ temporal consistency


def test_masked_mad_by_hand():
    a, b = _frame(10, 4), _frame(10, 4)
    b[0, 0] = [20, 10, 10]  # |diff| = 10 in one channel of one pixel
    where = np.zeros((4, 4), dtype=bool)
    where[0, :2] = True  # 2 pixels x 3 channels
    assert masked_mad(a, b, where) == pytest.approx(10 / 6 / 255)
    assert masked_mad(a, b, ~where) == 0.0
    assert masked_mad(a, b, np.zeros((4, 4), dtype=bool)) is None


def test_temporal_consistency_inside_outside_and_relative_to_the_source():
    region = np.zeros((4, 4), dtype=bool)
    region[:2, :2] = True  # 4 pixels inside, 12 outside
    sources = [_frame(0, 4), _frame(0, 4), _frame(0, 4)]
    sources[1][2:, 2:] = 51  # the source moves outside (4 px of 12), in the first pair and back in the second
    edited = [s.copy() for s in sources]
    edited[1][:2, :2] = 102  # the edit flickers inside on frame 1, and doubles the outside motion
    edited[1][2:, 2:] = 102
    temporal = TemporalConsistency()
    for s, e in zip(sources, edited):
        temporal.update(s, e, region)
    result = temporal.result()
    assert result["inside"]["per_frame"] == pytest.approx([102 / 255, 102 / 255])
    assert result["inside"]["source_per_frame"] == [0.0, 0.0]
    assert result["inside"]["relative"] is None and result["inside"]["relative_reason"]
    assert result["outside"]["per_frame"] == pytest.approx([102 * 4 / 12 / 255] * 2)
    assert result["outside"]["source"] == pytest.approx(51 * 4 / 12 / 255)
    assert result["outside"]["relative"] == pytest.approx(2.0)


def test_temporal_consistency_needs_two_frames():
    temporal = TemporalConsistency()
    temporal.update(_frame(0, 4), _frame(0, 4), np.zeros((4, 4), dtype=bool))
    assert temporal.result() == {"value": None, "reason": "needs at least 2 frames"}


# ------------------------------------------------------------------------------ regions


def test_box_regions_are_dilated_clipped_and_keyframed():
    assert box_pixels((10.5, 10, 20, 20.2), 2, 64, 64) == (8, 8, 22, 23)
    assert box_pixels((0, 0, 64, 64), 8, 64, 64) == (0, 0, 64, 64)
    objects = resolve_objects(["cat=0,0,10,10@0", "cat=20,0,30,10@2"], None)
    masks = list(iter_regions(objects, 3, 32, 16, margin=1))
    assert [m.shape for m in masks] == [(1, 16, 32)] * 3
    rows, cols = np.nonzero(masks[1][0])  # halfway: box 10,0,20,10, grown by 1
    assert (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1) == (9, 21, 0, 11)


def test_mask_folder_regions(tmp_path):
    from longedit.segmentation import save_mask_folder

    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, 4, 4] = True
    save_mask_folder(tmp_path / "m", ["dog"], [mask, mask])
    objects = resolve_objects([], tmp_path / "m")
    assert [o.word for o in objects] == ["dog"]
    regions = list(iter_regions(objects, 2, 8, 8, margin=1))
    assert len(regions) == 2 and int(regions[1][0].sum()) == 9


def test_bad_regions_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no regions"):
        resolve_objects([], None)
    with pytest.raises(UserError, match="has no region"):
        resolve_objects(["cat"], None)
    with pytest.raises(UserError, match="outside"):
        iter_regions(resolve_objects(["cat=0,0,99,10"], None), 2, 32, 32)
    with pytest.raises(UserError, match="negative"):
        iter_regions(resolve_objects(["cat=0,0,9,10"], None), 2, 32, 32, margin=-1)
    with pytest.raises(UserError, match="does not exist"):
        resolve_objects([], tmp_path / "nope")


# ------------------------------------------------------------------------------ placement


class _FixedDetector:
    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, frame, words):
        return self.boxes.pop(0)


def test_placement_share_with_a_plug_in_detector():
    region = np.zeros((1, 10, 10), dtype=bool)
    region[0, :5, :5] = True
    detector = _FixedDetector([{"cat": (0, 0, 4, 4)}, {"cat": (6, 6, 9, 9)}, {"cat": None}, {"cat": (1, 1, 7, 7)}])
    placement = Placement(detector, ["cat"])
    for _ in range(4):
        placement.update(_frame(0, 10), region)
    result = placement.result()["cat"]
    assert result["per_frame"] == [True, False, False, True]  # centres (2,2) in, (7,7) out, missed, (4,4) in
    assert result["value"] == 0.5
    assert placed((0, 0, 2, 2), region[0]) and not placed(None, region[0])


def test_placement_looks_for_the_nth_occurrence_by_its_bare_word():
    queries = []

    class Recording:
        def detect(self, frame, words):
            queries.append(list(words))
            return {"car": (0, 0, 4, 4)}

    region = np.zeros((2, 10, 10), dtype=bool)
    region[0, :5, :5] = True
    placement = Placement(Recording(), ["car#2", "dog"])
    boxes = placement.update(_frame(0, 10), region)
    assert queries == [["car", "dog"]] and boxes == {"car#2": (0, 0, 4, 4), "dog": None}
    assert placement.result()["car#2"]["per_frame"] == [True] and placement.result()["dog"]["per_frame"] == [False]


class _Blob:
    def __init__(self, colour, shape, box):
        self.colour, self.shape, self.box = colour, shape, box
        self.area = (box[2] - box[0]) * (box[3] - box[1])


def test_toy_detector_adapter_maps_words_to_blobs():
    from types import SimpleNamespace

    from longedit.evaluation.placement import ToyDetector

    blobs = [_Blob("red", "square", (0, 0, 4, 4)), _Blob("blue", "circle", (10, 10, 20, 20)),
             _Blob("green", "circle", (30, 30, 50, 50))]

    def find(detections, colour, shape=None):
        return next((d for d in detections if d.colour == colour and shape in (None, d.shape)), None)

    module = SimpleNamespace(detect=lambda image: blobs, find=find)
    detector = ToyDetector(module, ["red", "blue", "green"], ["circle", "square", "triangle"], "a blue circle and a red square")
    found = detector.detect(_frame(0, 8), ["circle", "red", "square", "triangle", "dog"])
    assert found == {"circle": (10, 10, 20, 20), "red": (0, 0, 4, 4), "square": (0, 0, 4, 4), "triangle": None, "dog": None}
    unprompted = ToyDetector(module, ["red", "blue", "green"], ["circle", "square"], "")
    assert unprompted.detect(_frame(0, 8), ["circle"]) == {"circle": (30, 30, 50, 50)}  # the largest circle


def test_real_toy_detector_finds_a_red_square_when_the_toy_world_is_there():
    pytest.importorskip("longedit.toyworld.detect")
    detector, reason = load_detector("toy", local_files_only=True, prompt="a red square")
    assert reason is None
    frame = _frame(128, 64)
    frame[10:30, 20:40] = (225, 30, 35)
    assert detector.detect(frame, ["square"]) == {"square": (20.0, 10.0, 40.0, 30.0)}


def test_toy_detector_missing_is_null_with_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "longedit.toyworld.detect", None)  # import fails, as before the toy world lands
    detector, reason = load_detector("toy", local_files_only=True)
    assert detector is None and "longedit.toyworld" in reason
    detector, reason = load_detector("/no/such/owl", local_files_only=True)
    assert detector is None and "could not be loaded" in reason


@pytest.fixture(scope="module")
def tiny_owl_dir(tmp_path_factory) -> Path:
    """A tiny random OWL-ViT detector with its processor, saved with save_pretrained."""
    from transformers import CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    torch.manual_seed(0)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = OwlViTConfig(
        text_config={**layers, "vocab_size": 514, "max_position_embeddings": 16,
                     "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513},
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    folder = tmp_path_factory.mktemp("owl") / "tiny-owl"
    OwlViTForObjectDetection(config).save_pretrained(folder)
    _write_byte_tokenizer(folder)
    images = OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    OwlViTProcessor(image_processor=images, tokenizer=CLIPTokenizer.from_pretrained(folder, model_max_length=16)).save_pretrained(folder)
    return folder


def test_open_vocabulary_detector_from_a_tiny_random_owl(tiny_owl_dir):
    detector, reason = load_detector(str(tiny_owl_dir), local_files_only=True)
    assert reason is None
    found = detector.detect(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), ["cat", "dog"])
    assert set(found) == {"cat", "dog"}
    for box in found.values():
        assert box is None or (len(box) == 4 and all(math.isfinite(v) for v in box))


# ------------------------------------------------------------------------------ CLIP


def _byte_symbols() -> list[str]:
    """CLIP's (GPT-2's) printable unicode symbol of each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]


def _write_byte_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer with one token per byte (no merges): enough to encode any prompt."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer.from_pretrained(folder, model_max_length=77).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP model with a tokenizer, saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**layers, "vocab_size": 514, "max_position_embeddings": 77,
                     "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513},
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    _write_byte_tokenizer(folder)
    return folder


def test_clip_metrics_match_the_explicit_pairwise_mean(tiny_clip_dir, monkeypatch):
    monkeypatch.setattr(clip_module, "BATCH", 2)  # several flushes, one partial
    clip, reason = load_clip(str(tiny_clip_dir), local_files_only=True)
    assert reason is None
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    metrics = ClipMetrics(clip, "a red cat")
    for frame in frames:
        metrics.update(frame)
    result = metrics.result()

    embeds = clip.embed_images(frames)
    cosines = embeds @ embeds.T
    pairs = [float(cosines[i, j]) for i in range(5) for j in range(i + 1, 5)]
    assert result["frame_consistency"]["value"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)  # float32 model, other batches
    assert result["frame_consistency"]["consecutive"] == pytest.approx([float(cosines[i, i + 1]) for i in range(4)], abs=1e-6)
    text = clip.embed_text("a red cat")
    expected = [100 * max(float(e @ text), 0.0) for e in embeds]
    assert result["clip_score"]["per_frame"] == pytest.approx(expected, abs=1e-4)
    assert all(math.isfinite(v) for v in result["clip_score"]["per_frame"])


def test_clip_without_weights_is_null_with_a_reason(tmp_path):
    clip, reason = load_clip(str(tmp_path / "no-clip"), local_files_only=True)
    assert clip is None and "could not be loaded" in reason
    assert load_clip(None, local_files_only=True)[1].startswith("no CLIP model given")


# ------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A 6-frame 64x64 source, an identical copy, and another clip in another container."""
    folder = tmp_path_factory.mktemp("eval-clips")
    source = make_clip(folder / "source.mp4", frames=6, width=64, height=64).path
    copy = folder / "copy.mp4"
    shutil.copy(source, copy)
    other = make_clip(folder / "other.mkv", frames=6, width=64, height=64, seed=1).path
    return source, copy, other


def test_cli_end_to_end_on_identical_videos(clips, tiny_clip_dir, tmp_path, capsys):
    source, copy, _ = clips
    out = tmp_path / "eval.json"
    code = main(["eval", str(source), str(copy), "--prompt", "a cat", "--object", "cat=8,8,24,24",
                 "--clip", str(tiny_clip_dir), "--local-files-only", "--detector", "toy", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 6 and report["words"] == ["cat"]
    background = report["background"]
    assert background["psnr"]["per_frame"] == [PSNR_CAP] * 6
    assert background["ssim"]["value"] == pytest.approx(1.0, abs=1e-4)  # float32 convolutions
    assert background["lpips"]["value"] is None and background["lpips"]["reason"]
    for where in ("inside", "outside"):
        assert report["temporal"][where]["relative"] == pytest.approx(1.0)
        assert len(report["temporal"][where]["per_frame"]) == 5
    assert -1.0 <= report["clip"]["frame_consistency"]["value"] <= 1.0
    assert len(report["clip"]["clip_score"]["per_frame"]) == 6
    assert set(report["placement"]) == {"cat"}  # null + reason until the toy world lands, then a share
    assert "background PSNR" in capsys.readouterr().out


def test_cli_different_videos_and_missing_weights(clips, tmp_path):
    source, _, other = clips
    out = tmp_path / "eval.json"
    code = main(["eval", str(source), str(other), "--object", "cat=8,8,24,24", "--margin", "0",
                 "--clip", str(tmp_path / "missing"), "--local-files-only", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["background"]["psnr"]["value"] < 40
    assert report["clip"]["clip_score"]["value"] is None
    assert "could not be loaded" in report["clip"]["frame_consistency"]["reason"]
    assert report["placement"]["cat"]["reason"].startswith("no detector given")


def test_mismatched_videos_exit_2_and_write_nothing(clips, tmp_path, capsys):
    source, _, _ = clips
    short = make_clip(tmp_path / "short.mp4", frames=4, width=64, height=64).path
    small = make_clip(tmp_path / "small.mp4", frames=6, width=32, height=32).path
    out = tmp_path / "eval.json"
    for edited, problem in ((short, "has 4 frames"), (small, "is 32x32")):
        assert main(["eval", str(source), str(edited), "--object", "cat=8,8,24,24", "--json", str(out)]) == 2
        err = capsys.readouterr().err
        assert problem in err and len(err.strip().splitlines()) == 1
    assert main(["eval", str(source), str(source), "--json", str(out)]) == 2  # no regions
    assert main(["eval", str(source), str(source), "--object", "cat=1,1,5,5", "--json", str(tmp_path / "no" / "e.json")]) == 2
    assert not out.exists()


def test_an_edit_at_another_frame_rate_is_refused_with_one_line(clips, tmp_path, capsys):
    """Issue 22 family 7: an edit written at 30 fps (or 23.976) of a 24 fps source was measured as if in step."""
    from fractions import Fraction

    source, copy, other = clips
    out = tmp_path / "eval.json"
    for fps in (Fraction(30), Fraction(24000, 1001)):
        edited = make_clip(tmp_path / f"at-{float(fps):.3f}.mp4", frames=6, width=64, height=64, fps=fps).path
        assert main(["eval", str(source), str(edited), "--object", "cat=8,8,24,24", "--json", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "runs at 24.000 fps" in err and f"at {float(fps):.3f} fps" in err
        assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["eval", str(source), str(other), "--object", "cat=8,8,24,24", "--lpips", "none"]) == 0  # same rate, mkv


def test_an_object_word_not_in_the_prompt_is_refused_as_edit_refuses_it(clips, tmp_path, capsys):
    source, copy, _ = clips
    out = tmp_path / "eval.json"
    for word in ("dog", "cat#2", "ca"):
        code = main(["eval", str(source), str(copy), "--prompt", "a cat on a mat", "--object", f"{word}=8,8,24,24",
                     "--lpips", "none", "--json", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    for word in ("cat", "Cat", "mat#1", "red car", "shirt"):  # whole words, any case, several in a row, as CLIP splits
        prompt = "a cat's t-shirt on a mat by a red car"
        assert main(["eval", str(source), str(copy), "--prompt", prompt, "--object", f"{word}=8,8,24,24", "--lpips", "none"]) == 0
    assert main(["eval", str(source), str(copy), "--object", "dog=8,8,24,24", "--lpips", "none"]) == 0  # no prompt: no check


def test_cli_with_a_mask_folder_and_an_open_vocabulary_detector(clips, tiny_owl_dir, tmp_path):
    from longedit.segmentation import save_mask_folder

    source, copy, _ = clips
    mask = np.zeros((1, 64, 64), dtype=bool)
    mask[:, 16:48, 16:48] = True  # the background is the other 4096 - 1024 pixels
    save_mask_folder(tmp_path / "masks", ["cat"], [mask] * 6)
    out = tmp_path / "eval.json"
    code = main(["eval", str(source), str(copy), "--masks", str(tmp_path / "masks"), "--margin", "0",
                 "--detector", str(tiny_owl_dir), "--local-files-only", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["words"] == ["cat"] and report["background"]["psnr"]["value"] == PSNR_CAP
    placement = report["placement"]["cat"]
    assert len(placement["per_frame"]) == 6 and 0.0 <= placement["value"] <= 1.0
    assert placement["value"] == sum(placement["per_frame"]) / 6


def test_evaluate_a_finished_job(clips, tmp_path):
    from longedit.config import EditJob
    from longedit.evaluation.job import evaluate_job

    source, copy, _ = clips
    job = EditJob(input=source, output=copy, source_prompt="a cat", prompt="a dog",
                  objects=[{"word": "dog", "box": (8, 8, 24, 24)}], mask_dilate=2)
    report = evaluate_job(job)
    assert report["words"] == ["dog"] and report["margin_px"] == 2 + 8 and report["prompt"] == "a dog"
    assert report["background"]["psnr"]["value"] == PSNR_CAP
    small = make_clip(tmp_path / "small.mp4", frames=6, width=32, height=32).path
    unmeasurable = evaluate_job(job.model_copy(update={"output": small}))
    assert unmeasurable["value"] is None and "is 32x32" in unmeasurable["reason"]


@pytest.mark.slow
def test_edit_with_eval_puts_the_numbers_into_the_report(clips, tmp_path, capsys):
    source, _, _ = clips
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main(["edit", str(source), "-o", str(out), "--model", "tiny", "--quiet",
                 "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
                 "--steps", "2", "--size", "64", "--window", "4", "--stride", "2",
                 "--object", "duck=8,8,40,40", "--eval", "--report", str(report_path)])
    assert code == 0
    evaluation = json.loads(report_path.read_text())["eval"]
    assert evaluation["frames"] == 6 and evaluation["words"] == ["duck"] and evaluation["margin_px"] == 8
    assert len(evaluation["background"]["psnr"]["per_frame"]) == 6
    assert 0 < evaluation["background"]["ssim"]["value"] <= 1
    assert "eval: 6 frames" in capsys.readouterr().out


# ------------------------------------------------------------------------------ VISOR-like relations


def test_relations_bind_the_nearest_object_words_and_prefer_the_longest_phrase():
    from longedit.evaluation.relations import Relation, find_relations

    relations, unbound = find_relations("a red circle to the left of a blue square on grass", ["square", "circle"])
    assert relations == [Relation("circle", "to the left of", "square")] and unbound == {}
    relations, _ = find_relations("a cat and a dog above a car", ["cat", "dog", "car"])
    assert relations == [Relation("dog", "above", "car")]
    relations, unbound = find_relations("a dog below the sky", ["dog"])
    assert relations == [] and "give --object for both objects" in unbound["below"]
    assert find_relations("a red circle on grass", ["circle"]) == ([], {})


def test_relation_score_against_a_hand_count():
    from longedit.evaluation.relations import Relation, RelationScore, holds

    assert holds("to the left of", (0, 0, 10, 10), (20, 0, 30, 10))
    assert not holds("to the left of", (20, 0, 30, 10), (0, 0, 10, 10))
    assert holds("below", (0, 20, 10, 30), (0, 0, 10, 10)) and not holds("above", (0, 20, 10, 30), (0, 0, 10, 10))
    score = RelationScore([Relation("cat", "to the left of", "dog")])
    left, right = (0, 0, 10, 10), (40, 0, 50, 10)
    for cat, dog in ((left, right), (left, right), (right, left), (None, right)):
        score.update({"cat": cat, "dog": dog})
    result = score.result()["cat to the left of dog"]
    assert result["per_frame"] == [True, True, False, None]
    assert result["value"] == pytest.approx(2 / 4) and result["conditional"] == pytest.approx(2 / 3) and result["both_found"] == 3


def test_eval_measures_relations_on_a_toy_clip_with_the_toy_detector(tmp_path):
    from longedit.toyworld.render import render_clip, write_clip
    from longedit.toyworld.world import Scene, ToyObject

    scene = Scene("grass", (ToyObject("red", "circle", 30, 64, 30), ToyObject("blue", "square", 98, 64, 30)), "to the left of", 3)
    clip = render_clip(scene, frames=6, size=128, pan=0.0, seed=0, travel=0.1)
    truth = [a.cx < b.cx for a, b in clip.objects]
    assert all(truth)
    path = write_clip(clip, tmp_path / "two.mp4")
    objects = [f"circle={','.join(map(str, clip.boxes(0)[0]))}", f"square={','.join(map(str, clip.boxes(1)[0]))}"]
    for phrase, expected in (("to the left of", 1.0), ("to the right of", 0.0)):
        out = tmp_path / f"{phrase}.json"
        args = ["eval", str(path), str(path), "--prompt", f"a red circle {phrase} a blue square on grass", "--detector", "toy", "--json", str(out)]
        for spec in objects:
            args += ["--object", spec]
        assert main(args) == 0
        report = json.loads(out.read_text())
        relation = report["relations"][f"circle {phrase} square"]
        # H.264 rounds the circle's edge in a few frames and the toy detector then calls it a square:
        # those frames have the relation unmeasured (None), as VISOR counts a missed object
        found = [a and b for a, b in zip(report["placement"]["circle"]["per_frame"], report["placement"]["square"]["per_frame"])]
        assert relation["both_found"] >= 4 and relation["conditional"] == expected
        assert [f is not None for f in relation["per_frame"]] == found
        assert relation["value"] == pytest.approx(expected * relation["both_found"] / 6)


# ------------------------------------------------------------------------------ PickScore


def test_pickscore_matches_its_reference_computation(tiny_clip_dir, tmp_path):
    """Weights in one folder, processor/tokenizer in another (PickScore_v1's layout); the score per frame
    is logit_scale.exp() * cos(image, text), as in github yuvalkirstain/PickScore's example."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from longedit.evaluation.clip import PickScoreMetric

    weights = tmp_path / "pick-weights"
    model = CLIPModel.from_pretrained(tiny_clip_dir, local_files_only=True).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(50.0))  # not CLIP's initial value, so a missing scale would show
    model.save_pretrained(weights)
    pick, reason = load_clip(str(weights), True, processor_name=str(tiny_clip_dir), what="PickScore", option="--pickscore")
    assert reason is None
    frames = [np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8) for i in range(3)]
    metric = PickScoreMetric(pick, "a red cat")
    for frame in frames:
        metric.update(frame)
    result = metric.result()

    size = model.config.vision_config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir, local_files_only=True)
    with torch.no_grad():
        image = model.get_image_features(**processor(images=frames, return_tensors="pt"))
        image = getattr(image, "pooler_output", image)
        text = model.get_text_features(**tokenizer(["a red cat"], padding=True, return_tensors="pt"))
        text = getattr(text, "pooler_output", text)
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    expected = (model.logit_scale.detach().exp() * (text @ image.T))[0]
    assert result["per_frame"] == pytest.approx(expected.tolist(), abs=1e-3)
    assert result["value"] == pytest.approx(float(expected.mean()), abs=1e-3)


def test_pickscore_without_weights_is_null_with_a_reason(clips, tmp_path):
    source, copy, _ = clips
    out = tmp_path / "eval.json"
    assert main(["eval", str(source), str(copy), "--object", "cat=8,8,24,24", "--prompt", "a cat",
                 "--pickscore", str(tmp_path / "none"), "--local-files-only", "--json", str(out)]) == 0
    pickscore = json.loads(out.read_text())["clip"]["pickscore"]
    assert pickscore["value"] is None and "PickScore model" in pickscore["reason"] and "could not be loaded" in pickscore["reason"]


def test_an_edit_of_an_odd_size_source_is_compared_with_the_source_cropped_the_same_way(tmp_path, capsys):
    """The editor writes an odd-size source one column/row smaller (H.264 4:2:0); eval crops the source to
    match instead of refusing, and says so. Any other size mismatch is still refused."""
    from fractions import Fraction

    from longedit.cli import main
    from longedit.video import iter_frames
    from longedit.video.encode import VideoWriter

    source = make_clip(tmp_path / "odd.mkv", frames=4, width=65, height=49).path
    edited = tmp_path / "edited.mp4"
    with VideoWriter(edited, 65, 49, Fraction(24), warn_crop=False) as writer:
        for frame in iter_frames(source):
            writer.write(frame)
    out = tmp_path / "eval.json"
    assert main(["eval", str(source), str(edited), "--object", "cat=8,8,24,24", "--lpips", "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["width"], report["height"]) == (64, 48)
    assert report["source_cropped"] == "cropped 65x49 -> 64x48 (H.264 4:2:0 needs even sizes)"
    assert report["background"]["psnr"]["value"] > 30  # the same frames, re-encoded: compared pixel for pixel
    assert "source cropped 65x49 -> 64x48" in capsys.readouterr().out
    other = make_clip(tmp_path / "other.mkv", frames=4, width=62, height=48).path
    assert main(["eval", str(source), str(other), "--object", "cat=8,8,24,24", "--lpips", "none"]) == 2
    assert "is 65x49 but" in capsys.readouterr().err
