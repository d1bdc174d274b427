"""Memory tools of a tuning: mixed precision, the optimizer, DeepSpeed ZeRO-2 with CPU offload, accelerate.

* `--mixed-precision auto` is fp16 on CUDA (the official configs) and off on a CPU; fp16 on a CPU is
  refused (PyTorch's CPU autocast trains in bf16 only), bf16 needs a device that has it.
* `--optimizer adamw` is `torch.optim.AdamW` with the official hyper-parameters (betas 0.9/0.999,
  weight decay 1e-2, eps 1e-8); `adamw8bit` is bitsandbytes' `AdamW8bit` (blockwise 8-bit moments), used
  when bitsandbytes is installed and one probe step runs on the device.
* `--deepspeed`: ZeRO stage 2 with the optimizer state offloaded to CPU (DeepSpeed's `DeepSpeedCPUAdam`),
  through accelerate's `DeepSpeedPlugin`, in this one process; it needs the deepspeed package and CUDA.

Every check raises a one-line `UserError` naming the fix, and runs before the model is loaded.

accelerate keeps its state per process (`AcceleratorState`, its own global): `accelerator_for` resets it
before and after a tuning and lets one tuning at a time use it in a process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from longedit.config import TuneSettings
from longedit.errors import UserError

#: The official Adam hyper-parameters (train_tuneavideo.py).
ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-2
ADAM_EPS = 1e-8
MAX_GRAD_NORM = 1.0
#: accelerate's AcceleratorState is one per process: tunings in one process take turns.
_ACCELERATE_TURN = threading.Lock()


@dataclass(frozen=True)
class Precision:
    """The resolved mixed precision: accelerate's name and the autocast dtype (None: fp32)."""

    name: str  # "no", "fp16", "bf16"

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.name)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`auto` -> fp16 on CUDA, no on CPU; fp16 on a CPU and bf16 where the GPU lacks it are UserErrors."""
    if requested == "auto":
        return Precision("fp16" if device.type == "cuda" else "no")
    if requested == "fp16" and device.type != "cuda":
        raise UserError(
            f"--mixed-precision fp16 needs a CUDA device (this run is on {device.type}: PyTorch trains fp16 on GPUs only)",
            "use --mixed-precision bf16 or no on a CPU",
        )
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--mixed-precision bf16 is not supported by this GPU", "use --mixed-precision fp16")
    return Precision(requested)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_bitsandbytes(device: torch.device) -> None:
    """bitsandbytes is installed and its 8-bit AdamW takes a step on `device` (else a one-line UserError)."""
    if not _installed("bitsandbytes"):
        raise UserError(
            "--optimizer adamw8bit needs bitsandbytes, which is not installed",
            "pip install 'longedit[quant]', or use --optimizer adamw",
        )
    try:
        import bitsandbytes as bnb

        probe = torch.nn.Parameter(torch.ones(4096, device=device))  # 4096: bnb's smallest 8-bit tensor
        optimizer = bnb.optim.AdamW8bit([probe], lr=1e-3)
        probe.grad = torch.ones_like(probe)
        optimizer.step()
        if not torch.isfinite(probe).all():
            raise RuntimeError("the probe step gave non-finite values")
    except Exception as error:  # a broken build, no kernel for this device, ...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise UserError(
            f"--optimizer adamw8bit: bitsandbytes does not run on {device.type} here ({reason})",
            "use --optimizer adamw",
        ) from None


def check_deepspeed(device: torch.device, settings: TuneSettings) -> None:
    """DeepSpeed is installed, the device is CUDA and the optimizer is DeepSpeed's own (else a UserError)."""
    if not _installed("deepspeed"):
        raise UserError(
            "--deepspeed needs the deepspeed package, which is not installed",
            "pip install 'longedit[deepspeed]' on a CUDA machine, or drop --deepspeed",
        )
    if device.type != "cuda":
        raise UserError(
            f"--deepspeed (ZeRO-2 with optimizer offload) needs a CUDA device, not {device.type}",
            "drop --deepspeed on a CPU",
        )
    if settings.optimizer != "adamw":
        raise UserError(
            "--deepspeed runs its own CPU AdamW on the offloaded state: it cannot be combined with --optimizer adamw8bit",
            "use --optimizer adamw with --deepspeed",
        )


def check_request(settings: TuneSettings, device: torch.device) -> Precision:
    """Every device/package check of a tuning, before any long work; returns the mixed precision."""
    precision = resolve_precision(settings.mixed_precision, device)
    if settings.deepspeed:
        check_deepspeed(device, settings)
    elif settings.optimizer == "adamw8bit":
        check_bitsandbytes(device)
    return precision


def make_optimizer(settings: TuneSettings, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer over the trainable `params` (official hyper-parameters)."""
    kwargs = dict(lr=settings.lr, betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY, eps=ADAM_EPS)
    if settings.deepspeed:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
    if settings.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps per parameter (moments, quantisation maps, step counters)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    total = 0
    for state in inner.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def parameter_bytes(params: Iterable[torch.nn.Parameter]) -> int:
    """Bytes of `params` as stored."""
    return sum(p.numel() * p.element_size() for p in params)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _single_process_deepspeed_env() -> Iterator[None]:
    """The environment accelerate and DeepSpeed read to start a one-process group; restored afterwards."""
    values = {
        "ACCELERATE_USE_DEEPSPEED": "true", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
    }
    before = {key: os.environ.get(key) for key in values}
    os.environ.update({key: value for key, value in values.items() if before[key] is None or key == "ACCELERATE_USE_DEEPSPEED"})
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _deepspeed_plugin():
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(
        zero_stage=2, offload_optimizer_device="cpu", gradient_clipping=MAX_GRAD_NORM, gradient_accumulation_steps=1
    )
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1  # no dataloader to infer it from
    return plugin


@contextlib.contextmanager
def accelerator_for(device: torch.device, precision: Precision, deepspeed: bool = False) -> Iterator[object]:
    """An `accelerate.Accelerator` on `device` with `precision` (and ZeRO-2 offload with `deepspeed`)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    with _ACCELERATE_TURN:
        AcceleratorState._reset_state(True)
        cuda = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        env = _single_process_deepspeed_env() if deepspeed else contextlib.nullcontext()
        try:
            with cuda, env:
                yield Accelerator(
                    mixed_precision=precision.name, cpu=device.type == "cpu",
                    deepspeed_plugin=_deepspeed_plugin() if deepspeed else None,
                )
        finally:
            AcceleratorState._reset_state(True)
