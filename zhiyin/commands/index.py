"""`zhiyin index`, `zhiyin search`, `zhiyin map`: build the repository index and look things up in it."""

import argparse
import json
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from indexer.index import IndexStats
from indexer.search import SearchFilters
from zhiyin.i18n import N_, _
from zhiyin.runtime import INDEX_PHASES, open_index

REBUILT = {
    "corrupt": N_("The index file was damaged; it has been rebuilt from the source files."),
    "version": N_("The index was written by another version of Zhiyin; it has been rebuilt."),
    "settings": N_("The chunk size changed; the index has been rebuilt."),
    "model": N_("The embedding model changed; vectors have been recomputed."),
}
SKIP_REASONS = {
    "binary": N_("binary"), "generated": N_("generated"), "minified": N_("minified"),
    "too_large": N_("too large"), "outside": N_("links outside the repository"), "broken_link": N_("broken links"), "unreadable": N_("unreadable"),
}


def run_index(args: argparse.Namespace) -> int:
    index = open_index(args.path, embeddings=not args.no_embeddings)
    err = Console(stderr=True)
    if sys.stderr.isatty() and not args.quiet:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int | None) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(_(INDEX_PHASES[phase]), total=total)
                bar.update(tasks[phase], completed=done, total=total)

            stats = index.update(progress)
    else:
        stats = index.update()
    _print_summary(stats, index.store.path)
    return 0


def _print_summary(stats: IndexStats, db_path) -> None:
    if stats.rebuilt:
        print(_(REBUILT[stats.rebuilt]), file=sys.stderr)
    table = Table(box=None, show_header=False)
    table.add_column(justify="right")
    table.add_column()
    for label, value in (
        (_("files"), stats.files), (_("lines"), stats.lines), (_("chunks"), stats.chunks),
        (_("symbols"), stats.symbols), (_("vectors"), stats.vectors),
        (_("parsed now"), stats.parsed), (_("renamed"), stats.renamed), (_("removed"), stats.removed),
    ):
        table.add_row(f"{value:,}", label)
    skipped = ", ".join(f"{n:,} {_(SKIP_REASONS[r])}" for r, n in sorted(stats.skipped.items()))
    table.add_row(f"{sum(stats.skipped.values()):,}", _("skipped") + (f" ({skipped})" if skipped else ""))
    Console(soft_wrap=True).print(table)
    print(_("Index up to date in {seconds:.1f} s: {path}").format(seconds=stats.seconds, path=db_path))


def run_search(args: argparse.Namespace) -> int:
    index = open_index(args.repo, embeddings=not args.no_embeddings)
    filters = SearchFilters(paths=tuple(args.path), languages=tuple(args.lang)) if args.path or args.lang else None
    hits = index.search(args.query, k=args.k, filters=filters)
    if args.json:
        for h in hits:
            print(json.dumps({"path": h.path, "start_line": h.start_line, "end_line": h.end_line, "symbol": h.symbol,
                              "kind": h.kind, "score": round(h.score, 5), "legs": list(h.legs)}, ensure_ascii=False))
        return 0
    if not hits:
        print(_("No results. Is the repository indexed? Run `zhiyin index` first."), file=sys.stderr)
        return 1
    out = Console(soft_wrap=True, highlight=False)
    for h in hits:
        out.print(f"[bold]{h.path}:{h.start_line}-{h.end_line}[/bold]  {h.symbol}  [dim]{'+'.join(h.legs)}[/dim]",
                  markup=True)
        for line in h.text.split("\n")[: args.lines]:
            out.print(f"    {line}", markup=False)
    return 0


def run_map(args: argparse.Namespace) -> int:
    index = open_index(args.repo, embeddings=False)
    text = index.repo_map(args.budget, focus=tuple(index.relative_path(f) for f in args.focus))
    if not text:
        print(_("The index is empty. Run `zhiyin index` first."), file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
