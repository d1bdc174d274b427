"""Map the words of interest to CLIP token indices of the edited prompt."""

from __future__ import annotations

from dataclasses import dataclass

from longedit.errors import UserError


@dataclass(frozen=True)
class WordTokens:
    """A word of the prompt and the positions (in the 77-token sequence) of its tokens."""

    word: str
    indices: tuple[int, ...]


def prompt_token_count(tokenizer, prompt: str) -> int:
    """Number of real prompt tokens the text encoder sees, without start/end tokens.

    Capped as the tokenizer truncates (75 for CLIP's 77): a longer prompt's tail never reaches the model.
    """
    limit = getattr(tokenizer, "model_max_length", 77) - 2
    return min(limit, len(tokenizer(prompt, add_special_tokens=False).input_ids))


def word_tokens(tokenizer, prompt: str, word: str, mode: str = "all") -> WordTokens:
    """Token positions of `word` in `prompt` (first occurrence); `mode` all tokens or only the last one.

    A word may be split into several tokens by CLIP's BPE; `all` keeps every piece.
    """
    prompt_ids = tokenizer(prompt).input_ids
    word_ids = tokenizer(word.strip(), add_special_tokens=False).input_ids
    limit = getattr(tokenizer, "model_max_length", 77)
    if word_ids:
        for start in range(1, len(prompt_ids) - len(word_ids) + 1):
            if prompt_ids[start : start + len(word_ids)] == word_ids:
                indices = tuple(range(start, start + len(word_ids)))
                if indices[-1] >= limit - 1:
                    raise UserError(
                        f"word '{word}' lies past CLIP's {limit}-token limit of the prompt",
                        "shorten the prompt or move the word earlier",
                    )
                if mode == "last":
                    indices = indices[-1:]
                return WordTokens(word, indices)
    raise UserError(
        f"word '{word}' is not in the prompt '{prompt}'",
        f"name one of its words: {', '.join(dict.fromkeys(prompt.replace(',', ' ').split()))}",
    )
