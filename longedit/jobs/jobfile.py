"""Read a YAML job file into an `EditJob`, with errors a user can act on.

A job file holds the keys of `EditJob` (the `longedit edit` flags in snake_case). Relative paths are
relative to the job file's folder, so a job folder can be moved or shared as a unit:

- input paths (`input`, `masks`, `objects[].masks`, `cache_dir`) and `tune.cache_dir` resolve against
  `base_dir` (the job file's folder);
- model files: `lora` entries always; `model`, `checkpoint_config` and `vae` when the relative path exists
  there (else they stay as given: a hub id such as `stabilityai/sd-vae-ft-mse` is not a path);
- output paths (`output`, `report`, `attention_video`) resolve against `output_dir` (the same folder unless the caller
  says otherwise; the watched folder puts them in the job's own folder so results land in `done/NAME/`).

Two keys may be left out:
- `input`: the video beside the job file with the same stem (`NAME.yaml` -> `NAME.mp4`/`.mov`/`.mkv`...);
- `output`: `NAME-edited<ext of the input>` in `output_dir`.

pydantic's `ValidationError` becomes a one-line `UserError` naming the file, the key and the fix, never
the value it holds (a job file may be something else, e.g. a secret, and the message reaches error.json,
the ledger and the morning report). A job file over `MAX_JOB_FILE_BYTES` is refused unread. Where a job
may write is `longedit.jobs.confine`'s.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from longedit.config import EditJob, ObjectSpec, TuneSettings, field_bounds
from longedit.errors import UserError

JOB_SUFFIXES = (".yaml", ".yml")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v", ".webm", ".avi")
INPUT_PATH_KEYS = ("input", "masks", "cache_dir")
OUTPUT_PATH_KEYS = ("output", "report", "attention_video")
MAX_JOB_FILE_BYTES = 64 * 1024  # a job file is a few keys; anything bigger is refused unread


class JobLoader(yaml.SafeLoader):
    """YAML's safe loader, except that `1:02` or `00:01:02.5` stay text: YAML 1.1 reads them as base-60 numbers
    (62, 62.5), which would turn a `start:` time into a frame number. `longedit.video.source` parses them."""


_CLOCK_TIME = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
JobLoader.yaml_implicit_resolvers = {key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "+-0123456789":
    JobLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, ("tag:yaml.org,2002:str", _CLOCK_TIME))


def read_job_mapping(path: Path, label: str | None = None) -> dict[str, Any]:
    """The job file's top-level mapping, or a `UserError` naming the YAML problem and its line."""
    shown = label or str(path)
    if path.exists() and not path.is_file():  # a folder, a FIFO or a device: fails or blocks the reader
        raise UserError(f"job file '{shown}' is not a regular file", "give the path of a YAML file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_JOB_FILE_BYTES + 1)
        if len(raw) > MAX_JOB_FILE_BYTES:
            raise UserError(f"job file '{shown}' is over {MAX_JOB_FILE_BYTES // 1024} KiB", "a job file holds a few keys; check it is the right file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"job file '{shown}' does not exist", "check the path") from None
    except PermissionError:
        raise UserError(f"job file '{shown}' cannot be read (permission denied)", "check its rights") from None
    except UnicodeDecodeError:
        raise UserError(f"job file '{shown}' is not UTF-8 text", "save it as a UTF-8 YAML file") from None
    try:
        data = yaml.load(text, Loader=JobLoader)  # noqa: S506 - a SafeLoader (see JobLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__  # never the file's text
        raise UserError(
            f"job file '{shown}' is not valid YAML{where}: {problem}",
            "check the indentation and quote values that contain ':' or '#'",
        ) from None
    if data is None:
        raise UserError(f"job file '{shown}' is empty", "write the job's keys, e.g. input, prompt, objects")
    if not isinstance(data, dict):
        raise UserError(
            f"job file '{shown}' must be a mapping of keys to values, not a {type(data).__name__}",
            "write one 'key: value' per line",
        )
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise UserError(f"job file '{shown}': key {bad[0]!r} is not a name", "keys are words like steps or prompt")
    return data


def find_companion_video(folder: Path, stem: str) -> Path | None:
    """The video named `stem` + a known video suffix in `folder` (None if there is none).

    Two candidates (say NAME.mp4 and NAME.mov) are ambiguous and raise a `UserError`.
    """
    found = [folder / f"{stem}{suffix}" for suffix in VIDEO_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"several videos could be the input of job '{stem}': {names}", "set input: in the job file")
    return found[0] if found else None


def resolve_job_paths(
    data: dict[str, Any], *, base_dir: Path, output_dir: Path, stem: str, companion: Path | None = None
) -> dict[str, Any]:
    """A copy of the raw mapping with defaults filled in and relative paths made absolute.

    `companion` is the video to use when `input` is absent (the caller found it); without it the
    same-stem video in `base_dir` is looked up.
    """
    data = dict(data)
    if data.get("input") in (None, ""):
        video = companion or find_companion_video(base_dir, stem)
        if video is None:
            names = "/".join(s.lstrip(".") for s in VIDEO_SUFFIXES[:3])
            raise UserError(
                f"job '{stem}' has no 'input' and no video {stem}.{{{names}}} beside it",
                "add 'input: PATH' or put the video next to the job file with the same name",
            )
        data["input"] = str(video)
    if data.get("output") in (None, ""):
        suffix = Path(str(data["input"])).suffix or ".mp4"
        data["output"] = f"{stem}-edited{suffix}"

    def absolute(value: Any, root: Path) -> Any:
        if isinstance(value, (str, Path)) and str(value) != "":
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else root / path)
        return value  # wrong types are reported by pydantic

    for key in INPUT_PATH_KEYS:
        if key in data:
            data[key] = absolute(data[key], base_dir)
    for key in OUTPUT_PATH_KEYS:
        if key in data:
            data[key] = absolute(data[key], output_dir)
    if isinstance(data.get("objects"), list):
        objects = []
        for obj in data["objects"]:
            if isinstance(obj, dict) and "masks" in obj:
                obj = {**obj, "masks": absolute(obj["masks"], base_dir)}
            objects.append(obj)
        data["objects"] = objects
    data = resolve_model_paths(data, base_dir)
    if isinstance(data.get("tune"), dict) and "cache_dir" in data["tune"]:
        data["tune"] = {**data["tune"], "cache_dir": absolute(data["tune"]["cache_dir"], base_dir)}
    return data


def load_job(
    path: Path | str,
    *,
    base_dir: Path | None = None,
    output_dir: Path | None = None,
    companion: Path | None = None,
    label: str | None = None,
) -> EditJob:
    """Read, complete and validate the job file at `path` (see the module docstring for the rules).

    `label` names the file in error messages (default: `path`).
    """
    path = Path(path)
    data = read_job_mapping(path, label)
    base_dir = (base_dir or path.parent).resolve()
    output_dir = (output_dir or base_dir).resolve()
    stem = path.stem
    data = resolve_job_paths(data, base_dir=base_dir, output_dir=output_dir, stem=stem, companion=companion)
    try:
        return EditJob.model_validate(data)
    except ValidationError as error:
        raise UserError(*describe_validation_error(label or path, error)) from None


# --- ValidationError -> one line -------------------------------------------------------------------


def _loc_text(loc: tuple[Any, ...]) -> str:
    """('objects', 0, 'box') -> 'objects[0].box'."""
    text = ""
    for part in loc:
        if part == "[key]":
            text += " key"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose keys the last element of `loc` belongs to (EditJob, ObjectSpec or TuneSettings)."""
    if len(loc) >= 2 and loc[0] == "tune":
        return TuneSettings
    return ObjectSpec if len(loc) >= 2 and loc[0] == "objects" and isinstance(loc[1], int) else EditJob


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "text",
    "list": "a list",
    "dict": "a mapping",
    "tuple": "a list",
    "path": "a file path",
}


#: What an unknown key may look like to be named in a message (a line of another file is not echoed).
SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _shown(value: Any) -> str:
    """A wrong value as an error message may show it: numbers and true/false as they are, text and
    anything else by its kind only (the message goes to error.json, the ledger and the morning report)."""
    if isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"text of {len(value)} character{'s' if len(value) != 1 else ''}"
    return _TYPE_WORDS.get(type(value).__name__, type(value).__name__).removeprefix("a ").removeprefix("an ")


def _without_values(message: str, value: Any) -> str:
    """A validator's message with the text of a wrong `value` (text, or a list of texts) it quotes replaced by
    its length; an object's validators quote its word, which is the prompt's and stays."""
    texts = [value] if isinstance(value, str) else [v for v in value[:100] if isinstance(v, str)] if isinstance(value, list) else []
    for text in sorted(set(texts), key=len, reverse=True):
        for quoted in (repr(text), f"'{text}'", f'"{text}"'):
            message = message.replace(quoted, _shown(text))
    return message


def describe_validation_error(path: Path | str, error: ValidationError) -> tuple[str, str | None]:
    """(problem, fix) for the first error of `error`, plus how many more there are."""
    errors = error.errors(include_url=False)
    # A misspelt key also makes the real key "missing": report the typo first, it is the cause.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    kind, loc, ctx = first["type"], tuple(first["loc"]), first.get("ctx") or {}
    where = _loc_text(loc)
    more = f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    prefix = f"job file '{path}'"
    fix: str | None = None

    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = list(_model_at(loc).model_fields)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else "check the spelling; "
        where_obj = f" in {_loc_text(loc[:-1])}" if len(loc) > 1 else ""
        named = f"'{key}'" if SETTING_NAME.match(key) else "that is not a setting name (is it a job file?)"
        problem = f"{prefix}: unknown key {named}{where_obj}"
        fix = f"{hint}known keys: {', '.join(known)}"
    elif kind == "missing":
        if len(loc) >= 2 and loc[-2] == "box" or (len(loc) >= 1 and isinstance(loc[-1], int)):
            problem = f"{prefix}: '{_loc_text(loc[:-1])}' must be four numbers"
            fix = "write a box as [x0, y0, x1, y1] in pixels"
        else:
            problem = f"{prefix}: missing key '{where}'"
            fix = "add it to the job file"
    elif kind == "too_long" or kind == "too_short":
        problem = f"{prefix}: '{where}' has the wrong number of items"
        fix = "write a box as [x0, y0, x1, y1] in pixels" if "box" in where or "keyframes" in where else None
    elif kind == "literal_error":
        problem = f"{prefix}: '{where}' must be one of {ctx.get('expected', '?')}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        problem = f"{prefix}: '{where}' must be {op} {bound}, got {_shown(first.get('input'))}"
        low, high = field_bounds(str(loc[-1])) if _model_at(loc) is EditJob and len(loc) == 1 else (None, None)
        if low is not None and high is not None:
            fix = f"use {low} to {high}, as the --{str(loc[-1]).replace('_', '-')} flag"
    elif kind in ("value_error", "assertion_error"):
        message = _without_values(str(ctx.get("error") or first["msg"]).removeprefix("Value error, "), first.get("input"))
        problem = f"{prefix}: {message}" if not where else f"{prefix}: {where}: {message}"
    elif kind == "int_from_float":
        problem = f"{prefix}: '{where}' must be an integer, got {_shown(first.get('input'))}"
    else:
        base = kind.split("_")[0]
        if base in _TYPE_WORDS and (kind.endswith("_type") or kind.endswith("_parsing")):
            problem = f"{prefix}: '{where}' must be {_TYPE_WORDS[base]}, got {_shown(first.get('input'))}"
        else:
            problem = f"{prefix}: '{where}': {first['msg']}"
    return problem + more, fix


MODEL_PATH_KEYS = ("model", "checkpoint_config", "vae")


def resolve_model_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """`lora` entries relative to the job file's folder (`PATH[:SCALE]` -> {path, scale}); `model`,
    `checkpoint_config` and `vae` too when the relative path exists there (hub ids stay as they are)."""
    from longedit.model_extras import LoraSpec

    data = dict(data)
    for key in MODEL_PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute() and (base_dir / value).exists():
            data[key] = str(base_dir / value)
    loras = data.get("lora")
    if isinstance(loras, (str, dict)):
        loras = [loras]
    if isinstance(loras, list):
        resolved = []
        for item in loras:
            spec = LoraSpec.parse(item) if isinstance(item, str) else item
            if isinstance(spec, LoraSpec):
                path = Path(spec.path).expanduser()
                item = {"path": str(path if path.is_absolute() else base_dir / path), "scale": spec.scale}
            elif isinstance(item, dict) and isinstance(item.get("path"), str):
                path = Path(item["path"]).expanduser()
                item = {**item, "path": str(path if path.is_absolute() else base_dir / path)}
            resolved.append(item)
        data["lora"] = resolved
    return data
