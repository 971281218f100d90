"""Retrieval evaluation sets mined from real code, with ground truth that owes nothing to our indexer.

Ground truth comes from the languages' own parsers: Python's `ast` (with Python's import and scope
rules applied by hand) and tree-sitter's TypeScript grammar (ES import/export rules). Sampling is
seeded and capped, so a set is a pure function of (corpus, seed, max_items).

Sets (corpora from bench/corpora.py):

- `cross_file_python` (stdlib slice), `cross_file_typescript` (rxjs): a call `f(` or `mod.f(` in file
  B whose callee is a top-level function or class defined in file A != B and reached through B's
  imports (`from pkg.a import f`, `from . import a`, `import pkg.a as m`, `import { f } from './a'`,
  `import * as m from './a'`, following `from x import *` / `export * from` re-exports). The name must
  be defined at top level exactly once in the whole corpus and must not be rebound in B (a local
  variable, parameter or second import with that name drops it). The cursor sits right after `(`:
  1-based line, 0-based column in code points (like indexer.records.Symbol). At most
  `max_per_target` call sites per definition, so a helper called 300 times does not swamp the set.
- `docstring_en` (stdlib slice), `docstring_zh` (wechatpy): functions and methods whose docstring's
  first line is a sentence (>= 4 English words and not a signature like `f(x) -> y`; >= 6 CJK
  characters), first lines shared by two functions left out. Query = that line verbatim.
- `jsdoc_en` (rxjs): the same for the first prose line of a top-level function's or class's
  `/** ... */` comment, `{@link X}` and HTML tags reduced to their text.

Sizes with the defaults (seed 0, max 200; Python 3.11.7): cross_file_python 200 of 1,164 candidates
(146 distinct definitions), cross_file_typescript 171 of 562 (the per-definition cap binds),
docstring_en 200 of 1,726, docstring_zh 200 of 342, jsdoc_en 171 of 171.

Known limits: a query is the first line as written, so about a third of the English ones stop
mid-sentence where the docstring wraps; the stdlib and rxjs are surely in every code model's
training data (an embedding model may have seen these very docstrings next to this code); TS
shadowing is checked per file, not per scope, which drops some valid call sites but adds none.

The honest choice for query sets: the index contains the docstring itself, so with it present the
query is an exact substring of the expected chunk and BM25 all but trivially finds it. Each query set
therefore names two roots: `root` (the corpus as shipped: "docstring present") and `stripped_root`,
a copy in which the docstring (the whole of it, not just the first line) of every sampled function
is replaced by `pass` (JSDoc: by blank lines), line numbers unchanged, so the same expected ranges
hold in both ("docstring removed": the query must be matched by names, code and semantics). Report
both. `QueryItem.in_stripped` says whether the query's text still occurs somewhere in the stripped
corpus (a comment, another function's longer docstring): such items are kept (that is real code),
but the count is printed so nobody mistakes them for leaks.

A hit counts when `Target.matches(hit.path, hit.start_line, hit.end_line)`: same corpus-relative
path, overlapping line ranges. Ranges run from the `def`/`class`/first overload line to the end line
(decorators and a leading JSDoc are outside the range; a chunk that includes them still overlaps).

    python bench/retrieval_sets.py --summary            # counts and 3 examples per set
    python bench/retrieval_sets.py --json sets.json     # everything (add --with-text for file texts)

From a bench:

    sets = standard_sets()
    s = sets["cross_file_python"]
    ranks = [rank_of(it.expected, idx.context_for_cursor(it.path, it.line, it.column, budget, text=it.text))
             for it in s.items]                         # idx indexes s.root
    recall_at(ranks, 5), recall_at(ranks, 1)
    q = sets["docstring_zh"]                            # index q.root, then q.stripped_root
    ranks = [rank_of(it.expected, idx.search(it.query, k=5, legs=("bm25",))) for it in q.items]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import posixpath
import random
import re
import shutil
import sys
import tokenize
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora
from corpora import Corpus

MAX_ITEMS = 200
MAX_PER_TARGET = 2
SEED = 0
MIN_EN_WORDS, MIN_CJK_CHARS = 4, 6
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
EN_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
SIGNATURE_LINE = re.compile(r"^[\w.]+\s*\(.*\)(\s*->.*)?$|->|=")  # "S.lower() -> str", "f(x)", "a, b = f(S)"
JSDOC_LINK = re.compile(r"\{@\w+\s+([^}|\s]+)(?:[|\s]([^}]*))?\}")  # {@link X} -> X, {@link X|text} -> text
HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


# --- the items -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    path: str  # corpus-relative POSIX path
    start_line: int  # 1-based: the def / class / first overload line
    end_line: int  # inclusive
    name: str  # qualified within the file: "f", "Class.method"

    def matches(self, path: str | Path, start_line: int, end_line: int, root: Path | None = None) -> bool:
        if root is not None and Path(path).is_absolute():
            path = Path(path).relative_to(root)
        same_path = PurePosixPath(Path(path).as_posix()) == PurePosixPath(self.path)
        return same_path and start_line <= self.end_line and self.start_line <= end_line


@dataclass(frozen=True)
class CursorItem:
    path: str  # file B, corpus-relative
    line: int  # 1-based
    column: int  # 0-based, code points, just after "("
    call: str  # the callee as written, e.g. "events.get_event_loop"
    expected: Target
    text: str = field(repr=False)  # B's full text


@dataclass(frozen=True)
class QueryItem:
    query: str
    expected: Target
    in_stripped: bool  # the query's text still occurs somewhere in the docstring-stripped copy


@dataclass
class CursorSet:
    name: str
    corpus: str
    root: Path
    items: list[CursorItem]
    num_candidates: int  # call sites that qualified before capping and sampling
    seed: int

    def to_json(self, with_text: bool = False) -> dict:
        data = {**asdict(self), "root": str(self.root)}
        for item in data["items"] if not with_text else ():
            del item["text"]
        return data


@dataclass
class QuerySet:
    name: str
    corpus: str
    root: Path  # docstrings present
    stripped_root: Path  # the sampled functions' docstrings removed, same line numbers
    items: list[QueryItem]
    num_candidates: int
    seed: int

    def to_json(self, with_text: bool = False) -> dict:  # with_text: query sets hold no file texts
        return {**asdict(self), "root": str(self.root), "stripped_root": str(self.stripped_root)}


def rank_of(expected: Target, hits: Sequence, root: Path | None = None) -> int | None:
    """1-based rank of the first hit (anything with .path/.start_line/.end_line) matching expected."""
    for rank, hit in enumerate(hits, 1):
        if expected.matches(hit.path, hit.start_line, hit.end_line, root):
            return rank
    return None


def recall_at(ranks: Iterable[int | None], k: int) -> float:
    ranks = list(ranks)
    return sum(1 for r in ranks if r is not None and r <= k) / max(len(ranks), 1)


def _sample(candidates: list, key, max_items: int, seed: int, max_per_target: int | None = None) -> list:
    """Seeded sample of at most max_items, at most max_per_target per key(c); input order fixed first."""
    pool = sorted(
        candidates,
        key=lambda c: (c.expected.path, c.expected.start_line, getattr(c, "path", ""), getattr(c, "line", 0)),
    )
    random.Random(seed).shuffle(pool)
    taken, per_key = [], Counter()
    for c in pool:
        if max_per_target is not None and per_key[key(c)] >= max_per_target:
            continue
        per_key[key(c)] += 1
        taken.append(c)
        if len(taken) == max_items:
            break
    return sorted(
        taken, key=lambda c: (getattr(c, "path", c.expected.path), getattr(c, "line", c.expected.start_line))
    )


def _char_col(line_text: str, byte_col: int) -> int:
    """Code-point column of a UTF-8 byte column (what ast and tree-sitter report)."""
    return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


# --- Python: modules, definitions, imports -------------------------------------------------------


@dataclass
class _PyModule:
    rel: str
    name: str  # dotted
    is_package: bool
    text: str
    tree: ast.Module
    defs: dict[str, list[ast.AST]] = field(default_factory=dict)  # top-level def/class, incl. under if/try
    reexports: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name -> (module, name)
    stars: list[str] = field(default_factory=list)  # modules star-imported at top level

    def import_base(self, level: int, module: str | None) -> str | None:
        if level == 0:
            return module
        parts = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
        if level - 1 > len(parts):
            return None
        parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else [])) or None


def _read_python(path: Path) -> tuple[str, ast.Module] | None:
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding), ast.parse(data)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None  # a deliberately broken file: not evaluation material


def _python_modules(corpus: Corpus) -> dict[str, _PyModule]:
    modules: dict[str, _PyModule] = {}
    for rel in corpus.files():
        parsed = _read_python(corpus.root / rel)
        if parsed is None:
            continue
        parts = rel[:-3].split("/")
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        mod = _PyModule(rel, name, is_package, *parsed)
        for stmt in _top_level(mod.tree.body):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                mod.defs.setdefault(stmt.name, []).append(stmt)
            elif isinstance(stmt, ast.ImportFrom):
                base = mod.import_base(stmt.level, stmt.module)
                for alias in stmt.names if base else ():
                    if alias.name == "*":
                        mod.stars.append(base)
                    else:
                        mod.reexports.setdefault(alias.asname or alias.name, []).append((base, alias.name))
        modules[name] = mod
    return modules


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking inside if/try/with (platform-dependent definitions)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for sub in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(stmt, sub, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _top_level(handler.body)


class _PyResolver:
    """Follows Python's rules from (module, attribute) to a definition or a submodule."""

    def __init__(self, modules: dict[str, _PyModule]):
        self.modules = modules
        self.def_counts = Counter(
            name for m in modules.values() for name, nodes in m.defs.items() for _ in nodes
        )

    def resolve(self, module: str, attr: str, depth: int = 0) -> tuple | None:
        """("def", _PyModule, node) | ("module", name) | None."""
        mod = self.modules.get(module)
        if mod is None or depth > 8:
            return None
        if attr in mod.defs:
            # Also imported from a module of the corpus: two candidates. From a C accelerator
            # (`from _heapq import *`-style, outside the corpus): the def is the only source here.
            shadowed = any(src in self.modules for src, _ in mod.reexports.get(attr, ()))
            nodes = mod.defs[attr]
            return ("def", mod, nodes[0]) if len(nodes) == 1 and not shadowed else None
        if attr in mod.reexports:
            sources = set(mod.reexports[attr])
            return self.resolve(*sources.pop(), depth + 1) if len(sources) == 1 else None
        if f"{module}.{attr}" in self.modules:
            return ("module", f"{module}.{attr}")
        found = {
            id(r[2]): r for star in mod.stars if (r := self.resolve(star, attr, depth + 1)) and r[0] == "def"
        }
        return found.popitem()[1] if len(found) == 1 else None

    def value_of(self, binding: tuple) -> tuple | None:
        if binding[0] == "import_module":
            return ("module", binding[1]) if binding[1] in self.modules else None
        if binding[0] == "import_name":
            return self.resolve(binding[1], binding[2])
        return None


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _bindings(scope: ast.AST) -> tuple[dict[str, set[tuple]], set[str]]:
    """Names bound in one scope (nested scopes pruned) and the names it declares global."""
    bound: dict[str, set[tuple]] = defaultdict(set)
    declared_global: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        for arg in ast.walk(scope.args):
            if isinstance(arg, ast.arg):
                bound[arg.arg].add(("other",))
    stack = list(scope.body if isinstance(scope.body, list) else [scope.body])
    while stack:
        node = stack.pop()
        if isinstance(node, _SCOPES):
            if not isinstance(node, ast.Lambda):
                bound[node.name].add(("other",))
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname].add(("import_module", alias.name))
                else:
                    head = alias.name.split(".")[0]
                    bound[head].add(("import_module", head))
        elif isinstance(node, ast.ImportFrom):
            bound_names = [(a.asname or a.name, a.name) for a in node.names if a.name != "*"]
            for local, name in bound_names:
                bound[local].add(("import_from", node.level, node.module, name))
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound[node.id].add(("other",))
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound[node.name].add(("other",))
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound[node.rest].add(("other",))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared_global.update(node.names)
        stack.extend(ast.iter_child_nodes(node))
    return bound, declared_global


