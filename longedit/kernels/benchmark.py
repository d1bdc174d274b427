"""Speed and memory of the fused word-attention maps against the plain PyTorch reference.

What: for each shape, times forward + backward (w.r.t. the query, as ReAtCo's guidance does)
of ``word_attention_maps(backend="auto")`` and of ``word_attention_maps_reference``, and
measures the memory each keeps: the bytes saved for backward (``saved_tensors_hooks``, any
device) and, on CUDA, the peak allocation of one forward + backward.

Why: the fused op exists to drop the ``[B, H, Q, 77]`` probabilities autograd would keep per
guided cross-attention layer; this makes the saving (and the speed) visible per shape.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from longedit.kernels.word_attention import (
    triton_available,
    word_attention_maps,
    word_attention_maps_reference,
)

#: Stable Diffusion 1.5 at 512x512: the 16x16 (D = 160) and 32x32 (D = 80) cross-attention
#: levels, 16 frames, 8 heads, CLIP's 77 tokens, 4 words of interest.
DEFAULT_SHAPES: tuple[dict, ...] = (
    {"B": 16, "H": 8, "Q": 256, "D": 160, "T": 77, "C": 4},
    {"B": 16, "H": 8, "Q": 1024, "D": 80, "T": 77, "C": 4},
)

_Maps = Callable[[Tensor, Tensor, Tensor, float], Tensor]


def _fused_backend(query: Tensor) -> str:
    """What ``backend="auto"`` runs for this query."""
    supported = query.dtype in (torch.float32, torch.float16, torch.bfloat16)
    return "triton" if query.is_cuda and triton_available() and supported else "reference"


def _saved_bytes(fn: _Maps, query: Tensor, key: Tensor, columns: Tensor, scale: float) -> int:
    """Bytes autograd keeps for backward: distinct storages packed by saved-tensor hooks."""
    storages: dict[int, int] = {}

    def pack(x: Tensor) -> Tensor:
        storage = x.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn(query, key, columns, scale)
    del out
    return sum(storages.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(fn: _Maps, query: Tensor, key: Tensor, columns: Tensor, scale: float, upstream: Tensor) -> None:
    out = fn(query, key, columns, scale)
    torch.autograd.grad(out, query, upstream)


def _median_ms(fn: _Maps, args: tuple, repeats: int, device: torch.device) -> float:
    """Median wall time of forward + backward in milliseconds (after one warm-up call)."""
    _step(fn, *args)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(fn, *args)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _peak_bytes(fn: _Maps, args: tuple, device: torch.device) -> int:
    """CUDA peak allocation of one forward + backward above what was allocated before."""
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    _step(fn, *args)
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def benchmark_word_attention(
    shapes: list[dict] | None = None,
    repeats: int = 20,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> list[dict]:
    """Time and measure the fused op against the reference for each shape.

    Args:
        shapes: dicts with ``B, H, Q, D, T, C`` (missing ``T``/``C`` default to 77/4);
            defaults to ``DEFAULT_SHAPES`` (SD 1.5 at 512x512, 16 frames).
        repeats: timed forward + backward runs per backend (the median is reported).
        device: ``"cuda"`` when available, else ``"cpu"``.
        dtype: fp16 on CUDA, fp32 on CPU by default.

    Returns:
        One dict per shape: ``shape``, ``backend_fused`` (what ``backend="auto"`` ran),
        ``fused_ms``, ``reference_ms``, ``speedup`` (reference / fused), ``fused_saved_bytes``,
        ``reference_saved_bytes``, ``memory_ratio`` (reference / fused: CUDA peak bytes on
        CUDA, saved-for-backward bytes elsewhere; named in ``memory_metric``), plus
        ``fused_peak_bytes`` / ``reference_peak_bytes`` on CUDA and a ``note`` when the
        fused backend is the reference.
    """
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype if dtype is not None else (torch.float16 if dev.type == "cuda" else torch.float32)
    rows = []
    for raw in shapes if shapes is not None else DEFAULT_SHAPES:
        shape = dict(raw)
        shape.setdefault("T", 77)
        shape.setdefault("C", 4)
        b, h, q_len, d, t, c = (int(shape[k]) for k in ("B", "H", "Q", "D", "T", "C"))
        gen = torch.Generator(device="cpu").manual_seed(0)
        query = torch.randn(b, h, q_len, d, generator=gen).to(dev, dtype).requires_grad_(True)
        key = torch.randn(shape.get("KB", b), h, t, d, generator=gen).to(dev, dtype)
        columns = torch.linspace(1, t - 1, c).long().to(dev)
        scale = d**-0.5
        upstream = torch.randn(b, q_len, c, generator=gen).to(dev, dtype)
        args = (query, key, columns, scale, upstream)

        fused: _Maps = word_attention_maps
        row: dict = {"shape": shape, "device": dev.type, "dtype": str(dtype).replace("torch.", "")}
        row["backend_fused"] = _fused_backend(query)
        row["fused_ms"] = _median_ms(fused, args, repeats, dev)
        row["reference_ms"] = _median_ms(word_attention_maps_reference, args, repeats, dev)
        row["speedup"] = row["reference_ms"] / row["fused_ms"]
        row["fused_saved_bytes"] = _saved_bytes(fused, *args[:4])
        row["reference_saved_bytes"] = _saved_bytes(word_attention_maps_reference, *args[:4])
        if dev.type == "cuda":
            row["fused_peak_bytes"] = _peak_bytes(fused, args, dev)
            row["reference_peak_bytes"] = _peak_bytes(word_attention_maps_reference, args, dev)
            row["memory_metric"] = "cuda_peak_bytes"
            row["memory_ratio"] = row["reference_peak_bytes"] / max(1, row["fused_peak_bytes"])
        else:
            row["memory_metric"] = "saved_for_backward_bytes"
            row["memory_ratio"] = row["reference_saved_bytes"] / max(1, row["fused_saved_bytes"])
        if row["backend_fused"] == "reference":
            row["note"] = (
                "no CUDA/Triton here: backend='auto' ran the reference, so speedup ~1 and memory_ratio ~1; "
                "run on a CUDA GPU to measure the fused kernels"
            )
        rows.append(row)
    return rows
