"""`zhiyin review`: review a change headlessly; exit 1 when findings reach --fail-on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zhiyin.config import load_config
from zhiyin.diffs import merge_base, read_diff
from zhiyin.i18n import N_, _, set_locale
from zhiyin.memory import learn, open_memory
from zhiyin.review import review
from zhiyin.review_formats import render
from zhiyin.runtime import open_engine, open_index, repository_root

EXIT_FINDINGS = 1
MSG_LEARNED = N_("{count} fix commits of this change remembered as pending fix memories.")


def run_review(args: argparse.Namespace) -> int:
    if args.lang:
        set_locale(args.lang)
    root = repository_root(args.repo)
    # the base is resolved once: read_diff only checks a base it is given
    base = args.base or ("HEAD" if args.staged or args.worktree else merge_base(root, None))
    changes = read_diff(root, base, args.head, staged=args.staged, worktree=args.worktree)
    memory = None if args.no_memory and not args.learn else open_memory(root, embeddings=False)
    engine = index = None
    if args.with_model:
        engine = open_engine(load_config(root), model=args.model)
        index = open_index(root, embeddings=False)
        index.update()
    try:
        result = review(root, changes, base, memory=None if args.no_memory else memory,
                        max_seconds=args.max_seconds, engine=engine, index=index)
        if args.learn:
            report = learn(memory, rules=False, git=True, since=base)
            print(_(MSG_LEARNED).format(count=sum(r.action in ("added", "superseded") for r in report.fixes)),
                  file=sys.stderr)
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
