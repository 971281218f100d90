"""Killed mid-write, 50 times: the database stays sound and every acknowledged memory is there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pysqlite3.dbapi2 as sqlite3

from engram.store import MemoryStore

WRITER = """
import sys
from engram.records import Citation, MemoryDraft
from engram.store import MemoryStore

store = MemoryStore.open(sys.argv[1])
run = int(sys.argv[2])
for i in range(100000):
    store.add(MemoryDraft("fix", f"Durable memory {run}-{i}: retry the upload when the socket resets.",
                          citations=(Citation("user"),)), "git-durability")
    print(f"{run}-{i}", flush=True)  # acknowledged: add() returned after COMMIT
"""
KILLS = 50


def test_sigkill_during_writes_loses_no_acknowledged_memory(tmp_path: Path) -> None:
    path = tmp_path / "engram.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    rng = random.Random(11)
    acknowledged: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for run in range(KILLS):
        writer = subprocess.Popen([sys.executable, str(script), str(path), str(run)], stdout=subprocess.PIPE,
                                  text=True, env=env)
        first = writer.stdout.readline()  # started writing
        assert first, "the writer died before its first write"
        acknowledged.add(first.strip())
        time.sleep(rng.uniform(0.0, 0.15))
        writer.send_signal(signal.SIGKILL)
        acknowledged.update(line.strip() for line in writer.stdout.read().split("\n") if line.strip())
        writer.wait()
        conn = sqlite3.connect(str(path))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    store = MemoryStore.open(path)
    assert store.moved_aside is None
    stored = {m.statement.split(":")[0].removeprefix("Durable memory ") for m in store.list("git-durability")}
    missing = acknowledged - stored
    assert not missing, sorted(missing)[:5]
    print(f"{KILLS} kills, {len(acknowledged)} acknowledged writes, all present; {len(stored)} stored")