def _python_call_sites(mod: _PyModule, resolver: _PyResolver) -> Iterator[tuple[ast.Call, str, tuple]]:
    """(call, callee text, ("def", module, node)) for calls whose callee resolves through imports."""
    cache: dict[int, tuple] = {}

    def scope_info(scope: ast.AST) -> tuple:
        if id(scope) not in cache:
            bound, declared = _bindings(scope)
            resolved = {}
            for name, bindings in bound.items():
                values = set()
                for b in bindings:
                    if b[0] == "import_from":
                        base = mod.import_base(b[1], b[2])
                        b = ("import_name", base, b[3]) if base else ("other",)
                    values.add(b)
                resolved[name] = values
            cache[id(scope)] = (resolved, declared)
        return cache[id(scope)]

    def lookup(name: str, chain: list[ast.AST]) -> tuple | None:
        innermost = chain[-1]
        for scope in reversed(chain):
            if isinstance(scope, ast.ClassDef) and scope is not innermost:
                continue  # class bodies are not visible from the functions inside them
            bound, declared = scope_info(scope)
            if name in declared:
                return lookup(name, chain[:1])
            if name in bound:
                values = bound[name]
                if len(values) != 1 or next(iter(values))[0] == "other":
                    return None  # rebound or imported from two places
                return resolver.value_of(next(iter(values)))
        return None

    def callee(func: ast.expr, chain: list[ast.AST]) -> tuple | None:
        attrs = []
        while isinstance(func, ast.Attribute):
            attrs.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return None
        value = lookup(func.id, chain)
        for attr in reversed(attrs):
            if value is None or value[0] != "module":
                return None
            value = resolver.resolve(value[1], attr)
        return value if value is not None and value[0] == "def" else None

    def visit(node: ast.AST, chain: list[ast.AST]) -> Iterator[tuple]:
        if isinstance(node, _SCOPES):
            outer = [
                *getattr(node, "decorator_list", []),
                *getattr(node, "bases", []),
                *getattr(node, "keywords", []),
            ]
            if not isinstance(node, ast.ClassDef):
                outer += [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
            for child in outer:
                yield from visit(child, chain)
            inner = node.body if isinstance(node.body, list) else [node.body]
            for child in inner:
                yield from visit(child, [*chain, node])
            return
        if isinstance(node, ast.Call):
            value = callee(node.func, chain)
            if value is not None:
                yield node, ast.unparse(node.func), value
        for child in ast.iter_child_nodes(node):
            yield from visit(child, chain)

    yield from visit(mod.tree, [mod.tree])


def cross_file_python(
    corpus: Corpus, max_items: int = MAX_ITEMS, seed: int = SEED, max_per_target: int = MAX_PER_TARGET
) -> CursorSet:
    modules = _python_modules(corpus)
    resolver = _PyResolver(modules)
    candidates = []
    for mod in modules.values():
        lines = mod.text.split("\n")  # not splitlines(): a form feed does not end a line for ast
        for call, callee, (_, target_mod, node) in _python_call_sites(mod, resolver):
            if target_mod.rel == mod.rel or resolver.def_counts[node.name] != 1:
                continue
            line = lines[call.func.end_lineno - 1]
            end = _char_col(line, call.func.end_col_offset)
            gap = len(line[end:]) - len(line[end:].lstrip())
            if line[end + gap : end + gap + 1] != "(":
                continue  # "(" on the next line: rare, and the cursor position would be a guess
            expected = Target(target_mod.rel, node.lineno, node.end_lineno, node.name)
            candidates.append(
                CursorItem(mod.rel, call.func.end_lineno, end + gap + 1, callee, expected, mod.text)
            )
    items = _sample(candidates, lambda c: c.expected, max_items, seed, max_per_target)
    return CursorSet("cross_file_python", corpus.name, corpus.root, items, len(candidates), seed)


# --- TypeScript / JavaScript via tree-sitter -----------------------------------------------------


def _ts_parser(rel: str):
    import tree_sitter

    if rel.endswith((".ts", ".tsx")):
        import tree_sitter_typescript as grammar

        lang = grammar.language_tsx() if rel.endswith(".tsx") else grammar.language_typescript()
    else:
        import tree_sitter_javascript as grammar

        lang = grammar.language()
    return tree_sitter.Parser(tree_sitter.Language(lang))


@dataclass
class _TsModule:
    rel: str
    text: str
    root: object  # tree_sitter.Node of the program
    defs: dict[str, list] = field(default_factory=dict)  # name -> [(node, is_implementation)]
    reexports: dict[str, tuple[str, str]] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)
    comments: dict[int, object] = field(default_factory=dict)  # def start byte -> its JSDoc comment

    def target(self, name: str) -> Target | None:
        """The definition's range (first overload to implementation) if it has one implementation."""
        nodes = self.defs.get(name, [])
        if sum(1 for _, impl in nodes if impl) != 1:
            return None
        return Target(self.rel, nodes[0][0].start_point[0] + 1, nodes[-1][0].end_point[0] + 1, name)


