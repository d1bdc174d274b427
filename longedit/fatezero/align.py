"""Token alignment of the source and the edited prompt: prompt-to-prompt's mappers, as FateZero uses them.

* `align_prompts` (the "refine" mapping, for added or removed words): for every position j of the
  edited prompt's 77 CLIP tokens, `mapper[j]` is the position of the same token in the source
  prompt and `alphas[j]` is 1 where the edited token takes the source's cross-attention map and 0
  for new words, which keep their own maps. The tokens are aligned with prompt-to-prompt's global
  alignment (`seq_aligner.get_mapper`: Needleman-Wunsch, gap 0, match 1, mismatch -1); positions past
  the edited prompt (padding) take the source's map at the same position, as the official code.
* `replacement_mapper` (the "replace" controller, for word swaps): a [77, 77] matrix that sends each
  swapped source word's map to the new word (`seq_aligner.get_replacement_mapper`).
* `word_indices`: token positions of a space-separated word (`ptp_utils.get_word_inds`), for the
  blend words and the equalizer.

`changed` lists the source positions of words that do not survive in the edited prompt: their
cross-attention is where the edit happens, so they are the default blend words of FateZero's
self-attention blending mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GAP, MATCH, MISMATCH = 0, 1, -1


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


def global_alignment(x: list[int], y: list[int]) -> list[int]:
    """For each position of `y`, the aligned position of `x` or -1 (an inserted token); p2p's global_align."""
    rows, cols = len(x) + 1, len(y) + 1
    score = np.zeros((rows, cols), dtype=np.int64)
    score[0, 1:] = np.arange(1, cols) * GAP
    score[1:, 0] = np.arange(1, rows) * GAP
    trace = np.zeros((rows, cols), dtype=np.int8)
    trace[0, 1:], trace[1:, 0], trace[0, 0] = 1, 2, 4
    for i in range(1, rows):
        for j in range(1, cols):
            left, up = score[i, j - 1] + GAP, score[i - 1, j] + GAP
            diagonal = score[i - 1, j - 1] + (MATCH if x[i - 1] == y[j - 1] else MISMATCH)
            score[i, j] = max(left, up, diagonal)
            trace[i, j] = 1 if score[i, j] == left else 2 if score[i, j] == up else 3
    mapped: list[int] = []
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        move = trace[i, j]
        if move == 3:
            i, j = i - 1, j - 1
            mapped.append(i)
        elif move == 1:
            j -= 1
            mapped.append(-1)
        elif move == 2:
            i -= 1
        else:
            break
    return mapped[::-1]


def align_prompts(tokenizer, source: str, target: str, length: int | None = None) -> TokenAlignment:
    """The refine mapping of `target` to `source` over `length` (77) token positions; see the module docstring."""
    length = length or getattr(tokenizer, "model_max_length", 77)
    src, tgt = _ids(tokenizer, source, length), _ids(tokenizer, target, length)
    aligned = global_alignment(src, tgt)
    mapper = list(range(length))
    alphas = [1.0] * length
    for j, i in enumerate(aligned):
        mapper[j], alphas[j] = (i, 1.0) if i >= 0 else (0, 0.0)
    kept = {i for i in aligned if i >= 0}
    changed = tuple(i for i in range(1, len(src) - 1) if i not in kept)
    return TokenAlignment(tuple(mapper), tuple(alphas), changed)


def _word_positions(tokenizer, text: str, length: int = 77) -> list[tuple[int, ...]]:
    """Token positions of each space-separated word of `text` (positions past `length` dropped)."""
    words = text.split(" ")
    pieces = [tokenizer.decode([t]).strip("#") for t in tokenizer.encode(text)][1:-1]
    positions: list[list[int]] = [[] for _ in words]
    count, pointer = 0, 0
    for i, piece in enumerate(pieces):
        count += len(piece)
        if pointer < len(words):
            if i + 1 < length:
                positions[pointer].append(i + 1)
            if count >= len(words[pointer]):
                pointer += 1
                count = 0
    return [tuple(p) for p in positions]


def word_indices(tokenizer, text: str, word: str, length: int = 77) -> tuple[int, ...]:
    """Token positions of every occurrence of the space-separated `word` in `text` (p2p's get_word_inds).

    A word CLIP splits into several tokens gets all of them; a word also matches with trailing
    punctuation ("road," for "road").
    """
    positions = _word_positions(tokenizer, text, length)
    return tuple(p for w, ps in zip(text.split(" "), positions) if w == word or w.rstrip(",.;:!?") == word for p in ps)


def same_word_count(source: str, target: str) -> bool:
    """Whether the replace controller applies (a word swap: as many space-separated words in both)."""
    return len(source.split(" ")) == len(target.split(" "))


def replacement_mapper(tokenizer, source: str, target: str, length: int = 77) -> torch.Tensor:
    """prompt-to-prompt's replacement mapper [length, length]: weight of source position i in edited position j.

    Prompts with the same number of words: each swapped word's source tokens map to the new word's
    tokens (evenly split when the counts differ), every other position to itself. One fix of the
    official code: after the last swapped word it writes `mapper[j, j]`, which shifts every later
    token by the difference in token counts when a swapped word changes its count; here positions
    go on from the source position (`mapper[i, j]`), identical when the counts agree.
    """
    if not same_word_count(source, target):
        raise ValueError("the replace controller needs prompts with the same number of words")
    words_x, words_y = source.split(" "), target.split(" ")
    swapped = [k for k in range(len(words_y)) if words_y[k] != words_x[k]]
    by_word_x, by_word_y = _word_positions(tokenizer, source, length), _word_positions(tokenizer, target, length)
    sources = [by_word_x[k] for k in swapped if by_word_x[k] and by_word_y[k]]
    targets = [by_word_y[k] for k in swapped if by_word_x[k] and by_word_y[k]]
    mapper = torch.zeros(length, length)
    i = j = current = 0
    while i < length and j < length:
        if current < len(sources) and sources[current][0] == i:
            source_tokens, target_tokens = list(sources[current]), list(targets[current])
            if len(source_tokens) == len(target_tokens):
                mapper[source_tokens, target_tokens] = 1
            else:
                for t in target_tokens:
                    mapper[source_tokens, t] = 1 / len(target_tokens)
            current += 1
            i += len(source_tokens)
            j += len(target_tokens)
        else:
            mapper[i, j] = 1
            i += 1
            j += 1
    return mapper
