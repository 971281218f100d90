"""Model-level prompt formats: fill-in-the-middle (FIM) prompts and chat templates.

FIM: the family is read from the vocabulary, the way llama.cpp finds its FIM tokens by their text
(``llama-vocab.cpp``). Every preset is PSM order: prefix sentinel, prefix, suffix sentinel,
suffix, middle sentinel; the model then writes the middle. Sources, per preset below.

Chat: the model's own Jinja template, rendered in a sandbox the way transformers'
``apply_chat_template`` renders it, or ChatML when the model has no template.

Texts and stop strings spell special tokens as the vocabulary does; encode the texts with
``tokenizer.encode(text, allow_special=True)``. A FIM text holds no BOS (encode it with the model's
own add-BOS setting); a chat text is complete (a template that wants BOS writes ``bos_token``
itself), so encode it without adding BOS, as transformers does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Protocol

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import N_, EngineError


class TokenizerLike(Protocol):
    """The members of engine.tokenizer.Tokenizer this module reads."""

    eos_id: int | None
    bos_id: int | None
    chat_template: str | None

    def token_to_id(self, token: str) -> int | None: ...

    def id_to_token(self, token_id: int) -> str | None: ...


class ChatTemplateError(EngineError):
    message = N_(
        "The model's chat template failed: {detail}. Some templates accept only alternating "
        "user and assistant turns; otherwise the template itself is broken."
    )


@dataclass(frozen=True)
class FimTemplate:
    """One FIM family: ``prefix_token + PREFIX + suffix_token + SUFFIX + middle_token``."""

    name: str
    prefix_token: str
    suffix_token: str
    middle_token: str
    stop_tokens: tuple[str, ...]  # end the middle; those the vocabulary lacks are skipped


FIM_TEMPLATES: dict[str, FimTemplate] = {
    # Qwen2.5-Coder README ("file-level code completion"); stops as Continue's qwenCoderFimTemplate
    # and llama.cpp's end-of-generation list (fim_pad, repo_name, file_sep, endoftext, im_end).
    "qwen2.5-coder": FimTemplate(
        "qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
        stop_tokens=("<|endoftext|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|im_start|>",
                     "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ),
    # DeepSeek-Coder README ("code insertion"): begin PREFIX hole SUFFIX end. Fullwidth bars, U+2581.
    "deepseek-coder": FimTemplate(
        "deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
        stop_tokens=("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    ),
    # StarCoder / StarCoder2 (paper §5.1), also Granite and stable-code; Continue's starcoder2 stops.
    "starcoder": FimTemplate(
        "starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
        stop_tokens=("<|endoftext|>", "<file_sep>", "<fim_pad>", "<fim_prefix>", "<fim_suffix>",
                     "<fim_middle>"),
    ),
    # Meta's codellama generation.py / transformers' CodeLlamaTokenizer; the middle ends with ▁<EOT>.
    # Meta encodes the prefix with SentencePiece's dummy space: the text holds none, because our
    # SentencePiece tokenizer (like llama.cpp) prepends "▁" to every stretch of text itself.
    "codellama": FimTemplate(
        "codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", stop_tokens=("▁<EOT>", "▁<PRE>", "▁<SUF>", "▁<MID>"),
    ),
}

# Tokens that end a turn or a document (llama.cpp's end-of-generation names, for our families).
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|EOT|>", "<|endoftext|>",
              "<|end_of_text|>", "<｜end▁of▁sentence｜>")
FILE_SEPARATORS = ("<file_sep>", "<|file_sep|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class FimPrompt:
    """A completion prompt. ``segments`` is ``text`` cut into (piece, is_special_token) pairs:
    encode the user's code pieces with special tokens off when it may contain their strings."""

    text: str
    stop_strings: list[str]
    stop_token_ids: list[int]
    is_fim: bool  # False: the model has no FIM tokens and the text is the prefix alone
    segments: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class ChatPrompt:
    text: str
    stop_token_ids: list[int]
    stop_strings: list[str]


def detect_fim(tok: TokenizerLike) -> FimTemplate | None:
    """The first preset whose three sentinels are all in the vocabulary, or None."""
    for template in FIM_TEMPLATES.values():
        sentinels = (template.prefix_token, template.suffix_token, template.middle_token)
        if all(tok.token_to_id(token) is not None for token in sentinels):
            return template
    return None


def build_fim_prompt(tok: TokenizerLike, prefix: str, suffix: str,
                     template: FimTemplate | None = None) -> FimPrompt:
    """The FIM prompt for the model's family (or `template`); the prefix alone without FIM tokens."""
    template = template or detect_fim(tok)
    if template is None:
        stop_strings, stop_ids = _stops(tok, END_TOKENS + FILE_SEPARATORS)
        return FimPrompt(prefix, stop_strings, stop_ids, is_fim=False, segments=((prefix, False),))
    segments = ((template.prefix_token, True), (prefix, False),
                (template.suffix_token, True), (suffix, False), (template.middle_token, True))
    segments = tuple((piece, is_special) for piece, is_special in segments if piece)
    stop_strings, stop_ids = _stops(tok, template.stop_tokens)
    text = "".join(piece for piece, _ in segments)
    return FimPrompt(text, stop_strings, stop_ids, is_fim=True, segments=segments)


def render_chat(tok: TokenizerLike, messages: list[dict[str, str]],
                add_generation_prompt: bool = True) -> ChatPrompt:
    """Render `messages` with the model's chat template (ChatML without one), ready to generate."""
    variables = {name: token for name, token_id in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id))
                 if token_id is not None and (token := tok.id_to_token(token_id)) is not None}
    # As transformers: keys set to None are dropped, many templates test for a key's presence.
    messages = [{key: value for key, value in message.items() if value is not None} for message in messages]
    try:
        text = _compile(tok.chat_template or CHATML_TEMPLATE).render(
            messages=messages, tools=None, documents=None,
            add_generation_prompt=add_generation_prompt, **variables)
    except (jinja2.TemplateError, TypeError, ValueError) as error:
        raise ChatTemplateError(detail=f"{type(error).__name__}: {str(error).rstrip('.')}") from error
    stop_strings, stop_ids = _stops(tok, END_TOKENS)
    if tok.chat_template is None and "<|im_end|>" not in stop_strings:
        stop_strings.append("<|im_end|>")  # a model without the token may still write it as text
    return ChatPrompt(text, stop_ids, stop_strings)


def _stops(tok: TokenizerLike, tokens: tuple[str, ...]) -> tuple[list[str], list[int]]:
    """Stop strings and ids: the eos token first, then each of `tokens` the vocabulary has."""
    candidates = [(tok.id_to_token(tok.eos_id), tok.eos_id)] if tok.eos_id is not None else []
    candidates += [(token, tok.token_to_id(token)) for token in tokens]
    stop_strings: list[str] = []
    stop_ids: list[int] = []
    for token, token_id in candidates:
        if token_id is None or token_id in stop_ids:
            continue
        stop_ids.append(token_id)
        if token:
            stop_strings.append(token)
    return stop_strings, stop_ids


class _GenerationBlock(jinja2.ext.Extension):
    """transformers' ``{% generation %}...{% endgeneration %}`` (assistant-mask marks): render the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' override: Jinja's own tojson escapes HTML characters
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    """A template in transformers' sandbox: Hub templates are untrusted code."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return env.from_string(source)