_TS_FUNCTIONS = (
    "function_declaration",
    "generator_function_declaration",
    "function_signature",
    "class_declaration",
    "abstract_class_declaration",
)
_TS_FUNCTION_VALUES = ("arrow_function", "function_expression", "function", "generator_function")


def _ts_string(node) -> str:
    return node.text.decode("utf-8")[1:-1]


def _ts_resolve_path(from_rel: str, spec: str, files: set[str]) -> str | None:
    if not spec.startswith("."):
        return None  # a package import: outside the corpus
    base = posixpath.normpath(posixpath.join(posixpath.dirname(from_rel), spec))
    stem = base.removesuffix(".js")  # ESM-style "./x.js" naming "./x.ts"
    for cand in (
        base,
        *(stem + ext for ext in (".ts", ".tsx", ".js", ".mjs")),
        *(f"{base}/index{ext}" for ext in (".ts", ".tsx", ".js")),
    ):
        if cand in files and not cand.endswith(".d.ts"):
            return cand
    return None


def _ts_modules(corpus: Corpus) -> dict[str, _TsModule]:
    files = {rel for rel in corpus.files() if not rel.endswith(".d.ts")}
    modules = {}
    for rel in sorted(files):
        data = (corpus.root / rel).read_bytes()
        tree = _ts_parser(rel).parse(data)
        mod = _TsModule(rel, data.decode("utf-8", errors="replace"), tree.root_node)
        for stmt in tree.root_node.named_children:
            decl = stmt.child_by_field_name("declaration") if stmt.type == "export_statement" else stmt
            source = stmt.child_by_field_name("source") if stmt.type == "export_statement" else None
            if source is not None:
                target = _ts_resolve_path(rel, _ts_string(source), files)
                clause = next((c for c in stmt.named_children if c.type == "export_clause"), None)
                if target and any(c.type == "*" for c in stmt.children):  # `export * from`, not `* as ns`
                    mod.stars.append(target)
                for spec in clause.named_children if target and clause is not None else ():
                    name, alias = spec.child_by_field_name("name"), spec.child_by_field_name("alias")
                    mod.reexports[(alias or name).text.decode()] = (target, name.text.decode())
                continue
            if decl is None or any(c.type == "default" for c in stmt.children):
                continue
            found = []
            if decl.type in _TS_FUNCTIONS:
                found.append((decl.child_by_field_name("name"), decl.type != "function_signature"))
            elif decl.type in ("lexical_declaration", "variable_declaration"):
                for d in decl.named_children:
                    value = d.child_by_field_name("value") if d.type == "variable_declarator" else None
                    if value is not None and value.type in _TS_FUNCTION_VALUES:
                        found.append((d.child_by_field_name("name"), True))
            for name_node, is_impl in found:
                if name_node is not None:
                    mod.defs.setdefault(name_node.text.decode(), []).append((stmt, is_impl))
                    prev = stmt.prev_named_sibling
                    if (
                        is_impl
                        and prev is not None
                        and prev.type == "comment"
                        and prev.text.startswith(b"/**")
                        and prev.end_point[0] >= stmt.start_point[0] - 1
                    ):
                        mod.comments[stmt.start_byte] = prev
        modules[rel] = mod
    return modules


