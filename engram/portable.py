"""Memories out of and into the store: JSONL (lossless), AGENTS.md and Cursor rules (readable).

Export and import keep memory portable between machines and make a backup of everything
acknowledged; the Markdown renderings let other tools, and people, read the same memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engram.errors import InvalidMemoryError, MemoryImportError
from engram.records import Citation, Memory, MemoryDraft
from engram.store import MemoryStore

KIND_TITLES = {"convention": "Conventions", "decision": "Decisions", "fix": "Past fixes",
               "preference": "Preferences", "gotcha": "Gotchas"}


def memory_to_json(memory: Memory) -> dict[str, Any]:
    return {
        "kind": memory.kind, "statement": memory.statement, "rationale": memory.rationale,
        "how_to_apply": memory.how_to_apply, "globs": list(memory.globs), "scope": memory.scope,
        "status": memory.status, "importance": memory.importance, "pinned": memory.pinned, "topic": memory.topic,
        "valid_from": memory.valid_from, "valid_to": memory.valid_to,
        "citations": [{k: v for k, v in vars(c).items() if v is not None} for c in memory.citations],
    }


def export_jsonl(memories: Iterable[Memory], path: Path) -> int:
    """Writes one JSON object per memory; how many."""
    count = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for memory in memories:
            out.write(json.dumps(memory_to_json(memory), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)  # a reader never sees half a file
    return count


def import_jsonl(store: MemoryStore, path: Path, repo: str) -> list[int]:
    """Adds every memory of the file to `repo` (duplicates fold into existing ones); their ids."""
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            draft = MemoryDraft(
                kind=data["kind"], statement=data["statement"], rationale=data.get("rationale", ""),
                how_to_apply=data.get("how_to_apply", ""), globs=tuple(data.get("globs", ())),
                scope=data.get("scope", "repository"), importance=float(data.get("importance", 0.5)),
                citations=tuple(Citation(**c) for c in data.get("citations", ())), topic=data.get("topic"))
            status = data.get("status", "active")
            result = store.add(draft, repo, status=status if status in ("active", "pending") else "active",
                               source="import")
        except (ValueError, KeyError, TypeError, InvalidMemoryError) as e:
            raise MemoryImportError(path=str(path), line=number, detail=str(e)) from e
        if data.get("pinned"):
            store.pin(result.id)
        ids.append(result.id)
    return ids


def render_agents_md(memories: Iterable[Memory]) -> str:
    """The memories as an AGENTS.md section per kind."""
    by_kind: dict[str, list[Memory]] = {}
    for memory in memories:
        by_kind.setdefault(memory.kind, []).append(memory)
    parts = ["# Project memory\n", "Exported by Zhiyin (`zhiyin memory export --format agents-md`).\n"]
    for kind, title in KIND_TITLES.items():
        if kind in by_kind:
            parts.append(f"\n## {title}\n")
            parts += [_bullet(m) for m in by_kind[kind]]
    return "\n".join(parts) + "\n"


def render_cursor_rules(memories: Iterable[Memory], folder: Path) -> list[Path]:
    """One `.mdc` per kind and set of globs under `folder` (e.g. `.cursor/rules`); the files written."""
    groups: dict[tuple[str, tuple[str, ...]], list[Memory]] = {}
    for memory in memories:
        groups.setdefault((memory.kind, memory.globs), []).append(memory)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, ((kind, globs), group) in enumerate(sorted(groups.items()), 1):
        front = ["---", f"description: {KIND_TITLES[kind]} recorded by Zhiyin",
                 f"globs: {', '.join(globs)}" if globs else "globs:", f"alwaysApply: {'false' if globs else 'true'}",
                 "---", ""]
        path = folder / f"zhiyin-{kind}-{number}.mdc"
        path.write_text("\n".join(front + [_bullet(m) for m in group]) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _bullet(memory: Memory) -> str:
    text = f"- {memory.statement}"
    if memory.rationale:
        text += f" ({memory.rationale})"
    return text
