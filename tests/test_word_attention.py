"""Tests for longedit.kernels.word_attention (fused head-averaged word attention maps).

The Triton kernels run on CPU through Triton's interpreter. With triton 3.9,
``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported (``tl.zeros``,
``tl.max``... are ``@triton.jit`` helpers that only become interpreter functions then), and
setting it here at import time would leak into every other test of the session. So:

* the ``test_interp_*`` tests run in this process when it was started with
  ``TRITON_INTERPRET=1`` (e.g. ``TRITON_INTERPRET=1 pytest tests/test_word_attention.py``);
* otherwise they skip here and ``test_interpreter_tests_in_subprocess`` runs them all in one
  child ``pytest`` with the variable set (one extra interpreter start-up, ~3 s), failing
  with the child's report if any fails.

Interpreter tests use small shapes: the interpreter runs each program in Python/NumPy.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longedit.kernels import word_attention as wa
from longedit.kernels.benchmark import benchmark_word_attention
from longedit.kernels.word_attention import (
    triton_available,
    word_attention_maps,
    word_attention_maps_reference,
)

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Tolerances, as max|got - want| / max|want| for gradients and absolute for the maps (in [0, 1]).
# fp32: the kernels use IEEE fp32 products, differences are summation order only.
# fp16/bf16: inputs are the same low-precision tensors for both paths; the fused backward rounds
# ds to the input dtype before its products (FlashAttention-style), the reference does not.
TOLERANCES = {
    torch.float32: {"out": 1e-5, "grad": 1e-4},
    torch.float16: {"out": 2e-3, "grad": 1e-2},
    torch.bfloat16: {"out": 1e-2, "grad": 4e-2},
}


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run Triton kernels on CPU through the interpreter (needs a TRITON_INTERPRET=1 process)."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if not wa._interpreter_ready():
        pytest.skip("triton was imported in compiled mode; run by test_interpreter_tests_in_subprocess")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _inputs(
    b: int, h: int, q: int, d: int, t: int, *, key_batch: int | None = None, dtype=torch.float32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random query/key with logits of realistic spread (a few units after scaling)."""
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, h, q, d, generator=gen) * 1.5
    key = torch.randn(key_batch or b, h, t, d, generator=gen) * 1.5
    return query.to(dtype), key.to(dtype)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def _naive_maps(query: torch.Tensor, key: torch.Tensor, columns: list[int], scale: float) -> torch.Tensor:
    """Independent formulation: full softmax, one column at a time, then the head mean."""
    key = key.double().expand(query.shape[0], -1, -1, -1)
    probs = torch.softmax(torch.einsum("bhqd,bhtd->bhqt", query.double(), key) * scale, dim=-1)
    return torch.stack([probs[..., c] for c in columns], dim=-1).sum(dim=1) / query.shape[1]


