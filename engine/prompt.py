"""What a model is asked, and what every model Zhiyin talks to offers.

A prompt keeps both forms a model may read: its text (chat messages, or a prefix to continue with
an optional suffix after the gap) for a server that applies its own template, and the token ids
the local engine built from that text with the model's template. `num_tokens` is the ids' count
(an estimate for a remote model) and is what fitting a prompt into the context window uses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.sampling import SamplingParams
    from engine.scheduler import GenerationChunk


@dataclass
class Prompt:
    token_ids: list[int] = field(default_factory=list)  # the local engine's; empty for a remote model
    stop: list[str] = field(default_factory=list)  # the template's own stop strings
    stop_token_ids: list[int] = field(default_factory=list)
    messages: list[dict[str, str]] | None = None  # a chat prompt
    prefix: str | None = None  # a completion prompt
    suffix: str | None = None  # text after the gap (fill in the middle)
    num_tokens: int = 0


class TextModel(Protocol):
    """The local engine (`LLMEngine`) or an OpenAI-compatible server (`OpenAIModel`)."""

    model_id: str
    max_context: int

    def chat_prompt(self, messages: list[dict[str, str]]) -> Prompt: ...

    def completion_prompt(self, prefix: str, suffix: str | None = None) -> Prompt: ...

    def generate(self, prompt: Prompt, params: SamplingParams,
                 cancel: threading.Event | None = None) -> Iterator[GenerationChunk]: ...
