"""Inline code completion at a cursor: repository context, prompt, generation, clean-up.

Used by every edge that completes code (the language server first). Single-line or multi-line is
decided from the cursor: on an empty line, or after a line that opens a block, a block may follow;
in the middle of a line, only the rest of that line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine import LLMEngine, SamplingParams
from indexer.index import Index
from indexer.languages import language_for_path
from zhiyin.prompts import completion_prompt, repository_context

MAX_PREFIX_CHARS = 6000  # ~1.5k tokens of the current file before the cursor
MAX_SUFFIX_CHARS = 1500
_BLOCK_OPENERS = (":", "{", "(", "[", "=>")


@dataclass(frozen=True)
class CompletionRequest:
    path: str  # relative to the repository root, POSIX separators
    text: str  # the document as the editor has it (may be unsaved)
    line: int  # 1-based
    column: int  # 0-based, in code points


@dataclass(frozen=True)
class Completion:
    text: str  # to insert at the cursor
    multiline: bool


class Completer:
    def __init__(self, engine: LLMEngine, index: Index | None = None, *, max_tokens: int = 48,
                 context_budget: int = 1024) -> None:
        self.engine, self.index = engine, index
        self.max_tokens, self.context_budget = max_tokens, context_budget

    def complete(self, request: CompletionRequest, cancel: threading.Event | None = None) -> Completion | None:
        """The completion at the cursor, or None when there is nothing worth showing."""
        lines = request.text.split("\n")
        if not 1 <= request.line <= len(lines) or not 0 <= request.column <= len(lines[request.line - 1]):
            return None
        offset = sum(len(line) + 1 for line in lines[: request.line - 1]) + request.column
        prefix, suffix = request.text[:offset], request.text[offset:]
        current = lines[request.line - 1]
        multiline = is_multiline_position(current[: request.column], current[request.column :])

        context = ""
        if self.index is not None and self.context_budget > 0:
            items = self.index.context_for_cursor(request.path, request.line, request.column, self.context_budget,
                                                  text=request.text)
            context = repository_context(items, language_for_path(request.path))
        prompt = self._fitting_prompt(prefix[-MAX_PREFIX_CHARS:], suffix[:MAX_SUFFIX_CHARS], context)
        params = SamplingParams(max_tokens=self.max_tokens, stop=prompt.stop + ([] if multiline else ["\n"]),
                                stop_token_ids=prompt.stop_token_ids)
        text = "".join(chunk.text for chunk in self.engine.generate(prompt.token_ids, params, cancel))
        if cancel is not None and cancel.is_set():
            return None
        text = clean_completion(text, current[: request.column], suffix, multiline)
        return Completion(text, multiline) if text else None


    def _fitting_prompt(self, prefix: str, suffix: str, context: str):
        """The prompt, cut until it and the completion fit the model's window: first the repository
        context goes, then the far end of the prefix and of the suffix."""
        room = self.engine.max_context - self.max_tokens - 1
        prompt = completion_prompt(self.engine, prefix, suffix, context)
        while len(prompt.token_ids) > room and (context or prefix or suffix):
            if context:
                context = ""
            else:
                prefix, suffix = prefix[len(prefix) // 4 :], suffix[: len(suffix) * 3 // 4]
            prompt = completion_prompt(self.engine, prefix, suffix, context)
        return prompt


def is_multiline_position(before: str, after: str) -> bool:
    """A block may follow on an empty line, or at the end of a line that opens one."""
    if after.strip():
        return False
    return not before.strip() or before.rstrip().endswith(_BLOCK_OPENERS)


def clean_completion(text: str, before: str, suffix: str, multiline: bool) -> str:
    """What the model wrote, minus what the editor already has and what does not belong."""
    if not multiline:
        text = text.split("\n", 1)[0]
    else:
        text = _within_scope(text, before)
        text = _drop_repeated_lines(text)
    text = _without_suffix_overlap(text, suffix)
    return text.rstrip() if text.strip() else ""


def _within_scope(text: str, before: str) -> str:
    """Stop where the code leaves the block the cursor is in: on an empty line, the first line
    indented less than the cursor; after a line that opens a block, the first one back at its level."""
    opens_block = bool(before.strip())
    base = _indent_of(before) if opens_block else len(before)
    lines = text.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and (_indent_of(line) <= base if opens_block else _indent_of(line) < base):
            break
        kept.append(line)
    return "\n".join(kept)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _drop_repeated_lines(text: str) -> str:
    """Small models loop: keep a non-blank line only the first time it appears."""
    seen: set[str] = set()
    out = []
    for line in text.split("\n"):
        key = line.strip()
        if key and key in seen:
            break
        seen.add(key)
        out.append(line)
    return "\n".join(out)


def _without_suffix_overlap(text: str, suffix: str) -> str:
    """Drop the tail that repeats what follows the cursor, e.g. a closing bracket already there."""
    head = suffix.split("\n", 1)[0]
    for size in range(min(len(head), len(text)), 0, -1):
        if head.startswith(text[-size:]):
            return text[:-size]
    return text
