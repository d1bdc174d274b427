"""CLIP Frame Consistency and CLIP score, streamed in small batches.

Frame Consistency (ReAtCo, Tables 1-3) is the mean cosine of CLIP image embeddings over all pairs of
frames. With unit embeddings e_i and their running sum S, sum_{i<j} e_i.e_j = (|S|^2 - N) / 2, so the
mean over the N(N-1)/2 pairs is (|S|^2 - N) / (N(N-1)) and no embedding is kept. The CLIP score of a
frame is 100 * max(cos(image, prompt), 0) (torchmetrics' CLIPScore definition). PickScore (Kirstain et al.,
2023; ReAtCo's Table 1) is a CLIP model fine-tuned on human preferences; a frame's score is
logit_scale.exp() * cos(image, prompt), as in its reference code (github yuvalkirstain/PickScore).
"""

from __future__ import annotations

import numpy as np
import torch

from longedit.evaluation.metric import available, failure, mean, missing

BATCH = 16


def _features(output: object) -> torch.Tensor:
    """get_*_features returns a tensor (older transformers) or an output whose pooler_output is projected."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


class ClipModel:
    """A transformers CLIP model with its image processor and (if present) tokenizer."""

    def __init__(self, model, processor, tokenizer, device: torch.device) -> None:
        self.model, self.processor, self.tokenizer, self.device = model, processor, tokenizer, device

    @torch.no_grad()
    def embed_images(self, frames: list[np.ndarray]) -> torch.Tensor:
        """Unit image embeddings [N, D] (float64 on the CPU) of uint8 HxWx3 frames."""
        pixels = self.processor(images=frames, return_tensors="pt")["pixel_values"].to(self.device)
        embeds = _features(self.model.get_image_features(pixel_values=pixels)).double().cpu()
        return embeds / embeds.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def embed_text(self, text: str) -> torch.Tensor:
        """Unit text embedding [D] of `text`, truncated to the model's context."""
        limit = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer([text], padding=True, truncation=True, max_length=limit, return_tensors="pt")
        embeds = _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
        embeds = embeds.double().cpu()[0]
        return embeds / embeds.norm()


def load_clip(
    name: str | None,
    local_files_only: bool,
    device: str = "cpu",
    processor_name: str | None = None,
    what: str = "CLIP",
    option: str = "--clip",
) -> tuple[ClipModel | None, str | None]:
    """(ClipModel, None) when `name` (folder or hub id) loads with `CLIPModel.from_pretrained`, else (None, reason).

    `processor_name`: where the image processor and tokenizer live when not beside the weights (PickScore's
    weights use the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K)."""
    if not name:
        return None, f"no {what} model given: pass {option} MODEL, a folder or hub id"
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    try:
        model = CLIPModel.from_pretrained(name, local_files_only=local_files_only).eval().to(device)
    except Exception as error:  # noqa: BLE001 - reported, never guessed around
        return None, failure(f"{what} model '{name}' could not be loaded", error)
    source = processor_name or name
    try:
        processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local_files_only)
    except Exception:  # noqa: BLE001 - a bare model folder: CLIP's standard preprocessing at its image size
        size = model.config.vision_config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    except Exception:  # noqa: BLE001 - CLIP score is then null with this reason
        tokenizer = None
    return ClipModel(model, processor, tokenizer, torch.device(device)), None


class ClipMetrics:
    """Accumulates frames in batches of `BATCH`; keeps the embedding sum, the previous embedding and scores."""

    def __init__(self, clip: ClipModel, prompt: str) -> None:
        self.clip = clip
        self.text = clip.embed_text(prompt) if clip.tokenizer is not None and prompt else None
        self.pending: list[np.ndarray] = []
        self.total: torch.Tensor | None = None
        self.count = 0
        self.previous: torch.Tensor | None = None
        self.consecutive: list[float] = []
        self.scores: list[float] = []

    def update(self, frame: np.ndarray) -> None:
        """Add one edited frame."""
        self.pending.append(frame)
        if len(self.pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        embeds = self.clip.embed_images(self.pending)
        self.pending = []
        self.total = embeds.sum(0) if self.total is None else self.total + embeds.sum(0)
        self.count += len(embeds)
        for embed in embeds:
            if self.previous is not None:
                self.consecutive.append(float(embed @ self.previous))
            self.previous = embed
            if self.text is not None:
                self.scores.append(100.0 * max(float(embed @ self.text), 0.0))

    def result(self) -> dict[str, dict]:
        """`frame_consistency` (all pairs, with the consecutive cosines per pair) and `clip_score`."""
        self._flush()
        n = self.count
        if n < 2 or self.total is None:
            consistency = missing("needs at least 2 frames")
        else:
            value = (float(self.total @ self.total) - n) / (n * (n - 1))
            consistency = available(value, consecutive=self.consecutive, consecutive_mean=mean(self.consecutive))
        if self.text is None:
            reason = "the CLIP folder has no tokenizer" if self.clip.tokenizer is None else "no --prompt given"
            score = missing(reason)
        else:
            score = available(mean(self.scores), self.scores)
        return {"frame_consistency": consistency, "clip_score": score}


class PickScoreMetric:
    """Per frame logit_scale.exp() * cos(image, prompt) with a PickScore model, batched like ClipMetrics."""

    def __init__(self, model: ClipModel, prompt: str) -> None:
        self.model = model
        self.reason = "the PickScore folder has no tokenizer" if model.tokenizer is None else (None if prompt else "no --prompt given")
        self.text = model.embed_text(prompt) if self.reason is None else None
        self.scale = float(model.model.logit_scale.detach().exp())
        self.pending: list[np.ndarray] = []
        self.scores: list[float] = []

    def update(self, frame: np.ndarray) -> None:
        if self.text is None:
            return
        self.pending.append(frame)
        if len(self.pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending and self.text is not None:
            embeds = self.model.embed_images(self.pending)
            self.scores.extend(self.scale * float(e @ self.text) for e in embeds)
        self.pending = []

    def result(self) -> dict:
        self._flush()
        if self.reason is not None:
            return missing(self.reason)
        return available(mean(self.scores), self.scores) if self.scores else missing("no frames")
