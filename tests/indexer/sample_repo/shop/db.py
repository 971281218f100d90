"""A thin layer over sqlite3 with retries on a locked database."""

import sqlite3
import time

from shop.config import Settings, load_config


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn = sqlite3.connect(settings.database_url, timeout=settings.timeout_s)

    @classmethod
    def from_file(cls, path: str) -> "Database":
        return cls(load_config(path))

    def query(self, sql: str, *params) -> list[tuple]:
        """Run a read-only query and return all rows."""
        return self.conn.execute(sql, params).fetchall()

    def execute_with_retry(self, sql: str, *params, attempts: int = 3) -> None:
        """Write, retrying while another process holds the lock (数据库被锁时重试)."""
        for attempt in range(attempts):
            try:
                with self.conn:
                    self.conn.execute(sql, params)
                return
            except sqlite3.OperationalError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * 2**attempt)
