"""The arguments of `zhiyin memory …` (kept apart from the commands: `zhiyin --help` must not load the store)."""

from __future__ import annotations

import argparse

from engram.records import KINDS, PURPOSES, STATUSES
from zhiyin.i18n import _


def add_parser(verbs: argparse._SubParsersAction, bounded, add_repo_argument) -> None:
    """The `memory` verb and its sub-verbs."""
    memory = verbs.add_parser("memory", help=_("Read and edit the project memory (conventions, decisions, fixes)."),
                              description=_("The project memory: what Zhiyin remembers about this repository and "
                                            "about you. Stored on this machine only."))
    sub = memory.add_subparsers(dest="memory_verb", metavar=_("COMMAND"), required=True)

    def with_repo(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_repo_argument(parser)
        return parser

    listing = with_repo(sub.add_parser("list", help=_("List the memories of this repository and yours.")))
    listing.add_argument("--status", choices=STATUSES, action="append", default=None,
                         help=_("only this status; may be given several times (default: active, stale, pending)"))
    listing.add_argument("--kind", choices=KINDS, default=None, help=_("only this kind"))
    listing.add_argument("--json", action="store_true", help=_("one JSON object per memory"))

    search = with_repo(sub.add_parser("search", help=_("Recall the memories a question needs.")))
    search.add_argument("query", help=_("a question or keywords, in English or Chinese"))
    search.add_argument("--path", default=None, help=_("the file being worked on (memories with matching globs come up)"))
    search.add_argument("--purpose", choices=PURPOSES, default="chat",
                        help=_("how much to recall (default: %(default)s)"))
    search.add_argument("--json", action="store_true", help=_("one JSON object per memory"))
    search.add_argument("--no-embeddings", action="store_true", help=_("words and globs only: no model is loaded"))

    show = with_repo(sub.add_parser("show", help=_("Show one memory with its evidence and history.")))
    show.add_argument("id", type=bounded(int, 1))

    add = with_repo(sub.add_parser("add", help=_("Remember something about this repository (or about you).")))
    add.add_argument("statement", help=_("what to remember, in one sentence"))
    _add_content_arguments(add, bounded)
    add.add_argument("--user", action="store_true", help=_("about you, in every repository (default: this repository)"))

    edit = with_repo(sub.add_parser("edit", help=_("Correct a memory: the new text replaces it, the old one is kept as history.")))
    edit.add_argument("id", type=bounded(int, 1))
    edit.add_argument("--statement", default=None, help=_("the corrected sentence"))
    _add_content_arguments(edit, bounded, defaults=False)

    for name, help_text in (("approve", _("Make pending memories active.")),
                            ("reject", _("Reject memories: they are kept as history but never recalled.")),
                            ("forget", _("Delete memories for good, with their evidence.")),
                            ("pin", _("Pin memories: recall ranks them higher."))):
        verb = with_repo(sub.add_parser(name, help=help_text))
        verb.add_argument("ids", nargs="+", type=bounded(int, 1), metavar="ID")
        if name == "pin":
            verb.add_argument("--off", action="store_true", help=_("unpin instead"))

    export = with_repo(sub.add_parser("export", help=_("Write the memories out: JSONL (lossless), AGENTS.md or Cursor rules.")))
    export.add_argument("--format", choices=["jsonl", "agents-md", "cursor-rules"], default="jsonl",
                        help=_("default: %(default)s"))
    export.add_argument("--output", "-o", default=None,
                        help=_("file (folder for cursor-rules); default: standard output, or .cursor/rules"))
    export.add_argument("--all", action="store_true", help=_("include superseded and rejected memories"))

    imported = with_repo(sub.add_parser("import", help=_("Read memories from a JSONL export.")))
    imported.add_argument("file")

    learned = with_repo(sub.add_parser("learn", help=_("Learn conventions from rule files and fixes from git history.")))
    learned.add_argument("--since", default=None, metavar="REF",
                         help=_("git history after this commit or date (default: since the last learn)"))
    learned.add_argument("--no-rules", action="store_true", help=_("skip the rule files"))
    learned.add_argument("--no-git", action="store_true", help=_("skip git history"))


def _add_content_arguments(parser: argparse.ArgumentParser, bounded, defaults: bool = True) -> None:
    parser.add_argument("--kind", choices=KINDS, default="convention" if defaults else None,
                        help=_("what sort of memory (default: convention)") if defaults else _("a new kind"))
    parser.add_argument("--why", default=None, help=_("the rationale"))
    parser.add_argument("--how", default=None, help=_("how to apply it"))
    parser.add_argument("--glob", action="append", default=None, metavar="GLOB",
                        help=_("only for files matching this pattern; may be given several times"))
    parser.add_argument("--importance", type=bounded(float, 0, 1), default=0.5 if defaults else None,
                        help=_("0 to 1 (default: 0.5)") if defaults else _("0 to 1"))