def _ts_resolve(modules: dict[str, _TsModule], rel: str, name: str, depth: int = 0) -> Target | None:
    mod = modules.get(rel)
    if mod is None or depth > 8:
        return None
    if name in mod.defs:
        return mod.target(name)
    if name in mod.reexports:
        return _ts_resolve(modules, *mod.reexports[name], depth + 1)
    found = {t for star in mod.stars if (t := _ts_resolve(modules, star, name, depth + 1))}
    return found.pop() if len(found) == 1 else None


# Node type -> the field holding the names it binds.
_TS_DECLARING = {
    "variable_declarator": "name", "function_declaration": "name", "generator_function_declaration": "name",
    "class_declaration": "name", "required_parameter": "pattern", "optional_parameter": "pattern",
    "catch_clause": "parameter", "arrow_function": "parameter", "for_in_statement": "left",
}  # fmt: skip


def _ts_walk(node) -> Iterator:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _ts_declared_names(root) -> set[str]:
    """Every identifier a declaration, parameter or pattern binds anywhere in the file (conservative)."""
    names = set()
    for node in _ts_walk(root):
        fld = _TS_DECLARING.get(node.type)
        target = node.child_by_field_name(fld) if fld else None
        if node.type == "formal_parameters":  # JavaScript: plain identifiers
            names.update(c.text.decode() for c in node.named_children if c.type == "identifier")
        for sub in _ts_walk(target) if target is not None else ():
            if sub.type in ("identifier", "shorthand_property_identifier_pattern", "type_identifier"):
                names.add(sub.text.decode())
    return names


