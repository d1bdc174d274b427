"""SAM2 tracking: tiny random model through the real from_pretrained path, chunking, memory, post-processing.

Random weights make masks meaningless, so tests with the tiny SAM2 check shapes, plumbing and state
size; the tracking logic (re-seeding, both directions, objects leaving and coming back) is checked
exactly with `ScriptedBackend`, a stand-in whose "tracking" is scripted.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from longedit.config import ObjectSpec
from longedit.errors import UserError
from longedit.segmentation import (
    AnchorFrame,
    ChunkStep,
    HFSam2Backend,
    Prompt,
    StreamState,
    boxify,
    build_random_sam2,
    dilate,
    drop_small,
    load_backend,
    load_mask_folder,
    load_sam2_model,
    logits_to_masks,
    postprocess,
    resolve_device,
    save_mask_folder,
    track_masks,
    track_stream,
)
from longedit.segmentation.sam2_backend import OfficialSam2Backend, config_for, split_checkpoint_spec
from longedit.segmentation.track import reversed_frames
from longedit.video import iter_frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_sam2(tmp_path_factory.mktemp("tiny-sam2"))


@pytest.fixture(scope="module")
def tiny_model(tiny_folder: Path):
    return load_sam2_model(str(tiny_folder), local_files_only=True)


@pytest.fixture
def tiny_backend(tiny_model) -> HFSam2Backend:
    return HFSam2Backend(tiny_model, torch.device("cpu"))


def random_frames(count: int, size: int = 64, seed: int = 0) -> Iterator[np.ndarray]:
    """Work-size frames; the red channel of pixel (0, 0) holds the frame index (for scripted backends)."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        frame[0, 0, 0] = index % 256
        yield frame


