"""The index end to end on a small real repository: cold, incremental, renames, damage, concurrency."""

import os
import shutil
import threading
from pathlib import Path

import pysqlite3.dbapi2 as sqlite3
import pytest

from indexer.errors import IndexLockedError
from indexer.index import Index

SAMPLE = Path(__file__).parent / "sample_repo"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    shutil.copytree(SAMPLE, root)
    return root


def covers(hit, path: str, line: int) -> bool:
    return hit.path == path and hit.start_line <= line <= hit.end_line


def open_index(repo: Path, count_tokens, embedder=None, **kw) -> Index:
    return Index.open(repo, db_path=repo.parent / "cache" / "index.db", count_tokens=count_tokens,
                      embedder=(lambda: embedder) if embedder else None, **kw)


def test_cold_index_then_nothing_to_do(repo: Path, default_count_tokens) -> None:
    index = open_index(repo, default_count_tokens)
    stats = index.update()
    assert stats.files == 7 and stats.parsed == 7
    assert stats.lines == sum(len(p.read_text().splitlines()) for p in repo.rglob("*") if p.is_file())
    assert stats.chunks >= 7 and stats.symbols >= 12
    again = index.update()
    assert (again.parsed, again.removed, again.renamed) == (0, 0, 0)
    assert again.chunks == stats.chunks


def test_search_legs_find_identifiers_words_and_chinese(repo: Path, default_count_tokens) -> None:
    index = open_index(repo, default_count_tokens)
    index.update()
    top = index.search("execute_with_retry", k=3)
    assert top[0].path == "shop/db.py" and "symbol" in top[0].legs and "bm25" in top[0].legs
    # Split identifiers: the words "execute with retry" find execute_with_retry.
    assert any(covers(h, "shop/db.py", 23) for h in index.search("execute with retry", k=3))
    # Code words and class names reach the symbol leg; plain English words do not.
    assert "symbol" in index.search("where is fetchJson defined", k=1)[0].legs
    assert covers(index.search("the Settings of the shop", k=1)[0], "shop/config.py", 11)
    assert not any("symbol" in h.legs for h in index.search("return the query", k=10))
    # Chinese words reach BM25 through bigrams: 取消订单 is only in cancel_order's docstring.
    assert covers(index.search("取消订单", k=1, legs=("bm25",))[0], "shop/orders.py", 16)
    assert index.search("fetch json", k=1)[0].path == "web/http.ts"


def test_search_filters(repo: Path, default_count_tokens) -> None:
    from indexer.search import SearchFilters

    index = open_index(repo, default_count_tokens)
    index.update()
    hits = index.search("order", k=20, filters=SearchFilters(paths=("web/",)))
    assert hits and all(h.path.startswith("web/") for h in hits)
    hits = index.search("order", k=20, filters=SearchFilters(languages=("python",)))
    assert hits and all(h.path.endswith(".py") for h in hits)


def test_incremental_edit_rename_delete(repo: Path, default_count_tokens, embedder) -> None:
    index = open_index(repo, default_count_tokens, embedder)
    cold = index.update()
    assert cold.vectors == cold.chunks == cold.embedded

    orders = repo / "shop" / "orders.py"
    orders.write_text(orders.read_text() + "\n\ndef refund_order(db: Database, order_id: int) -> None:\n"
                      "    db.execute_with_retry('UPDATE orders SET refunded = 1 WHERE id = ?', order_id)\n")
    edit = index.update_file(orders)
    assert edit.parsed == 1
    assert 1 <= edit.embedded < 4  # only the chunks whose text changed
    assert edit.vectors == edit.chunks
    assert index.search("refund_order", k=1)[0].path == "shop/orders.py"
    assert index.store.recently_edited_chunks(10)

    (repo / "web" / "http.ts").rename(repo / "web" / "fetching.ts")
    moved = index.update()
    assert (moved.renamed, moved.parsed, moved.embedded) == (1, 0, 0)
    assert index.search("fetchJson", k=1)[0].path == "web/fetching.ts"

    (repo / "shop" / "orders.py").unlink()
    gone = index.update()
    assert gone.removed == 1
    assert all(h.path != "shop/orders.py" for h in index.search("cancel order", k=20))
    assert gone.vectors == gone.chunks


def test_vector_leg_answers_chinese_questions_about_english_code(repo: Path, default_count_tokens, embedder) -> None:
    index = open_index(repo, default_count_tokens, embedder)
    index.update()
    hits = index.search("发送网络请求并解析返回的 JSON", k=3, legs=("vector",))
    assert any(covers(h, "web/http.ts", 10) for h in hits)  # fetchJson


def test_ignored_and_skipped_files(repo: Path, default_count_tokens) -> None:
    (repo / ".gitignore").write_text("secrets/\n")
    (repo / "secrets").mkdir()
    (repo / "secrets" / "keys.py").write_text("API_KEY = 'x'\n")
    (repo / "shop" / "logo.c").write_bytes(b"\x00\x01binary")
    (repo / "web" / "bundle.js").write_text("var a=1;" * 5000)
    (repo / "bad_utf8.py").write_bytes(b"def f():\n    return '\xff\xfe broken'\n")
    stats = open_index(repo, default_count_tokens).update()
    assert stats.skipped == {"binary": 1, "minified": 1}
    assert stats.files == 8  # the 7 + bad_utf8.py, indexed with replacement characters