def cross_file_typescript(
    corpus: Corpus, max_items: int = MAX_ITEMS, seed: int = SEED, max_per_target: int = MAX_PER_TARGET
) -> CursorSet:
    modules = _ts_modules(corpus)
    def_counts = Counter(
        name for m in modules.values() for name, nodes in m.defs.items() if any(impl for _, impl in nodes)
    )
    files = set(modules)
    candidates = []
    for mod in modules.values():
        names: dict[str, tuple[str, str]] = {}  # local name -> (module, exported name)
        spaces: dict[str, str] = {}  # namespace import -> module
        for stmt in mod.root.named_children:
            source = stmt.child_by_field_name("source")
            if (
                stmt.type != "import_statement"
                or source is None
                or any(c.type == "type" for c in stmt.children)
            ):
                continue  # `import type {...}` binds nothing callable
            target = _ts_resolve_path(mod.rel, _ts_string(source), files)
            clause = next((c for c in stmt.named_children if c.type == "import_clause"), None)
            for part in clause.named_children if target and clause is not None else ():
                if part.type == "namespace_import":
                    spaces[part.named_children[0].text.decode()] = target
                for spec in part.named_children if part.type == "named_imports" else ():
                    if any(c.type == "type" for c in spec.children):
                        continue
                    name, alias = spec.child_by_field_name("name"), spec.child_by_field_name("alias")
                    names[(alias or name).text.decode()] = (target, name.text.decode())
        shadowed = _ts_declared_names(mod.root)
        lines = mod.text.split("\n")
        for node in _ts_walk(mod.root):
            if node.type not in ("call_expression", "new_expression"):
                continue
            func = node.child_by_field_name("function" if node.type == "call_expression" else "constructor")
            args = node.child_by_field_name("arguments")
            if func is None or args is None or args.type != "arguments":
                continue
            expected = None
            if (
                func.type == "identifier"
                and func.text.decode() in names
                and func.text.decode() not in shadowed
            ):
                expected = _ts_resolve(modules, *names[func.text.decode()])
            elif func.type == "member_expression":
                obj, prop = func.child_by_field_name("object"), func.child_by_field_name("property")
                if (
                    obj.type == "identifier"
                    and obj.text.decode() in spaces
                    and obj.text.decode() not in shadowed
                ):
                    expected = _ts_resolve(modules, spaces[obj.text.decode()], prop.text.decode())
            if expected is None or expected.path == mod.rel or def_counts[expected.name] != 1:
                continue
            row, byte_col = args.start_point
            column = _char_col(lines[row], byte_col) + 1
            callee = ("new " if node.type == "new_expression" else "") + func.text.decode()
            candidates.append(CursorItem(mod.rel, row + 1, column, callee, expected, mod.text))
    items = _sample(candidates, lambda c: c.expected, max_items, seed, max_per_target)
    return CursorSet("cross_file_typescript", corpus.name, corpus.root, items, len(candidates), seed)


