"""`zhiyin review`: review a change headlessly; exit 1 when findings reach --fail-on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zhiyin.diffs import read_diff
from zhiyin.i18n import set_locale
from zhiyin.memory import open_memory
from zhiyin.review import review
from zhiyin.review_formats import render
from zhiyin.runtime import repository_root

EXIT_FINDINGS = 1


def run_review(args: argparse.Namespace) -> int:
    if args.lang:
        set_locale(args.lang)
    root = repository_root(args.repo)
    changes = read_diff(root, args.base, args.head, staged=args.staged, worktree=args.worktree)
    from zhiyin.diffs import merge_base

    base = args.base or ("HEAD" if args.staged or args.worktree else merge_base(root, None))
    memory = None if args.no_memory else open_memory(root, embeddings=False)
    try:
        result = review(root, changes, base, memory=memory, max_seconds=args.max_seconds)
    finally:
        if memory is not None:
            memory.store.close()
    color = args.format == "text" and args.output is None and sys.stdout.isatty()
    report = render(result, args.format, color=color)
    if args.output:
        Path(args.output).write_text(report + "\n", encoding="utf-8")
    else:
        print(report)
    return EXIT_FINDINGS if any(f.at_least(args.fail_on) for f in result.findings) else 0
