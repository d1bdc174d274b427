"""FLOP formulas of longedit's own ops for `torch.utils.flop_counter.FlopCounterMode`, and FLOPs per
edited frame from the simulated passes (`longedit.bench.simulate`).

The fused word-attention op does the same matrix products as the eager maps it replaces, but only
the logits ``q k^T`` (its softmax and column selection are elementwise): forward ``2 B H Q T D``;
backward recomputes the logits and forms ``dq`` (and ``dk`` when asked): ``2 B H Q T D`` each.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

import longedit.kernels.word_attention  # noqa: F401  defines torch.ops.longedit.word_attention_*


def _logit_flops(query_shape, key_shape) -> int:
    b, h, q, d = query_shape
    return 2 * b * h * q * key_shape[2] * d


@register_flop_formula(torch.ops.longedit.word_attention_fwd)
def _word_attention_fwd_flops(query_shape, key_shape, *args, out_shape=None, **kwargs) -> int:
    return _logit_flops(query_shape, key_shape)


@register_flop_formula(torch.ops.longedit.word_attention_bwd)
def _word_attention_bwd_flops(grad_shape, query_shape, key_shape, columns_shape, lse_shape, scale, need_dq, need_dk,
                              *args, out_shape=None, **kwargs) -> int:
    return _logit_flops(query_shape, key_shape) * (1 + int(bool(need_dq)) + int(bool(need_dk)))
