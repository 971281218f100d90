"""Choosing the next token: greedy, temperature, top-k, top-p and repetition penalty."""

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # >1 discourages tokens already in the sequence (as in HF / llama.cpp)
    repetition_window: int = 0  # the last N tokens the penalty looks at (llama.cpp's repeat_last_n); 0: all
    stop: list[str] = field(default_factory=list)  # generation ends before the first of these strings
    stop_token_ids: list[int] = field(default_factory=list)  # in addition to the model's end of sequence
    ignore_eos: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        assert self.max_tokens >= 0 and self.temperature >= 0 and 0 < self.top_p <= 1 and self.top_k >= 0
        assert self.repetition_penalty > 0 and self.repetition_window >= 0


def apply_repetition_penalty(logits: torch.Tensor, token_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [V]; seen tokens' positive logits are divided, negative ones multiplied."""
    if penalty == 1.0 or token_ids.numel() == 0:
        return logits
    seen = logits[token_ids]
    # out of place: the model's logits are inference tensors, read-only outside inference mode
    return logits.index_put((token_ids,), torch.where(seen > 0, seen / penalty, seen * penalty))


def sample(logits: torch.Tensor, params: SamplingParams, seen_ids: torch.Tensor, generator: torch.Generator | None) -> int:
    """logits: [V] fp32."""
    logits = apply_repetition_penalty(logits, seen_ids, params.repetition_penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= params.top_p  # keep the token that crosses top_p
        logits = logits.index_fill(0, order[drop], float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
