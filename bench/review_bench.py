"""`zhiyin review` against real bug fixes coming back (issue 8).

The fixes are real: each entry of bench/review_sets/fixes.jsonl is the hunk that fixed a bug
between two consecutive releases of a PyPI package, as its changelog says (git histories cannot be
fetched here, releases can; bench/review_sets/build.py re-derives and checks every entry). The
history is replayed in a fresh git repository:

1. for every fix, the enclosing function as it was before is committed, then the fix is committed
   with the changelog's words as its subject (the review learns fixes from history up to its base);
2. the buggy lines come back in a new function, identifiers renamed (`x` → `x_2`), one commit; the
   review of that commit should flag each with the right fix's commit;
3. real non-fix changes (bench/review_sets/clean.jsonl: features and refactors from the same
   releases) are committed and reviewed: every past-fix finding there is a false positive.

Baseline in the same run: plain text matching of the buggy lines (what a grep for the old code
finds once names have changed).

    python bench/review_bench.py

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import builtins
import json
import keyword
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from bench.machine import machine
from zhiyin.diffs import read_diff
from zhiyin.review import review

SETS = ROOT / "bench" / "review_sets"
_BUILTINS = set(dir(builtins)) | set(keyword.kwlist) | {"self", "cls"}
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.com", "HOME": str(root.parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def renamed(code: str) -> str:
    """`code` with its local names renamed (not attributes, keywords or builtins). A regex, not the
    tokenizer: a fix's lines are often a fragment of a statement."""
    return _NAME.sub(lambda m: m.group(0) if m.group(0) in _BUILTINS else f"{m.group(0)}_2", code)


def replace_block(code: str, old: str, new: str) -> str:
    """`code` with the (dedented) block `old` replaced by `new` at the indentation it has there."""
    for indent in sorted({line[: len(line) - len(line.lstrip())] for line in code.split("\n")}, key=len):
        block = textwrap.indent(old, indent, lambda line: True)
        if block in code:
            return code.replace(block, textwrap.indent(new, indent, lambda line: True), 1)
    raise ValueError("the buggy lines are not in the function")


def text_match(buggy: str, added: str) -> bool:
    """The baseline: a buggy line (with some content) appears verbatim among the added lines."""
    lines = {line.strip() for line in added.split("\n")}
    return any(len(line.strip()) > 8 and line.strip() in lines for line in buggy.split("\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sets", type=Path, default=SETS, help="folder with fixes.jsonl and clean.jsonl")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    fixes = [json.loads(line) for line in (args.sets / "fixes.jsonl").read_text(encoding="utf-8").splitlines() if line]
    clean = [json.loads(line) for line in (args.sets / "clean.jsonl").read_text(encoding="utf-8").splitlines() if line]
    with tempfile.TemporaryDirectory(prefix="review-bench-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        commit(repo, "Start")
        fix_commits = {}
        log(f"replaying {len(fixes)} fixes …")
        for i, fix in enumerate(fixes):
            module = repo / "history" / f"m{i}.py"
            module.parent.mkdir(exist_ok=True)
            module.write_text(fix["function"] + "\n", encoding="utf-8")
            commit(repo, f"Add {fix['id']}")
            module.write_text(replace_block(fix["function"], fix["buggy"], fix["fixed"]) + "\n", encoding="utf-8")
            fix_commits[fix["id"]] = commit(repo, f"Fix {fix['subject']}")
        learned = git(repo, "rev-parse", "HEAD").strip()

        for i, fix in enumerate(fixes):
            body = textwrap.indent(renamed(fix["buggy"]).rstrip("\n"), "    ")
            (repo / "new" / f"r{i}.py").parent.mkdir(exist_ok=True)
            (repo / "new" / f"r{i}.py").write_text(f"def reintroduced_{i}(arg_2):\n{body}\n", encoding="utf-8")
        commit(repo, "New helpers")
        changes = read_diff(repo, learned)
        result = review(repo, changes, learned)
        by_file = {}
        for f in result.findings:
            if f.source == "past_fix":
                by_file.setdefault(f.path, []).append(f)
        flagged = right_commit = baseline = 0
        for i, fix in enumerate(fixes):
            found = by_file.get(f"new/r{i}.py", [])
            flagged += bool(found)
            right_commit += any(f.evidence == f"commit {fix_commits[fix['id']]}" for f in found)
            baseline += text_match(fix["buggy"], (repo / "new" / f"r{i}.py").read_text(encoding="utf-8"))
        reintroduced_lines = sum(c.added_lines for c in changes)
        reintroduce_s = result.seconds

        base = commit(repo, "Checkpoint")
        for i, change in enumerate(clean):
            (repo / "features" / f"c{i}.py").parent.mkdir(exist_ok=True)
            (repo / "features" / f"c{i}.py").write_text(change["code"] + "\n", encoding="utf-8")
        commit(repo, "Features and refactors")
        clean_changes = read_diff(repo, base)
        clean_result = review(repo, clean_changes, base)
        false_positives = [f for f in clean_result.findings if f.source == "past_fix"]
        clean_lines = sum(c.added_lines for c in clean_changes)
        baseline_fp = sum(text_match(fix["buggy"], change["code"]) for fix in fixes for change in clean)

    lines = reintroduced_lines + clean_lines
    seconds = reintroduce_s + clean_result.seconds
    figures = {
        "fixes": len(fixes), "packages": sorted({f["package"] for f in fixes}),
        "reintroduced_flagged": flagged, "reintroduced_flagged_share": round(flagged / len(fixes), 3),
        "flagged_with_the_right_commit": right_commit,
        "clean_changes": len(clean), "false_positives_on_clean": len(false_positives),
        "false_positive_files": sorted({f.path for f in false_positives}),
        "seconds_per_100_changed_lines": round(100 * seconds / max(1, lines), 3), "changed_lines": lines,
    }
    baselines = {"text_match": {"reintroduced_flagged_share": round(baseline / len(fixes), 3),
                                "false_positives_on_clean": baseline_fp}}
    line = json.dumps({"bench": "review", "machine": machine(), "config": {"sets": str(args.sets)},
                       "figures": figures, "baselines": baselines, "targets": {}, "met": {}}, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    print(line)


if __name__ == "__main__":
    main()
