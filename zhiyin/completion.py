"""Inline code completion at a cursor: repository context, prompt, generation, clean-up.

Used by every edge that completes code (the language server first). Single-line or multi-line is
decided from the cursor: on an empty line, or after a line that opens a block, a block may follow;
in the middle of a line, only the rest of that line.

Successive requests while a user types should share as much of their prompt as possible, so that
the engine reuses the KV of the common prefix: the repository context is kept while the cursor
stays near where it was computed, and a long file is cut at a line that moves in steps of
`PREFIX_STEP_LINES`, not with every keystroke.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine import SamplingParams
from engine.prompt import TextModel
from engram.recall import recall
from indexer.index import Index
from indexer.languages import language_for_path
from zhiyin.memory import RepositoryMemory
from zhiyin.prompts import Prompt, completion_prompt, memory_context, repository_context

MAX_PREFIX_CHARS = 6000  # ~1.5k tokens of the current file before the cursor
MAX_SUFFIX_CHARS = 1500
PREFIX_STEP_LINES = 32  # a long file's prefix starts at a multiple of this many lines
CONTEXT_LINES_UP, CONTEXT_LINES_DOWN = 8, 24  # the cursor may move this far before the context is looked up again
MEMORY_QUERY_LINES = 3  # lines up to the cursor's that ask the project memory
_BLOCK_OPENERS = (":", "{", "(", "[", "=>")


@dataclass(frozen=True)
class CompletionRequest:
    path: str  # relative to the repository root, POSIX separators
    text: str  # the document as the editor has it (may be unsaved)
    line: int  # 1-based
    column: int  # 0-based, in code points

    @property
    def offset(self) -> int | None:
        """The cursor as an index into `text`; None when it lies outside."""
        lines = self.text.split("\n")
        if not 1 <= self.line <= len(lines) or not 0 <= self.column <= len(lines[self.line - 1]):
            return None
        return sum(len(line) + 1 for line in lines[: self.line - 1]) + self.column


@dataclass(frozen=True)
class Completion:
    text: str  # to insert at the cursor
    multiline: bool
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt, whose KV the engine reused
    replaces: int = 0  # characters after the cursor that `text` replaces (see `absorbed_suffix`)


@dataclass(frozen=True)
class _StickyContext:
    path: str
    line: int
    text: str


class Completer:
    """Completes code with one engine; keeps the last repository context between requests."""

    def __init__(self, engine: TextModel, index: Index | None = None, *, max_tokens: int = 48,
                 context_budget: int = 1024) -> None:
        self.engine, self.index = engine, index
        self.max_tokens, self.context_budget = max_tokens, context_budget
        self._context: _StickyContext | None = None

    def forget_context(self) -> None:
        """Look the repository context up afresh next time (the index changed)."""
        self._context = None

    def complete(self, request: CompletionRequest, cancel: threading.Event | None = None, *,
                 index: Index | None = None, memory: RepositoryMemory | None = None,
                 on_text: Callable[[str], None] | None = None) -> Completion | None:
        """The completion at the cursor; its text is empty when the model wrote nothing worth
        showing. None when the cursor lies outside the text or `cancel` was set.

        `index` overrides the one given at construction for this request; `memory` adds the
        project memories that apply to the file; `on_text` is called with the raw text generated
        so far, as it grows."""
        offset = request.offset
        if offset is None:
            return None
        prefix, suffix = request.text[:offset], request.text[offset:]
        before = prefix[prefix.rfind("\n") + 1 :]
        multiline = is_multiline_position(before, suffix.split("\n", 1)[0])

        context = self._repository_context(request, index or self.index, memory)
        prompt = self._fitting_prompt(stable_prefix(prefix), suffix[:MAX_SUFFIX_CHARS], context)
        params = SamplingParams(max_tokens=self.max_tokens, stop=prompt.stop + ([] if multiline else ["\n"]),
                                stop_token_ids=prompt.stop_token_ids)
        text, stats = "", None
        for chunk in self.engine.generate(prompt, params, cancel):
            text += chunk.text
            stats = chunk.stats or stats
            if on_text is not None and chunk.text:
                on_text(text)
            if multiline and "\n" in chunk.text and _within_scope(text, before) != text:
                break  # the code left the cursor's block: the rest would be cut anyway
        if cancel is not None and cancel.is_set():
            return None
        text = clean_completion(text, before, suffix, multiline)
        replaces = absorbed_suffix(text, suffix)
        if stats is None:  # stopped early: the engine's own count is in the chunk never read
            return Completion(text, multiline, prompt.num_tokens, replaces=replaces)
        return Completion(text, multiline, stats.num_prompt_tokens, stats.num_cached_tokens, replaces)

    def _repository_context(self, request: CompletionRequest, index: Index | None,
                            memory: RepositoryMemory | None) -> str:
        """Memories that apply to the file, then code from elsewhere in the repository."""
        if (index is None and memory is None) or self.context_budget <= 0:
            return ""
        sticky = self._context
        if (sticky is not None and sticky.path == request.path
                and -CONTEXT_LINES_UP <= request.line - sticky.line <= CONTEXT_LINES_DOWN):
            return sticky.text
        language = language_for_path(request.path)
        text = ""
        if memory is not None:
            lines = request.text.split("\n")[max(0, request.line - MEMORY_QUERY_LINES) : request.line]
            # words and globs only: completion must not wait for the embedder
            recalled = recall(memory.store, "\n".join(lines), memory.repo, path=request.path,
                              purpose="completion", root=memory.root, legs=("fts", "glob"))
            text += memory_context(recalled, language)
        if index is not None:
            items = index.context_for_cursor(request.path, request.line, request.column, self.context_budget,
                                             text=request.text)
            text += repository_context(items, language)
        self._context = _StickyContext(request.path, request.line, text)
        return text

    def _fitting_prompt(self, prefix: str, suffix: str, context: str) -> Prompt:
        """The prompt, cut until it and the completion fit the model's window: first the repository
        context goes, then the far end of the prefix and of the suffix."""
        room = self.engine.max_context - self.max_tokens - 1
        prompt = completion_prompt(self.engine, prefix, suffix, context)
        while prompt.num_tokens > room and (context or prefix or suffix):
            if context:
                context = ""
            else:
                prefix, suffix = prefix[len(prefix) // 4 :], suffix[: len(suffix) * 3 // 4]
            prompt = completion_prompt(self.engine, prefix, suffix, context)
        return prompt


def stable_prefix(prefix: str, max_chars: int = MAX_PREFIX_CHARS, step: int = PREFIX_STEP_LINES) -> str:
    """The end of `prefix` that fits `max_chars`, starting at a line whose number is a multiple of
    `step`: typing moves the start only once every `step` lines. A single line longer than the
    budget is cut by characters."""
    if len(prefix) <= max_chars:
        return prefix
    starts = [0]  # offsets of line starts
    position = prefix.find("\n")
    while position != -1:
        starts.append(position + 1)
        position = prefix.find("\n", position + 1)
    fits = [i for i, start in enumerate(starts) if len(prefix) - start <= max_chars]
    if not fits:
        return prefix[-max_chars:]
    snapped = -(-fits[0] // step) * step
    return prefix[starts[snapped if snapped < len(starts) else fits[0]] :]


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
        text = _from_the_cursor_line(text, before)
        text = _within_scope(text, before)
        text = _drop_repeated_lines(text)
    text = _without_suffix_overlap(text, suffix)
    return text.rstrip() if text.strip() else ""


def _from_the_cursor_line(text: str, before: str) -> str:
    """On a blank line the model often starts with a line break and indents the next line itself:
    write that line at the cursor instead, minus the indentation the cursor already has."""
    if before.strip() or not text.startswith("\n"):
        return text
    rest = text.lstrip("\n")
    return rest[len(before):] if rest.startswith(before) else text


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


_CLOSERS = frozenset(")]}\"'`;:, ")  # what an editor closes or a line ends with, after the cursor


def absorbed_suffix(text: str, suffix: str) -> int:
    """How many characters after the cursor the completion replaces: the rest of the line when it
    holds only closing brackets and quotes (an editor's auto-closed `)`) that the completion's first
    line writes itself, in order, as `: str) -> str:` does before `)`. 0: the text is inserted."""
    head = suffix.split("\n", 1)[0]
    if not head.strip() or not set(head) <= _CLOSERS:
        return 0
    first_line = iter(text.split("\n", 1)[0])
    return len(head) if all(ch in first_line for ch in head.strip()) else 0  # a subsequence, in order


def _without_suffix_overlap(text: str, suffix: str) -> str:
    """Drop the tail that repeats what follows the cursor, e.g. a closing bracket already there."""
    head = suffix.split("\n", 1)[0]
    for size in range(min(len(head), len(text)), 0, -1):
        if head.startswith(text[-size:]):
            return text[:-size]
    return text