def _compare_triton_to_reference(
    shape: dict, columns: list[int], dtype: torch.dtype, *, key_grad: bool = False, strided: bool = False
) -> None:
    """Forward and gradients of backend='triton' against the reference on the same inputs."""
    b, h, q, d, t = shape["B"], shape["H"], shape["Q"], shape["D"], shape["T"]
    query, key = _inputs(b, h, q, d, t, key_batch=shape.get("KB"), dtype=dtype)
    if strided:  # [B, Q, H, D] storage viewed as [B, H, Q, D], as diffusers' processors produce it
        query = query.transpose(1, 2).contiguous().transpose(1, 2)
        key = key.transpose(1, 2).contiguous().transpose(1, 2)
        assert not query.is_contiguous()
    cols = torch.tensor(columns)
    scale = d**-0.5
    grads_of = (query, key) if key_grad else (query,)
    for x in grads_of:
        x.requires_grad_(True)

    got = word_attention_maps(query, key, cols, scale, backend="triton")
    want = word_attention_maps_reference(query, key, cols, scale)
    assert got.shape == want.shape == (b, q, len(columns))
    assert got.dtype == dtype
    assert got.grad_fn is not None and "WordAttentionMaps" in type(got.grad_fn).__name__
    tol = TOLERANCES[dtype]
    assert (got.float() - want.float()).abs().max().item() <= tol["out"]

    upstream = torch.randn(want.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got_grads = torch.autograd.grad(got, grads_of, upstream)
    want_grads = torch.autograd.grad(want, grads_of, upstream)
    for name, g_got, g_want in zip(("dq", "dk"), got_grads, want_grads):
        assert g_got.shape == g_want.shape and g_got.dtype == dtype
        err = _rel_err(g_got, g_want)
        assert err <= tol["grad"], f"{name} relative error {err:.2e} > {tol['grad']:.0e}"


# ------------------------------------------------------------------------------------------
# Reference against an independent formulation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_batch", [None, 1])
def test_reference_matches_naive_softmax(key_batch: int | None) -> None:
    query, key = _inputs(3, 4, 11, 8, 77, key_batch=key_batch, dtype=torch.float64)
    columns = [0, 5, 5, 76]
    scale = 8**-0.5
    query.requires_grad_(True)
    key.requires_grad_(True)
    got = word_attention_maps_reference(query, key, torch.tensor(columns), scale)
    want = _naive_maps(query, key, columns, scale)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, (query, key), upstream)
    want_grads = torch.autograd.grad(want, (query, key), upstream)
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


def test_reference_gradcheck_float64() -> None:
    query, key = _inputs(2, 3, 5, 4, 7, key_batch=1, dtype=torch.float64)
    columns = torch.tensor([0, 3, 6])
    query.requires_grad_(True)
    key.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda q, k: word_attention_maps_reference(q, k, columns, 0.7), (query, key), eps=1e-6, atol=1e-7
    )


def test_reference_keeps_dtype_and_sums_to_one_over_all_columns() -> None:
    query, key = _inputs(2, 2, 6, 8, 10, dtype=torch.float16)
    maps = word_attention_maps_reference(query, key, torch.arange(10), 0.3)
    assert maps.dtype == torch.float16
    torch.testing.assert_close(maps.float().sum(-1), torch.ones(2, 6), atol=5e-3, rtol=0)


# ------------------------------------------------------------------------------------------
# Triton kernels (interpreter on CPU) against the reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "columns"),
    [
        ({"B": 3, "H": 5, "Q": 37, "D": 40, "T": 77}, [0, 9, 76]),  # odd Q, D not a power of 2
        ({"B": 1, "H": 8, "Q": 256, "D": 80, "T": 77}, [76]),  # C = 1, several Q blocks
        ({"B": 2, "H": 3, "Q": 70, "D": 160, "T": 20, "KB": 1}, [0, 19, 3, 3]),  # key broadcast, T != 77, dup column
        ({"B": 2, "H": 2, "Q": 9, "D": 16, "T": 150}, list(range(0, 150, 8))),  # C = 19, T > 128
        ({"B": 2, "H": 3, "Q": 21, "D": 40, "T": 77, "KB": 1}, list(range(1, 76))),  # the official 75 columns
    ],
    ids=["odd", "c1-multiblock", "broadcast-T20", "C19-T150", "official-C75"],
)
def test_interp_triton_matches_reference_fp32(interpret: None, shape: dict, columns: list[int]) -> None:
    _compare_triton_to_reference(shape, columns, torch.float32)


@pytest.mark.parametrize("key_batch", [None, 1])
def test_interp_triton_key_gradient_fp32(interpret: None, key_batch: int | None) -> None:
    shape = {"B": 3, "H": 2, "Q": 41, "D": 40, "T": 77, "KB": key_batch}
    _compare_triton_to_reference(shape, [0, 7, 76], torch.float32, key_grad=True)


