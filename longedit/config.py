"""The settings of one edit job.

One pydantic model serves the CLI (`longedit edit` flags), job files (YAML keys, same names in
snake_case) and the engine, so the three can never drift apart. `extra="forbid"` turns a typo in a
job file into an error that names the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from longedit.backbones.registry import BACKBONE_CHOICES
from longedit.errors import UserError
from longedit.video.codecs import CODEC_NAMES
from longedit.model_extras import LoraSpec

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_SAM2_MODEL = "facebook/sam2.1-hiera-tiny"
PREVIEW_TAG = "preview"  # a preview writes <output stem>.preview<ext>, .preview.json, .preview.attention.mp4
REATCO_GUIDANCE = 12.5  # official ReAtCo editing scripts
FATEZERO_GUIDANCE = 7.5  # official FateZero configs
DEFAULT_CACHE_SIZE = "20GB"  # cap of the shared inversion cache (longedit.inversion_cache)
CACHE_FOLDER = "inversion-cache"  # its folder inside the work folder of `longedit run` and `watch`
#: Settings that never change an edit's result: where the shared inversion is kept and how much of it.
CACHE_FIELDS = frozenset({"cache_dir", "cache_size"})

Box = tuple[float, float, float, float]


def default_model() -> str:
    """`LONGEDIT_MODEL` if set, else the public SD 1.5 hub id."""
    return os.environ.get("LONGEDIT_MODEL") or DEFAULT_MODEL


def field_bounds(name: str) -> tuple[float | None, float | None]:
    """(ge, le) of an `EditJob` field as declared below: the CLI's min/max and the window planner use them, so a
    range is written once and job files, flags and the planner agree."""
    low = high = None
    for constraint in EditJob.model_fields[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


class ObjectSpec(BaseModel):
    """One object to edit: a word of the edited prompt and where it goes.

    Exactly one region source: a static `box`, `keyframes` (frame -> box, linearly interpolated),
    `track: sam2` (a box tracked by SAM2; `box` or `keyframes` give the seed box), or `masks`
    (a folder of one PNG per frame). Boxes are pixels in source coordinates: x0, y0, x1, y1.
    """

    model_config = ConfigDict(extra="forbid")

    word: str
    box: Box | None = None
    keyframes: dict[int, Box] | None = None
    track: Literal["sam2"] | None = None
    masks: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ObjectSpec":
        if self.box is not None and self.keyframes is not None:
            raise ValueError(f"object '{self.word}': give either box or keyframes, not both")
        if self.masks is not None and (self.box is not None or self.keyframes is not None):
            raise ValueError(f"object '{self.word}': masks cannot be combined with box/keyframes")
        if self.track == "sam2" and self.box is None and self.keyframes is None:
            raise ValueError(f"object '{self.word}': track: sam2 needs a seed box (box or keyframes)")
        return self

    def keyframe_boxes(self) -> dict[int, Box]:
        """Frame -> box for box-driven objects (a static box is a keyframe at frame 0)."""
        if self.keyframes is not None:
            return dict(sorted(self.keyframes.items()))
        if self.box is not None:
            return {0: self.box}
        return {}


_OBJECT_RE = re.compile(r"^(?P<word>[^=@]+?)(=(?P<box>[^@]+))?(@(?P<frame>-?\d+))?$")


def parse_object_args(values: list[str]) -> list[ObjectSpec]:
    """Parse repeated `--object WORD=x0,y0,x1,y1[@FRAME]` flags into objects.

    Several flags with the same word and different `@FRAME` become one keyframed object.
    `--object WORD` alone names a word whose region comes from `--masks`.
    """
    boxes: dict[str, dict[int, Box]] = {}
    order: list[str] = []
    for value in values:
        match = _OBJECT_RE.match(value.strip())
        if not match:
            raise UserError(
                f"cannot read --object '{value}'", "write it as WORD=x0,y0,x1,y1 or WORD=x0,y0,x1,y1@FRAME"
            )
        word = match["word"].strip()
        if word not in boxes:
            boxes[word] = {}
            order.append(word)
        if match["box"] is None:
            if match["frame"] is not None:
                raise UserError(f"--object '{value}' has a frame but no box", "write WORD=x0,y0,x1,y1@FRAME")
            continue
        parts = match["box"].split(",")
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            box = ()
        if len(box) != 4:
            raise UserError(
                f"the box in --object '{value}' is not four numbers", "write it as x0,y0,x1,y1 in pixels"
            )
        frame = int(match["frame"]) if match["frame"] is not None else 0
        if frame < 0:
            raise UserError(f"keyframe {frame} in --object '{value}' is negative", "frames count from 0")
        boxes[word][frame] = box  # type: ignore[assignment]
    objects = []
    for word in order:
        frames = boxes[word]
        if not frames:
            objects.append(ObjectSpec(word=word))
        elif list(frames) == [0]:
            objects.append(ObjectSpec(word=word, box=frames[0]))
        else:
            objects.append(ObjectSpec(word=word, keyframes=frames))
    return objects


#: The modules the official Tune-A-Video / ReAtCo configs train (names ending so in the UNet).
TUNE_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")
#: Sub-folder of a jobs' work folder (`longedit run`) or watched folder (`longedit watch`) holding tuned models.
TUNED_CACHE_FOLDER = "tuned"


class TuneSettings(BaseModel):
    """One-shot Tune-A-Video tuning of the source clip (`longedit tune`, a job's `tune:`).

    Defaults are the official ReAtCo configs (`configs/*.yaml`, `train_tuneavideo.py`): 200 steps,
    lr 3e-5, 16 frames, `attn1.to_q`, `attn2.to_q`, `attn_temp` trained, fp16 mixed precision on a GPU,
    gradient checkpointing, seed 33. Unlike the official dataset (the clip's first frames), every step
    trains on a window of `frames` frames `frame_stride` apart placed anywhere in the clip.
    `checkpoint_every` and `cache_dir` do not change the result (they are not part of its key).
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200, ge=1, le=100_000)
    lr: float = Field(3e-5, gt=0, le=1)
    frames: int = Field(16, ge=1, le=256)
    frame_stride: int = Field(1, ge=1)
    trainable: list[str] = Field(default_factory=lambda: list(TUNE_TRAINABLE))
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = True
    deepspeed: bool = False
    seed: int = 33
    size: int | None = Field(None, ge=64)  # short side; None: the edit's processing size (512 for `longedit tune`)
    checkpoint_every: int = Field(50, ge=1)
    cache_dir: Path | None = Field(None, exclude=True)  # where jobs keep tuned folders (set by run/watch)

    @field_validator("trainable", mode="before")
    @classmethod
    def _split_names(cls, value):
        """`attn1.to_q,attn2.to_q` (a flag) or a list -> stripped, non-empty names."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            value = [str(v).strip() for v in value if str(v).strip()]
            if not value:
                raise ValueError("name at least one module to train, e.g. attn1.to_q,attn2.to_q,attn_temp")
        return value

    def key_settings(self) -> dict:
        """The settings the tuned weights depend on (what the tuned-model cache is keyed by)."""
        return self.model_dump(mode="json", exclude={"checkpoint_every", "cache_dir"})


class EditJob(BaseModel):
    """Everything one edit needs. Field names are the `longedit edit` flags in snake_case."""

    model_config = ConfigDict(extra="forbid")

    input: Path
    output: Path
    source_prompt: str
    prompt: str
    objects: list[ObjectSpec] = Field(default_factory=list)
    masks: Path | None = None
    track: Literal["none", "sam2"] = "none"
    sam2_model: str = DEFAULT_SAM2_MODEL

    model: str = Field(default_factory=default_model)  # diffusers folder, hub id, .safetensors/.ckpt file, toy, tiny
    checkpoint_config: str | None = None  # a single-file model's diffusers config folder or hub id (longedit.single_file)
    lora: list[LoraSpec] = Field(default_factory=list)  # PATH[:SCALE], fused into the weights (longedit.model_extras)
    vae: str | None = None  # replaces the model's VAE: a diffusers VAE folder, a .safetensors file or a hub id
    backbone: Literal[BACKBONE_CHOICES] = "auto"  # auto or a registered kind (longedit.backbones.registry)
    local_files_only: bool = False
    device: str = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"

    preset: Literal["paper", "fast"] = "paper"
    steps: int = Field(50, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0)
    seed: int = 0
    size: int | None = Field(None, ge=64)  # short side; None: the model's native size (longedit.model_info)
    keep_size: bool = False
    # What is edited (longedit.video.source): source frames [start, end) taking every `every`-th, given as frame
    # numbers of the source or times (00:01:02.5, 62.5s); `fps` is the rate of a folder of numbered frames.
    start: int | str | None = None
    end: int | str | None = None
    every: int = Field(1, ge=1)
    fps: float | None = Field(None, gt=0, le=1000)
    # How the output is written (longedit.video.codecs): codec (default from the suffix: vp9 for .webm, else
    # h264), pixel format (the codec's default: yuv420p, prores yuv422p10le, ffv1 yuv444p) and CRF.
    codec: Literal[CODEC_NAMES] | None = None
    pix_fmt: str | None = None
    crf: int | None = Field(None, ge=0, le=63)

    window: int | None = Field(None, ge=4, le=32)  # the one declaration of the range: CLI, job files, planner
    stride: int | None = Field(None, ge=1)
    vram: str | None = None
    overlap_weights: Literal["uniform", "pyramid"] = "uniform"

    rad: bool = True
    rad_steps: int | None = Field(None, ge=0)
    step_size: float = 20.0
    step_schedule: Literal["sqrt", "linear"] = "sqrt"
    refine: bool | None = None
    topk_ratio: float = Field(0.2, gt=0, le=1)
    token_mode: Literal["all", "last"] = "all"
    attention_norm: Literal["official", "prompt", "raw"] = "official"
    smoothing: bool = True
    # RAD's levers where a model lacks SD's start-token sink (issue 25; the official behaviour is the default)
    attention_temperature: float = Field(100.0, gt=0)  # softmax(T A) of the official map
    step_norm: Literal["none", "rms"] = "none"  # rms: step along grad / RMS(grad)
    rad_cells: Literal["official", "irjs"] = "official"  # irjs: only cells whose latents IRJS lets change
    region_start: Literal["inverted", "noise"] = "inverted"  # noise: re-noise x_T inside the regions
    region_start_strength: float = Field(1.0, ge=0, le=1)  # share of noise variance for region_start noise
    rad_diagnostics: bool = True  # measure RAD's loss after each update (one no-grad guided forward more)

    irjs: bool = True
    source_noise: Literal["fresh", "fixed", "inversion"] = "fresh"
    inversion_prompt: Literal["auto", "source", "empty"] = "auto"
    anchor: Literal["window", "video"] = "window"
    paste_background: bool | None = None
    feather: int = Field(8, ge=0, le=256)
    mask_dilate: int = Field(0, ge=0)
    box_masks: bool = False
    min_area: int = Field(0, ge=0)
    eval: bool = False  # measure the output with `longedit eval` afterwards (report key "eval")

    method: Literal["reatco", "fatezero"] = "reatco"
    fuse_attention: bool = False
    cross_replace_steps: float = Field(0.8, ge=0, le=1)
    self_replace_steps: float = Field(0.5, ge=0, le=1)
    blend_threshold: float = Field(0.3, ge=0, le=1)
    fuse_resolution: Literal["h32", "h16"] = "h16"
    fuse_controller: Literal["auto", "replace", "refine"] = "auto"
    equalize: dict[str, float] = Field(default_factory=dict)
    blend_word: list[str] = Field(default_factory=list)
    fuse_source: Literal["auto", "recompute", "store"] = "auto"
    fuse_disk_budget: str | None = None

    report: Path | None = None
    checkpoint_every: int = Field(5, ge=1)
    tune: TuneSettings | None = None  # tune Tune-A-Video on the input first (cached per clip and model)
    # The shared inversion cache (longedit.inversion_cache): off for one `longedit edit` unless given;
    # `longedit run` and `watch` give their work folder's (DIR/inversion-cache) unless --no-cache.
    cache_dir: Path | None = None
    cache_size: str = DEFAULT_CACHE_SIZE
    attention_video: Path | None = None  # each object word's cross-attention over the source frames
    attention_strips: bool = False  # <output stem>.attention-<word>.png (also with attention_video or preview)
    preview: bool | int = False  # edit only the first N frames (true: one window); see `preview_job`

    @field_validator("objects")
    @classmethod
    def _distinct_words(cls, objects: list[ObjectSpec]) -> list[ObjectSpec]:
        words = [o.word for o in objects]
        dupes = sorted({w for w in words if words.count(w) > 1})
        if dupes:
            raise ValueError(f"word(s) {dupes} given for more than one object; use one object per word")
        return objects

    @field_validator("start", "end")
    @classmethod
    def _position(cls, value, info):
        """A frame number or a time: checked when the job is read (a bad one fails before any work)."""
        from longedit.video.source import parse_position

        try:
            parse_position(value, info.field_name)
        except UserError as error:
            raise ValueError(str(error)) from None
        return value
    @field_validator("lora", mode="before")
    @classmethod
    def _parse_loras(cls, value):
        """`--lora PATH[:SCALE]` flags or a job file's list of `PATH[:SCALE]` strings / {path, scale} mappings."""
        if value is None:
            return []
        items = value if isinstance(value, (list, tuple)) else [value]
        specs = []
        for item in items:
            if isinstance(item, LoraSpec):
                specs.append(item)
            elif isinstance(item, str):
                specs.append(LoraSpec.parse(item))
            elif isinstance(item, dict) and set(item) <= {"path", "scale"} and "path" in item:
                specs.append(LoraSpec(str(item["path"]), float(item.get("scale", 1.0))))
            else:
                raise ValueError(f"cannot read LoRA {item!r}: write PATH[:SCALE] or {{path: PATH, scale: SCALE}}")
        return specs

    @field_validator("preview", mode="before")
    @classmethod
    def _preview_frames(cls, value):
        """true/false, or a number of frames >= 1."""
        if value is None or isinstance(value, bool):
            return bool(value)
        if isinstance(value, int) and value >= 1:
            return value
        raise ValueError(f"preview must be true (one window) or a number of frames >= 1, not {value!r}")

    @field_validator("equalize", mode="before")
    @classmethod
    def _parse_equalize(cls, value):
        """`--equalize WORD=SCALE` flags (a list of strings) or a job file's mapping -> {word: scale}."""
        if not isinstance(value, (list, tuple)):
            return value
        scales = {}
        for item in value:
            word, sep, scale = str(item).partition("=")
            try:
                scales[word.strip()] = float(scale)
            except ValueError:
                sep = ""
            if not sep or not word.strip():
                raise ValueError(f"cannot read '{item}': write WORD=SCALE, e.g. watercolor=10")
        return scales

    @field_validator("tune", mode="before")
    @classmethod
    def _tune_flag(cls, value):
        """`tune: true` (like `tune: {}`) tunes with the official settings; `tune: false` does not tune."""
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _tune_makes_a_tuneavideo_model(self) -> "EditJob":
        if self.tune is not None and self.backbone not in ("auto", "tuneavideo"):
            raise ValueError(f"tune: makes a Tune-A-Video model, so backbone must be auto or tuneavideo, not {self.backbone}")
        return self

    @model_validator(mode="after")
    def _fusion_needs_source_inversion(self) -> "EditJob":
        if self.use_fusion and self.inversion_prompt == "empty":
            raise ValueError("attention fusion (fatezero) stores the source prompt's maps: use inversion_prompt source")
        return self

    @property
    def wants_attention_pictures(self) -> bool:
        """Whether the run keeps its word maps to draw the attention pictures (video and/or strips)."""
        return self.attention_video is not None or self.attention_strips

    @property
    def effective_guidance(self) -> float:
        """Classifier-free guidance: as given, else the official default of the method (ReAtCo 12.5, FateZero 7.5)."""
        if self.guidance is not None:
            return self.guidance
        return FATEZERO_GUIDANCE if self.method == "fatezero" else REATCO_GUIDANCE

    @property
    def use_background_paste(self) -> bool:
        """Composite the source's pixels outside the regions after decoding: on for reatco (it has regions),
        off for fatezero (no regions), unless set."""
        if self.paste_background is not None:
            return self.paste_background
        return self.method == "reatco"

    @property
    def effective_inversion_prompt(self) -> str:
        """The DDIM inversion's prompt: `auto` is empty (ReAtCo, Tune-A-Video, Gen-L-Video), or the source
        prompt where attention fusion needs the source prompt's maps (FateZero)."""
        if self.inversion_prompt == "auto":
            return "source" if self.use_fusion else "empty"
        return self.inversion_prompt

    @property
    def use_fusion(self) -> bool:
        """FateZero attention fusion: always in the `fatezero` method, on request (`fuse_attention`) with ReAtCo."""
        return self.method == "fatezero" or self.fuse_attention

    @property
    def use_rad(self) -> bool:
        """RAD is ReAtCo's: off in the `fatezero` method."""
        return self.rad and self.method == "reatco"

    @property
    def use_refinement(self) -> bool:
        """Attend-and-Excite style refinement: on in the `paper` preset (the default, as the official code) unless set."""
        return self.refine if self.refine is not None else self.preset == "paper"

    @property
    def guided_steps(self) -> int:
        """How many of the first steps get the RAD update (default: half of them, 25 of 50)."""
        return self.rad_steps if self.rad_steps is not None else self.steps // 2

    def with_tune_cache(self, folder: Path) -> "EditJob":
        """This job with tuned models cached in `folder` (unless it tunes nothing or names its own cache)."""
        if self.tune is None or self.tune.cache_dir is not None:
            return self
        return self.model_copy(update={"tune": self.tune.model_copy(update={"cache_dir": Path(folder)})})

    def with_inversion_cache(self, folder: Path | None) -> "EditJob":
        """This job sharing its inversion in `folder`, unless it names its own `cache_dir`; None: no cache."""
        if folder is None:
            return self.model_copy(update={"cache_dir": None})
        return self if self.cache_dir is not None else self.model_copy(update={"cache_dir": Path(folder)})

    def resolved_objects(self) -> list[ObjectSpec]:
        """Objects with the job-wide `masks`/`track` applied to those that name no source of their own."""
        resolved = []
        for obj in self.objects:
            if obj.masks is None and self.masks is not None and obj.box is None and obj.keyframes is None:
                obj = obj.model_copy(update={"masks": self.masks / obj.word})
            if obj.track is None and self.track == "sam2" and obj.masks is None:
                obj = obj.model_copy(update={"track": "sam2"})
            resolved.append(obj)
        return resolved


def preview_job(job: EditJob) -> EditJob:
    """What a preview (`job.preview` set) runs and writes: the first frames of the job at its settings,
    into files named after the output with `.preview` - `<stem>.preview<ext>`, its report
    `<stem>.preview.json`, its attention video `<stem>.preview.attention.mp4` and strips (when it has
    objects, whose words they show) - beside the output, so the full job's files are never touched.
    No eval (it would compare a part with the whole)."""
    output = Path(job.output)
    stem = output.with_name(f"{output.stem}.{PREVIEW_TAG}")
    pictures = bool(job.objects)
    return job.model_copy(update={
        "output": stem.with_name(f"{stem.name}{output.suffix}"),
        "report": stem.with_name(f"{stem.name}.json"),
        "attention_video": stem.with_name(f"{stem.name}.attention.mp4") if pictures else None,
        "attention_strips": pictures,
        "eval": False,
    })


def as_run(job: EditJob) -> EditJob:
    """The job as it runs: a preview writes its own files (`preview_job`), the job as given otherwise."""
    return preview_job(job) if job.preview else job
