"""Weights-free temporal consistency: mean absolute difference between consecutive frames.

For each pair (t-1, t) the region is the union of all objects' regions at both frames. The MAD is taken
over the pixels (all channels) inside and outside that region, on a 0..1 scale, for the edited video and
for the source; `relative` is edited / source (1 means the edit flickers as much as the source moves).
"""

from __future__ import annotations

import numpy as np

from longedit.evaluation.metric import available, mean, missing


def masked_mad(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float | None:
    """Mean |a - b| / 255 over the pixels where `where` is true (all channels); None if there are none."""
    if not where.any():
        return None
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))[where]
    return float(diff.mean()) / 255.0


class TemporalConsistency:
    """Streams frames and keeps only the previous source/edited frame and region."""

    def __init__(self) -> None:
        self.previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.lists: dict[str, list[float | None]] = {
            "edited_inside": [], "edited_outside": [], "source_inside": [], "source_outside": []
        }

    def update(self, source: np.ndarray, edited: np.ndarray, region: np.ndarray) -> None:
        """Add one frame; `region` is the bool [H, W] union of the objects' regions."""
        if self.previous is not None:
            prev_source, prev_edited, prev_region = self.previous
            inside = region | prev_region
            for name, now, before in (("edited", edited, prev_edited), ("source", source, prev_source)):
                self.lists[f"{name}_inside"].append(masked_mad(now, before, inside))
                self.lists[f"{name}_outside"].append(masked_mad(now, before, ~inside))
        self.previous = (source, edited, region)

    def result(self) -> dict:
        """Per-pair lists, their means and edited/source ratios."""
        if self.previous is None or not self.lists["edited_inside"]:
            return missing("needs at least 2 frames")
        out: dict = {}
        for where in ("inside", "outside"):
            edited, source = mean(self.lists[f"edited_{where}"]), mean(self.lists[f"source_{where}"])
            if edited is None or source is None:
                out[where] = missing(f"no pixels {where} the regions")
                continue
            if source > 0:
                relative, reason = edited / source, None
            else:
                relative, reason = None, "the source does not change between frames there"
            out[where] = available(
                edited,
                self.lists[f"edited_{where}"],
                source=source,
                source_per_frame=self.lists[f"source_{where}"],
                relative=relative,
                relative_reason=reason,
            )
        return out