def box_mask(box, size: tuple[int, int]) -> np.ndarray:
    """Bool [h, w] with the box (x0, y0, x1, y1; rounded) set."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask[y0:y1, x0:x1] = True
    return mask


class ScriptedBackend:
    """A stand-in tracker: each object's mask is its latest prompt, unless `hide(frame_tag, obj_id)` says it is gone.

    Records what every chunk was seeded with and which frames it saw, so tests can check the driver.
    """

    name = "scripted"

    def __init__(self, work_size: tuple[int, int] = (64, 64), hide=None) -> None:
        self.work_size = work_size
        self.hide = hide or (lambda tag, obj_id: False)
        self.chunks: list[dict] = []

    def _mask(self, prompt: Prompt) -> np.ndarray:
        return prompt.mask.copy() if prompt.mask is not None else box_mask(prompt.box, self.work_size)

    def track_chunk(self, anchors, frames):
        record = {"anchors": list(anchors), "frames": [], "prompts": []}
        self.chunks.append(record)
        memory = {p.obj_id: self._mask(p) for a in anchors for p in a.prompts}
        for frame, prompts in frames:
            record["frames"].append(frame)
            record["prompts"].append(list(prompts))
            memory.update({p.obj_id: self._mask(p) for p in prompts})
            ids = list(memory)
            masks = [memory[i] & ~self.hide(int(frame[0, 0, 0]), i) for i in ids]
            logits = torch.from_numpy(np.stack(masks)).float() * 2 - 1
            yield ChunkStep(ids, logits)


# ---------------------------------------------------------------------------------- tiny model


def test_tiny_sam2_loads_back_through_from_pretrained(tiny_folder: Path, tiny_model) -> None:
    from transformers import Sam2VideoModel

    assert (tiny_folder / "config.json").is_file()
    assert any(tiny_folder.glob("*.safetensors"))
    assert isinstance(tiny_model, Sam2VideoModel)
    assert tiny_model.config.image_size == 64
    assert sum(p.numel() for p in tiny_model.parameters()) < 2_000_000


def test_hf_backend_streams_chunks_for_several_objects(tiny_backend: HFSam2Backend) -> None:
    state = StreamState(chunk_size=4)
    prompts = {0: [Prompt(1, box=(4, 4, 30, 30)), Prompt(2, box=(30, 20, 60, 50))], 6: [Prompt(1, box=(8, 8, 34, 34))]}
    steps = list(track_stream(tiny_backend, random_frames(10), prompts, chunk=4, state=state))
    assert [s.position for s in steps] == list(range(10))
    assert [s.chunk for s in steps] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    for step in steps:
        assert sorted(step.obj_ids) == [1, 2]
        assert step.logits.shape == (2, 16, 16) and step.logits.dtype == torch.float32
    assert state.reseed_count == 2
    reseed = state.last_reseed
    assert reseed is not None and reseed.chunk == 2 and reseed.position == 8
    # every anchor is a frame of the previous chunks, and a mask anchor is the latest non-empty mask
    for obj_id, (position, kind) in reseed.anchors.items():
        assert position <= 7 and kind in ("mask", "box")
    assert tiny_backend.session is None  # the last chunk's session was dropped


def test_hf_backend_mask_prompt_and_mixed_anchor_frames(tiny_backend: HFSam2Backend) -> None:
    frames = list(random_frames(5))
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:48, 8:40] = True  # on the 4-pixel grid of the 16x16 low-res logits
    anchors = [
        AnchorFrame(0, frames[0], [Prompt(1, mask=mask)]),
        AnchorFrame(3, frames[1], [Prompt(2, box=(30, 30, 60, 60))]),
    ]
    chunk = tiny_backend.track_chunk(anchors, ((f, []) for f in frames[2:]))
    first = next(chunk)
    session = tiny_backend.session
    # SAM2 takes a mask prompt as the output of its frame (mask-as-output), so the re-seed is exact
    seeded = session.output_dict_per_obj[session.obj_id_to_idx(1)]["cond_frame_outputs"][0]["pred_masks"]
    low = (seeded[0, 0] > 0).numpy()
    expected = mask.reshape(16, 4, 16, 4).any(axis=(1, 3))
    assert (low == expected).mean() > 0.95
    rest = list(chunk)
    assert sorted(first.obj_ids) == [1, 2] and all(sorted(s.obj_ids) == [1, 2] for s in rest)
    assert len(rest) == 2


def test_trimming_the_session_changes_no_result(tiny_model) -> None:
    prompts = {0: [Prompt(1, box=(4, 4, 30, 30))], 9: [Prompt(2, box=(20, 20, 50, 50))]}
    trimmed = HFSam2Backend(tiny_model, torch.device("cpu"), trim=True)
    full = HFSam2Backend(tiny_model, torch.device("cpu"), trim=False)
    a = list(track_stream(trimmed, random_frames(14), prompts, chunk=100))
    sizes_full = []
    b = []
    for step in track_stream(full, random_frames(14), prompts, chunk=100):
        sizes_full.append(full.footprint().outputs)
        b.append(step)
    for x, y in zip(a, b, strict=True):
        assert x.obj_ids == y.obj_ids
        torch.testing.assert_close(x.logits, y.logits)
    assert sizes_full[-1] > sizes_full[5]  # an untrimmed session keeps every frame...


def _peak_state(backend: HFSam2Backend, frames: int, chunk: int) -> tuple[int, int, int]:
    """Max over the run of (session outputs, session tensor bytes, anchors kept by the driver)."""
    state = StreamState(chunk_size=chunk)
    peak_outputs = peak_bytes = peak_anchors = 0
    prompts = {0: [Prompt(1, box=(10, 10, 40, 40))]}
    for _ in track_stream(backend, random_frames(frames), prompts, chunk=chunk, state=state):
        footprint = backend.footprint()
        peak_outputs = max(peak_outputs, footprint.outputs)
        peak_bytes = max(peak_bytes, footprint.tensor_bytes)
        peak_anchors = max(peak_anchors, len(state.anchors))
    return peak_outputs, peak_bytes, peak_anchors


def test_chunking_bounds_session_state(tiny_model) -> None:
    """Even without trimming (SAM2's own growth), chunks keep the state of 400 frames equal to 40's."""
    untrimmed = HFSam2Backend(tiny_model, torch.device("cpu"), trim=False)
    short = _peak_state(untrimmed, 40, chunk=8)
    long = _peak_state(untrimmed, 400, chunk=8)
    assert long == short
    unchunked = _peak_state(untrimmed, 40, chunk=10_000)
    assert unchunked[0] > 3 * short[0]  # the growth that chunking removes


def test_memory_is_flat_in_length_short(tiny_backend: HFSam2Backend) -> None:
    short = _peak_state(tiny_backend, 40, chunk=16)
    long = _peak_state(tiny_backend, 400, chunk=16)
    assert long[0] <= short[0] and long[1] <= 1.2 * short[1] and long[2] == short[2]


def test_the_retained_heap_does_not_grow_with_length(tiny_backend: HFSam2Backend) -> None:
    """The Python heap retained after gc (numpy frames, masks, anchors) grows by less than 1 KiB per frame
    once the first chunks are done: a slope over 128 frames, where a leaked 64x64 mask per frame would be 4 KiB.

    The 2,000-frame run this replaces (7 minutes of CI; tensors and heap within 20 % of a 200-frame run) is
    `python benchmarks/long_runs.py segmentation-memory`, its figures in benchmarks/RESULTS.md.
    """
    prompts = {0: [Prompt(1, box=(10, 10, 40, 40))]}
    samples: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        for step in track_stream(tiny_backend, random_frames(128), prompts, chunk=16):
            if step.position % 16 == 15 and step.position >= 47:  # after the first chunks' one-off allocations
                gc.collect()
                samples.append((step.position + 1, tracemalloc.get_traced_memory()[0]))
    finally:
        tracemalloc.stop()
    frames, heap = np.array(samples, dtype=float).T
    slope = np.polyfit(frames, heap, 1)[0]
    assert len(samples) == 6 and slope < 1024, f"{slope:.0f} bytes per frame"


# ----------------------------------------------------------------------------- driver logic


def test_reseed_comes_from_last_mask_of_previous_chunk() -> None:
    backend = ScriptedBackend()
    state = StreamState(chunk_size=4)
    prompts = {0: [Prompt(1, box=(4, 4, 20, 20))], 6: [Prompt(2, box=(30, 30, 50, 50))]}
    steps = list(track_stream(backend, random_frames(10), prompts, chunk=4, state=state))
    assert len(steps) == 10 and [len(c["frames"]) for c in backend.chunks] == [4, 4, 2]
    chunk1, chunk2 = backend.chunks[1], backend.chunks[2]
    assert chunk1["anchors"] and chunk1["anchors"][0].position == 3
    (anchor,) = chunk2["anchors"]  # both objects' last masks are on frame 7: one anchor frame
    assert anchor.position == 7
    assert anchor.frame is chunk1["frames"][-1]  # the previous chunk's last frame...
    last = logits_to_masks(steps[7].logits, (64, 64), (64, 64))
    by_id = {p.obj_id: p for p in anchor.prompts}
    for row, obj_id in enumerate(steps[7].obj_ids):
        assert by_id[obj_id].kind == "mask"
        np.testing.assert_array_equal(by_id[obj_id].mask, last[row])  # ...and its last mask
    assert state.last_reseed.anchors == {1: (7, "mask"), 2: (7, "mask")}
    assert steps[5].obj_ids == [1] and sorted(steps[6].obj_ids) == [1, 2]


def test_object_leaving_keeps_its_last_mask_as_anchor_and_comes_back() -> None:
    gone = range(3, 7)
    backend = ScriptedBackend(hide=lambda tag, obj_id: obj_id == 1 and tag in gone)
    state = StreamState(chunk_size=4)
    steps = list(track_stream(backend, random_frames(10), {0: [Prompt(1, box=(4, 4, 20, 20))]}, chunk=4, state=state))
    empty = [not logits_to_masks(s.logits, (64, 64), (64, 64))[0].any() for s in steps]
    assert empty == [False, False, False, True, True, True, True, False, False, False]
    # chunk 1 starts while the object is away: it is seeded from frame 2, its last non-empty mask
    assert [(a.position, a.prompts[0].kind) for a in backend.chunks[1]["anchors"]] == [(2, "mask")]
    assert [(a.position, a.prompts[0].kind) for a in backend.chunks[2]["anchors"]] == [(7, "mask")]


def test_frames_before_the_first_prompt_are_empty_steps() -> None:
    backend = ScriptedBackend()
    steps = list(track_stream(backend, random_frames(6), {2: [Prompt(1, box=(4, 4, 20, 20))]}, chunk=3))
    assert [s.obj_ids for s in steps[:2]] == [[], []] and steps[0].logits is None
    assert [len(c["frames"]) for c in backend.chunks] == [3, 1]


def test_reversed_frames_match_forward_decode(clip_factory) -> None:
    clip = clip_factory("rev.mp4", frames=30, width=32, height=32)
    forward = list(iter_frames(clip.path))
    backward = list(reversed_frames(clip.path, None, 3, 29, block=7))
    assert len(backward) == 26
    for got, want in zip(backward, reversed(forward[3:29])):
        np.testing.assert_array_equal(got, want)


def test_box_on_later_frame_tracks_both_ways(clip_factory) -> None:
    clip = clip_factory("both.mp4", frames=12, width=64, height=48)
    backend = ScriptedBackend(work_size=(64, 48))
    objects = [ObjectSpec(word="cat", keyframes={5: (8, 8, 40, 32)}), ObjectSpec(word="dog", box=(40, 20, 60, 44))]
    out = list(track_masks(clip.path, objects, chunk=4, progress=False, backend=backend))
    assert len(out) == 12
    cat, dog = box_mask((8, 8, 40, 32), (64, 48)), box_mask((40, 20, 60, 44), (64, 48))
    for masks in out:
        assert masks.shape == (2, 48, 64) and masks.dtype == bool
        np.testing.assert_array_equal(masks[0], cat)  # frames 0-4 come from the backward pass
        np.testing.assert_array_equal(masks[1], dog)
    # backward pass first: frames 5, 4, ..., 0 in chunks of 4, then forward 0..11
    seen = [f for c in backend.chunks for f in c["frames"]]
    assert len(seen) == 6 + 12
    source = list(iter_frames(clip.path, size=(64, 48)))
    for got, want in zip(seen[:6], reversed(source[:6])):
        np.testing.assert_array_equal(got, want)
    assert backend.chunks[0]["prompts"][0][0].obj_id == 1  # cat seeded on the first backward frame


def test_keyframes_become_extra_prompts_and_out_size(clip_factory) -> None:
    clip = clip_factory("kf.mp4", frames=10, width=64, height=48)
    backend = ScriptedBackend(work_size=(64, 48))
    objects = [ObjectSpec(word="car", keyframes={2: (0, 0, 32, 24), 6: (32, 24, 64, 48)})]
    out = list(track_masks(clip.path, objects, out_size=(32, 24), chunk=100, progress=False, backend=backend))
    assert [m.shape for m in out] == [(1, 24, 32)] * 10
    forward = backend.chunks[-1]
    assert [i for i, p in enumerate(forward["prompts"]) if p] == [0, 4]  # keyframes 2 and 6, from frame 2 on
    assert out[3][0, :12, :16].all() and not out[3][0, 12:, 16:].any()
    assert out[8][0, 12:, 16:].all() and not out[8][0, :12, :16].any()
    assert out[0][0, :12, :16].all()  # before the first keyframe: backward pass from frame 2


def test_track_masks_with_tiny_sam2(clip_factory, tiny_folder: Path) -> None:
    clip = clip_factory("tiny.mp4", frames=9, width=80, height=48)
    objects = [ObjectSpec(word="cat", box=clip.boxes[0]), ObjectSpec(word="dog", keyframes={4: (0, 0, 30, 30)})]
    out = list(track_masks(clip.path, objects, model=str(tiny_folder), chunk=3, local_files_only=True, progress=False))
    assert len(out) == 9
    assert all(m.shape == (2, 48, 80) and m.dtype == bool for m in out)
    kwargs = {"model": str(tiny_folder), "chunk": 4, "progress": False}
    small = list(track_masks(clip.path, objects, out_size=(40, 24), min_area=10**6, **kwargs))
    assert [m.shape for m in small] == [(2, 24, 40)] * 9
    assert not any(m.any() for m in small)  # min_area larger than the frame empties every mask


# -------------------------------------------------------------------------------- errors


def test_bad_tracking_inputs_raise_user_errors(clip_factory) -> None:
    clip = clip_factory("bad.mp4", frames=5, width=32, height=32)
    backend = ScriptedBackend(work_size=(32, 32))
    cases = [
        ([ObjectSpec(word="cat", box=(0, 0, 40, 10))], "outside"),
        ([ObjectSpec(word="cat", box=(10, 10, 5, 20))], "empty"),
        ([ObjectSpec(word="cat", keyframes={9: (0, 0, 10, 10)})], "past the end"),
        ([ObjectSpec(word="cat")], "no box"),
        ([], "no object"),
    ]
    for objects, words in cases:
        with pytest.raises(UserError, match=words):
            track_masks(clip.path, objects, backend=backend)
    with pytest.raises(UserError, match="chunk"):
        track_masks(clip.path, [ObjectSpec(word="cat", box=(0, 0, 10, 10))], chunk=0, backend=backend)
    with pytest.raises(UserError):
        track_masks(clip.path.with_name("missing.mp4"), [ObjectSpec(word="cat", box=(0, 0, 10, 10))], backend=backend)


def test_model_loading_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_sam2_model(str(tmp_path / "nope" / "sam2"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_sam2_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="huggingface-cli download example/not-a-sam2"):
        load_sam2_model("example/not-a-sam2", local_files_only=True)


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("quantum")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_official_sam2_backend_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(b"")
    assert split_checkpoint_spec(f"{checkpoint}:configs/x.yaml") == (checkpoint, "configs/x.yaml")
    assert config_for(checkpoint, None) == "configs/sam2.1/sam2.1_hiera_t.yaml"
    with pytest.raises(UserError, match="which SAM2 config"):
        config_for(tmp_path / "mine.pt", None)
    monkeypatch.setitem(sys.modules, "sam2", None)  # import sam2 -> ImportError
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)
    with pytest.raises(UserError, match=r"pip install longedit\[sam2\]"):
        load_backend(str(checkpoint), device="cpu")
    with pytest.raises(UserError, match="does not exist"):
        load_backend(str(tmp_path / "missing.pt"), device="cpu")


def test_official_sam2_backend_plumbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake `sam2` package with the official predictor API: chunk folders, prompts, propagation."""
    calls: list[tuple] = []

    class FakePredictor:
        image_size = 32

        def init_state(self, video_path, offload_video_to_cpu=False):
            names = sorted(Path(video_path).glob("*.jpg"))
            calls.append(("init", len(names)))
            return {"frames": len(names), "prompts": {}}

        def add_new_points_or_box(self, inference_state, frame_idx, obj_id, box):
            calls.append(("box", frame_idx, obj_id))
            inference_state["prompts"][obj_id] = box_mask(box, (32, 32))

        def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
            calls.append(("mask", frame_idx, obj_id))
            inference_state["prompts"][obj_id] = mask

        def propagate_in_video(self, inference_state):
            ids = sorted(inference_state["prompts"])
            masks = np.stack([inference_state["prompts"][i] for i in ids])[:, None]
            for index in range(inference_state["frames"]):
                yield index, ids, torch.from_numpy(masks).float() * 2 - 1

        def reset_state(self, inference_state):
            calls.append(("reset",))

    build = types.ModuleType("sam2.build_sam")
    build.build_sam2_video_predictor = lambda config, ckpt, device="cpu": FakePredictor()
    monkeypatch.setitem(sys.modules, "sam2", types.ModuleType("sam2"))
    monkeypatch.setitem(sys.modules, "sam2.build_sam", build)
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(b"")
    backend = load_backend(str(checkpoint), device="cpu")
    assert isinstance(backend, OfficialSam2Backend) and backend.work_size == (32, 32)
    steps = list(track_stream(backend, random_frames(7, size=32), {0: [Prompt(1, box=(2, 2, 10, 10))]}, chunk=3))
    assert len(steps) == 7 and all(s.obj_ids == [1] for s in steps)
    assert [c for c in calls if c[0] == "init"] == [("init", 3), ("init", 4), ("init", 2)]  # 1 anchor + frames
    assert ("mask", 0, 1) in calls and calls.count(("reset",)) == 3


# ---------------------------------------------------------------------------- post-processing


def test_dilate_is_a_euclidean_disk() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    grown = dilate(mask, 2)
    ys, xs = np.nonzero(grown)
    assert grown.sum() == 13 and ((ys - 4) ** 2 + (xs - 4) ** 2 <= 4).all()
    assert dilate(mask, 0).sum() == 1 and not dilate(np.zeros((4, 4), bool), 3).any()
    corner = np.zeros((2, 6, 6), dtype=bool)
    corner[1, 0, 0] = True
    out = dilate(corner, 1)  # per-mask, no wrap-around at the border
    assert not out[0].any() and out[1].sum() == 3 and not out[1, -1, -1]
    with pytest.raises(ValueError):
        dilate(mask, -1)


def test_boxify_and_min_area() -> None:
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, 1, 2] = masks[0, 5, 6] = True  # two far pixels -> filled box rows 1-5, cols 2-6
    masks[1, 3:5, 3:5] = True  # area 4
    boxed = boxify(masks)
    assert boxed[0].sum() == 25 and boxed[0, 1:6, 2:7].all()
    np.testing.assert_array_equal(boxed[1], masks[1])
    assert not boxed[2].any()  # an empty mask (object out of view) stays empty
    kept = drop_small(masks, 3)
    assert not kept[0].any() and kept[1].sum() == 4 and not kept[2].any()
    np.testing.assert_array_equal(drop_small(masks, 0), masks)


