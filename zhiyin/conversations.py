"""Chat conversations, kept in SQLite beside the project memory so that the chat panel can list,
reopen and delete them after a restart.

Messages are stored with secrets redacted (the same rules as the project memory: a key pasted
into a chat is not kept on disk). A damaged file is moved aside and a new one started.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from engram.redaction import redact
from engram.store import move_aside

SCHEMA_VERSION = 1
TITLE_CHARS = 60

_SCHEMA = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    repo TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX conversations_by_repo ON conversations (repo, updated);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL,
    citations TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation, id);
"""


@dataclass
class Message:
    role: str
    text: str
    citations: list[dict] = field(default_factory=list)


@dataclass
class Conversation:
    id: int
    title: str
    updated: float
    messages: list[Message] = field(default_factory=list)


def default_conversations_path() -> Path:
    return Path(platformdirs.user_data_dir("zhiyin")) / "chats.db"


class ConversationStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_conversations_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.moved_aside: Path | None = None
        self._lock = threading.Lock()  # one connection, used from the server's worker threads
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError:
            self.moved_aside = move_aside(self.path)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        if conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'conversations'").fetchone()[0] == 0:
            conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION or \
                conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            conn.close()
            raise sqlite3.DatabaseError("not a Zhiyin conversation file of this version")
        return conn

    def close(self) -> None:
        self._conn.close()

    def create(self, repo: str, first_question: str) -> int:
        title = " ".join(redact(first_question).text.split())
        title = title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
        now = time.time()
        with self._lock:
            return self._conn.execute("INSERT INTO conversations (repo, title, created, updated) VALUES (?, ?, ?, ?)",
                                      (repo, title, now, now)).lastrowid

    def append(self, conversation: int, message: Message) -> None:
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO messages (conversation, role, text, citations, created) VALUES (?, ?, ?, ?, ?)",
                    (conversation, message.role, redact(message.text).text,
                     json.dumps(message.citations, ensure_ascii=False), now))
                self._conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def list(self, repo: str, limit: int = 100) -> list[Conversation]:
        with self._lock:
            rows = self._conn.execute("SELECT id, title, updated FROM conversations WHERE repo = ? "
                                      "ORDER BY updated DESC, id DESC LIMIT ?", (repo, limit)).fetchall()
        return [Conversation(*row) for row in rows]

    def load(self, repo: str, conversation: int) -> Conversation | None:
        with self._lock:
            row = self._conn.execute("SELECT id, title, updated FROM conversations WHERE id = ? AND repo = ?",
                                     (conversation, repo)).fetchone()
            if row is None:
                return None
            messages = self._conn.execute("SELECT role, text, citations FROM messages WHERE conversation = ? "
                                          "ORDER BY id", (conversation,)).fetchall()
        return Conversation(*row, [Message(role, text, json.loads(citations)) for role, text, citations in messages])

    def delete(self, repo: str, conversation: int) -> bool:
        with self._lock:
            return self._conn.execute("DELETE FROM conversations WHERE id = ? AND repo = ?",
                                      (conversation, repo)).rowcount > 0
