"""`zhiyin memory …`: read, correct and grow the project memory from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engram.portable import (
    export_jsonl,
    import_jsonl,
    memory_to_json,
    render_agents_md,
    render_cursor_rules,
)
from engram.recall import recall
from engram.records import Memory, MemoryDraft
from zhiyin.i18n import N_, _
from zhiyin.memory import (
    MSG_MOVED_ASIDE,
    RepositoryMemory,
    learn,
    open_memory,
    remember,
)
from zhiyin.runtime import repository_root

KIND_LABELS = {"convention": N_("convention"), "decision": N_("decision"), "fix": N_("fix"),
               "preference": N_("preference"), "gotcha": N_("gotcha")}
STATUS_LABELS = {"active": N_("active"), "pending": N_("pending"), "superseded": N_("superseded"),
                 "stale": N_("stale"), "rejected": N_("rejected")}
ACTIONS = {"added": N_("Remembered as #{id}."), "duplicate": N_("Already remembered as #{id}; the evidence was added."),
           "merged": N_("Merged into #{id}, which says the same."),
           "superseded": N_("Remembered as #{id}; it replaces {old}.")}
MSG_REDACTED = N_("{count} secret(s) were replaced by placeholders before storing.")
MSG_NONE = N_("No memories.")
MSG_STATUS_SET = N_("#{id} is now {status}.")
MSG_FORGOTTEN = N_("#{id} is forgotten: deleted from the store and its indexes.")
MSG_PINNED = N_("#{id} is pinned: recall ranks it higher.")
MSG_UNPINNED = N_("#{id} is no longer pinned.")
MSG_EXPORTED = N_("{count} memories written to {path}.")
MSG_IMPORTED = N_("{count} memories imported from {path}.")
MSG_LEARNED = N_("{rules} conventions from rule files, {fixes} fixes from git history (pending: approve them with "
                 "`zhiyin memory approve ID`); {retired} rules no longer in their files.")
MSG_STALE = N_("(stale: the cited lines changed since)")


def run_memory(args: argparse.Namespace) -> int:
    embeddings = args.memory_verb not in ("list", "show", "approve", "reject", "forget", "pin", "export") and \
        not getattr(args, "no_embeddings", False)
    memory = open_memory(repository_root(args.repo), embeddings=embeddings)
    if memory.store.moved_aside is not None:
        print(_(MSG_MOVED_ASIDE).format(path=memory.store.moved_aside), file=sys.stderr)
    try:
        return COMMANDS[args.memory_verb](memory, args)
    finally:
        memory.store.close()


def _list(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    statuses = args.status or ["active", "stale", "pending"]
    memories = memory.store.list(memory.repo, statuses=statuses, kind=args.kind)
    if args.json:
        for m in memories:
            print(json.dumps({"id": m.id, **memory_to_json(m)}, ensure_ascii=False))
        return 0
    _print_table(memories)
    return 0


def _search(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    found = recall(memory.store, args.query, memory.repo, path=args.path, purpose=args.purpose, root=memory.root)
    if args.json:
        for r in found:
            print(json.dumps({"id": r.memory.id, "score": round(r.score, 5), "stale": r.stale, "legs": list(r.legs),
                              **memory_to_json(r.memory)}, ensure_ascii=False))
        return 0
    _print_table([r.memory for r in found], stale={r.memory.id for r in found if r.stale})
    return 0


def _show(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    m = memory.store.get(args.id)
    console = Console()
    console.print(f"[bold]#{m.id}[/bold] {_(KIND_LABELS[m.kind])} · {_(STATUS_LABELS[m.status])}"
                  + (" · 📌" if m.pinned else ""))
    console.print(Text(m.statement))
    for label, value in ((_("why"), m.rationale), (_("how to apply"), m.how_to_apply),
                         (_("applies to"), ", ".join(m.globs))):
        if value:
            console.print(Text(f"{label}: ", style="dim") + Text(value))
    for c in m.citations:
        where = c.file + (f":{c.start_line}-{c.end_line}" if c.start_line else "") if c.file else ""
        console.print(f"[dim]{_('evidence')}:[/dim]", " ".join(x for x in (c.source, c.commit or "", where) if x))
    for at, _id, action, detail in memory.store.events(m.id):
        console.print(f"[dim]{time.strftime('%Y-%m-%d %H:%M', time.localtime(at))} {action}[/dim]",
                      json.dumps(detail, ensure_ascii=False) if detail else "")
    return 0


def _add(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    draft = MemoryDraft(kind=args.kind, statement=args.statement, rationale=args.why or "",
                        how_to_apply=args.how or "", globs=tuple(args.glob or ()),
                        scope="user" if args.user else "repository", importance=args.importance)
    _print_result(remember(memory, draft))
    return 0


def _edit(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    result = memory.store.edit(args.id, statement=args.statement, kind=args.kind, rationale=args.why,
                               how_to_apply=args.how, globs=tuple(args.glob) if args.glob else None,
                               importance=args.importance)
    _print_result(result)
    return 0


def _set_status(status: str):
    def run(memory: RepositoryMemory, args: argparse.Namespace) -> int:
        for memory_id in args.ids:
            memory.store.set_status(memory_id, status, "by the user")
            print(_(MSG_STATUS_SET).format(id=memory_id, status=_(STATUS_LABELS[status])))
        return 0
    return run


def _forget(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    for memory_id in args.ids:
        memory.store.forget(memory_id)
        print(_(MSG_FORGOTTEN).format(id=memory_id))
    return 0


def _pin(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    for memory_id in args.ids:
        memory.store.pin(memory_id, not args.off)
        print(_(MSG_UNPINNED if args.off else MSG_PINNED).format(id=memory_id))
    return 0


def _export(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    statuses = None if args.all else ("active", "stale", "pending")
    memories = memory.store.list(memory.repo, statuses=statuses)
    if args.format == "cursor-rules":
        folder = Path(args.output) if args.output else memory.root / ".cursor" / "rules"
        written = render_cursor_rules(memories, folder)
        print(_(MSG_EXPORTED).format(count=len(memories), path=folder), file=sys.stderr)
        for path in written:
            print(path)
        return 0
    if args.format == "agents-md":
        text = render_agents_md(memories)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
            print(_(MSG_EXPORTED).format(count=len(memories), path=args.output), file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    if args.output:
        count = export_jsonl(memories, Path(args.output))
        print(_(MSG_EXPORTED).format(count=count, path=args.output), file=sys.stderr)
    else:
        for m in memories:
            print(json.dumps(memory_to_json(m), ensure_ascii=False))
    return 0


def _import(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    ids = import_jsonl(memory.store, Path(args.file), memory.repo)
    print(_(MSG_IMPORTED).format(count=len(ids), path=args.file))
    return 0


def _learn(memory: RepositoryMemory, args: argparse.Namespace) -> int:
    report = learn(memory, rules=not args.no_rules, git=not args.no_git, since=args.since)
    new_rules = sum(r.action in ("added", "superseded") for r in report.rules)
    new_fixes = sum(r.action in ("added", "superseded") for r in report.fixes)
    print(_(MSG_LEARNED).format(rules=new_rules, fixes=new_fixes, retired=report.rules_retired))
    redactions = sum(r.redactions for r in report.rules + report.fixes)
    if redactions:
        print(_(MSG_REDACTED).format(count=redactions))
    return 0


def _print_result(result) -> None:
    old = ", ".join(f"#{i}" for i in result.superseded)
    print(_(ACTIONS[result.action]).format(id=result.id, old=old))
    if result.redactions:
        print(_(MSG_REDACTED).format(count=result.redactions))


def _print_table(memories: list[Memory], stale: set[int] = frozenset()) -> None:
    if not memories:
        print(_(MSG_NONE))
        return
    table = Table(box=None)
    for header in ("#", _("kind"), _("status"), _("memory"), _("applies to")):
        table.add_column(header, overflow="fold")
    for m in memories:
        statement = m.statement + (f" {_(MSG_STALE)}" if m.id in stale else "")
        table.add_row(str(m.id), _(KIND_LABELS[m.kind]), _(STATUS_LABELS[m.status]) + (" 📌" if m.pinned else ""),
                      Text(statement), Text(", ".join(m.globs)))
    Console().print(table)


COMMANDS = {"list": _list, "search": _search, "show": _show, "add": _add, "edit": _edit,
            "approve": _set_status("active"), "reject": _set_status("rejected"), "forget": _forget, "pin": _pin,
            "export": _export, "import": _import, "learn": _learn}
