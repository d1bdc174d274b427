"""The toy world's vocabulary, scenes and captions (pure data: no pixels here).

A scene is 1-3 coloured shapes on a named textured background; its caption lists the objects
("a red circle and a blue square on grass") or states a relation between two of them
("a red circle to the left of a blue square on sand"). Colours within a scene are distinct, so the
detector can find each object by colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 35),
    "green": (35, 200, 55),
    "blue": (35, 70, 235),
    "yellow": (245, 215, 30),
    "white": (246, 246, 246),
    "purple": (155, 40, 210),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ("grass", "sand", "water", "sky", "road")
# Textures the captioned model never sees: they check that the VAE generalises (see textures.py).
UNSEEN_BACKGROUNDS = ("bricks", "checker", "marble")
RELATIONS = {"to the left of": (-1, 0), "to the right of": (1, 0), "above": (0, -1), "below": (0, 1)}
VOCABULARY = tuple(
    dict.fromkeys(
        ["a", "and", "on", "to", "the", "left", "right", "of", "above", "below", *COLOURS, *SHAPES, *BACKGROUNDS]
    )
)


@dataclass(frozen=True)
class ToyObject:
    """One shape: centre (cx, cy) and size (bounding-box side) in pixels."""

    colour: str
    shape: str
    cx: float
    cy: float
    size: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 (x1/y1 exclusive), rounded outward."""
        half = self.size / 2
        return (
            int(np.floor(self.cx - half)),
            int(np.floor(self.cy - half)),
            int(np.ceil(self.cx + half)),
            int(np.ceil(self.cy + half)),
        )

    def moved(self, cx: float, cy: float) -> ToyObject:
        return ToyObject(self.colour, self.shape, cx, cy, self.size)


@dataclass(frozen=True)
class Scene:
    """Objects on a background; `relation` (if any) holds between objects 0 and 1."""

    background: str
    objects: tuple[ToyObject, ...]
    relation: str | None = None
    texture_seed: int = 0
    extras: dict = field(default_factory=dict, compare=False)

    @property
    def caption(self) -> str:
        return caption(self)


def object_phrase(obj: ToyObject) -> str:
    return f"a {obj.colour} {obj.shape}"


def caption(scene: Scene) -> str:
    """"a red circle and a blue square on grass" or "a red circle to the left of a blue square on sand"."""
    phrases = [object_phrase(o) for o in scene.objects]
    if scene.relation is not None:
        head = f"{phrases[0]} {scene.relation} {phrases[1]}"
        rest = phrases[2:]
        body = " and ".join([head, *rest])
    else:
        body = " and ".join(phrases)
    return f"{body} on {scene.background}"


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], margin: float = 0.0) -> bool:
    """Whether `a relation b` holds for the centres (x, y) `a` and `b` (image y grows downward)."""
    dx, dy = RELATIONS[relation]
    if dx:
        return (a[0] - b[0]) * dx > margin
    return (a[1] - b[1]) * dy > margin


def _overlaps(obj: ToyObject, others: list[ToyObject], gap: float) -> bool:
    return any(
        abs(obj.cx - o.cx) < (obj.size + o.size) / 2 + gap and abs(obj.cy - o.cy) < (obj.size + o.size) / 2 + gap
        for o in others
    )


def sample_scene(
    rng: np.random.Generator,
    size: int = 128,
    max_objects: int = 3,
    backgrounds: tuple[str, ...] = BACKGROUNDS,
    relation_p: float = 0.3,
    size_range: tuple[float, float] = (0.22, 0.45),
) -> Scene:
    """A random scene: 1..max_objects non-overlapping objects of distinct colours, inside the frame."""
    count = int(rng.integers(1, max_objects + 1))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    objects: list[ToyObject] = []
    for colour in colours:
        shrink = 1.0 if count == 1 else (0.8 if count == 2 else 0.65)
        for _ in range(50):
            side = float(rng.uniform(*size_range)) * size * shrink
            margin = side / 2 + 1
            obj = ToyObject(
                str(colour),
                str(rng.choice(SHAPES)),
                float(rng.uniform(margin, size - margin)),
                float(rng.uniform(margin, size - margin)),
                side,
            )
            if not _overlaps(obj, objects, gap=2.0):
                objects.append(obj)
                break
    relation = None
    if len(objects) >= 2 and rng.random() < relation_p:
        a, b = objects[0], objects[1]
        holding = [r for r in RELATIONS if relation_holds(r, (a.cx, a.cy), (b.cx, b.cy), margin=0.25 * (a.size + b.size) / 2)]
        if holding:
            relation = str(rng.choice(holding))
    return Scene(str(rng.choice(backgrounds)), tuple(objects), relation, int(rng.integers(2**31)))
