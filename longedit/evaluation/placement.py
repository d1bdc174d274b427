"""Placement: per object word, the share of frames where a detector finds the word's object in its region.

A detector is anything with `detect(frame, words) -> {word: (x0, y0, x1, y1) or None}` (pixels of the
uint8 HxWx3 frame). An object counts as placed in a frame when the centre of its detected box lies inside
the word's (dilated) region; a missed detection counts as not placed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from longedit.config import Box
from longedit.evaluation.metric import available, failure, missing
from longedit.words import split_occurrence


class Detector(Protocol):
    """The detector plug-in interface."""

    def detect(self, frame: np.ndarray, words: Sequence[str]) -> dict[str, Box | None]: ...


class ToyDetector:
    """Adapter to the toy world's colour-blob detector (`longedit.toyworld.detect`).

    A word that is a colour finds that colour's blob; a word that is a shape finds that shape, in the
    colour written just before it in the prompt ("a red circle") when there is one, else the largest blob
    of that shape. Other words are never found.
    """

    def __init__(self, detect_module, colours: Sequence[str], shapes: Sequence[str], prompt: str = "") -> None:
        self.module, self.colours, self.shapes = detect_module, set(colours), set(shapes)
        tokens = prompt.lower().replace(",", " ").split()
        self.colour_of = {b: a for a, b in zip(tokens, tokens[1:]) if a in self.colours and b in self.shapes}

    def _find(self, detections: list, word: str):
        word = word.lower()
        if word in self.colours:
            return self.module.find(detections, word)
        if word in self.shapes:
            if word in self.colour_of:
                return self.module.find(detections, self.colour_of[word], word)
            same = [d for d in detections if d.shape == word]
            return max(same, key=lambda d: d.area) if same else None
        return None

    def detect(self, frame: np.ndarray, words: Sequence[str]) -> dict[str, Box | None]:
        detections = self.module.detect(frame)
        found = {word: self._find(detections, word) for word in words}
        return {word: (tuple(float(v) for v in d.box) if d is not None else None) for word, d in found.items()}  # type: ignore[misc]


def load_toy_detector(prompt: str = "") -> tuple[Detector | None, str | None]:
    """The toy world's detector, imported lazily; (None, reason) while `longedit.toyworld` is absent."""
    try:
        detect_module = importlib.import_module("longedit.toyworld.detect")
        world = importlib.import_module("longedit.toyworld.world")
        colours, shapes = list(world.COLOURS), list(world.SHAPES)
        detect_module.detect, detect_module.find  # noqa: B018 - the interface this adapter needs
    except (ImportError, AttributeError) as error:
        return None, f"the toy world's detector (longedit.toyworld) is not available: {error}"
    return ToyDetector(detect_module, colours, shapes, prompt), None


class OpenVocabularyDetector:
    """A transformers zero-shot detector (OWLv2, OWL-ViT, Grounding DINO): the best box per word."""

    def __init__(self, model, processor, threshold: float = 0.1) -> None:
        self.model, self.processor, self.threshold = model, processor, threshold

    def detect(self, frame: np.ndarray, words: Sequence[str]) -> dict[str, Box | None]:
        import torch

        inputs = self.processor(text=[list(words)], images=frame, return_tensors="pt")
        with torch.no_grad():
            outputs = self.model(**inputs)
        height, width = frame.shape[:2]
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(height, width)], text_labels=[list(words)]
        )[0]
        labels = result.get("text_labels") or [words[int(label)] for label in result["labels"]]
        found: dict[str, Box | None] = {word: None for word in words}
        best: dict[str, float] = {}
        for score, word, box in zip(result["scores"], labels, result["boxes"]):
            if word in found and float(score) > best.get(word, -1.0):
                best[word] = float(score)
                found[word] = tuple(float(v) for v in box)  # type: ignore[assignment]
        return found


def load_detector(name: str | None, local_files_only: bool, prompt: str = "") -> tuple[Detector | None, str | None]:
    """`toy`, or a transformers zero-shot detection model (folder or hub id); (None, reason) otherwise."""
    if not name:
        return None, "no detector given: pass --detector toy, or an open-vocabulary model's folder or hub id"
    if name == "toy":
        return load_toy_detector(prompt)
    try:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        model = AutoModelForZeroShotObjectDetection.from_pretrained(name, local_files_only=local_files_only).eval()
        processor = AutoProcessor.from_pretrained(name, local_files_only=local_files_only)
    except Exception as error:  # noqa: BLE001 - reported, never guessed around
        return None, failure(f"detector '{name}' could not be loaded", error)
    detector = OpenVocabularyDetector(model, processor)
    try:  # a processor can load yet fail on use (e.g. OWLv2's resize needs scipy): try one frame now
        detector.detect(np.zeros((32, 32, 3), np.uint8), ["object"])
    except Exception as error:  # noqa: BLE001 - reported, never guessed around
        return None, failure(f"detector '{name}' does not run", error)
    return detector, None


def placed(box: Box | None, region: np.ndarray) -> bool:
    """True when the centre of `box` lies inside the bool [H, W] `region`."""
    if box is None:
        return False
    height, width = region.shape
    x = int((box[0] + box[2]) / 2)
    y = int((box[1] + box[3]) / 2)
    return 0 <= x < width and 0 <= y < height and bool(region[y, x])


class Placement:
    """Per word, per frame: placed or not."""

    def __init__(self, detector: Detector, words: Sequence[str]) -> None:
        self.detector, self.words = detector, list(words)
        self.hits: dict[str, list[bool]] = {word: [] for word in self.words}

    def update(self, frame: np.ndarray, regions: np.ndarray) -> dict[str, Box | None]:
        """Detect the words in one edited frame; `regions` is bool [J, H, W] in word order. Returns the
        detections, so other per-frame metrics (relations) need no second detector pass."""
        queries = {word: split_occurrence(word)[0] for word in self.words}  # 'car#2' is looked for as 'car'
        found = self.detector.detect(frame, list(dict.fromkeys(queries.values())))
        boxes = {word: found.get(query) for word, query in queries.items()}
        for j, word in enumerate(self.words):
            self.hits[word].append(placed(boxes.get(word), regions[j]))
        return boxes

    def result(self) -> dict[str, dict]:
        """Per word: the share of frames placed, and the per-frame booleans."""
        return {
            word: available(sum(hits) / len(hits), hits) if hits else missing("no frames")
            for word, hits in self.hits.items()
        }