# --- docstring queries, and the copy without them -----------------------------------------------


def _is_query(line: str, language: str) -> bool:
    if language == "zh":
        return len(CJK.findall(line)) >= MIN_CJK_CHARS
    return (
        len(EN_WORD.findall(line)) >= MIN_EN_WORDS
        and not SIGNATURE_LINE.search(line)
        and not line.startswith((">>>", "@", ":"))
    )


def _first_line(doc: str) -> str:
    return next((ln.strip() for ln in doc.strip().splitlines() if ln.strip()), "")


def _normalise(query: str) -> str:
    return " ".join(query.casefold().split()).rstrip(".。:：")


@dataclass(frozen=True)
class _Strip:
    """Where a query's documentation sits: replace chars [start, end) of the file by `replacement`."""

    start: int
    end: int
    replacement: str


def _python_doc_candidates(corpus: Corpus, language: str) -> list[tuple[QueryItem, _Strip]]:
    found = []
    for rel in corpus.files():
        parsed = _read_python(corpus.root / rel)
        if parsed is None:
            continue
        text, tree = parsed
        lines = text.split("\n")
        line_starts = [0]
        for ln in lines:
            line_starts.append(line_starts[-1] + len(ln) + 1)
        for node, qualname in _functions(tree):
            doc = ast.get_docstring(node)
            first = _first_line(doc) if doc else ""
            if not first or not _is_query(first, language):
                continue
            expr = node.body[0]
            start = line_starts[expr.lineno - 1] + _char_col(lines[expr.lineno - 1], expr.col_offset)
            end = line_starts[expr.end_lineno - 1] + _char_col(
                lines[expr.end_lineno - 1], expr.end_col_offset
            )
            rest = text[end:].split("\n", 1)[0].strip()
            if rest and not rest.startswith("#"):
                continue  # `"""doc"""; stmt`: replacing it would break the line
            strip = _Strip(start, end, "pass" + "\n" * (expr.end_lineno - expr.lineno))
            found.append(
                (QueryItem(first, Target(rel, node.lineno, node.end_lineno, qualname), False), strip)
            )
    return found


