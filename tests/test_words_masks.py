"""Words -> token indices; boxes, keyframes and mask resolutions."""

import pytest
import torch

from longedit.config import ObjectSpec, parse_object_args
from longedit.errors import UserError
from longedit.masks import ObjectMasks, box_at, box_to_grid, build_object_masks, validate_objects
from longedit.random_models import build_tiny_tokenizer
from longedit.words import word_tokens


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_single_token_word_position(tokenizer):
    found = word_tokens(tokenizer, "a robot on a road", "robot")
    ids = tokenizer("a robot on a road").input_ids
    assert found.indices == (2,)
    assert ids[2] == tokenizer("robot", add_special_tokens=False).input_ids[0]


def test_multi_token_word_all_or_last(tokenizer):
    pieces = tokenizer("wonderwoman", add_special_tokens=False).input_ids
    assert len(pieces) > 1
    found = word_tokens(tokenizer, "a wonderwoman on a road", "wonderwoman")
    assert found.indices == tuple(range(2, 2 + len(pieces)))
    assert word_tokens(tokenizer, "a wonderwoman on a road", "wonderwoman", "last").indices == (1 + len(pieces),)


def test_unknown_word_is_refused_with_the_prompt_words(tokenizer):
    with pytest.raises(UserError, match="'robot' is not in the prompt") as error:
        word_tokens(tokenizer, "a dog on a road", "robot")
    assert "dog" in str(error.value)


def test_parse_object_args_boxes_and_keyframes():
    objects = parse_object_args(["robot=1,2,30,40", "dog=0,0,10,10@0", "dog=5,5,15,15@10", "cat"])
    assert objects[0] == ObjectSpec(word="robot", box=(1, 2, 30, 40))
    assert objects[1].keyframes == {0: (0, 0, 10, 10), 10: (5, 5, 15, 15)}
    assert objects[2].box is None and objects[2].keyframes is None
    with pytest.raises(UserError, match="four numbers"):
        parse_object_args(["robot=1,2,3"])
    with pytest.raises(UserError):
        parse_object_args(["=1,2,3,4@"])


def test_keyframes_interpolate_and_hold():
    keys = {2: (0.0, 0.0, 10.0, 10.0), 6: (4.0, 8.0, 14.0, 18.0)}
    assert box_at(keys, 0) == keys[2]
    assert box_at(keys, 9) == keys[6]
    assert box_at(keys, 4) == pytest.approx((2.0, 4.0, 12.0, 14.0))


def test_box_outside_empty_and_late_keyframe_are_refused():
    with pytest.raises(UserError, match="outside the 64x48 frame"):
        validate_objects([ObjectSpec(word="a", box=(0, 0, 65, 10))], 64, 48, 10)
    with pytest.raises(UserError, match="is empty"):
        validate_objects([ObjectSpec(word="a", box=(10, 0, 10, 10))], 64, 48, 10)
    with pytest.raises(UserError, match="past the end"):
        validate_objects([ObjectSpec(word="a", keyframes={0: (0, 0, 5, 5), 10: (0, 0, 5, 5)})], 64, 48, 10)


def test_box_grid_covers_the_object():
    grid = box_to_grid((10, 10, 20, 20), (64, 64), (8, 8))
    assert grid.nonzero().min(0).values.tolist() == [1, 1]
    assert grid.nonzero().max(0).values.tolist() == [2, 2]


def test_map_resolution_falls_back_for_thin_objects():
    latent = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    latent[0, 0, :4, :4] = True  # a full map cell
    latent[1, 0, 0, 0] = True  # one latent cell: under half a map cell
    maps = ObjectMasks(["a"], latent, ["box"]).at_map_resolution(0, 2, 4)
    assert maps.shape == (2, 1, 2, 2)
    assert maps[0, 0].tolist() == [[1, 0], [0, 0]]
    assert maps[1, 0].tolist() == [[1, 0], [0, 0]]


def test_build_masks_from_keyframes_and_dilation():
    obj = ObjectSpec(word="a", keyframes={0: (0, 0, 8, 8), 3: (24, 24, 32, 32)})
    masks = build_object_masks([obj], 4, (32, 32), (4, 4))
    assert masks.latent.shape == (4, 1, 4, 4)
    assert masks.latent[0, 0, 0, 0] and masks.latent[3, 0, 3, 3]
    grown = build_object_masks([obj], 4, (32, 32), (4, 4), dilate_px=8)
    assert grown.latent[0, 0, 1, 1] and not masks.latent[0, 0, 1, 1]
    summary = masks.area_summary()["a"]
    assert summary["mean_share"] == pytest.approx(1 / 16) and summary["empty_frames"] == 0


def test_a_repeated_word_takes_the_first_occurrence_and_says_how_to_pick_the_second(tokenizer):
    prompt = "a red car behind a blue car"
    ids = tokenizer(prompt).input_ids
    car = tokenizer("car", add_special_tokens=False).input_ids
    positions = [i for i, t in enumerate(ids) if t == car[0]]
    assert len(car) == 1 and len(positions) == 2 and positions[0] == 3
    first = word_tokens(tokenizer, prompt, "car")
    assert first.indices == (3,)
    assert first.notice == "'car' occurs twice in the prompt; using the first, write 'car#2' for the second"
    second = word_tokens(tokenizer, prompt, "car#2")
    assert second.indices == (positions[1],) and second.word == "car#2" and second.notice is None
    assert word_tokens(tokenizer, prompt, "car#1").indices == (3,)
    assert word_tokens(tokenizer, prompt, "red").notice is None


def test_a_word_three_times_names_every_other_occurrence(tokenizer):
    found = word_tokens(tokenizer, "a car, a car and a car", "car")
    assert found.notice == "'car' occurs 3 times in the prompt; using the first, write 'car#2' for the second, 'car#3' for the third"
    assert word_tokens(tokenizer, "a car, a car and a car", "car#3").indices[0] > word_tokens(tokenizer, "a car, a car and a car", "car#2").indices[0]


@pytest.mark.parametrize(("word", "message"), [
    ("car#3", "'car#3' asks for occurrence 3 of 'car', but the prompt has it twice (write 'car#1' to 'car#2')"),
    ("car#0", "'car#0' asks for occurrence 0 of 'car', but the prompt has it twice (write 'car#1' to 'car#2')"),
    ("road#2", "'road#2' asks for occurrence 2 of 'road', but the prompt has it once (write 'road')"),
    ("dragon#2", "word 'dragon' is not in the prompt"),
])
def test_an_occurrence_the_prompt_does_not_have_is_refused(tokenizer, word, message):
    with pytest.raises(UserError) as error:
        word_tokens(tokenizer, "a car behind a car on a road", word)
    assert str(error.value).startswith(message)


def test_occurrences_in_object_flags_and_job_objects():
    objects = parse_object_args(["car#2=1,2,30,40", "car=5,5,20,20"])
    assert [(o.word, o.box) for o in objects] == [("car#2", (1, 2, 30, 40)), ("car", (5, 5, 20, 20))]
    assert ObjectSpec(word="car#2", box=(1, 2, 3, 4)).word == "car#2"
