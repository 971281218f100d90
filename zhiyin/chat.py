"""A chat turn about the repository: the app core's one function for every chat edge (the
websocket panel, the editor).

The question is answered with sources: chunks hybrid search finds for it (`#codebase`), files and
selections the user attached (`@file`), and the project memories that apply; the answer streams
token by token and ends with the citations the page and the editor can open (path and lines).
A message that asks to remember something ("remember that …", "记住：…") is stored in the project
memory and acknowledged, without a model call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine import SamplingParams
from engine.llm_engine import GenerationStats
from engine.prompt import TextModel
from engram.recall import recall
from indexer.index import Index
from zhiyin.i18n import N_, _, current_locale
from zhiyin.memory import RepositoryMemory, draft_from_chat, remember
from zhiyin.prompts import chat_turn_prompt

SEARCH_RESULTS = 4  # chunks from `#codebase` search
MAX_SOURCE_CHARS = 2400  # of one source in the prompt
MAX_TOKENS = 512
# Greedy answers from small models otherwise loop on one sentence; over the answer's last tokens
# only (llama.cpp's defaults), so that names from the sources are not discouraged.
REPETITION_PENALTY, REPETITION_WINDOW = 1.1, 64

MSG_REMEMBERED = N_("Remembered as #{id}: {statement}")
MSG_NO_MEMORY = N_("There is no project memory here to remember that in.")


@dataclass(frozen=True)
class Attachment:
    """Context the user attached: a file (whole or a line range) or a selection."""

    path: str
    text: str
    start_line: int = 1


@dataclass(frozen=True)
class Citation:
    number: int
    path: str
    start_line: int
    end_line: int


@dataclass
class ChatEvent:
    """What a turn yields: text as it streams, then one final event with the citations."""

    text: str = ""
    done: bool = False
    citations: list[Citation] = field(default_factory=list)
    remembered: int | None = None  # the memory id, when the message asked to remember
    stats: GenerationStats | None = None  # the model run's, on the final event


def chat_turn(engine: TextModel | None, question: str, *, history: list[dict[str, str]] | None = None,
              index: Index | None = None, memory: RepositoryMemory | None = None,
              attachments: list[Attachment] = (), codebase: bool = True, path: str | None = None,
              cancel: threading.Event | None = None, max_tokens: int = MAX_TOKENS) -> Iterator[ChatEvent]:
    """Streams the answer to `question`. `codebase`: search the index for sources; `path`: the file
    the user is in (memories with matching globs come up)."""
    draft = draft_from_chat(question)
    if draft is not None:
        if memory is None:
            yield ChatEvent(_(MSG_NO_MEMORY), done=True)
            return
        result = remember(memory, draft, source="chat")
        yield ChatEvent(_(MSG_REMEMBERED).format(id=result.id, statement=draft.statement), done=True,
                        remembered=result.id)
        return
    sources: list[tuple[str, str]] = []
    citations: list[Citation] = []
    for a in attachments:
        end = a.start_line + a.text.count("\n")
        citations.append(Citation(len(citations) + 1, a.path, a.start_line, end))
        sources.append((f"{a.path}:{a.start_line}-{end}", a.text[:MAX_SOURCE_CHARS]))
    if index is not None and codebase:
        for hit in index.search(question, k=SEARCH_RESULTS):
            citations.append(Citation(len(citations) + 1, hit.path, hit.start_line, hit.end_line))
            sources.append((f"{hit.path}:{hit.start_line}-{hit.end_line}", hit.text[:MAX_SOURCE_CHARS]))
    memories = recall(memory.store, question, memory.repo, path=path, purpose="chat", root=memory.root) \
        if memory is not None else []
    if engine is None:
        yield ChatEvent(done=True, citations=citations)
        return
    language = "Chinese" if current_locale().startswith("zh") else "English"
    history = list(history or [])
    prompt = chat_turn_prompt(engine, history, question, sources, memories, language)
    max_tokens = max(1, min(max_tokens, MAX_TOKENS))
    while prompt.num_tokens + max_tokens >= engine.max_context and (history or sources):
        if history:  # the oldest turns go first, then the least relevant sources
            del history[:2]
        else:
            sources.pop()
            citations.pop()
        prompt = chat_turn_prompt(engine, history, question, sources, memories, language)
    params = SamplingParams(max_tokens=max_tokens, repetition_penalty=REPETITION_PENALTY,
                            repetition_window=REPETITION_WINDOW, stop=prompt.stop,
                            stop_token_ids=prompt.stop_token_ids)
    stats = None
    for chunk in engine.generate(prompt, params, cancel):
        if chunk.text:
            yield ChatEvent(chunk.text)
        stats = chunk.stats or stats
    yield ChatEvent(done=True, citations=citations, stats=stats)