def _functions(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield child, qualname
                stack.append((child, qualname + "."))
            else:
                stack.append((child, prefix))


def _jsdoc_candidates(corpus: Corpus) -> list[tuple[QueryItem, _Strip]]:
    found = []
    for mod in _ts_modules(corpus).values():
        for name in mod.defs:
            target = mod.target(name)
            impl = next((n for n, is_impl in mod.defs[name] if is_impl), None)
            comment = mod.comments.get(impl.start_byte) if target and impl is not None else None
            if comment is None:
                continue
            body = comment.text.decode("utf-8")[3:-2]
            lines = [ln.strip().lstrip("*").strip() for ln in body.splitlines()]
            first = next((ln for ln in lines if ln), "")
            first = HTML_TAG.sub(
                "", JSDOC_LINK.sub(lambda m: (m.group(2) or m.group(1)).strip(), first)
            ).strip()
            if not first or not _is_query(first, "en"):
                continue
            # Char offsets from byte offsets; blank lines keep every line number where it was.
            data = mod.text.encode("utf-8")
            start, end = (
                len(data[: comment.start_byte].decode("utf-8")),
                len(data[: comment.end_byte].decode("utf-8")),
            )
            found.append(
                (QueryItem(first, target, False), _Strip(start, end, "\n" * comment.text.count(b"\n")))
            )
    return found


def _query_set(
    name: str,
    corpus: Corpus,
    found: list[tuple[QueryItem, _Strip]],
    max_items: int,
    seed: int,
    cache: Path | None,
) -> QuerySet:
    counts = Counter(_normalise(item.query) for item, _ in found)
    unique = [(item, strip) for item, strip in found if counts[_normalise(item.query)] == 1]
    strips = {item.expected: strip for item, strip in unique}
    items = _sample([item for item, _ in unique], lambda c: c.expected, max_items, seed)
    stripped = _stripped_copy(corpus, [(it.expected.path, strips[it.expected]) for it in items], cache)
    blob = "\n".join(
        (stripped.root / rel).read_text(encoding="utf-8", errors="replace") for rel in stripped.files()
    )
    items = [QueryItem(it.query, it.expected, it.query in blob) for it in items]
    return QuerySet(name, corpus.name, corpus.root, stripped.root, items, len(unique), seed)


def _stripped_copy(corpus: Corpus, strips: list[tuple[str, _Strip]], cache: Path | None) -> Corpus:
    by_file: dict[str, list[_Strip]] = defaultdict(list)
    for rel, strip in strips:
        by_file[rel].append(strip)
    digest = hashlib.sha1(json.dumps(sorted((r, s.start) for r, s in strips)).encode()).hexdigest()[:10]

    def build(dst: Path) -> None:
        shutil.copytree(
            corpus.root,
            dst,
            dirs_exist_ok=True,
            ignore=lambda _d, names: [n for n in names if n.startswith(".")],
        )
        for rel, file_strips in by_file.items():
            raw = (corpus.root / rel).read_bytes()
            encoding = (
                tokenize.detect_encoding(io.BytesIO(raw).readline)[0] if rel.endswith(".py") else "utf-8"
            )
            text = raw.decode(encoding)
            # Back to front, so that the offsets of the strips still to apply stay valid.
            for s in sorted(file_strips, key=lambda s: s.start, reverse=True):
                text = text[: s.start] + s.replacement + text[s.end :]
            assert text.count("\n") == raw.decode(encoding).count("\n"), rel
            if rel.endswith(".py"):
                ast.parse(text)  # a strip must never break the file
            (dst / rel).write_bytes(text.encode(encoding))

    source = f"{corpus.name} without {len(strips)} docstrings ({digest})"
    return corpora.materialise(f"{corpus.name}-nodoc-{digest}", corpus.language, source, build, cache)


def docstring_queries(
    corpus: Corpus, language: str, max_items: int = MAX_ITEMS, seed: int = SEED, cache: Path | None = None
) -> QuerySet:
    """Python functions whose docstring's first line is an English ("en") or Chinese ("zh") sentence."""
    assert language in ("en", "zh")
    return _query_set(
        f"docstring_{language}", corpus, _python_doc_candidates(corpus, language), max_items, seed, cache
    )


def jsdoc_queries(
    corpus: Corpus, max_items: int = MAX_ITEMS, seed: int = SEED, cache: Path | None = None
) -> QuerySet:
    """Top-level TypeScript/JavaScript functions and classes whose JSDoc starts with an English sentence."""
    return _query_set("jsdoc_en", corpus, _jsdoc_candidates(corpus), max_items, seed, cache)


def standard_sets(
    max_items: int = MAX_ITEMS, seed: int = SEED, cache: Path | None = None
) -> dict[str, CursorSet | QuerySet]:
    """Every set on its usual corpus (fetches the corpora on the first call)."""
    stdlib, rxjs = corpora.python_stdlib(cache), corpora.npm_package(cache)
    zh = corpora.chinese_documented_package(cache)
    sets = [
        cross_file_python(stdlib, max_items, seed),
        cross_file_typescript(rxjs, max_items, seed),
        docstring_queries(stdlib, "en", max_items, seed, cache),
        docstring_queries(zh, "zh", max_items, seed, cache),
        jsdoc_queries(rxjs, max_items, seed, cache),
    ]
    return {s.name: s for s in sets}


def _summary(sets: dict[str, CursorSet | QuerySet]) -> None:
    for s in sets.values():
        print(f"== {s.name} on {s.corpus}: {len(s.items)} of {s.num_candidates} candidates (seed {s.seed})")
        if isinstance(s, QuerySet):
            num_left = sum(it.in_stripped for it in s.items)
            print(f"   docstrings removed in {s.stripped_root}; queries still found there: {num_left}")
        for it in s.items[:: max(len(s.items) // 3, 1)][:3]:
            e = it.expected
            where = f"{e.name} @ {e.path}:{e.start_line}-{e.end_line}"
            if isinstance(it, CursorItem):
                print(f"   {it.path}:{it.line}:{it.column}  {it.call}(  ->  {where}")
            else:
                print(f"   {it.query!r}  ->  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--summary", action="store_true", help="print counts and 3 examples per set")
    parser.add_argument("--json", type=Path, help="write all sets to this file")
    parser.add_argument("--with-text", action="store_true", help="include file texts in --json")
    parser.add_argument("--max-items", type=int, default=MAX_ITEMS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--cache", type=Path, default=None, help="corpus cache folder (default ~/.cache/zhiyin-bench)"
    )
    args = parser.parse_args()
    sets = standard_sets(args.max_items, args.seed, args.cache)
    if args.summary or not args.json:
        _summary(sets)
    if args.json:
        args.json.write_text(
            json.dumps({n: s.to_json(args.with_text) for n, s in sets.items()}, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
    print(json.dumps({n: {"items": len(s.items), "candidates": s.num_candidates} for n, s in sets.items()}))


if __name__ == "__main__":
    main()
