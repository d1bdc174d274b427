"""Fused head-averaged cross-attention maps for a few text-token columns (ReAtCo RAD).

What: for query ``q[B, H, Q, D]`` (image tokens) and key ``k[B, H, T, D]`` (text tokens,
``T = 77`` for CLIP) compute, for a handful of selected text-token columns,

    A[b, q, c] = mean_h softmax_t(scale * q[b, h, q, :] . k[b, h, t, :])[columns[c]]

and its gradient with respect to ``q`` (and ``k`` when it requires grad).

Why: ReAtCo's region-aware denoising builds a loss on these maps and backpropagates it to
the latents at every guided step. Done with plain PyTorch, autograd keeps the full
``[B, H, Q, T]`` fp32 probability tensor alive for backward (e.g. 16 frames x 8 heads x
4096 tokens x 77 = 160 MiB per layer at 64x64), although only ``C`` of the 77 columns are
used (the words' tokens: 1 to ~20; the official normalisation: the 75 columns 1..75). The fused op keeps only ``q``, ``k`` and a per-(b, h, q) fp32 logsumexp,
and recomputes the probabilities in backward, so what it saves is ``O(B*H*Q)`` instead of
``O(B*H*Q*T)``.

Layout of this file (Liger-Kernel style, one op per file):

* ``_word_attn_fwd_kernel``     Triton forward: one program per (block of Q rows, frame); it
  loops over the heads (deterministic head average, no atomics), computes fp32 logits for
  all T columns, the logsumexp, and the selected-column probabilities.
* ``_word_attn_bwd_dq_kernel``  Triton backward for dq: one program per (block of Q rows,
  frame x head); recomputes the probabilities from the saved logsumexp.
* ``_word_attn_bwd_dk_kernel``  Triton backward for dk (only when ``key.requires_grad``):
  one program per (split of the Q rows, chunk of D, key-frame x head), writing fp32 partial
  sums that are reduced with ``torch.sum`` (deterministic, no atomics).
* launchers, ``WordAttentionMapsFunction`` (``torch.autograd.Function``),
  ``word_attention_maps_reference`` (plain PyTorch, same math) and the public dispatcher
  ``word_attention_maps``.

Gradient (per head ``h``, row ``q``; ``g`` is the incoming ``[B, Q, C]`` gradient)::

    w_c   = g_c * p[col_c] / H
    ds[t] = sum_c w_c * 1[t == col_c] - p[t] * sum_c w_c
    dq    = scale * sum_t ds[t] * k[t]          dk[t] = scale * sum_q ds[q, t] * q[q]

Numerics: logits, softmax, selection and the head average are fp32. Matrix products take
their operands in the input dtype (tensor cores for fp16/bf16) with fp32 accumulation; for
fp32 inputs they use ``input_precision="ieee"`` (no TF32), so fp32 results match the
reference to ~1e-6. In backward ``ds`` is rounded to the input dtype before the products
(as in FlashAttention), so fp16/bf16 gradients carry that rounding (~1e-3 / ~1e-2 relative).

Triton interpreter (``TRITON_INTERPRET=1``, CPU tensors): the kernels run there too, with
two limitations of triton 3.9 found while testing:

* the variable must be set before ``triton`` is first imported: ``triton.language``'s own
  helpers (``tl.zeros``, ``tl.max``, ``tl.sum``...) are ``@triton.jit`` functions that become
  interpreter functions only if the mode is on at import. ``backend="triton"`` on CPU
  tensors raises a ``ValueError`` that says so when triton was imported in compiled mode.
  (This module's own kernels are re-wrapped at launch, so its import order does not matter.)
* the interpreter's ``tl.dot`` multiplies the raw bit patterns of bfloat16 operands, so
  under the interpreter bf16 operands are rounded to bf16 and then multiplied in fp32 (same
  values as the GPU path up to summation order).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

try:  # Triton is an optional dependency (extra "triton"); the reference path never needs it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is not installed
    triton = None
    tl = None

__all__ = [
    "WordAttentionMapsFunction",
    "triton_available",
    "word_attention_maps",
    "word_attention_maps_reference",
]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Largest padded text length one tile holds (T <= 256 keeps fp32 tiles under the ~99 KiB of
#: shared memory consumer GPUs give a block); longer prompts fall back to the reference.
_MAX_BLOCK_T = 256
#: 8 warps: with 4, the [64, 128] fp32 logit tiles spill registers (checked with ptxas, sm_86/sm_90).
_NUM_WARPS = 8
#: D is processed in chunks of this many channels (D = 40, 80, 160 waste at most 24 lanes).
_BLOCK_D = 32
#: Columns one call takes (padded to BLOCK_C <= 128): the official RAD normalisation needs 75 of 77.
_MAX_COLUMNS = 128
_BACKENDS = ("auto", "triton", "reference")


def triton_available() -> bool:
    """Whether Triton can be imported (the fused kernels can then run on CUDA tensors, or on
    CPU tensors under ``TRITON_INTERPRET=1``)."""
    return triton is not None


def _interpret_mode() -> bool:
    """Whether Triton's interpreter is on right now (read at launch time, not import time)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _interpreter_ready() -> bool:
    """Whether ``triton.language`` was imported in interpreter mode (``TRITON_INTERPRET=1`` set
    before the first ``import triton``), which the interpreter needs for ``tl.zeros``/``tl.max``..."""
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