def test_interp_triton_strided_inputs(interpret: None) -> None:
    shape = {"B": 2, "H": 3, "Q": 33, "D": 24, "T": 77}
    _compare_triton_to_reference(shape, [1, 2, 70], torch.float32, key_grad=True, strided=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interp_triton_half_precision(interpret: None, dtype: torch.dtype) -> None:
    shape = {"B": 2, "H": 4, "Q": 37, "D": 40, "T": 77, "KB": 1}
    _compare_triton_to_reference(shape, [0, 5, 76], dtype, key_grad=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interp_triton_official_75_columns_half_precision(interpret: None, dtype: torch.dtype) -> None:
    """The official RAD normalisation records columns 1..75 of 77: BLOCK_C = 128."""
    shape = {"B": 2, "H": 2, "Q": 19, "D": 40, "T": 77, "KB": 1}
    _compare_triton_to_reference(shape, list(range(1, 76)), dtype, key_grad=True)


def test_interp_backward_tiling_paths(interpret: None) -> None:
    """Several Q blocks per frame and several dk splits (the heuristics pick one on CPU)."""
    query, key = _inputs(3, 2, 45, 40, 77, key_batch=1)
    cols = torch.tensor([0, 11, 76])
    scale = 40**-0.5
    out, lse = wa._word_attention_forward(query, key, cols, scale, block_q=16)
    want_lse = torch.logsumexp(torch.matmul(query, key.transpose(-1, -2)) * scale, dim=-1)
    torch.testing.assert_close(lse, want_lse, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    dq, dk = wa._word_attention_backward(upstream, query, key, cols, lse, scale, True, True, block_q=16, dk_splits=4)

    q_ref, k_ref = query.clone().requires_grad_(True), key.clone().requires_grad_(True)
    ref = word_attention_maps_reference(q_ref, k_ref, cols, scale)
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-6)
    dq_ref, dk_ref = torch.autograd.grad(ref, (q_ref, k_ref), upstream)
    assert _rel_err(dq, dq_ref) < 1e-4
    assert _rel_err(dk, dk_ref) < 1e-4


def test_interp_fused_saves_no_probability_tensor(interpret: None) -> None:
    """The memory claim: backward state is q, k, columns and an fp32 [B, H, Q] logsumexp."""
    b, h, q, d, t = 2, 3, 24, 16, 77
    query, key = _inputs(b, h, q, d, t)
    query.requires_grad_(True)
    cols = torch.tensor([0, 4, 76])

    def saved(fn) -> list[torch.Tensor]:
        packed: list[torch.Tensor] = []

        def pack(x: torch.Tensor) -> torch.Tensor:
            packed.append(x)
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn(query, key, cols, d**-0.5).sum().backward()
        return packed

    fused = saved(lambda *a: word_attention_maps(*a, backend="triton"))
    reference = saved(word_attention_maps_reference)
    probs_numel = b * h * q * t
    assert all(x.numel() < probs_numel for x in fused)
    assert any(x.numel() == probs_numel for x in reference)
    fused_bytes = sum(x.numel() * x.element_size() for x in fused)
    extra = fused_bytes - query.nbytes - key.nbytes - cols.nbytes
    assert extra == b * h * q * 4  # the fp32 logsumexp
    reference_bytes = sum(x.numel() * x.element_size() for x in reference)
    assert reference_bytes >= probs_numel * 4 > fused_bytes - query.nbytes - key.nbytes


@pytest.mark.slow
@needs_triton
def test_interpreter_tests_in_subprocess() -> None:
    """Run the test_interp_* tests in a child pytest started with TRITON_INTERPRET=1."""
    if wa._interpreter_ready():
        pytest.skip("this process runs the interpreter tests itself")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-k", "test_interp_", "-p", "no:cacheprovider"]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    report = proc.stdout[-8000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    summary = proc.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "deselected" in summary, report


@needs_triton
def test_interpreter_needs_env_before_triton_import(monkeypatch: pytest.MonkeyPatch) -> None:
    if wa._interpreter_ready():
        pytest.skip("triton was imported in interpreter mode in this process")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    query, key = _inputs(1, 2, 5, 8, 77)
    with pytest.raises(ValueError, match="before triton is first imported"):
        word_attention_maps(query, key, [0], 0.35, backend="triton")


def test_interp_custom_ops_pass_opcheck(interpret: None) -> None:
    """The registered ops' fake implementations agree with the real kernels (shapes, dtypes, strides)."""
    query, key = _inputs(2, 3, 21, 16, 77, key_batch=1)
    cols = torch.tensor([0, 4, 76])
    torch.library.opcheck(wa.word_attention_fwd_op, (query, key, cols, 0.25), test_utils=("test_schema", "test_faketensor"))
    out, lse = wa.word_attention_fwd_op(query, key, cols, 0.25)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    for need_dq, need_dk in ((True, True), (True, False)):
        torch.library.opcheck(
            wa.word_attention_bwd_op, (grad, query, key, cols, lse, 0.25, need_dq, need_dk),
            test_utils=("test_schema", "test_faketensor"),
        )


# ------------------------------------------------------------------------------------------
# Fake implementations (FakeTensorMode: the memory simulation's path)
# ------------------------------------------------------------------------------------------


def test_fake_forward_gives_shapes_and_dtypes_on_fake_cuda() -> None:
    """Forward on fake CUDA fp16 tensors (no GPU, no triton launch): out [B, Q, C] fp16, lse [B, H, Q] fp32."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    with FakeTensorMode():
        query = torch.empty(16, 8, 256, 160, device="cuda", dtype=torch.float16)
        key = torch.empty(1, 8, 77, 160, device="cuda", dtype=torch.float16)
        cols = torch.arange(1, 76, device="cuda")
        out, lse = torch.ops.longedit.word_attention_fwd(query, key, cols, 160**-0.5)
    assert isinstance(out, FakeTensor) and isinstance(lse, FakeTensor)
    assert out.shape == (16, 256, 75) and out.dtype == torch.float16 and out.device.type == "cuda"
    assert lse.shape == (16, 8, 256) and lse.dtype == torch.float32 and lse.device.type == "cuda"


@pytest.mark.parametrize("key_grad", [False, True])
def test_fake_dispatcher_forward_and_backward(key_grad: bool) -> None:
    """backend='triton' on fake tensors takes the fused op (no triton needed) and autograd gives dq/dk
    of the inputs' shapes; what it saves for backward is q, k, columns and the fp32 lse only."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    b, h, q, d, t = 4, 8, 1024, 40, 77
    packed: list[torch.Tensor] = []
    with FakeTensorMode(), torch.autograd.graph.saved_tensors_hooks(lambda x: packed.append(x) or x, lambda x: x):
        query = torch.empty(b, h, q, d, dtype=torch.float16).requires_grad_(True)
        key = torch.empty(1, h, t, d, dtype=torch.float16).requires_grad_(key_grad)
        cols = torch.tensor([3, 4])
        maps = word_attention_maps(query, key, cols, d**-0.5, backend="triton")
        grads = torch.autograd.grad(maps.sum(), (query, key) if key_grad else (query,))
    assert "WordAttentionMaps" in type(maps.grad_fn).__name__
    assert maps.shape == (b, q, 2) and maps.dtype == torch.float16
    assert [tuple(g.shape) for g in grads] == [(b, h, q, d), (1, h, t, d)][: len(grads)]
    assert all(g.dtype == torch.float16 for g in grads)
    saved = sum(x.numel() * x.element_size() for x in packed)
    assert saved == query.nbytes + key.nbytes + cols.nbytes + b * h * q * 4


# ------------------------------------------------------------------------------------------
# Dispatcher
# ------------------------------------------------------------------------------------------


def test_auto_on_cpu_uses_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    query, key = _inputs(1, 2, 5, 8, 77)
    out = word_attention_maps(query.requires_grad_(True), key, [0, 3], 0.35)
    assert "WordAttentionMaps" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, word_attention_maps_reference(query, key, torch.tensor([0, 3]), 0.35))


@needs_triton
def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    query, key = _inputs(1, 2, 5, 8, 77)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        word_attention_maps(query, key, [0], 0.35, backend="triton")


@pytest.mark.parametrize(
    ("query_shape", "key_shape", "columns", "match"),
    [
        ((1, 2, 5, 8), (1, 2, 77, 8), [77], r"columns must lie in \[0, 77\)"),
        ((1, 2, 5, 8), (1, 2, 77, 8), [-1], r"columns must lie"),
        ((2, 2, 5, 8), (3, 2, 77, 8), [0], "key batch must be 2 or 1"),
        ((1, 2, 5, 8), (1, 3, 77, 8), [0], "heads 2"),
        ((1, 2, 5), (1, 2, 77, 8), [0], r"\[B, H, Q, D\]"),
        ((1, 2, 5, 8), (1, 2, 77, 8), [], "non-empty"),
    ],
)
def test_bad_inputs_raise(query_shape, key_shape, columns, match) -> None:
    with pytest.raises(ValueError, match=match):
        word_attention_maps(torch.zeros(query_shape), torch.zeros(key_shape), torch.tensor(columns).long(), 1.0)


def test_unknown_backend_raises() -> None:
    with pytest.raises(ValueError, match="backend"):
        word_attention_maps(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 3, 4), [0], 1.0, backend="cuda")


