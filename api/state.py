"""Shared bandit state: request -> variant map and per-variant pulls and rewards.

Behind a small interface (:class:`StateStore`) with two implementations: an embedded SQLite
file in WAL mode (the default), shared by all workers of one host and kept across restarts,
and Redis (api/state_redis.py, ``LOCKSERVE_STATE_URL``), shared by many hosts. Writes come in
batches from a background flush, never from the request path. :func:`open_store` picks one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol


class UnknownRequest(Exception):
    """No such request id (never seen, or older than the feedback window)."""


class AlreadyRewarded(Exception):
    """Feedback for this request id was already counted."""


class StoreUnavailable(Exception):
    """The state store cannot be reached now; the message names it."""


class StateStore(Protocol):
    def record(self, rows: list[tuple[str, str, list[str], float]]) -> None:
        """Store (request_id, variant, answered labels, time) and count the pulls. A store
        that can be unreachable keeps the rows it could not write (bounded) and writes them
        when it is back: it never raises StoreUnavailable here."""

    def reward(
        self, request_id: str, reward: float | None, labels: list[str] | None, max_age_s: float
    ) -> tuple[str, float]:
        """Credit the variant that answered; return it and the reward counted. Raises
        UnknownRequest, AlreadyRewarded, ValueError (label count), StoreUnavailable."""

    def totals(self) -> dict[str, tuple[int, float, int]]:
        """variant -> (pulls, reward sum, feedback count); raises StoreUnavailable."""


def reward_of(
    request_id: str, reward: float | None, answered: str, labels: list[str] | None
) -> float:
    """The reward to count: the one given, else the share of ``labels`` equal to what the
    request answered (``answered``: its labels as JSON); ValueError for a count that differs."""
    if reward is not None:
        return reward
    expected = json.loads(answered)
    if labels is None or len(labels) != len(expected):
        raise ValueError(
            f"request {request_id} answered {len(expected)} instance(s): send that many labels"
        )
    return sum(a == b for a, b in zip(expected, labels, strict=True)) / len(labels)


def open_store(path: Path, url: str | None, ttl_s: float) -> StateStore:
    """Redis at ``url`` when one is set (requests kept ``ttl_s``), else the SQLite file."""
    if url is None:
        return SqliteState(path)
    from api.state_redis import RedisState

    return RedisState(url, ttl_s)


SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, variant TEXT NOT NULL, labels TEXT NOT NULL,
    created REAL NOT NULL, rewarded INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS arms (
    variant TEXT PRIMARY KEY, pulls INTEGER NOT NULL DEFAULT 0,
    reward REAL NOT NULL DEFAULT 0, feedbacks INTEGER NOT NULL DEFAULT 0);
"""


class SqliteState:
    """The StateStore in one SQLite file (WAL, so workers read while one writes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()  # one connection per process, used from two threads
        self._pid: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._db.executescript(SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        """This process's connection: a connection is never used across a fork."""
        if self._pid != os.getpid():
            self._connection = sqlite3.connect(
                str(self._path), timeout=10, check_same_thread=False, isolation_level=None
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._pid = os.getpid()
        assert self._connection is not None
        return self._connection

    def record(self, rows: list[tuple[str, str, list[str], float]]) -> None:
        if not rows:
            return
        pulls: dict[str, int] = {}
        for _, variant, _, _ in rows:
            pulls[variant] = pulls.get(variant, 0) + 1
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO requests (request_id, variant, labels, created) "
                "VALUES (?, ?, ?, ?)",
                [(rid, variant, json.dumps(labels), ts) for rid, variant, labels, ts in rows],
            )
            self._db.executemany(
                "INSERT INTO arms (variant, pulls) VALUES (?, ?) "
                "ON CONFLICT(variant) DO UPDATE SET pulls = pulls + excluded.pulls",
                list(pulls.items()),
            )

    def reward(
        self, request_id: str, reward: float | None, labels: list[str] | None, max_age_s: float
    ) -> tuple[str, float]:
        with self._transaction():
            row = self._db.execute(
                "SELECT variant, labels, created, rewarded FROM requests WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            if row is None or row[2] < time.time() - max_age_s:
                raise UnknownRequest(request_id)
            variant, answered, _, rewarded = row
            if rewarded:
                raise AlreadyRewarded(request_id)
            reward = reward_of(request_id, reward, answered, labels)
            self._db.execute("UPDATE requests SET rewarded = 1 WHERE request_id = ?", (request_id,))
            self._db.execute(
                "UPDATE arms SET reward = reward + ?, feedbacks = feedbacks + 1 WHERE variant = ?",
                (reward, variant),
            )
        return variant, reward

    def totals(self) -> dict[str, tuple[int, float, int]]:
        with self._lock:
            rows = self._db.execute("SELECT variant, pulls, reward, feedbacks FROM arms").fetchall()
        return {variant: (pulls, reward, feedbacks) for variant, pulls, reward, feedbacks in rows}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._lock.release()