# --------------------------------------------------------------------------------------------
# Input checks shared by both backends
# --------------------------------------------------------------------------------------------


def _check_inputs(query: Tensor, key: Tensor, columns: Tensor) -> None:
    """Raise ``ValueError`` on shapes or columns the op cannot take (one message per problem)."""
    if query.dim() != 4 or key.dim() != 4:
        raise ValueError(
            f"word_attention_maps: query and key must be [B, H, Q, D] and [B or 1, H, T, D], "
            f"got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    b, h, _, d = query.shape
    bk, hk, t, dk = key.shape
    if bk not in (1, b) or hk != h or dk != d:
        raise ValueError(
            f"word_attention_maps: key {tuple(key.shape)} does not match query {tuple(query.shape)} "
            f"(key batch must be {b} or 1, heads {h}, head dim {d})"
        )
    if t < 1:
        raise ValueError("word_attention_maps: key has no text tokens (T = 0)")
    if not query.is_floating_point() or key.dtype != query.dtype:
        raise ValueError(
            f"word_attention_maps: query and key must share a floating dtype, got {query.dtype} and {key.dtype}"
        )
    if columns.dim() != 1 or columns.numel() < 1 or columns.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"word_attention_maps: columns must be a non-empty 1-D int64/int32 tensor, "
            f"got shape {tuple(columns.shape)} dtype {columns.dtype}"
        )
    # Range check without a device sync: only when the indices live on the CPU.
    if columns.device.type == "cpu" and not _is_fake(columns):  # fake tensors have no values
        lo, hi = int(columns.min()), int(columns.max())
        if lo < 0 or hi >= t:
            raise ValueError(f"word_attention_maps: columns must lie in [0, {t}), got min {lo} max {hi}")


def _as_columns(columns: Tensor | Sequence[int]) -> Tensor:
    """Columns as a LongTensor (lists and tuples of ints are accepted for convenience)."""
    if not isinstance(columns, Tensor):
        columns = torch.as_tensor(list(columns), dtype=torch.long)
    return columns


# --------------------------------------------------------------------------------------------
# Plain PyTorch reference
# --------------------------------------------------------------------------------------------


