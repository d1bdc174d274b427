"""VISOR-like spatial relations: per frame, does "A to the left of B" (right of, above, below) hold?

VISOR (Gokhale et al., 2022; ReAtCo's Table 1) detects both objects of a prompt's relation and compares
their box centres. Here a relation phrase in the prompt binds the nearest object word before it to the
nearest object word after it ("a red circle to the left of a blue square": circle, square), object words
being the edited words (`--object`). Per relation two shares are kept, as in VISOR:
`value` (unconditional): frames where both objects are found and the relation holds, over all frames;
`conditional`: the same over the frames where both are found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from longedit.config import Box
from longedit.evaluation.metric import available, missing

# relation phrase -> (sign of x_a - x_b, sign of y_a - y_b) when it holds (image y grows downward)
RELATIONS: dict[str, tuple[int, int]] = {
    "to the left of": (-1, 0),
    "left of": (-1, 0),
    "to the right of": (1, 0),
    "right of": (1, 0),
    "above": (0, -1),
    "over": (0, -1),
    "below": (0, 1),
    "under": (0, 1),
    "beneath": (0, 1),
}


@dataclass(frozen=True)
class Relation:
    """`subject` `phrase` `target`, e.g. circle "to the left of" square."""

    subject: str
    phrase: str
    target: str

    @property
    def name(self) -> str:
        return f"{self.subject} {self.phrase} {self.target}"


def _tokens(prompt: str) -> list[str]:
    return re.findall(r"[a-z0-9#']+", prompt.lower())


def find_relations(prompt: str, words: Sequence[str]) -> tuple[list[Relation], dict[str, str]]:
    """Relations of `prompt` between object `words`, and {phrase: reason} for each phrase that binds no pair.

    The longest phrase wins where phrases overlap ("to the left of" over "left of").
    """
    tokens = _tokens(prompt)
    lowered = {w.lower().split("#")[0]: w for w in words}
    phrases = sorted(RELATIONS, key=lambda p: -len(p.split()))
    relations: list[Relation] = []
    unbound: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        match = next((p for p in phrases if tokens[i : i + len(p.split())] == p.split()), None)
        if match is None:
            i += 1
            continue
        end = i + len(match.split())
        before = [lowered[t] for t in tokens[:i] if t in lowered]
        after = [lowered[t] for t in tokens[end:] if t in lowered]
        if before and after:
            relations.append(Relation(before[-1], match, after[0]))
        else:
            side = "either side" if not before and not after else ("its left" if not before else "its right")
            unbound[match] = f"'{match}' has no object word on {side}: give --object for both objects of the relation"
        i = end
    return relations, unbound


def centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def holds(phrase: str, subject: Box, target: Box) -> bool:
    """Whether `subject phrase target` holds for the boxes' centres."""
    dx, dy = RELATIONS[phrase]
    (ax, ay), (bx, by) = centre(subject), centre(target)
    return (ax - bx) * dx > 0 if dx else (ay - by) * dy > 0


class RelationScore:
    """Per relation, per frame: None (an object not found) or whether the relation holds."""

    def __init__(self, relations: Sequence[Relation]) -> None:
        self.relations = list(relations)
        self.frames: dict[str, list[bool | None]] = {r.name: [] for r in self.relations}

    def update(self, boxes: dict[str, Box | None]) -> None:
        """Add one frame's detections (word -> box or None)."""
        for relation in self.relations:
            a, b = boxes.get(relation.subject), boxes.get(relation.target)
            self.frames[relation.name].append(None if a is None or b is None else holds(relation.phrase, a, b))

    def result(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for name, frames in self.frames.items():
            if not frames:
                out[name] = missing("no frames")
                continue
            found = [f for f in frames if f is not None]
            conditional = sum(found) / len(found) if found else None
            out[name] = available(sum(bool(f) for f in frames) / len(frames), frames, conditional=conditional, both_found=len(found))
        return out
