"""The deliveries a webhook posted a release event for, kept across its restarts.

A captured request stays well signed for as long as its timestamp is fresh, so a replay is
possible for that long, also just after the webhook restarted and before the automation created
the delivery's run (the durable check, ``events.run_of``, finds nothing yet). So each delivery
this webhook posted an event for is recorded in a small SQLite file (``$CAIRN_HOME/webhook``,
0700, the file 0600: the ids say which CI asked for what) that every webhook process of the
platform shares. Entries older than the time a signature can stay fresh are pruned, and at most
``LIMIT`` are kept, so it stays small whatever is sent.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cairn.paths import cairn_home, private_dir

LIMIT = 10_000


def default_path() -> Path:
    return cairn_home() / "webhook" / "deliveries.sqlite"


class Deliveries:
    """Delivery id -> the event posted for it, for ``keep_s`` seconds after it was received."""

    def __init__(self, path: Path, keep_s: float) -> None:
        self.path, self.keep_s = path, keep_s

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            private_dir(self.path.parent)
            # Created 0600 before SQLite opens it (it would create it with the umask's mode).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        # One connection per call: requests run on a thread pool, and SQLite serialises writers
        # of every process sharing the file (busy timeout 30 s).
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS seen (delivery TEXT PRIMARY KEY, event TEXT NOT NULL, at REAL NOT NULL)")
            yield db
        finally:
            db.close()

    def get(self, delivery: str) -> uuid.UUID | None:
        with self._db() as db:
            row = db.execute("SELECT event FROM seen WHERE delivery = ? AND at >= ?",
                             (delivery, time.time() - self.keep_s)).fetchone()
        return uuid.UUID(row[0]) if row else None

    def add(self, delivery: str, event: uuid.UUID) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?, ?)", (delivery, str(event), time.time()))
            db.execute("DELETE FROM seen WHERE at < ?", (time.time() - self.keep_s,))
            db.execute("DELETE FROM seen WHERE delivery NOT IN (SELECT delivery FROM seen ORDER BY at DESC LIMIT ?)", (LIMIT,))

    def forget(self, delivery: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM seen WHERE delivery = ?", (delivery,))
