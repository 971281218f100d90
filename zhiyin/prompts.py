"""Building model prompts from what the user gave: code around a cursor, or chat messages.

The one place that turns requests into token ids; later the retrieved repository context and
memories are placed here too.
"""

from dataclasses import dataclass, field

from engine import LLMEngine
from engine.prompt_format import build_fim_prompt, render_chat


@dataclass
class Prompt:
    token_ids: list[int]
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)


def completion_prompt(engine: LLMEngine, prefix: str, suffix: str | None = None) -> Prompt:
    """Code completion at a cursor: FIM when the model has FIM tokens and there is a suffix."""
    if not suffix:
        return Prompt(engine.encode(prefix))
    fim = build_fim_prompt(engine.tokenizer, prefix, suffix)
    ids: list[int] = []
    for piece, is_special in fim.segments:  # the user's code never turns into special tokens
        ids += engine.tokenizer.encode(piece, allow_special=is_special)
    bos = engine.tokenizer.bos_id
    if engine.tokenizer.add_bos and bos is not None:
        ids.insert(0, bos)
    return Prompt(ids, list(fim.stop_strings), list(fim.stop_token_ids))


def chat_prompt(engine: LLMEngine, messages: list[dict[str, str]]) -> Prompt:
    chat = render_chat(engine.tokenizer, messages)
    # The template writes BOS itself where the model wants it.
    ids = engine.tokenizer.encode(chat.text, allow_special=True)
    return Prompt(ids, list(chat.stop_strings), list(chat.stop_token_ids))