def word_attention_maps_reference(query: Tensor, key: Tensor, columns: Tensor, scale: float) -> Tensor:
    """Head-averaged cross-attention probabilities of the selected text columns, plain PyTorch.

    Args:
        query: ``[B, H, Q, D]`` image-token queries.
        key: ``[B, H, T, D]`` text-token keys; ``B = 1`` broadcasts over the frames.
        columns: ``[C]`` integer indices into ``T`` (duplicates allowed).
        scale: softmax temperature, usually ``D ** -0.5``.

    Returns:
        ``[B, Q, C]`` in ``query.dtype``. The softmax runs in fp32 (fp64 for fp64 inputs).
        Differentiable by autograd, which saves the full ``[B, H, Q, T]`` probabilities: this
        is the memory cost the fused op avoids, and the ground truth its tests compare against.
    """
    columns = _as_columns(columns)
    _check_inputs(query, key, columns)
    compute = torch.promote_types(query.dtype, torch.float32)
    logits = torch.matmul(query.to(compute), key.to(compute).transpose(-1, -2)) * scale
    probs = torch.softmax(logits, dim=-1)
    cols = columns.to(device=query.device, dtype=torch.long)
    return probs.index_select(-1, cols).mean(dim=1).to(query.dtype)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _word_attn_fwd_kernel(
        q_ptr, k_ptr, col_ptr, out_ptr, lse_ptr,
        H, Q, T, D, C, scale, inv_heads,
        stride_qb, stride_qh, stride_qq, stride_qd,
        stride_kb, stride_kh, stride_kt, stride_kd,
        stride_ob, stride_oq, stride_oc,
        BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
        PRECISION: tl.constexpr, DOT_IN_F32: tl.constexpr,
    ):
        """out[b, q, c] = mean_h p[b, h, q, col_c]; lse[b, h, q] = logsumexp_t(scale * q.k_t).

        Grid: (cdiv(Q, BLOCK_Q), B). Heads are looped inside the program, so the head
        average needs no atomics and is deterministic. ``stride_kb`` is 0 when key broadcasts.
        """
        pid_q = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        offs_t = tl.arange(0, BLOCK_T)
        offs_d = tl.arange(0, BLOCK_D)
        offs_c = tl.arange(0, BLOCK_C)
        mask_q = offs_q < Q
        mask_t = offs_t < T
        mask_c = offs_c < C

        # One-hot selection matrix sel[t, c] = (t == columns[c]); padded c select nothing.
        cols = tl.load(col_ptr + offs_c, mask=mask_c, other=-1).to(tl.int32)
        sel = tl.where(offs_t[:, None] == cols[None, :], 1.0, 0.0).to(tl.float32)

        acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
        for h in range(0, H):
            q_base = q_ptr + b * stride_qb + h * stride_qh
            k_base = k_ptr + b * stride_kb + h * stride_kh
            s = tl.zeros((BLOCK_Q, BLOCK_T), dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                dd = d0 + offs_d
                mask_d = dd < D
                qt = tl.load(
                    q_base + offs_q[:, None] * stride_qq + dd[None, :] * stride_qd,
                    mask=mask_q[:, None] & mask_d[None, :], other=0.0,
                )
                kt = tl.load(
                    k_base + offs_t[None, :] * stride_kt + dd[:, None] * stride_kd,
                    mask=mask_t[None, :] & mask_d[:, None], other=0.0,
                )
                if DOT_IN_F32:
                    qt = qt.to(tl.float32)
                    kt = kt.to(tl.float32)
                s += tl.dot(qt, kt, input_precision=PRECISION)
            s = tl.where(mask_t[None, :], s * scale, float("-inf"))
            m = tl.max(s, axis=1)
            p = tl.exp(s - m[:, None])
            l = tl.sum(p, axis=1)
            p = p / l[:, None]
            lse = m + tl.log(l)
            tl.store(lse_ptr + (b * H + h) * Q + offs_q, lse, mask=mask_q)
            # Exact selection: fp32 x {0, 1} products with IEEE fp32 accumulation.
            acc += tl.dot(p, sel, input_precision="ieee")

        out = acc * inv_heads
        tl.store(
            out_ptr + b * stride_ob + offs_q[:, None] * stride_oq + offs_c[None, :] * stride_oc,
            out.to(out_ptr.dtype.element_ty),
            mask=mask_q[:, None] & mask_c[None, :],
        )

    @triton.jit
    def _word_attn_bwd_dq_kernel(
        q_ptr, k_ptr, col_ptr, lse_ptr, g_ptr, dq_ptr,
        H, Q, T, D, C, scale, inv_heads,
        stride_qb, stride_qh, stride_qq, stride_qd,
        stride_kb, stride_kh, stride_kt, stride_kd,
        stride_gb, stride_gq, stride_gc,
        stride_dqb, stride_dqh, stride_dqq, stride_dqd,
        BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
        PRECISION: tl.constexpr, DOT_IN_F32: tl.constexpr,
    ):
        """dq[b, h, q] = scale * sum_t ds[q, t] k[t], probabilities recomputed from the saved lse.

        Grid: (cdiv(Q, BLOCK_Q), B * H); dq has no cross-head reduction, so heads are spread
        over programs for parallelism.
        """
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        h = pid_bh % H
        offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        offs_t = tl.arange(0, BLOCK_T)
        offs_d = tl.arange(0, BLOCK_D)
        offs_c = tl.arange(0, BLOCK_C)
        mask_q = offs_q < Q
        mask_t = offs_t < T
        mask_c = offs_c < C

        cols = tl.load(col_ptr + offs_c, mask=mask_c, other=-1).to(tl.int32)
        sel_t = tl.where(cols[:, None] == offs_t[None, :], 1.0, 0.0).to(tl.float32)  # [C, T]
        q_base = q_ptr + b * stride_qb + h * stride_qh
        k_base = k_ptr + b * stride_kb + h * stride_kh

        s = tl.zeros((BLOCK_Q, BLOCK_T), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + offs_d
            mask_d = dd < D
            qt = tl.load(
                q_base + offs_q[:, None] * stride_qq + dd[None, :] * stride_qd,
                mask=mask_q[:, None] & mask_d[None, :], other=0.0,
            )
            kt = tl.load(
                k_base + offs_t[None, :] * stride_kt + dd[:, None] * stride_kd,
                mask=mask_t[None, :] & mask_d[:, None], other=0.0,
            )
            if DOT_IN_F32:
                qt = qt.to(tl.float32)
                kt = kt.to(tl.float32)
            s += tl.dot(qt, kt, input_precision=PRECISION)
        lse = tl.load(lse_ptr + (b * H + h) * Q + offs_q, mask=mask_q, other=0.0)
        s = tl.where(mask_t[None, :], s * scale, float("-inf"))
        p = tl.exp(s - lse[:, None])  # padded t -> 0

        g = tl.load(
            g_ptr + b * stride_gb + offs_q[:, None] * stride_gq + offs_c[None, :] * stride_gc,
            mask=mask_q[:, None] & mask_c[None, :], other=0.0,
        ).to(tl.float32)
        sel_p = tl.dot(p, tl.trans(sel_t), input_precision="ieee")  # p[q, col_c]
        w = g * sel_p * inv_heads
        w_sum = tl.sum(w, axis=1)
        ds = tl.dot(w, sel_t, input_precision="ieee") - p * w_sum[:, None]
        ds = ds.to(q_ptr.dtype.element_ty)
        if DOT_IN_F32:
            ds = ds.to(tl.float32)

        dq_base = dq_ptr + b * stride_dqb + h * stride_dqh
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + offs_d
            mask_d = dd < D
            kc = tl.load(
                k_base + offs_t[:, None] * stride_kt + dd[None, :] * stride_kd,
                mask=mask_t[:, None] & mask_d[None, :], other=0.0,
            )
            if DOT_IN_F32:
                kc = kc.to(tl.float32)
            dq = tl.dot(ds, kc, input_precision=PRECISION) * scale
            tl.store(
                dq_base + offs_q[:, None] * stride_dqq + dd[None, :] * stride_dqd,
                dq.to(dq_ptr.dtype.element_ty),
                mask=mask_q[:, None] & mask_d[None, :],
            )

    @triton.jit
    def _word_attn_bwd_dk_kernel(
        q_ptr, k_ptr, col_ptr, lse_ptr, g_ptr, dk_part_ptr,
        H, Q, T, D, C, scale, inv_heads, n_items, items_per_split, n_q_blocks,
        stride_qb, stride_qh, stride_qq, stride_qd,
        stride_kb, stride_kh, stride_kt, stride_kd,
        stride_gb, stride_gq, stride_gc,
        stride_ps, stride_pb, stride_ph, stride_pt,
        BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
        PRECISION: tl.constexpr, DOT_IN_F32: tl.constexpr,
    ):
        """Partial dk[split, bk, h, :, d-chunk] = scale * sum over this split's (frame, Q block)
        items of ds^T q.

        Grid: (n_splits, cdiv(D, BLOCK_D), Bk * H). An item is one (frame, block of Q rows);
        with a broadcast key (Bk = 1) the items run over all frames, otherwise over the
        frame ``bk``. Partials are summed over splits by the launcher (no atomics).
        """
        pid_split = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_bh = tl.program_id(2).to(tl.int64)
        bk = pid_bh // H
        h = pid_bh % H
        offs_t = tl.arange(0, BLOCK_T)
        offs_d = tl.arange(0, BLOCK_D)
        offs_c = tl.arange(0, BLOCK_C)
        mask_t = offs_t < T
        mask_c = offs_c < C
        d_out = pid_d * BLOCK_D + offs_d
        mask_dout = d_out < D

        cols = tl.load(col_ptr + offs_c, mask=mask_c, other=-1).to(tl.int32)
        sel_t = tl.where(cols[:, None] == offs_t[None, :], 1.0, 0.0).to(tl.float32)  # [C, T]
        k_base = k_ptr + bk * stride_kb + h * stride_kh

        dk = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
        start = pid_split * items_per_split
        end = tl.minimum(start + items_per_split, n_items)
        for item in range(start, end):
            b = bk + item // n_q_blocks
            offs_q = (item % n_q_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
            mask_q = offs_q < Q
            q_base = q_ptr + b * stride_qb + h * stride_qh
            s = tl.zeros((BLOCK_Q, BLOCK_T), dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                dd = d0 + offs_d
                mask_d = dd < D
                qt = tl.load(
                    q_base + offs_q[:, None] * stride_qq + dd[None, :] * stride_qd,
                    mask=mask_q[:, None] & mask_d[None, :], other=0.0,
                )
                kt = tl.load(
                    k_base + offs_t[None, :] * stride_kt + dd[:, None] * stride_kd,
                    mask=mask_t[None, :] & mask_d[:, None], other=0.0,
                )
                if DOT_IN_F32:
                    qt = qt.to(tl.float32)
                    kt = kt.to(tl.float32)
                s += tl.dot(qt, kt, input_precision=PRECISION)
            lse = tl.load(lse_ptr + (b * H + h) * Q + offs_q, mask=mask_q, other=0.0)
            s = tl.where(mask_t[None, :], s * scale, float("-inf"))
            p = tl.exp(s - lse[:, None])
            g = tl.load(
                g_ptr + b * stride_gb + offs_q[:, None] * stride_gq + offs_c[None, :] * stride_gc,
                mask=mask_q[:, None] & mask_c[None, :], other=0.0,
            ).to(tl.float32)
            sel_p = tl.dot(p, tl.trans(sel_t), input_precision="ieee")
            w = g * sel_p * inv_heads
            w_sum = tl.sum(w, axis=1)
            ds = tl.dot(w, sel_t, input_precision="ieee") - p * w_sum[:, None]  # rows q >= Q are 0
            ds = ds.to(q_ptr.dtype.element_ty)
            qc = tl.load(
                q_base + offs_q[:, None] * stride_qq + d_out[None, :] * stride_qd,
                mask=mask_q[:, None] & mask_dout[None, :], other=0.0,
            )
            if DOT_IN_F32:
                ds = ds.to(tl.float32)
                qc = qc.to(tl.float32)
            dk += tl.dot(tl.trans(ds), qc, input_precision=PRECISION)

        dk = dk * scale
        tl.store(
            dk_part_ptr + pid_split * stride_ps + bk * stride_pb + h * stride_ph
            + offs_t[:, None] * stride_pt + d_out[None, :],
            dk,
            mask=mask_t[:, None] & mask_dout[None, :],
        )


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _launchable(kernel):
    """The kernel in the form the current Triton mode needs.

    ``@triton.jit`` picks compiled vs interpreted when the module is imported; tests (and
    users) may turn ``TRITON_INTERPRET`` on later, so re-wrap the Python function if needed.
    """
    if _interpret_mode():
        from triton.runtime.interpreter import InterpretedFunction

        return kernel if isinstance(kernel, InterpretedFunction) else InterpretedFunction(kernel.fn)
    return kernel


def _tile_config(query: Tensor, t: int, c: int) -> dict:
    """Block sizes and dot precision for one call (pure function of shapes, dtype, device)."""
    block_t = max(16, triton.next_power_of_2(t))
    if block_t > _MAX_BLOCK_T:
        raise ValueError(f"word_attention_maps (triton): T = {t} is longer than {_MAX_BLOCK_T} text tokens")
    block_c = max(16, triton.next_power_of_2(c))
    if c > _MAX_COLUMNS:
        raise ValueError(f"word_attention_maps (triton): at most {_MAX_COLUMNS} columns per call, got {c}")
    interpret = _interpret_mode()
    return {
        "BLOCK_T": block_t,
        "BLOCK_D": _BLOCK_D,
        "BLOCK_C": block_c,
        "PRECISION": "ieee" if query.dtype == torch.float32 else "tf32",  # ignored for fp16/bf16
        "DOT_IN_F32": bool(interpret and query.dtype == torch.bfloat16),
    }


def _sm_count(device: torch.device) -> int | None:
    """Streaming multiprocessors of a CUDA device (``None`` for the CPU interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None


def _pick_block_q(q_len: int, n_rows: int, block_t: int, sm_count: int | None, base: int) -> int:
    """Rows per program: ``base`` for T <= 128 (half for longer T, so the logit tile keeps its
    size), halved while a grid of ``n_rows * cdiv(Q, rows)`` programs would leave SMs idle."""
    bq = base if block_t <= 128 else max(16, base // 2)
    bq = min(bq, max(16, triton.next_power_of_2(q_len)))
    if sm_count is not None:
        while bq > 16 and n_rows * triton.cdiv(q_len, bq) < 2 * sm_count:
            bq //= 2
    return bq


def _key_batch_stride(query: Tensor, key: Tensor) -> int:
    """Batch stride of the key as the kernels see it (0 when one key serves all frames)."""
    return 0 if key.shape[0] == 1 else key.stride(0)


def _word_attention_forward(
    query: Tensor, key: Tensor, columns: Tensor, scale: float, block_q: int | None = None
) -> tuple[Tensor, Tensor]:
    """Launch the forward kernel; returns ``out [B, Q, C]`` (query dtype) and ``lse [B, H, Q]`` (fp32)."""
    b, h, q_len, d = query.shape
    t, c = key.shape[2], columns.numel()
    cfg = _tile_config(query, t, c)
    base = 32 if query.dtype == torch.float32 else 64  # fp32 tiles need twice the registers
    bq = block_q or _pick_block_q(q_len, b, cfg["BLOCK_T"], _sm_count(query.device), base)
    out = torch.empty((b, q_len, c), device=query.device, dtype=query.dtype)
    lse = torch.empty((b, h, q_len), device=query.device, dtype=torch.float32)
    grid = (triton.cdiv(q_len, bq), b)
    _launchable(_word_attn_fwd_kernel)[grid](
        query, key, columns, out, lse,
        h, q_len, t, d, c, float(scale), 1.0 / h,
        *query.stride(),
        _key_batch_stride(query, key), key.stride(1), key.stride(2), key.stride(3),
        *out.stride(),
        BLOCK_Q=bq, **cfg, num_warps=_NUM_WARPS,
    )
    return out, lse


def _word_attention_backward(
    grad_out: Tensor,
    query: Tensor,
    key: Tensor,
    columns: Tensor,
    lse: Tensor,
    scale: float,
    need_dq: bool,
    need_dk: bool,
    block_q: int | None = None,
    dk_splits: int | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """Launch the backward kernels; returns ``(dq, dk)`` (``None`` where not needed).

    ``block_q`` and ``dk_splits`` override the tiling heuristics (tests use them to reach the
    multi-block and multi-split code paths on small shapes).
    """
    b, h, q_len, d = query.shape
    bk, t, c = key.shape[0], key.shape[2], columns.numel()
    cfg = _tile_config(query, t, c)
    kb_stride = _key_batch_stride(query, key)
    dq = dk = None
    if need_dq:
        bq = block_q or _pick_block_q(q_len, b * h, cfg["BLOCK_T"], _sm_count(query.device), 32)
        dq = torch.empty_like(query)
        grid = (triton.cdiv(q_len, bq), b * h)
        _launchable(_word_attn_bwd_dq_kernel)[grid](
            query, key, columns, lse, grad_out, dq,
            h, q_len, t, d, c, float(scale), 1.0 / h,
            *query.stride(),
            kb_stride, key.stride(1), key.stride(2), key.stride(3),
            *grad_out.stride(),
            *dq.stride(),
            BLOCK_Q=bq, **cfg, num_warps=_NUM_WARPS,
        )
    if need_dk:
        bq = block_q or _pick_block_q(q_len, 1, cfg["BLOCK_T"], None, 32)  # parallel over splits instead
        n_q_blocks = triton.cdiv(q_len, bq)
        frames_per_key = b if (bk == 1 and b > 1) else 1
        n_items = frames_per_key * n_q_blocks
        n_d = triton.cdiv(d, cfg["BLOCK_D"])
        sm_count = _sm_count(query.device)
        target = 1 if sm_count is None else 4 * sm_count  # interpreter: fewest programs is fastest
        n_splits = dk_splits if dk_splits is not None else triton.cdiv(target, n_d * bk * h)
        n_splits = max(1, min(n_items, n_splits))
        items_per_split = triton.cdiv(n_items, n_splits)
        n_splits = triton.cdiv(n_items, items_per_split)
        part = torch.empty((n_splits, bk, h, t, d), device=query.device, dtype=torch.float32)
        grid = (n_splits, n_d, bk * h)
        _launchable(_word_attn_bwd_dk_kernel)[grid](
            query, key, columns, lse, grad_out, part,
            h, q_len, t, d, c, float(scale), 1.0 / h, n_items, items_per_split, n_q_blocks,
            *query.stride(),
            kb_stride, key.stride(1), key.stride(2), key.stride(3),
            *grad_out.stride(),
            part.stride(0), part.stride(1), part.stride(2), part.stride(3),
            BLOCK_Q=bq, **cfg, num_warps=_NUM_WARPS,
        )
        dk = part.sum(dim=0).to(key.dtype)
    return dq, dk


# --------------------------------------------------------------------------------------------
# torch.library custom ops (fake implementations for FakeTensorMode / torch.compile) and autograd
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("longedit::word_attention_fwd", mutates_args=())
def word_attention_fwd_op(query: Tensor, key: Tensor, columns: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """The fused forward as a registered op: ``(out [B, Q, C] in query.dtype, lse [B, H, Q] fp32)``."""
    return _word_attention_forward(query, key, columns, scale)


@word_attention_fwd_op.register_fake
def _word_attention_fwd_fake(query: Tensor, key: Tensor, columns: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Shapes and dtypes of the forward without running it (memory simulation, tracing)."""
    b, h, q_len, _ = query.shape
    out = query.new_empty((b, q_len, columns.shape[0]))
    lse = query.new_empty((b, h, q_len), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("longedit::word_attention_bwd", mutates_args=())
def word_attention_bwd_op(
    grad_out: Tensor, query: Tensor, key: Tensor, columns: Tensor, lse: Tensor, scale: float, need_dq: bool, need_dk: bool
) -> tuple[Tensor, Tensor]:
    """The fused backward as a registered op: ``(dq, dk)``; an empty tensor stands for a gradient not asked for."""
    dq, dk = _word_attention_backward(grad_out, query, key, columns, lse, scale, need_dq, need_dk)
    return (query.new_empty(0) if dq is None else dq), (key.new_empty(0) if dk is None else dk)


@word_attention_bwd_op.register_fake
def _word_attention_bwd_fake(
    grad_out: Tensor, query: Tensor, key: Tensor, columns: Tensor, lse: Tensor, scale: float, need_dq: bool, need_dk: bool
) -> tuple[Tensor, Tensor]:
    """Shapes of the backward: dq like query, dk like key (empty where not needed). The dk kernel's
    fp32 partial sums are a temporary of the real op (``[splits, Bk, H, T, D]``, a few MiB at most)."""
    dq = torch.empty_like(query) if need_dq else query.new_empty(0)
    dk = torch.empty_like(key) if need_dk else key.new_empty(0)
    return dq, dk


class WordAttentionMapsFunction(torch.autograd.Function):
    """Fused forward/backward; saves ``query``, ``key``, ``columns`` and the fp32 logsumexp
    ``[B, H, Q]`` only — never the ``[B, H, Q, T]`` probabilities.

    Both directions go through the registered ops (``torch.ops.longedit.word_attention_fwd`` /
    ``_bwd``), so fake tensors (``longedit.bench.simulate``) take this path too, on their fake
    implementations."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, columns: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        out, lse = torch.ops.longedit.word_attention_fwd(query, key, columns, float(scale))
        ctx.save_for_backward(query, key, columns, lse)
        ctx.scale = float(scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        query, key, columns, lse = ctx.saved_tensors
        need_dq, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dq, dk = torch.ops.longedit.word_attention_bwd(
            grad_out, query, key, columns, lse, ctx.scale, need_dq, need_dk
        )
        return (dq if need_dq else None), (dk if need_dk else None), None, None


# --------------------------------------------------------------------------------------------
# Public dispatcher
# --------------------------------------------------------------------------------------------


def _is_fake(tensor: Tensor) -> bool:
    """Whether `tensor` is a FakeTensor (shapes only, no data: `longedit.bench.simulate`)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(tensor, FakeTensor)


def _triton_supports(query: Tensor, key: Tensor, columns: Tensor) -> str | None:
    """Why the Triton path cannot take these inputs, or ``None`` when it can.

    Fake tensors (FakeTensorMode: the memory simulation) take it wherever CUDA would: only the
    ops' fake implementations run, so neither triton nor a GPU is needed."""
    if query.dtype not in _TRITON_DTYPES:
        return f"dtype {query.dtype} is not supported (fp32, fp16, bf16)"
    if 1 << max(4, (key.shape[2] - 1).bit_length()) > _MAX_BLOCK_T:
        return f"T = {key.shape[2]} is longer than {_MAX_BLOCK_T} text tokens"
    if columns.numel() > _MAX_COLUMNS:
        return f"at most {_MAX_COLUMNS} columns per call, got {columns.numel()}"
    if _is_fake(query):
        return None
    if triton is None:
        return "triton is not installed (pip install 'longedit[triton]')"
    if not query.is_cuda and not _interpret_mode():
        return "CPU tensors need CUDA or the Triton interpreter (TRITON_INTERPRET=1 before triton is imported)"
    if not query.is_cuda and not _interpreter_ready():
        return (
            "TRITON_INTERPRET=1 is set but triton was first imported without it; "
            "set it before triton is first imported (e.g. in the environment of the process)"
        )
    if query.device != key.device:
        return f"query on {query.device} but key on {key.device}"
    return None


def word_attention_maps(
    query: Tensor,
    key: Tensor,
    columns: Tensor | Sequence[int],
    scale: float,
    *,
    backend: str = "auto",
) -> Tensor:
    """Head-averaged cross-attention probabilities ``[B, Q, C]`` of the selected text columns.

    Args:
        query: ``[B, H, Q, D]`` image-token queries (any strides).
        key: ``[B, H, T, D]`` text-token keys, or ``[1, H, T, D]`` shared by all frames.
        columns: ``[C]`` integer indices into ``T`` (a list of ints is accepted; duplicates
            allowed). Range-checked when on the CPU; CUDA indices are not (that would cost a
            device sync per call) and an out-of-range one yields a map of zeros on the Triton path.
        scale: softmax temperature, usually ``D ** -0.5``.
        backend: ``"auto"`` uses the fused Triton kernels for CUDA inputs when Triton is
            importable and the inputs are supported (fp32/fp16/bf16, T <= 256, C <= 128),
            else the reference; ``"triton"`` forces the kernels (on CPU only under
            ``TRITON_INTERPRET=1``) and raises ``ValueError`` if they cannot run;
            ``"reference"`` forces plain PyTorch.

    Returns:
        ``[B, Q, C]`` in ``query.dtype``; differentiable w.r.t. ``query`` and ``key``. The
        Triton path keeps ``O(B*H*Q)`` extra memory for backward instead of ``O(B*H*Q*T)``.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"word_attention_maps: backend must be one of {_BACKENDS}, got {backend!r}")
    columns = _as_columns(columns)
    _check_inputs(query, key, columns)
    use_triton = backend == "triton"
    if backend != "reference":
        why_not = _triton_supports(query, key, columns)
        if backend == "triton" and why_not is not None:
            raise ValueError(f"word_attention_maps: backend='triton' cannot run: {why_not}")
        use_triton = why_not is None and (backend == "triton" or query.is_cuda)
    if not use_triton:
        return word_attention_maps_reference(query, key, columns, scale)
    columns = columns.to(device=query.device, dtype=torch.int64).contiguous()
    return WordAttentionMapsFunction.apply(query, key, columns, float(scale))