def test_interp_forced_triton_rejects_float64(interpret: None) -> None:
    with pytest.raises(ValueError, match="dtype"):
        query, key = torch.zeros(1, 1, 2, 4, dtype=torch.float64), torch.zeros(1, 1, 3, 4, dtype=torch.float64)
        word_attention_maps(query, key, [0], 1.0, backend="triton")


# ------------------------------------------------------------------------------------------
# Benchmark helper
# ------------------------------------------------------------------------------------------


def test_benchmark_runs_on_tiny_shapes() -> None:
    rows = benchmark_word_attention([{"B": 2, "H": 2, "Q": 16, "D": 8, "T": 77, "C": 2}], repeats=2)
    assert len(rows) == 1
    row = rows[0]
    for key in (
        "shape", "backend_fused", "fused_ms", "reference_ms", "speedup",
        "fused_saved_bytes", "reference_saved_bytes", "memory_ratio",
    ):
        assert key in row
    assert row["fused_ms"] > 0 and row["reference_ms"] > 0
    assert row["reference_saved_bytes"] >= 2 * 2 * 16 * 77 * 4
    if not torch.cuda.is_available():
        assert row["backend_fused"] == "reference" and "note" in row


# ------------------------------------------------------------------------------------------
# GPU only: the compiled kernels
# ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape",
    [
        {"B": 4, "H": 8, "Q": 1024, "D": 80, "T": 77},
        {"B": 3, "H": 8, "Q": 256, "D": 160, "T": 77, "KB": 1},
        {"B": 2, "H": 5, "Q": 4099, "D": 40, "T": 154},
    ],
)
def test_compiled_kernels_match_reference(shape: dict, dtype: torch.dtype) -> None:
    b, h, q, d, t = shape["B"], shape["H"], shape["Q"], shape["D"], shape["T"]
    query, key = _inputs(b, h, q, d, t, key_batch=shape.get("KB"), dtype=dtype)
    query, key = query.cuda().requires_grad_(True), key.cuda().requires_grad_(True)
    cols = torch.tensor([0, 3, 9, t - 1], device="cuda")
    got = word_attention_maps(query, key, cols, d**-0.5)  # auto -> triton on CUDA
    assert "WordAttentionMaps" in type(got.grad_fn).__name__
    want = word_attention_maps_reference(query, key, cols, d**-0.5)
    tol = TOLERANCES[dtype]
    assert (got.float() - want.float()).abs().max().item() <= tol["out"]
    upstream = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, (query, key), upstream)
    want_grads = torch.autograd.grad(want, (query, key), upstream)
    for g_got, g_want in zip(got_grads, want_grads):
        assert _rel_err(g_got, g_want) <= tol["grad"]


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_compiled_benchmark_uses_less_memory() -> None:
    rows = benchmark_word_attention(
        [{"B": 16, "H": 8, "Q": 1024, "D": 80, "T": 77, "C": 4}], repeats=5, device="cuda", dtype=torch.float16
    )
    row = rows[0]
    assert row["backend_fused"] == "triton"
    assert row["memory_ratio"] > 2.0
    assert math.isfinite(row["speedup"])
