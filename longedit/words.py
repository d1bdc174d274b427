"""Map the words of interest to CLIP token indices of the edited prompt.

A word that occurs several times in the prompt is named `WORD#N` for its N-th occurrence (`car#2`);
plain `WORD` is the first, with a notice saying so (`--object`, mask folders and job files alike).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from longedit.errors import UserError

_OCCURRENCE = re.compile(r"^(?P<word>.+?)#(?P<n>\d+)$")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


@dataclass(frozen=True)
class WordTokens:
    """A word of the prompt and the positions (in the 77-token sequence) of its tokens.

    `notice`: one line for the user when the choice was ambiguous (the word occurs more than once).
    """

    word: str
    indices: tuple[int, ...]
    notice: str | None = field(default=None, compare=False)


def split_occurrence(word: str) -> tuple[str, int | None]:
    """'car#2' -> ('car', 2); 'car' -> ('car', None)."""
    match = _OCCURRENCE.match(word.strip())
    if match is None:
        return word.strip(), None
    return match["word"].strip(), int(match["n"])


def _ordinal(n: int) -> str:
    return _ORDINALS[n - 1] if n <= len(_ORDINALS) else f"{n}th"


def _times(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count} times"


def repeated_word_notice(word: str, count: int) -> str:
    """The notice for a plain word found `count` (> 1) times: which occurrence is used and how to pick another."""
    others = ", ".join(f"'{word}#{n}' for the {_ordinal(n)}" for n in range(2, count + 1))
    return f"'{word}' occurs {_times(count)} in the prompt; using the first, write {others}"


def prompt_token_count(tokenizer, prompt: str) -> int:
    """Number of real prompt tokens the text encoder sees, without start/end tokens.

    Capped as the tokenizer truncates (75 for CLIP's 77): a longer prompt's tail never reaches the model.
    """
    limit = getattr(tokenizer, "model_max_length", 77) - 2
    return min(limit, len(tokenizer(prompt, add_special_tokens=False).input_ids))


def word_tokens(tokenizer, prompt: str, word: str, mode: str = "all") -> WordTokens:
    """Token positions of `word` in `prompt` (`WORD#N`: its N-th occurrence, else the first); `mode`
    all tokens or only the last one.

    A word may be split into several tokens by CLIP's BPE; `all` keeps every piece.
    """
    bare, wanted = split_occurrence(word)
    prompt_ids = tokenizer(prompt).input_ids
    word_ids = tokenizer(bare, add_special_tokens=False).input_ids
    limit = getattr(tokenizer, "model_max_length", 77)
    starts = [
        start for start in range(1, len(prompt_ids) - len(word_ids) + 1)
        if word_ids and prompt_ids[start : start + len(word_ids)] == word_ids
    ]
    if not starts:
        raise UserError(
            f"word '{bare}' is not in the prompt '{prompt}'",
            f"name one of its words: {', '.join(dict.fromkeys(prompt.replace(',', ' ').split()))}",
        )
    if wanted is not None and not 1 <= wanted <= len(starts):
        raise UserError(
            f"'{word}' asks for occurrence {wanted} of '{bare}', but the prompt has it {_times(len(starts))}",
            f"write '{bare}#1' to '{bare}#{len(starts)}'" if len(starts) > 1 else f"write '{bare}'",
        )
    start = starts[(wanted or 1) - 1]
    indices = tuple(range(start, start + len(word_ids)))
    if indices[-1] >= limit - 1:
        raise UserError(
            f"word '{word}' lies past CLIP's {limit}-token limit of the prompt",
            "shorten the prompt or move the word earlier",
        )
    if mode == "last":
        indices = indices[-1:]
    notice = repeated_word_notice(bare, len(starts)) if wanted is None and len(starts) > 1 else None
    return WordTokens(word, indices, notice)


def _plain_words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def check_words_in_prompt(words: list[str], prompt: str, option: str = "--prompt") -> None:
    """Each object word (`WORD` or `WORD#N`) must occur in `prompt` as whole words, without a tokenizer
    (for `longedit eval`, which loads no diffusion model; `edit` checks tokens with `word_tokens`)."""
    prompt_words = _plain_words(prompt)
    for word in words:
        bare, wanted = split_occurrence(word)
        wanted_words = _plain_words(bare)
        count = sum(
            prompt_words[start : start + len(wanted_words)] == wanted_words
            for start in range(len(prompt_words) - len(wanted_words) + 1)
        ) if wanted_words else 0
        if count == 0:
            raise UserError(
                f"word '{bare}' is not in the prompt '{prompt}'",
                f"name one of its words in --object, or give the edit's own prompt with {option}",
            )
        if wanted is not None and not 1 <= wanted <= count:
            raise UserError(
                f"'{word}' asks for occurrence {wanted} of '{bare}', but the prompt has it {_times(count)}",
                f"write '{bare}#1' to '{bare}#{count}'" if count > 1 else f"write '{bare}'",
            )
