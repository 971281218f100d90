"""Which repository files an import refers to, where the language makes that knowable from paths alone.

Paths are repository-relative POSIX paths. Each resolver tries the places the language's own tools
would look, in their order, and returns the first that exists in ``known_paths``; imports of the
standard library or of installed packages resolve to nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from indexer.records import Import

JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_TS_FOR_JS = {".js": (".ts", ".tsx"), ".jsx": (".tsx",), ".mjs": (".mts",), ".cjs": (".cts",)}
PYTHON_SOURCE_ROOTS = ("", "src")
C_INCLUDE_ROOTS = ("include",)
# Go's standard library: its paths have no dot in the first element, like a module named "myapp".
GO_STD_ROOTS = frozenset(
    {
        "archive", "bufio", "builtin", "bytes", "cmp", "compress", "container", "context", "crypto",
        "database", "debug", "embed", "encoding", "errors", "expvar", "flag", "fmt", "go", "hash", "html",
        "image", "index", "io", "iter", "log", "maps", "math", "mime", "net", "os", "path", "plugin",
        "reflect", "regexp", "runtime", "slices", "sort", "strconv", "strings", "sync", "syscall",
        "testing", "text", "time", "unicode", "unique", "unsafe",
    }
)


def resolve_import(imp: Import, from_path: str, language: str, known_paths: set[str]) -> list[str]:
    """The files of ``known_paths`` that ``imp``, written in ``from_path``, refers to; [] when unknown."""
    resolver = _RESOLVERS.get(language)
    return resolver(imp, from_path, known_paths) if resolver is not None else []


def _python(imp: Import, from_path: str, known: set[str]) -> list[str]:
    level = len(imp.module) - len(imp.module.lstrip("."))
    parts = [p for p in imp.module[level:].split(".") if p]
    if level:
        base: str | None = posixpath.dirname(from_path)
        for _ in range(level - 1):
            base = _parent(base)
        roots = [base] if base is not None else []
    else:
        roots = list(dict.fromkeys([*PYTHON_SOURCE_ROOTS, *reversed(_folders_up(posixpath.dirname(from_path)))]))
    for root in roots:
        found = _python_files(posixpath.join(root, *parts), imp.names, known, is_package=not parts)
        if found:
            return found
    return []


def _python_files(prefix: str, names: tuple[str, ...], known: set[str], is_package: bool) -> list[str]:
    """The module at `prefix` (a file or a package), or its submodules named in `names`."""
    candidates = [] if is_package else [prefix + ".py", prefix + ".pyi"]
    module = _first(known, [*candidates, _join(prefix, "__init__.py"), _join(prefix, "__init__.pyi")])
    submodules = []
    for name in names:
        if name != "*":
            sub = _join(prefix, name)
            found = _first(known, [sub + ".py", sub + ".pyi", sub + "/__init__.py", sub + "/__init__.pyi"])
            if found is not None:
                submodules.append(found)
    # The module itself holds what is imported from it, unless every name is a submodule.
    if module is not None and (not names or len(submodules) < len(names)):
        return [module, *submodules]
    return submodules


def _javascript(imp: Import, from_path: str, known: set[str]) -> list[str]:
    specifier = imp.module.split("?", 1)[0].split("#", 1)[0]
    if specifier.startswith("/"):
        base = posixpath.normpath(specifier.lstrip("/"))
    elif specifier.startswith("."):
        base = posixpath.normpath(posixpath.join(posixpath.dirname(from_path), specifier))
    else:
        return []  # a package, or a path alias only the bundler's configuration knows
    if base == ".." or base.startswith("../"):
        return []
    base = "" if base == "." else base
    stem, extension = posixpath.splitext(base)
    candidates = [base] if extension else []
    candidates += [stem + e for e in _TS_FOR_JS.get(extension, ())]  # TypeScript's `./x.js` means `./x.ts`
    candidates += [base + e for e in JS_EXTENSIONS] if base else []
    candidates += [_join(base, "index" + e) for e in JS_EXTENSIONS]
    found = _first(known, candidates)
    return [found] if found is not None else []


def _c(imp: Import, from_path: str, known: set[str]) -> list[str]:
    folder = posixpath.dirname(from_path)
    candidates = []
    for root in _folders_up(folder):  # the file's folder, then up to the root
        candidates.append(posixpath.join(root, imp.module))
        candidates += [posixpath.join(root, include, imp.module) for include in C_INCLUDE_ROOTS]
    found = _first(known, [c for c in map(posixpath.normpath, candidates) if not c.startswith("../")])
    return [found] if found is not None else []


def _go(imp: Import, from_path: str, known: set[str]) -> list[str]:
    parts = imp.module.split("/")
    if "." not in parts[0] and parts[0] in GO_STD_ROOTS:
        return []
    index = _folder_index(known)
    # The module path (go.mod) is unknown here: drop its leading elements until the rest names a folder.
    for start in range(1, len(parts)):
        suffix = "/".join(parts[start:])
        folders = [f for f in index.folders_named.get(parts[-1], []) if f == suffix or f.endswith("/" + suffix)]
        if folders:
            nearest = max(folders, key=lambda f: len(posixpath.commonpath([f, from_path])))
            files = [f for f in index.files_in[nearest] if f.endswith(".go") and not f.endswith("_test.go")]
            if files:
                return files
    return []


def _rust(imp: Import, from_path: str, known: set[str]) -> list[str]:
    segments = [s for s in imp.module.split("::") if s]
    if not segments:
        return []
    module_dir = _rust_module_dir(from_path)
    if segments[0] == "crate":
        base: str | None = _rust_crate_dir(from_path)
        segments = segments[1:]
    elif segments[0] in ("self", "super"):
        base = module_dir
        while segments and segments[0] in ("self", "super"):
            if segments.pop(0) == "super":
                base = _parent(base) if base is not None else None
    else:
        base = module_dir  # `mod x;`, or a path into a module declared here
    if base is None:
        return []
    found: list[str] = []
    for path in [[*segments, n] for n in imp.names if n not in ("*", "self")] + [segments]:
        file = _rust_file(base, path, known)
        if file is not None and file not in found:
            found.append(file)
    return found


def _rust_file(base: str, path: list[str], known: set[str]) -> str | None:
    """The file of the longest prefix of `path` that is a module: `a/b.rs` or `a/b/mod.rs`."""
    for end in range(len(path), 0, -1):
        stem = posixpath.join(base, *path[:end])
        found = _first(known, [stem + ".rs", stem + "/mod.rs"])
        if found is not None:
            return found
    return None


def _rust_module_dir(from_path: str) -> str:
    """Where the child modules of the file's module live."""
    folder, name = posixpath.split(from_path)
    if name in ("mod.rs", "lib.rs", "main.rs"):
        return folder
    return posixpath.join(folder, posixpath.splitext(name)[0])


