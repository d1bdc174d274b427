"""Run-state files (checkpoints) that cannot carry code and that say when they were damaged.

A work folder, a watch folder's `processing/` and the tuning cache are places other people can write to,
so a state file is never unpickled freely: it is written with `torch.save` and read back with
`torch.load(weights_only=True)`, which rebuilds only tensors and plain values (dict, list, tuple, str,
int, float, bool, None). A file holding anything else (a pickled object of an older format, a planted
payload) fails to load before any of it runs.

Each file carries a sha256 over its contents (every tensor's dtype, shape and bytes, every plain value),
checked on load: a file whose latents were overwritten but that still loads is refused rather than resumed
into a wrong result. A file that is present but unusable is treated as absent, with one warning line
saying which and why; the run starts afresh and the next save replaces it.
"""

from __future__ import annotations

import enum
import hashlib
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longedit.atomic import atomic_write

FORMAT = "longedit-state/1"
_PLAIN = (bool, int, float, str, type(None))


def plain(value: Any) -> Any:
    """`value` with numpy scalars and enums turned into plain Python values; TypeError for anything a
    `weights_only` load would refuse (dataclasses and other objects: the caller turns them into dicts)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, np.generic):
        return value.item()
    for kind in _PLAIN:
        if isinstance(value, kind):
            return kind(value) if kind is not type(None) else None
    raise TypeError(f"a state file holds only tensors and plain values, not {type(value).__name__}")


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    """Add `value` to `digest`, tagged by type so that e.g. [1] and (1,) or '1' and 1 differ."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)}:".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    else:
        text = repr(value)
        digest.update(f"{type(value).__name__}{len(text)}:{text}".encode())


def checksum(state: Any) -> str:
    """sha256 over every tensor's dtype, shape and bytes and every plain value of `state`."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def save_state(path: Path, state: dict[str, Any], what: str) -> None:
    """Write `state` (tensors and plain values) atomically with its checksum; `what` names it in errors."""
    state = plain(state)
    record = {"format": FORMAT, "sha256": checksum(state), "state": state}
    with atomic_write(Path(path), "wb", what=what) as handle:
        torch.save(record, handle)


def _unusable(path: Path, what: str, reason: str, notices: list[str] | None) -> None:
    """Say in one line that the file at `path` is ignored: into `notices` when given (the run's report
    warnings, printed by the CLI), else as a UserWarning."""
    message = f"ignoring {what} '{path}': {reason}; starting afresh"
    if notices is not None:
        notices.append(message)
    else:
        warnings.warn(message, UserWarning, stacklevel=3)


def _load_record(path: Path, mmap: bool) -> dict[str, Any]:
    """The file's record; ValueError with the reason when it is not a state file of this format."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise ValueError("it holds more than tensors and plain values (an older format, or not ours); not loaded") from error
    except Exception as error:  # torn, empty or not a torch file at all
        raise ValueError(f"it is unreadable ({type(error).__name__})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("state"), dict):
        raise ValueError(f"it is not a {FORMAT} file (written by an older version, or not ours)")
    return record


def load_state(path: Path, what: str, notices: list[str] | None = None) -> dict[str, Any] | None:
    """The state saved at `path` after its checksum is verified; None when there is none or it is unusable
    (planted or old-format pickle, torn file, checksum mismatch), said in one line (`_unusable`)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = _load_record(path, mmap=False)
    except ValueError as error:
        _unusable(path, what, str(error), notices)
        return None
    if checksum(record["state"]) != record.get("sha256"):
        _unusable(path, what, "its contents do not match its checksum (damaged or modified)", notices)
        return None
    return record["state"]


def peek_state(path: Path) -> dict[str, Any] | None:
    """The state at `path` memory-mapped (its tensors are not read) and unverified, for progress displays;
    None when missing or unusable (silently: a reader polls it while it is being replaced)."""
    try:
        return _load_record(Path(path), mmap=True)["state"]
    except (ValueError, OSError):
        return None
