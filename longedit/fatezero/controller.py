"""FateZero's cross-attention controller: how the edited prompt's cross-attention takes the source's.

Official code (ChenyangQiQi/FateZero `prompt_attention/attention_util.py`), in the first
`cross_replace_steps` of the edit, conditional half only, per fused layer:

* `replace` (AttentionReplace, for word swaps: prompts with as many words): every edited position
  takes the source maps through the replacement mapper, `fused = base @ M` (`einsum('thpw,bwn->bthpn')`),
  so the swapped source word's map goes to the new word;
* `refine` (AttentionRefine, for added or removed words): `fused = base[..., mapper] * alphas +
  current * (1 - alphas)`, new words keep their own maps;
* the equalizer (AttentionReweight, optional): `fused * equalizer`, a per-token scale of the edited
  prompt's words (`get_equalizer`), applied after either controller, without renormalising.

`blend_tokens` are the source positions whose maps make the self-attention blending mask: the
user's `--blend-word`s (words of the source prompt), by default the changed words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longedit.errors import UserError
from longedit.fatezero.align import TokenAlignment, align_prompts, replacement_mapper, same_word_count, word_indices

CONTROLLERS = ("auto", "replace", "refine")


@dataclass(frozen=True)
class CrossAttentionEdit:
    """The controller of one edit (see the module docstring); tensors are [77] or [77, 77] on the CPU."""

    kind: str  # "replace" or "refine"
    alignment: TokenAlignment
    replace: torch.Tensor | None
    equalizer: torch.Tensor
    blend_tokens: tuple[int, ...]
    blend_words: tuple[str, ...] = ()
    equalize: tuple[tuple[str, float], ...] = ()

    def apply(self, base: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Fused cross-attention probabilities [..., queries, tokens] from the source's `base` and the edit's `current`."""
        if self.kind == "replace":
            fused = torch.matmul(base, self.replace.to(base.device, base.dtype))
        else:
            mapper = self.alignment.mapper_tensor(base.device)
            alphas = self.alignment.alphas_tensor(base.device, base.dtype)
            fused = base[..., mapper] * alphas + current * (1 - alphas)
        if self.equalize:
            fused = fused * self.equalizer.to(fused.device, fused.dtype)
        return fused

    def report(self) -> dict:
        return {
            "controller": self.kind,
            "replaced_tokens": self.alignment.replaced if self.kind == "refine" else int(self.replace.sum().round()),
            "blend_words": list(self.blend_words),
            "blend_tokens": list(self.blend_tokens),
            "equalize": dict(self.equalize),
        }


def _words_list(prompt: str) -> str:
    return ", ".join(dict.fromkeys(w.rstrip(",.;:!?") for w in prompt.split()))


def build_cross_edit(
    tokenizer,
    source: str,
    prompt: str,
    controller: str = "auto",
    equalize: dict[str, float] | None = None,
    blend_words: list[str] | None = None,
) -> CrossAttentionEdit:
    """The controller for `source` -> `prompt`; UserError (before any model work) for words that are not there.

    `controller` auto: replace when both prompts have the same number of words, else refine.
    """
    length = getattr(tokenizer, "model_max_length", 77)
    if controller not in CONTROLLERS:
        raise UserError(f"unknown FateZero controller '{controller}'", f"use one of {', '.join(CONTROLLERS)}")
    swap = same_word_count(source, prompt)
    if controller == "replace" and not swap:
        raise UserError(
            f"--fuse-controller replace needs prompts with as many words ({len(source.split(' '))} vs {len(prompt.split(' '))})",
            "swap words one for one, or use --fuse-controller refine",
        )
    kind = controller if controller != "auto" else ("replace" if swap else "refine")
    alignment = align_prompts(tokenizer, source, prompt, length)
    mapper = replacement_mapper(tokenizer, source, prompt, length) if kind == "replace" else None
    equalizer = torch.ones(length)
    for word, scale in (equalize or {}).items():
        positions = word_indices(tokenizer, prompt, word, length)
        if not positions:
            raise UserError(f"--equalize word '{word}' is not in the edited prompt", f"name one of its words: {_words_list(prompt)}")
        equalizer[list(positions)] = float(scale)
    if blend_words:
        tokens: list[int] = []
        for word in blend_words:
            positions = word_indices(tokenizer, source, word, length)
            if not positions:
                raise UserError(f"--blend-word '{word}' is not in the source prompt", f"name one of its words: {_words_list(source)}")
            tokens.extend(p for p in positions if p not in tokens)
        blend = tuple(tokens)
    else:
        blend = alignment.changed
    return CrossAttentionEdit(
        kind, alignment, mapper, equalizer, blend, tuple(blend_words or ()), tuple((equalize or {}).items())
    )
