"""Pick and load a tracker backend from a `--sam2-model` value, with one-line errors for every failure.

- `tiny`: the tiny random SAM2, saved to a temporary folder and loaded back with `from_pretrained`;
- `CKPT.pt[:CONFIG.yaml]`: Meta's official `sam2` package (optional extra);
- anything else: a transformers `Sam2VideoModel` folder or hub id (default `facebook/sam2.1-hiera-tiny`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from longedit.errors import UserError
from longedit.segmentation.hf_backend import HFSam2Backend
from longedit.segmentation.sam2_backend import OfficialSam2Backend, is_checkpoint_spec
from longedit.segmentation.random_sam2 import TINY_NAME, build_random_sam2
from longedit.segmentation.tracker import TrackerBackend

TINY_WARNING = (
    "warning: --sam2-model tiny is a random untrained SAM2: its masks are meaningless (use it to test the pipeline)"
)


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda, then mps, then cpu; an explicit device must exist."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"unknown device '{device}'", "use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for but CUDA is not available", "use --device cpu or auto")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UserError(f"device '{device}' does not exist", f"this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved


def _dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (as the SAM2 model cards use), fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _looks_like_path(model: str) -> bool:
    """Hub ids are `owner/name`; anything else with a path shape is meant as a local folder."""
    return model.startswith((".", "/", "~", "\\")) or model.count("/") > 1 or "\\" in model or ":" in model


def load_sam2_model(model: str, *, local_files_only: bool = False):
    """`Sam2VideoModel.from_pretrained` with errors that say what to do."""
    from transformers import Sam2VideoModel

    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise UserError(
                f"'{model}' is not a SAM2 model folder (it has no config.json)",
                "pass a folder saved with save_pretrained or a hub id",
            )
        source = str(folder)
    elif _looks_like_path(model):
        raise UserError(
            f"SAM2 model folder '{model}' does not exist",
            "fix --sam2-model, or pass a hub id such as facebook/sam2.1-hiera-tiny",
        )
    else:
        source = model
    try:
        loaded = Sam2VideoModel.from_pretrained(source, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        if source != model:  # a local folder that exists but does not load
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"cannot load SAM2 model '{model}': {first_line}", "check the folder") from error
        if local_files_only:
            where = "not in the local Hugging Face cache"
        else:
            where = "not a local folder and the hub is unreachable"
        raise UserError(
            f"cannot load SAM2 model '{model}': {where}",
            f"download it with `huggingface-cli download {model}` or pass --sam2-model PATH",
        ) from error
    return loaded.eval()


def load_backend(
    model: str, *, device: str = "auto", local_files_only: bool = False, trim: bool = True
) -> TrackerBackend:
    """The tracker backend for a `--sam2-model` value, on the resolved device."""
    torch_device = resolve_device(device)
    if is_checkpoint_spec(model):
        return OfficialSam2Backend.load(model, torch_device)
    if model == TINY_NAME:
        print(TINY_WARNING, file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="longedit-tiny-sam2-") as folder:
            loaded = load_sam2_model(str(build_random_sam2(folder)), local_files_only=True)
    else:
        loaded = load_sam2_model(model, local_files_only=local_files_only)
    dtype = _dtype_for(torch_device)
    return HFSam2Backend(loaded.to(torch_device, dtype=dtype), torch_device, dtype, trim=trim)