def test_damaged_or_foreign_database_is_rebuilt(repo: Path, default_count_tokens) -> None:
    index = open_index(repo, default_count_tokens)
    index.update()
    db = index.store.path
    index.close()

    db.write_bytes(b"this is not a database" * 100)
    Path(f"{db}-wal").unlink(missing_ok=True)
    index = open_index(repo, default_count_tokens)
    assert index.rebuilt == "corrupt"
    assert index.update().files == 7
    index.close()

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    index = open_index(repo, default_count_tokens)
    assert index.rebuilt == "version"
    assert index.update().files == 7


def test_file_deleted_mid_index(repo: Path, default_count_tokens) -> None:
    for i in range(600):
        (repo / "shop" / f"gen_{i:03}.py").write_text(f"def f{i}():\n    return {i}\n")
    index = open_index(repo, default_count_tokens)
    victim = repo / "README.md"  # walked first, read after the scan

    def progress(phase: str, done: int, total) -> None:
        if phase == "scan" and victim.exists():
            victim.unlink()

    stats = index.update(progress)
    assert stats.files == 606
    assert all(h.path != "README.md" for h in index.search("Configuration", k=50))


def test_readers_work_while_a_writer_indexes(repo: Path, default_count_tokens) -> None:
    writer = open_index(repo, default_count_tokens)
    writer.update()
    for i in range(400):
        (repo / "shop" / f"more_{i:03}.py").write_text(f"def helper_{i}(x):\n    return x + {i}\n")
    reader = open_index(repo, default_count_tokens)
    results = []
    thread = threading.Thread(target=lambda: results.append(writer.update()))
    thread.start()
    searches = 0
    while thread.is_alive():
        assert reader.search("load_config", k=1)[0].path == "shop/config.py"
        searches += 1
    thread.join()
    assert searches > 0 and results[0].parsed == 400


def test_a_second_writer_is_refused(repo: Path, default_count_tokens) -> None:
    first, second = open_index(repo, default_count_tokens), open_index(repo, default_count_tokens)
    refused = []

    def progress(phase: str, done: int, total) -> None:
        if not refused:
            with pytest.raises(IndexLockedError) as e:
                second.update()
            refused.append(e.value)

    (repo / "extra.py").write_text("x = 1\n")
    first.update(progress)
    assert refused and "busy" in str(refused[0])
    assert second.update().files == 8  # free again afterwards


def test_context_for_cursor_brings_the_called_definition(repo: Path, default_count_tokens) -> None:
    index = open_index(repo, default_count_tokens)
    index.update()
    text = (repo / "shop" / "orders.py").read_text() + "\n\ndef reopen(db: Database, order_id: int):\n    load_config("
    line = text.count("\n") + 1
    items = index.context_for_cursor("shop/orders.py", line, len("    load_config("), 2000, text=text)
    assert (items[0].path, items[0].name, items[0].reason) == ("shop/config.py", "load_config", "definition")
    assert sum(i.token_count for i in items) <= 2000
    assert len({(i.path, i.start_line) for i in items}) == len(items)
    # Database is imported by orders.py: its definition is in the context too.
    assert any(i.path == "shop/db.py" and i.name == "Database" for i in items)
    small = index.context_for_cursor("shop/orders.py", line, len("    load_config("), 120, text=text)
    assert sum(i.token_count for i in small) <= 120


def test_imports_resolve_to_files(repo: Path, default_count_tokens) -> None:
    index = open_index(repo, default_count_tokens)
    index.update()
    assert set(index.store.import_targets("shop/orders.py")) == {"shop/db.py"}
    assert set(index.store.import_targets("shop/db.py")) == {"shop/config.py"}
    assert set(index.store.import_targets("web/client.ts")) == {"web/http.ts"}


@pytest.mark.slow
def test_a_hundred_thousand_files_in_bounded_memory(tmp_path: Path, default_model) -> None:
    """Runs in a child process so that its peak RSS is its own."""
    import subprocess
    import sys

    root = tmp_path / "many"
    for d in range(100):
        folder = root / f"pkg{d:03}"
        folder.mkdir(parents=True)
        for f in range(1000):
            (folder / f"m{f:04}.py").write_text(f"def f{d}_{f}():\n    return {f}\n")
    script = (
        "import resource, sys\n"
        "from engine.checkpoints import load_tokenizer\n"
        "from indexer.index import Index\n"
        f"idx = Index.open({str(root)!r}, db_path=__import__('pathlib').Path({str(tmp_path / 'db' / 'i.db')!r}), "
        f"count_tokens=load_tokenizer({str(default_model)!r}).count_tokens, embedder=None)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "s = idx.update()\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(s.files, before // 1024, after // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    files, before_mib, after_mib = map(int, out)
    assert files == 100_000
    assert after_mib - before_mib < 400, f"indexing 100k files grew RSS by {after_mib - before_mib} MiB"


def test_vectors_are_rebuilt_when_the_embedding_model_changes(repo: Path, default_count_tokens, embedder) -> None:
    from engine.embedder import load_embedder

    first = open_index(repo, default_count_tokens, embedder).update()
    assert first.vectors == first.chunks
    other = load_embedder("e5-small")
    assert other.model_id != embedder.model_id and other.dim != embedder.dim
    index = open_index(repo, default_count_tokens, other)
    stats = index.update()
    assert stats.rebuilt == "model"
    assert stats.embedded == stats.vectors == stats.chunks
    assert index.store.meta("vector_model") == other.model_id
    models = index.store.conn.execute("SELECT DISTINCT model FROM chunk_vectors").fetchall()
    assert models == [(other.model_id,)]  # the model's id is stored with every vector
