"""The review's checks that need no model: project conventions and past fixes.

Conventions: a rule that forbids something names it in code spans ("Never call `print()`;
use `logging`", "不要使用 `print` 调试，统一用 `logging`"): the spans before the word that
introduces the alternative are forbidden, those after it are the suggestion; "use `A` instead of
`B`" / "用 `A` 代替 `B`" forbids B. An added line that uses a forbidden name (as code, not in a
comment) is a finding; a rule with globs applies to matching files only.

Past fixes: the buggy side of an earlier fix (its removed lines) is compared with every window of
added lines, as tree-sitter leaf tokens with local names, strings and numbers abstracted (renamed
variables do not hide a re-introduced bug) but attribute names and builtins kept (they make a
shape specific). Thresholds (≥ 6 tokens, similarity ≥ 0.9) were set on bench/review_bench.py. Similar to the buggy side and closer to it than
to the fixed side: a finding that cites the fix's commit.
"""

from __future__ import annotations

import builtins
import difflib
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import pathspec

from engram.store import polarity
from indexer.languages import GRAMMARS, language_for_path, parser_for
from zhiyin.diffs import FileChange
from zhiyin.findings import Finding
from zhiyin.i18n import N_, _

MIN_SHAPE_TOKENS = 6  # a shorter buggy side matches too much ordinary code
SIMILARITY = 0.9
_BUILTIN_NAMES = frozenset(dir(builtins)) - {"self"}

MSG_CONVENTION = N_("`{name}` goes against a project convention: {rule}")
MSG_PAST_FIX = N_("This looks like a bug fixed before in commit {commit}: {subject}")

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_ALTERNATIVE = re.compile(r"\b(?:instead|rather|use|prefer|always)\b|改用|统一用|统一使用|而是|应该用|应使用|请用|换成|用",
                          re.IGNORECASE)
_INSTEAD_OF = re.compile(r"`([^`]+)`[^`]*?\binstead of\b[^`]*`([^`]+)`|用\s*`([^`]+)`\s*(?:代替|替代|取代)\s*`([^`]+)`",
                         re.IGNORECASE)
_LINE_COMMENT = re.compile(r"^\s*(?:#|//|--|/\*|\*)")


@dataclass(frozen=True)
class Convention:
    statement: str
    evidence: str  # "AGENTS.md:12" or "memory #5"
    globs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PastFix:
    subject: str
    commit: str
    before: tuple[str, ...]  # the buggy lines
    after: tuple[str, ...]  # the fixed lines


def forbidden_names(statement: str) -> tuple[list[str], list[str]]:
    """(names the rule forbids, names it recommends instead)."""
    pairs = _INSTEAD_OF.findall(statement)
    if pairs:
        forbidden = [b or d for _a, b, _c, d in pairs]
        allowed = [a or c for a, _b, c, _d in pairs]
        return [_name(f) for f in forbidden], [_name(a) for a in allowed]
    if not polarity(statement):
        return [], []
    first = _CODE_SPAN.search(statement)
    if first is None:
        return [], []
    cut = _ALTERNATIVE.search(statement, first.end())  # "never use `a`; use `b`": the word after the span
    head, tail = (statement[: cut.start()], statement[cut.start():]) if cut else (statement, "")
    return [_name(s) for s in _CODE_SPAN.findall(head)], [_name(s) for s in _CODE_SPAN.findall(tail)]


def convention_findings(change: FileChange, conventions: list[Convention]) -> list[Finding]:
    findings = []
    for convention in conventions:
        if convention.globs and not any(_spec(g).match_file(change.path) for g in convention.globs):
            continue
        forbidden, allowed = forbidden_names(convention.statement)
        for name in forbidden:
            pattern = re.compile(rf"(?<![\w.$]){re.escape(name)}(?![\w$])")
            for hunk in change.hunks:
                for line_number, text in hunk.added:
                    if _LINE_COMMENT.match(text) or not pattern.search(_code_part(text)):
                        continue
                    suggestion = pattern.sub(allowed[0], text, count=1) if len(allowed) == 1 else None
                    findings.append(Finding(
                        change.path, line_number, line_number, "warning", "convention",
                        f"convention/{_digest(convention.statement)}",
                        _(MSG_CONVENTION).format(name=name, rule=convention.statement),
                        "convention", convention.evidence, suggestion))
    return findings


def past_fix_findings(change: FileChange, fixes: list[PastFix]) -> list[Finding]:
    language = language_for_path(change.path)
    if language not in GRAMMARS or not change.hunks:
        return []
    findings = []
    for fix in fixes:
        buggy = shape_tokens(language, "\n".join(fix.before))
        if len(buggy) < MIN_SHAPE_TOKENS:
            continue
        fixed = shape_tokens(language, "\n".join(fix.after))
        for hunk in change.hunks:
            lines = hunk.added
            size = max(1, len([b for b in fix.before if b.strip()]))
            for start in range(max(1, len(lines) - size + 1)):
                window = lines[start : start + size]
                tokens = shape_tokens(language, "\n".join(text for _n, text in window))
                similar = _similarity(buggy, tokens)
                if similar >= SIMILARITY and similar > _similarity(fixed, tokens):
                    findings.append(Finding(
                        change.path, window[0][0], window[-1][0], "warning", "bug", f"past-fix/{fix.commit[:12]}",
                        _(MSG_PAST_FIX).format(commit=fix.commit[:8], subject=fix.subject),
                        "past_fix", f"commit {fix.commit}", "\n".join(fix.after) or None))
                    break
    return findings


@lru_cache(maxsize=4096)
def shape_tokens(language: str, code: str) -> tuple[str, ...]:
    """Leaf tokens of `code`, identifiers / strings / numbers abstracted, comments dropped."""
    tree = parser_for(language).parse(code.encode("utf-8", "surrogatepass"))
    tokens = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        kind = node.type
        if "comment" in kind:
            continue
        if "string" in kind and kind not in ("string_start", "string_end"):
            tokens.append("STR")
            continue
        if node.child_count == 0:
            if kind.endswith("identifier"):
                # local names are abstracted (a rename must not hide the bug); the APIs the code
                # calls — attributes after a dot, builtins — are what makes a shape specific
                text = node.text.decode("utf-8", "replace")
                tokens.append(text if text in _BUILTIN_NAMES or _is_attribute(node) else "ID")
            elif kind in ("integer", "float", "number", "int_literal", "float_literal", "number_literal"):
                tokens.append("NUM")
            else:
                tokens.append(node.text.decode("utf-8", "replace"))
        else:
            stack.extend(reversed(node.children))
    return tuple(tokens)


def _is_attribute(node) -> bool:
    parent = node.parent
    return parent is not None and parent.type in ("attribute", "member_expression", "field_expression",
                                                  "selector_expression") and parent.children[-1] == node


def _similarity(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _name(span: str) -> str:
    """`print()` → print; `os.path.join` → os.path.join."""
    return span.strip().removesuffix("()").split("(", 1)[0].strip()


def _code_part(line: str) -> str:
    """The line without a trailing `#` or `//` comment (a rough cut: strings are not parsed)."""
    return re.split(r"\s(?:#|//)\s", line, maxsplit=1)[0]


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


@lru_cache(maxsize=1024)
def _spec(glob: str) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines([glob])
