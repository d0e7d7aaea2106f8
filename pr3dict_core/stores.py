"""Where the journal lives: an embedded SQLite file or a shared PostgreSQL database.

A store runs transactions, one at a time, on the journal's single worker thread (the
journal owns that thread: its durable commit then overlaps the event loop's work, such as
signing the orders it is about to send). Both backends speak the same SQL; the few words
that differ (the current time, row locks, column types) come from ``Dialect``.

SQLite: one writer per file, enforced by an OS lock on a sidecar file (released by the
kernel when the process dies, so a crash never leaves it stale). Two connections: intents
commit through one with ``synchronous=FULL`` (fsync before the wire), everything else
through one with ``synchronous=NORMAL`` (survives a process crash; the next FULL commit
makes it power-safe, the WAL being one sequential file). No pragma is switched per commit.

PostgreSQL (psycopg 3): one connection, statements pipelined so a transaction is one round
trip; non-durable batches commit with ``synchronous_commit = off`` for that transaction
only. Several engines share one database: row locks and transactions keep the capital book
and instrument leases consistent (see ``journal.py``).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs

from .model import Pr3dictError

T = TypeVar("T")


class StoreError(Pr3dictError):
    """The journal's database cannot be opened or is held by another process."""


@attrs.frozen
class Dialect:
    name: str
    now: str  # seconds since the epoch, as the database sees it (one clock for all engines)
    for_update: str  # row lock on a SELECT (SQLite locks the whole file per transaction)
    real: str
    serial: str

    def ddl(self, text: str) -> str:
        return text.replace("{real}", self.real).replace("{serial}", self.serial)


SQLITE = Dialect("sqlite", now="((julianday('now') - 2440587.5) * 86400.0)", for_update="",
                 real="REAL", serial="INTEGER PRIMARY KEY AUTOINCREMENT")
POSTGRES = Dialect("postgresql", now="extract(epoch from clock_timestamp())::double precision",
                   for_update=" FOR UPDATE", real="DOUBLE PRECISION",
                   serial="BIGSERIAL PRIMARY KEY")


class Tx(Protocol):
    """One transaction: ``execute`` returns the rows of a statement that has any."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int: ...


class Store(Protocol):
    dialect: Dialect
    where: str  # for messages: a path or a URL without its password

    def transaction(self, fn: Callable[[Tx], T], *, durable: bool) -> T: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- SQLite


class _SqliteTx:
    dialect = SQLITE

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount


class SqliteStore:
    dialect = SQLITE

    def __init__(self, path: str | Path, *, owner: str = "", read_only: bool = False):
        self.path = Path(path)
        self.where = str(path)
        self._lock_fd: int | None = None
        memory = str(path) == ":memory:"
        if read_only:  # looking while a run writes it: no lock, no writes
            if not self.path.exists():
                raise StoreError(f"no journal at {self.path}")
            db = sqlite3.connect(f"file:{self.path.absolute()}?mode=ro", uri=True,
                                 isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 5000")
            self._durable = self._fast = db
            return
        if not memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock(owner)
        try:
            if memory:  # one connection: a second would open another, empty database
                self._durable = self._fast = self._connect(str(path), "FULL")
            else:
                self._durable = self._connect(str(path), "FULL")
                self._fast = self._connect(str(path), "NORMAL")
        except BaseException:
            self._unlock()
            raise

    @staticmethod
    def _connect(path: str, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        return db

    def _lock(self, owner: str) -> None:
        """One writer per journal file: a second process is refused, naming the holder."""
        lock_path = Path(str(self.path) + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"journal {self.path} is in use by another process ({holder}); "
                             "one process writes a SQLite journal at a time: stop that run, "
                             "or give this pipeline another journal") from None
        info = (f"pid {os.getpid()} on {socket.gethostname()}"
                + (f", {owner}" if owner else "")
                + f", since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the kernel drops the flock with the descriptor
            self._lock_fd = None

    def transaction(self, fn: Callable[[Tx], T], *, durable: bool) -> T:
        db = self._durable if durable else self._fast
        db.execute("BEGIN" if self._lock_fd is None else "BEGIN IMMEDIATE")
        try:
            result = fn(_SqliteTx(db))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def close(self) -> None:
        try:
            self._fast.close()
            if self._durable is not self._fast:
                self._durable.close()
        finally:
            self._unlock()


# --------------------------------------------------------------------------- PostgreSQL

_QMARK = re.compile(r"\?")


class _PgTx:
    dialect = POSTGRES

    def __init__(self, conn: Any, pipeline: Any, sql_for: Callable[[str], str]):
        self.conn = conn
        self.pipeline = pipeline
        self.sql_for = sql_for
        self._writes = conn.cursor()  # one cursor for statements whose rows nobody reads

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if _RETURNS_ROWS.match(sql) or " RETURNING " in sql:
            # waits for this reply (and those before it)
            return self.conn.execute(self.sql_for(sql), params).fetchall()  # type: ignore[no-any-return]
        self._writes.execute(self.sql_for(sql), params)
        return []  # pipelined: an error surfaces at the next read or at COMMIT

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(self.sql_for(sql), params)
        self.pipeline.sync()
        return int(cur.rowcount)


_RETURNS_ROWS = re.compile(r"\s*(SELECT|WITH)\b", re.IGNORECASE)


class PostgresStore:
    dialect = POSTGRES

    def __init__(self, url: str, *, password: str | None = None, connect_timeout_s: float = 5):
        try:
            import psycopg  # only pipelines that use PostgreSQL pay for the import
        except ImportError:
            raise StoreError("a postgresql:// journal needs psycopg: "
                             "pip install 'pr3dict[postgresql]'") from None

        self.where = redact_url(url)
        self._sql: dict[str, str] = {}
        try:
            self.conn = psycopg.connect(url, password=password, autocommit=True,
                                        connect_timeout=max(1, round(connect_timeout_s)))
        except psycopg.Error as exc:
            raise StoreError(f"journal {self.where}: cannot connect: "
                             f"{_first_line(exc)}") from None

    def _sql_for(self, sql: str) -> str:
        """The journal's ``?`` placeholders as psycopg's ``%s`` (cached per statement)."""
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = _QMARK.sub("%s", sql.replace("%", "%%"))
        return out

    def transaction(self, fn: Callable[[Tx], T], *, durable: bool) -> T:
        """Pipelined: statements go out without waiting for each reply (a result that is
        read waits for it), so a batch of writes and its COMMIT is about one round trip."""
        conn = self.conn
        with conn.pipeline() as pipeline, conn.transaction():
            if not durable:  # this transaction only: crash-safe in the server, not fsynced
                conn.execute("SET LOCAL synchronous_commit TO OFF")
            return fn(_PgTx(conn, pipeline, self._sql_for))

    def close(self) -> None:
        self.conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def redact_url(url: str) -> str:
    """A database URL fit for messages and spans: the password is never shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}" if user else netloc))


def open_store(url: str, *, password: str | None = None, owner: str = "",
               read_only: bool = False) -> Store:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path``, a bare path, or
    ``postgresql://user@host:port/db``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, password=password)
    return SqliteStore(sqlite_path(url), owner=owner, read_only=read_only)


def sqlite_path(url: str) -> str:
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if not rest.startswith("/"):
            raise StoreError(f"journal url {url!r}: expected sqlite:///path")
        return rest[1:] or ":memory:"
    return url
