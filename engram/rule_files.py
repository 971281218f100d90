"""Conventions from the rule files people already write for humans and for other assistants.

AGENTS.md, CLAUDE.md and CONTRIBUTING.md (at the root, in `.github/` or `docs/`), Cursor's
`.cursor/rules/*.mdc`, Continue's `.continue/rules/*.md` and our own `.zhiyin/rules/*.md`: each
list item, or each paragraph outside lists, is one convention, cited by its lines. A file's
front matter may give `globs` (a list, or Cursor's comma-separated string); the rule then applies
to those paths only. The topic (file, heading, position) lets a rewritten rule supersede its old
wording when the file is learned again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from engram.records import Citation, MemoryDraft
from engram.store import lines_hash

ROOT_FILES = ("AGENTS.md", "CLAUDE.md", "CONTRIBUTING.md", ".github/CONTRIBUTING.md", "docs/CONTRIBUTING.md")
RULE_FOLDERS = ((".cursor/rules", "*.mdc"), (".continue/rules", "*.md"), (".zhiyin/rules", "*.md"))
MAX_RULE_CHARS = 600  # longer paragraphs are prose about the project, not a rule
MIN_RULE_CHARS = 12
RULE_IMPORTANCE = 0.7  # written down by the team on purpose

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Rule:
    text: str
    start_line: int  # 1-based
    end_line: int
    heading: str
    ordinal: int  # position within its heading's section


def rule_files(root: Path) -> list[Path]:
    """The rule files present under `root`, in a stable order."""
    found = [root / name for name in ROOT_FILES if (root / name).is_file()]
    for folder, pattern in RULE_FOLDERS:
        found += sorted(p for p in (root / folder).glob(pattern) if p.is_file())
    return found


def drafts_from_rule_file(root: Path, path: Path) -> list[MemoryDraft]:
    """One convention per rule in the file at `path` (inside `root`)."""
    relative = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    globs, body_start = _front_matter(lines)
    drafts = []
    for rule in parse_rules(lines, body_start):
        cited = lines[rule.start_line - 1 : rule.end_line]
        drafts.append(MemoryDraft(
            kind="convention", statement=rule.text, globs=globs, importance=RULE_IMPORTANCE,
            citations=(Citation("rule_file", relative, rule.start_line, rule.end_line, None, lines_hash(cited)),),
            topic=f"rule:{relative}#{rule.heading}#{rule.ordinal}"))
    return drafts


def parse_rules(lines: list[str], start: int = 0) -> list[Rule]:
    """List items (with their continuation lines) and stand-alone paragraphs; code blocks and
    headings are not rules."""
    rules: list[Rule] = []
    heading, ordinal = "", 0
    block: list[str] = []
    block_start = 0
    in_fence = False

    def flush(end: int) -> None:
        nonlocal block, ordinal
        text = " ".join(part.strip() for part in block).strip()
        if MIN_RULE_CHARS <= len(text) <= MAX_RULE_CHARS:
            ordinal += 1
            rules.append(Rule(text, block_start + 1, end, heading, ordinal))
        block = []

    for number in range(start, len(lines)):
        line = lines[number]
        if _FENCE.match(line):
            if block:
                flush(number)
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if m := _HEADING.match(line):
            if block:
                flush(number)
            heading, ordinal = m.group(2).strip(), 0
        elif m := _ITEM.match(line):
            if block:
                flush(number)
            block, block_start = [m.group(2)], number
        elif not line.strip():
            if block:
                flush(number)
        elif block:
            block.append(line)
        else:
            block, block_start = [line], number
    if block:
        flush(len(lines))
    return rules


def _front_matter(lines: list[str]) -> tuple[tuple[str, ...], int]:
    """(globs, index of the first body line) from a `---` YAML block at the top, if any."""
    if not lines or lines[0].strip() != "---":
        return (), 0
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return (), 0
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError:
        return (), end + 1
    globs = meta.get("globs") if isinstance(meta, dict) else None
    if isinstance(globs, str):
        globs = [g.strip() for g in globs.split(",")]
    if not isinstance(globs, list):
        return (), end + 1
    return tuple(str(g) for g in globs if str(g).strip()), end + 1
