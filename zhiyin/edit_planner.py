"""Proposing repository-wide edits from an instruction, grounded in the index.

A rename ("rename `load_cfg` to `load_config`", "把 load_cfg 重命名为 load_config") is exact work:
the index names the files that define, reference or import the identifier, and tree-sitter finds
every identifier node spelled that way in them. Any other instruction goes to the model, file by
file for the files hybrid search finds, as SEARCH/REPLACE blocks; a block that does not match the
file exactly once is reported, never guessed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

from engine import SamplingParams
from engine.prompt import TextModel
from indexer.index import Index
from indexer.languages import GRAMMARS, language_for_path, parser_for
from zhiyin.edits import (
    MSG_UNREADABLE,
    EditPlan,
    FileEdit,
    Replacement,
    text_hash,
    workspace_path,
)
from zhiyin.i18n import N_, _
from zhiyin.prompts import edit_prompt

_IDENT = r"`?([A-Za-z_$][A-Za-z0-9_$]*)`?"
RENAME_PATTERNS = (
    re.compile(rf"^\s*rename\s+(?:the\s+\w+\s+)?{_IDENT}\s+(?:to|as|into)\s+{_IDENT}", re.IGNORECASE),
    re.compile(rf"^\s*(?:把|将)\s*{_IDENT}\s*(?:重命名|改名|更名)(?:为|成)\s*{_IDENT}"),
    re.compile(rf"^\s*(?:重命名|改名)\s*{_IDENT}\s*(?:为|成)\s*{_IDENT}"),
)
MODEL_FILES = 3  # files the model is asked to edit, best search hits first
MODEL_MAX_TOKENS = 512
_BLOCK = re.compile(r"<{5,9} ?SEARCH\n(.*?)\n?={5,9}\n(.*?)\n?>{5,9} ?REPLACE", re.DOTALL)

MSG_NOT_FOUND = N_("nothing named {name} is indexed")
MSG_NO_PARSER = N_("Zhiyin cannot parse this kind of file")
MSG_NO_BLOCKS = N_("the model proposed no change")
MSG_NO_MATCH = N_("the model's change does not match the file's text exactly once")
MSG_TOO_LONG = N_("the file is too long for the model")
MSG_NO_FILES = N_("no file in the index matches the instruction")

ReadText = Callable[[Path], str]


def parse_rename(instruction: str) -> tuple[str, str] | None:
    """(old, new) when the instruction asks to rename an identifier."""
    for pattern in RENAME_PATTERNS:
        if m := pattern.search(instruction):
            return m.group(1), m.group(2)
    return None


def plan_edits(instruction: str, root: Path, index: Index, engine: Callable[[], TextModel],
               read_text: ReadText, on_file: Callable[[str], None] | None = None) -> EditPlan:
    """The edits `instruction` asks for. `engine` is called only when the model is needed;
    `on_file` is told each file as its turn comes (for progress)."""
    if rename := parse_rename(instruction):
        return rename_plan(instruction, *rename, root, index, read_text, on_file)
    return model_plan(instruction, root, index, engine(), read_text, on_file)


def rename_plan(instruction: str, old: str, new: str, root: Path, index: Index, read_text: ReadText,
                on_file: Callable[[str], None] | None = None) -> EditPlan:
    plan = EditPlan(instruction)
    paths = index.files_naming(old)
    if not paths:
        plan.problems[old] = _(MSG_NOT_FOUND).format(name=old)
    for path in paths:
        if on_file is not None:
            on_file(path)
        language = language_for_path(path)
        if language not in GRAMMARS:
            plan.problems[path] = _(MSG_NO_PARSER)
            continue
        text = _read(root, path, read_text, plan)
        if text is None:
            continue
        spans = identifier_spans(text, language, old)
        if spans:
            plan.edits.append(FileEdit(path, text_hash(text), tuple(Replacement(s, e, new) for s, e in spans)))
    return plan


def identifier_spans(text: str, language: str, name: str) -> list[tuple[int, int]]:
    """Code point spans of the identifier nodes spelled `name` (not strings, not comments)."""
    data = text.encode("utf-8", "surrogatepass")
    wanted = name.encode()
    starts = []
    stack = [parser_for(language).parse(data).root_node]
    while stack:
        node = stack.pop()
        if node.child_count == 0:
            if node.type.endswith("identifier") and node.text == wanted:
                starts.append(node.start_byte)
        else:
            stack.extend(node.children)
    spans, consumed, chars = [], 0, 0
    for start in sorted(starts):  # byte offsets to code points, one pass
        chars += len(data[consumed:start].decode("utf-8", "surrogatepass"))
        consumed = start
        spans.append((chars, chars + len(name)))
    return spans


def model_plan(instruction: str, root: Path, index: Index, engine: TextModel, read_text: ReadText,
               on_file: Callable[[str], None] | None = None, paths: list[str] | None = None) -> EditPlan:
    """The model's edits to `paths`, else to the files hybrid search finds for the instruction."""
    plan = EditPlan(instruction)
    if paths is None:
        paths = list(dict.fromkeys(hit.path for hit in index.search(instruction, k=20)))[:MODEL_FILES]
    if not paths:
        plan.problems["."] = _(MSG_NO_FILES)
    for path in paths:
        if on_file is not None:
            on_file(path)
        text = _read(root, path, read_text, plan)
        if text is None:
            continue
        prompt = edit_prompt(engine, instruction, path, text)
        if prompt.num_tokens + MODEL_MAX_TOKENS >= engine.max_context:
            plan.problems[path] = _(MSG_TOO_LONG)
            continue
        params = SamplingParams(max_tokens=MODEL_MAX_TOKENS, stop=prompt.stop, stop_token_ids=prompt.stop_token_ids)
        answer = "".join(chunk.text for chunk in engine.generate(prompt, params))
        replacements = search_replace_spans(text, answer)
        if replacements is None:
            plan.problems[path] = _(MSG_NO_MATCH)
        elif not replacements:
            plan.problems[path] = _(MSG_NO_BLOCKS)
        else:
            plan.edits.append(FileEdit(path, text_hash(text), tuple(replacements)))
    return plan


def search_replace_spans(text: str, answer: str) -> list[Replacement] | None:
    """The SEARCH/REPLACE blocks of `answer` as replacements in `text`; None when a block's search
    text does not occur exactly once or two blocks overlap."""
    replacements = []
    for search, replace in _BLOCK.findall(answer):
        if not search or text.count(search) != 1:
            return None
        start = text.index(search)
        replacements.append(Replacement(start, start + len(search), replace))
    replacements.sort(key=lambda r: r.start)
    if any(a.end > b.start for a, b in itertools.pairwise(replacements)):
        return None
    return replacements


def _read(root: Path, path: str, read_text: ReadText, plan: EditPlan) -> str | None:
    full = workspace_path(root, path)
    try:
        if full is None:
            raise OSError(path)
        return read_text(full)
    except (OSError, UnicodeDecodeError):
        plan.problems[path] = _(MSG_UNREADABLE)
        return None