def _rust_crate_dir(from_path: str) -> str:
    parts = from_path.split("/")[:-1]
    if "src" in parts:
        return "/".join(parts[: len(parts) - parts[::-1].index("src")])
    return "/".join(parts)


def _java(imp: Import, from_path: str, known: set[str]) -> list[str]:
    parts = imp.module.split(".")
    folder = posixpath.dirname(from_path)
    # The source root is an ancestor of the importing file: src/main/java/com/acme/App.java -> src/main/java.
    for root in _folders_up(folder):
        if "*" in imp.names:
            in_package = _folder_index(known).files_in.get(posixpath.join(root, *parts), [])
            files = [f for f in in_package if f.endswith(".java")]
            if files:
                return files
            continue
        # Static imports and nested classes name members after the class: try shorter prefixes too.
        for end in range(len(parts), min(2, len(parts)) - 1, -1):
            candidate = posixpath.join(root, *parts[:end]) + ".java"
            if candidate in known:
                return [candidate]
    return []


def _first(known: set[str], candidates: list[str]) -> str | None:
    return next((c for c in candidates if c in known), None)


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if folder else name


def _parent(folder: str | None) -> str | None:
    """The folder above, or None above the repository root."""
    if folder is None or folder == "":
        return None
    return posixpath.dirname(folder)


def _folders_up(folder: str) -> list[str]:
    """`a/b` -> ["a/b", "a", ""]: the folder and every folder above it, up to the repository root."""
    parts = [p for p in folder.split("/") if p]
    return ["/".join(parts[:end]) for end in range(len(parts), -1, -1)]


@dataclass(frozen=True, slots=True)
class _FolderIndex:
    files_in: dict[str, list[str]]  # folder -> its files
    folders_named: dict[str, list[str]]  # last element -> folders ending with it


_folder_index_cache: tuple[int, int, _FolderIndex] | None = None  # (id, size) of the set it was built from


def _folder_index(known: set[str]) -> _FolderIndex:
    """Files per folder, kept while the caller passes the same set: Go and Java resolve folders."""
    global _folder_index_cache
    cached = _folder_index_cache
    if cached is not None and cached[0] == id(known) and cached[1] == len(known):
        return cached[2]
    files_in: dict[str, list[str]] = {}
    for path in sorted(known):
        files_in.setdefault(posixpath.dirname(path), []).append(path)
    folders_named: dict[str, list[str]] = {}
    for folder in files_in:
        folders_named.setdefault(posixpath.basename(folder), []).append(folder)
    index = _FolderIndex(files_in, folders_named)
    _folder_index_cache = (id(known), len(known), index)
    return index


_RESOLVERS: dict[str, Callable[[Import, str, set[str]], list[str]]] = {
    "python": _python,
    "javascript": _javascript,
    "typescript": _javascript,
    "tsx": _javascript,
    "c": _c,
    "cpp": _c,
    "go": _go,
    "rust": _rust,
    "java": _java,
}
