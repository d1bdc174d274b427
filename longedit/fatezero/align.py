"""Token alignment of the source and the edited prompt (prompt-to-prompt "refinement" mapping).

For every position j of the edited prompt's 77 CLIP tokens: `mapper[j]` is the position of the same
token in the source prompt and `alphas[j]` is 1 where the edited token takes the source's
cross-attention map (words present in both prompts, the start token, the end token and the padding)
and 0 for new words, which keep their own maps. Words are matched as token sequences with difflib's
longest-matching-blocks alignment (the same result as prompt-to-prompt's global alignment for the
usual edits: replaced, inserted or removed words).

`changed` lists the source positions of words that do not survive in the edited prompt: their
cross-attention is where the edit happens, so it makes FateZero's self-attention blending mask.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenAlignment:
    """Edited-prompt position -> source position, the blend weight of each, and the changed source tokens."""

    mapper: tuple[int, ...]
    alphas: tuple[float, ...]
    changed: tuple[int, ...]

    def mapper_tensor(self, device: torch.device | None = None) -> torch.Tensor:
        return torch.tensor(self.mapper, dtype=torch.long, device=device)

    def alphas_tensor(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor(self.alphas, dtype=dtype, device=device)

    @property
    def replaced(self) -> int:
        """How many edited-prompt positions take the source's map."""
        return int(sum(self.alphas))


def _ids(tokenizer, prompt: str, length: int) -> list[int]:
    return tokenizer(prompt, truncation=True, max_length=length).input_ids


def align_prompts(tokenizer, source: str, target: str, length: int | None = None) -> TokenAlignment:
    """Align `target` to `source` over `length` (77) token positions; see the module docstring."""
    length = length or getattr(tokenizer, "model_max_length", 77)
    src, tgt = _ids(tokenizer, source, length), _ids(tokenizer, target, length)
    src_words, tgt_words = src[1:-1], tgt[1:-1]
    mapper = list(range(length))
    alphas = [1.0] * length
    kept_source: set[int] = set()
    for j in range(1, len(tgt) - 1):
        mapper[j], alphas[j] = 0, 0.0
    matcher = difflib.SequenceMatcher(a=src_words, b=tgt_words, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            source_position, target_position = block.a + k + 1, block.b + k + 1
            mapper[target_position], alphas[target_position] = source_position, 1.0
            kept_source.add(source_position)
    # End token and padding: the k-th position after the edited prompt's words takes the source's k-th.
    for j in range(len(tgt) - 1, length):
        mapper[j] = min(len(src) - 1 + (j - (len(tgt) - 1)), length - 1)
    changed = tuple(i for i in range(1, len(src) - 1) if i not in kept_source)
    return TokenAlignment(tuple(mapper), tuple(alphas), changed)