def test_postprocess_chain_on_an_object_leaving_the_frame() -> None:
    """A mask shrinking to a sliver at the border, then gone: min-area drops the sliver before dilation."""
    frames = np.zeros((4, 16, 16), dtype=bool)
    frames[0, 4:10, 10:16] = True
    frames[1, 4:10, 13:16] = True
    frames[2, 6:7, 15:16] = True  # 1-pixel sliver
    out = np.stack([postprocess(f[None], dilate_px=1, box_masks=True, min_area=2)[0] for f in frames])
    assert out[0].sum() == dilate(frames[0], 1).sum()
    assert out[1].any() and not out[2].any() and not out[3].any()


def test_logits_to_masks_thresholds_at_zero() -> None:
    logits = torch.full((2, 4, 4), -1.0)
    logits[0, :2, :2] = 1.0
    masks = logits_to_masks(logits, (8, 8), (16, 12))
    assert masks.shape == (2, 12, 16) and masks.dtype == bool
    assert masks[0, :5, :7].all() and not masks[0, 7:, 9:].any() and not masks[1].any()
    assert logits_to_masks(torch.zeros(0, 4, 4), (8, 8), (5, 3)).shape == (0, 3, 5)


# ------------------------------------------------------------------------------ mask folders


def test_mask_folder_round_trip(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [rng.random((2, 6, 10)) > 0.5 for _ in range(3)]
    assert save_mask_folder(tmp_path / "m", ["cat", "dog"], frames) == 3
    image = Image.open(tmp_path / "m" / "dog" / "000002.png")
    assert image.mode == "L" and image.size == (10, 6) and set(np.unique(np.asarray(image))) <= {0, 255}
    back = list(load_mask_folder(tmp_path / "m", "dog", 3))
    for got, want in zip(back, frames):
        np.testing.assert_array_equal(got, want[1])
    assert [m.shape for m in load_mask_folder(tmp_path / "m", "cat", 3, out_size=(20, 12))] == [(12, 20)] * 3
    assert len(list(load_mask_folder(tmp_path / "m" / "cat", "cat", 3))) == 3  # DIR/WORD given directly
    with pytest.raises(UserError, match="does not exist"):
        load_mask_folder(tmp_path / "nope", "cat", 3)
    with pytest.raises(UserError, match="no 'bird' sub-folder"):
        load_mask_folder(tmp_path / "m", "bird", 3)
    with pytest.raises(UserError, match=r"000003.png' is missing"):
        list(load_mask_folder(tmp_path / "m", "cat", 4))
