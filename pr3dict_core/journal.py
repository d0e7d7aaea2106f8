"""The journal: every trade, leg, order intent, fill and state transition; and what
several engines share: who they are, which instruments each is trading (leases), and the
capital book.

An order's intent is durable before the order goes on the wire (an intent not on disk was
never sent), with group commit across the legs sent together; everything else is committed
without waiting for the disk (it survives a process crash, and the next durable commit
covers it). At start the engine reads its non-final trades back, and those of engines whose
lease expired, and reconciles them against the venues before it trades. Where the rows live
(SQLite or PostgreSQL) is ``stores.py``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from .clock import external
from .model import (
    Fill,
    Leg,
    LegSpec,
    LegState,
    Opportunity,
    OrderRef,
    OrderRequest,
    Pr3dictError,
    Side,
    TimeInForce,
    Trade,
    TradeState,
)
from .stores import POSTGRES, SQLITE, Store, Tx, open_store, sqlite_path

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    opportunity TEXT NOT NULL,
    reject_reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    engine_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS trades_open ON trades(state);
CREATE TABLE IF NOT EXISTS legs (
    trade_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    venue TEXT NOT NULL,
    instrument TEXT NOT NULL,
    side TEXT NOT NULL,
    size TEXT NOT NULL,
    limit_price TEXT NOT NULL,
    target_price TEXT NOT NULL,
    tick_size TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (trade_id, idx)
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    trade_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    venue TEXT NOT NULL,
    instrument TEXT NOT NULL,
    side TEXT NOT NULL,
    price TEXT NOT NULL,
    size TEXT NOT NULL,
    time_in_force TEXT NOT NULL,
    created_at {real} NOT NULL,
    venue_order_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS orders_leg ON orders(trade_id, idx);
CREATE TABLE IF NOT EXISTS fills (
    fill_id TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    client_order_id TEXT NOT NULL,
    price TEXT NOT NULL,
    size TEXT NOT NULL,
    fee TEXT NOT NULL,
    PRIMARY KEY (trade_id, idx, fill_id)
);
CREATE TABLE IF NOT EXISTS halts (
    engine_id TEXT NOT NULL DEFAULT '',
    cause TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at {real} NOT NULL,
    lifted_at {real},
    PRIMARY KEY (engine_id, cause, subject)
);
CREATE TABLE IF NOT EXISTS transitions (
    seq {serial},
    trade_id TEXT NOT NULL,
    idx INTEGER,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS engines (
    engine_id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    started_at {real} NOT NULL,
    renewed_at {real} NOT NULL,
    expires_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    venue TEXT NOT NULL,
    instrument TEXT NOT NULL,
    engine_id TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    claimed_at {real} NOT NULL,
    PRIMARY KEY (venue, instrument)
);
CREATE INDEX IF NOT EXISTS leases_trade ON leases(trade_id);
CREATE TABLE IF NOT EXISTS capital_books (
    name TEXT PRIMARY KEY,
    bankroll TEXT NOT NULL,
    used TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS capital_entries (
    trade_id TEXT PRIMARY KEY,
    book TEXT NOT NULL,
    engine_id TEXT NOT NULL,
    reserved TEXT NOT NULL,
    spent TEXT NOT NULL DEFAULT '0',
    state TEXT NOT NULL,
    at {real} NOT NULL
);
"""

SCHEMA_VERSION = 3


class JournalError(Pr3dictError):
    """The journal could not be written: no order may go out."""


_FINAL_TRADE_STATES = tuple(s.value for s in TradeState if s.is_final)


def _opportunity_json(opp: Opportunity) -> str:
    return json.dumps({
        "id": opp.id, "detector": opp.detector, "kind": opp.kind, "size": str(opp.size),
        "edge_per_share": str(opp.edge_per_share), "cost": str(opp.cost),
        "fees": str(opp.fees), "payout": str(opp.payout),
        "legs": [{"venue": leg.venue, "instrument": leg.instrument, "side": str(leg.side),
                  "price": str(leg.price), "size": str(leg.size), "market_id": leg.market_id,
                  "tick_size": str(leg.tick_size),
                  "best_price": None if leg.best_price is None else str(leg.best_price)}
                 for leg in opp.legs],
    })


def _opportunity_from_json(text: str) -> Opportunity:
    d = json.loads(text)
    legs = tuple(LegSpec(leg["venue"], leg["instrument"], Side(leg["side"]), leg["price"],
                         leg["size"], leg["market_id"], leg["tick_size"],
                         None if leg["best_price"] is None else Decimal(leg["best_price"]))
                 for leg in d["legs"])
    return Opportunity(id=d["id"], detector=d["detector"], kind=d["kind"], legs=legs,
                       size=d["size"], edge_per_share=d["edge_per_share"], cost=d["cost"],
                       fees=d["fees"], payout=d["payout"])


class _Refused(Exception):
    """Raised inside a transaction to roll it back, carrying why."""

    def __init__(self, why: str):
        self.why = why


Item = Any  # a (sql, params) statement, or a function of a transaction (``stores.Tx``)


class _Writer:
    """The journal's one worker thread. Jobs run in the order they were queued; writes
    queued back to back while it was busy are committed as one transaction (durable if any
    of them must be): under load the commits grow, not the queue."""

    def __init__(self, store: Store):
        self.store = store
        self._jobs: collections.deque[tuple[str, Any, bool, Future[Any]]] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="pr3dict-journal",
                                        daemon=True)
        self._thread.start()

    def _put(self, kind: str, payload: Any, durable: bool) -> Future[Any]:
        future: Future[Any] = Future()
        with self._ready:
            if self._closed:
                raise JournalError("the journal is closed")
            self._jobs.append((kind, payload, durable, future))
            self._ready.notify()
        return future

    def write(self, items: list[Item], durable: bool) -> Future[None]:
        return self._put("write", items, durable)

    def call(self, fn: Callable[[Tx], T], durable: bool) -> Future[T]:
        return self._put("call", fn, durable)

    def barrier(self) -> Future[None]:
        """Done once everything queued before it is."""
        return self._put("barrier", None, False)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closed:
                    self._ready.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                batch = [job]
                while job[0] == "write" and self._jobs and self._jobs[0][0] == "write":
                    batch.append(self._jobs.popleft())
            kind, payload, durable, _ = job
            try:
                if kind == "barrier":
                    result = None
                elif kind == "call":
                    result = self.store.transaction(payload, durable=durable)
                else:
                    items: list[Item] = [item for b in batch for item in b[1]]
                    result = self.store.transaction(functools.partial(_apply, items=items),
                                                    durable=any(b[2] for b in batch))
            except BaseException as exc:
                for b in batch:
                    b[3].set_exception(exc)
            else:
                for b in batch:
                    b[3].set_result(result)


class Journal:
    """The journal of one engine, in SQLite (``path`` or ``sqlite:///path``) or
    PostgreSQL (``postgresql://...``), shared there with other engines.

    Writes are queued on the event loop's thread and committed by one worker thread, in
    order: an order intent is durable (fsynced) before ``order_intent`` returns; the rest
    is committed at the end of the loop's current iteration, without waiting. Reads wait
    for the queue, so they see everything written before them.
    """

    def __init__(self, target: str | Path, run_id: str = "", *, engine_id: str = "",
                 password: str | None = None, pipeline_file: str | Path | None = None,
                 lease_ms: int = 10_000, read_only: bool = False):
        self.run_id = run_id
        self.engine_id = engine_id
        self.lease_ms = lease_ms
        self.store = open_store(str(target), password=password, read_only=read_only,
                                owner=f"engine {engine_id}" if engine_id else "")
        self.shared = self.store.dialect is POSTGRES  # several engines may use it at once
        self.path = Path(sqlite_path(str(target))) if not self.shared else Path(self.store.where)
        self.where = self.store.where
        self._writer = _Writer(self.store)
        self._pending: list[Item] = []
        self._flushed: asyncio.Future[None] | None = None  # a durable commit is scheduled
        self._scheduled = False  # a non-durable commit is scheduled
        self._error: BaseException | None = None
        self._instance = secrets.token_hex(8)  # this process, among engines of one id
        self._closed = False
        try:
            self._run(self._check_version if read_only else self._migrate)
            if pipeline_file is not None:
                self._run(lambda tx: self._check_pipeline_file(tx, str(pipeline_file)))
        except BaseException:
            self._shutdown()
            raise

    # ------------------------------------------------------------------ plumbing

    def _run(self, fn: Callable[[Tx], T], *, durable: bool = True) -> T:
        """Run ``fn`` in one transaction on the worker, after everything queued; wait."""
        self._send(durable=False)
        try:
            return self._writer.call(fn, durable).result()
        except (JournalError, _Refused):
            raise
        except Exception as exc:  # the database's own error, named as the journal's
            raise JournalError(f"journal {self.where}: {_first_line(exc)}") from exc

    async def _call(self, fn: Callable[[Tx], T], *, durable: bool = True) -> T:
        """``_run`` without blocking the event loop."""
        self._raise_error()
        self._send(durable=False)
        try:
            return await external(self._writer.call(fn, durable))
        except (JournalError, _Refused):
            raise
        except Exception as exc:
            raise JournalError(f"journal {self.where}: {_first_line(exc)}") from exc

    def _send(self, *, durable: bool) -> Future[None] | None:
        """Hand what is queued to the worker as one transaction (not waiting for it). When
        order intents wait for a durable commit, this is that commit, whoever asked."""
        if not self._pending:
            return None
        items, self._pending = self._pending, []
        waiting, self._flushed = self._flushed, None
        durable = durable or waiting is not None
        future = self._writer.write(items, durable)
        if waiting is not None:
            external(future, waiting.get_loop()).add_done_callback(
                lambda f: self._release_intents(waiting, f))
        elif not durable:  # a durable commit's failure goes to whoever waits for it
            future.add_done_callback(self._note_failure)
        return future

    def _release_intents(self, waiting: asyncio.Future[None], f: asyncio.Future[None]) -> None:
        if waiting.done():
            return
        exc = f.exception()
        if exc is None:
            waiting.set_result(None)
        else:
            waiting.set_exception(JournalError(f"journal {self.where}: an order intent could "
                                               f"not be written: {exc}"))

    def _note_failure(self, future: Future[None]) -> None:
        exc = future.exception()
        if exc is not None and self._error is None:
            self._error = exc  # raised again by the next intent: no order goes out

    @property
    def failure(self) -> BaseException | None:
        """Why a background write failed, while no one has been told (the engine looks
        every cycle: a journal that cannot be written stops the run)."""
        return self._error

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise JournalError(f"journal {self.where}: a write failed: {error}") from error

    def _write(self, durable: bool, items: list[Item]) -> None:
        """Queue writes. Non-durable ones are committed together at the end of the event
        loop's current iteration (one transaction for all the engine did in it); a
        durable write commits everything queued, in order, and waits for it."""
        self._pending.extend(items)
        if durable:
            self.flush(durable=True)
            return
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools, tests): write through
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._scheduled = False
        if self._flushed is None:  # else a durable commit is coming and takes it all
            self._send(durable=False)

    def flush(self, durable: bool = False) -> None:
        """Commit everything queued (fsynced if ``durable``) and wait for the worker."""
        self._raise_error()
        future = self._send(durable=durable)
        if future is not None and durable:
            future.result()
        self._writer.barrier().result()
        self._raise_error()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self._writer.close()
        self.store.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement after everything queued (tools, tests, ``pr3dict journal``)."""
        self.flush()
        return self._run(lambda tx: tx.execute(sql, params), durable=False)

    # ------------------------------------------------------------------ schema

    def _migrate(self, tx: Tx) -> None:
        """Create the schema, or bring an older journal up to SCHEMA_VERSION."""
        d = tx.dialect
        if d is POSTGRES:  # engines starting together: one migrates, the others wait
            tx.execute("SELECT pg_advisory_xact_lock(7270031)")
        version = 0
        if _has_table(tx, "meta"):
            rows = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            version = int(rows[0][0]) if rows else 0
        elif d is SQLITE:
            version = tx.execute("PRAGMA user_version")[0][0]
        if version > SCHEMA_VERSION:
            raise JournalError(f"journal {self.where} has schema version {version}, newer "
                               f"than this pr3dict's ({SCHEMA_VERSION}): upgrade pr3dict")
        if _has_table(tx, "trades"):  # an older journal: add what later versions added
            if "venue_order_id" not in _columns(tx, "orders"):
                tx.execute("ALTER TABLE orders ADD COLUMN venue_order_id TEXT NOT NULL "
                           "DEFAULT ''")
            if "engine_id" not in _columns(tx, "trades"):
                tx.execute("ALTER TABLE trades ADD COLUMN engine_id TEXT NOT NULL DEFAULT ''")
            if _has_table(tx, "halts") and "engine_id" not in _columns(tx, "halts"):
                # Halts belong to an engine now: part of their key.
                tx.execute("ALTER TABLE halts RENAME TO halts_v2")
                tx.execute(d.ddl(_HALTS))
                tx.execute("INSERT INTO halts (engine_id, cause, subject, reason, run_id, "
                           "created_at, lifted_at) SELECT '', cause, subject, reason, "
                           "run_id, created_at, lifted_at FROM halts_v2")
                tx.execute("DROP TABLE halts_v2")
        for statement in d.ddl(SCHEMA).split(";"):
            if statement.strip():
                tx.execute(statement)
        tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   (str(SCHEMA_VERSION),))

    def _check_version(self, tx: Tx) -> None:
        """Read only: the schema must be this version (a run upgrades it when it opens it)."""
        rows = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'") \
            if _has_table(tx, "meta") else []
        if not rows or int(rows[0][0]) != SCHEMA_VERSION:
            raise JournalError(f"journal {self.where} has another schema version than this "
                               f"pr3dict's ({SCHEMA_VERSION}); a run upgrades it")

    def _check_pipeline_file(self, tx: Tx, pipeline_file: str) -> None:
        """Two pipeline files never share a journal by accident (two files with one
        pipeline name and the default journal path): the first one to write it owns it."""
        rows = tx.execute("SELECT value FROM meta WHERE key = 'pipeline_file'")
        if not rows:
            tx.execute("INSERT INTO meta (key, value) VALUES ('pipeline_file', ?)",
                       (pipeline_file,))
        elif rows[0][0] != pipeline_file:
            raise JournalError(
                f"journal {self.where} belongs to pipeline file {rows[0][0]}, not "
                f"{pipeline_file}: give this pipeline another name or another "
                "[journal] url (a journal shared on purpose, as by several engines on "
                "PostgreSQL, is named in each file)")

    # ------------------------------------------------------------------ writes

    def trade_transition(self, trade: Trade, old: TradeState | None) -> None:
        """Persist a trade's state; UNRESOLVED is durable at once (it is what stops new
        entries after a restart)."""
        now = time.time()
        statements: list[Item] = []
        if old is None:
            opp = _opportunity_json(trade.opportunity)
            statements.append((
                "INSERT INTO trades (id, run_id, strategy, state, opportunity, created_at, "
                "updated_at, engine_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (trade.id, self.run_id, trade.strategy, trade.state.value, opp, now, now,
                 self.engine_id)))
        else:
            statements.append((
                "UPDATE trades SET state = ?, reject_reason = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (trade.state.value, trade.reject_reason, trade.error, now, trade.id)))
            statements.append((
                "INSERT INTO transitions (trade_id, idx, from_state, to_state, at) "
                "VALUES (?, NULL, ?, ?, ?)", (trade.id, old.value, trade.state.value, now)))
        # Only intents need fsync before anything else happens. An outcome lost to a power
        # failure is recomputed at recovery (the legs' fills are here, the venue is asked);
        # the next intent's durable commit syncs it anyway.
        self._write(trade.state is TradeState.UNRESOLVED, statements)

    def leg_created(self, leg: Leg) -> None:
        self._write(False, [self._leg_row(leg)])

    def _leg_row(self, leg: Leg) -> tuple[str, tuple[Any, ...]]:
        return (_LEG_UPSERT,
                (leg.trade_id, leg.index, leg.venue, leg.instrument, leg.side.value,
                 str(leg.size), str(leg.limit_price), str(leg.target_price), str(leg.tick_size),
                 leg.purpose, leg.state.value, leg.attempts, leg.error))

    async def order_intent(self, leg: Leg, request: OrderRequest,
                           venue_order_id: str = "") -> None:
        """Durable before the order goes on the wire, with the venue's id for it when that
        is known before sending. Group commit: the intents of every leg that reaches this
        point in the same loop iteration share one fsync. The commit runs on the worker
        thread: the event loop goes on meanwhile (signing the orders, say)."""
        self._raise_error()
        self._pending.extend(self._intent_rows(leg, request, venue_order_id))
        if self._flushed is None:
            loop = asyncio.get_running_loop()
            self._flushed = loop.create_future()
            loop.call_soon(self._commit_intents)
        await asyncio.shield(self._flushed)

    def _commit_intents(self) -> None:
        if self._flushed is not None:  # else another commit took the intents already
            self._send(durable=True)

    def _intent_rows(self, leg: Leg, request: OrderRequest,
                     venue_order_id: str) -> list[Item]:
        return [
            self._leg_row(leg),
            ("INSERT INTO orders (client_order_id, trade_id, idx, venue, instrument, "
             "side, price, size, time_in_force, created_at, venue_order_id) "
             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_order_id) DO NOTHING",
             (request.client_order_id, leg.trade_id, leg.index, request.venue,
              request.instrument, request.side.value, str(request.price), str(request.size),
              request.time_in_force.value, time.time(), venue_order_id)),
        ]

    def leg_transition(self, leg: Leg, old: LegState) -> None:
        """A leg changed (its state, or the venue's view of its fills): the row, the
        transition, the venue's order ids, and its fills as the venue now reports them."""
        now = time.time()
        statements: list[Item] = [self._leg_row(leg)]
        if old is not leg.state:
            statements.append((
                "INSERT INTO transitions (trade_id, idx, from_state, to_state, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (leg.trade_id, leg.index, old.value, leg.state.value, now)))
        statements += [("UPDATE orders SET venue_order_id = ? WHERE client_order_id = ? "
                        "AND venue_order_id = ''", (ref.venue_order_id, cid))
                       for cid, ref in leg.orders.items() if ref.venue_order_id]
        statements.append(("DELETE FROM fills WHERE trade_id = ? AND idx = ?",
                           (leg.trade_id, leg.index)))
        statements += [self._fill_row(leg, f) for f in leg.fills.values()]
        # Not durable: survives a process crash; the next durable commit syncs it too.
        self._write(False, statements)

    @staticmethod
    def _fill_row(leg: Leg, f: Fill) -> tuple[str, tuple[Any, ...]]:
        return ("INSERT INTO fills (fill_id, trade_id, idx, client_order_id, price, size, "
                "fee) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (f.fill_id, leg.trade_id, leg.index, f.client_order_id, str(f.price),
                 str(f.size), str(f.fee)))

    # ------------------------------------------------------------------ reads

    def _mine(self) -> tuple[str, tuple[Any, ...]]:
        """Which trades are this engine's: on a shared journal those it owns (or
        adopted); a SQLite journal has one writer, which owns them all."""
        if self.shared:
            return "engine_id = ?", (self.engine_id,)
        return "1 = 1", ()

    def has_run(self, run_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM trades WHERE run_id = ? LIMIT 1", (run_id,)))

    def open_trades(self) -> list[Trade]:
        """This engine's trades not in a final state, with legs and fills, as persisted."""
        mine, params = self._mine()
        placeholders = ",".join("?" * len(_FINAL_TRADE_STATES))
        rows = self.query(
            f"SELECT id FROM trades WHERE state NOT IN ({placeholders}) AND {mine} "
            "ORDER BY created_at", (*_FINAL_TRADE_STATES, *params))
        return [self.load_trade(r[0]) for r in rows]

    def load_trade(self, trade_id: str) -> Trade:
        self.flush()
        return self._run(lambda tx: _load_trade(tx, trade_id), durable=False)

    def recent_final_trades(self, since: float) -> list[Trade]:
        """This engine's committed or rolled-back trades whose last change was at or
        after ``since`` (wall time), oldest first."""
        mine, params = self._mine()
        rows = self.query(
            f"SELECT id FROM trades WHERE state IN (?, ?) AND updated_at >= ? AND {mine} "
            "ORDER BY created_at", (TradeState.COMMITTED.value, TradeState.ROLLED_BACK.value,
                                    since, *params))
        return [self.load_trade(r[0]) for r in rows]

    def executed_trades(self) -> list[Trade]:
        """This engine's trades that got past preflight, oldest first, with ``ended_at``
        (wall time of the last change): what risk gates rebuild their state from."""
        mine, params = self._mine()
        rows = self.query(
            f"SELECT id, updated_at FROM trades WHERE state NOT IN (?, ?, ?) AND {mine} "
            "ORDER BY created_at", (TradeState.REJECTED.value, TradeState.DETECTED.value,
                                    TradeState.APPROVED.value, *params))
        out = []
        for trade_id, updated in rows:
            trade = self.load_trade(trade_id)
            trade.ended_at = updated
            out.append(trade)
        return out

    def trades(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT id, run_id, strategy, state, error, reject_reason, created_at, "
               "engine_id FROM trades")
        params: tuple[Any, ...] = ()
        if state:
            sql += " WHERE state = ?"
            params = (state,)
        sql += " ORDER BY created_at DESC LIMIT ?"
        keys = ("id", "run_id", "strategy", "state", "error", "reject_reason", "created_at",
                "engine_id")
        return [dict(zip(keys, r, strict=True)) for r in self.query(sql, (*params, limit))]

    def positions(self) -> dict[tuple[str, str], Decimal]:
        """Net shares per (venue, instrument) over every fill the journal knows."""
        out: dict[tuple[str, str], Decimal] = {}
        for venue, inst, side, size in self.query(
                "SELECT l.venue, l.instrument, l.side, f.size FROM fills f JOIN legs l "
                "ON l.trade_id = f.trade_id AND l.idx = f.idx"):
            signed = Decimal(size) if side == Side.BUY.value else -Decimal(size)
            out[(venue, inst)] = out.get((venue, inst), Decimal(0)) + signed
        return out

    # ------------------------------------------------------------------ halts

    def set_halt(self, cause: str, subject: str, reason: str) -> None:
        """A reason this engine's entries stop; durable at once (it must survive a crash)."""
        self._write(True, [(
            "INSERT INTO halts (engine_id, cause, subject, reason, run_id, created_at, "
            "lifted_at) VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (engine_id, cause, "
            "subject) DO UPDATE SET reason = excluded.reason, run_id = excluded.run_id, "
            "created_at = excluded.created_at, lifted_at = NULL",
            (self.engine_id, cause, subject, reason, self.run_id, time.time()))])

    def lift_halt(self, cause: str, subject: str) -> None:
        self._write(True, [("UPDATE halts SET lifted_at = ? WHERE engine_id = ? AND "
                            "cause = ? AND subject = ? AND lifted_at IS NULL",
                            (time.time(), self.engine_id, cause, subject))])

    def active_halts(self) -> list[tuple[str, str, str]]:
        """(cause, subject, reason) of every halt of this engine not lifted, oldest first."""
        return [tuple(r) for r in self.query(  # type: ignore[misc]
            "SELECT cause, subject, reason FROM halts WHERE lifted_at IS NULL AND "
            "engine_id = ? ORDER BY created_at", (self.engine_id,))]

    # ------------------------------------------------------------------ engines

    def register_engine(self, pipeline: str) -> None:
        """Claim this engine id for this process. Refused while another live process
        holds it; a holder that died (on this host: its pid is gone; elsewhere: its lease
        expired) is taken over. On a SQLite journal every other engine is dead: this
        process holds the file's lock, and takes over their halts."""
        host, pid = socket.gethostname(), os.getpid()

        def register(tx: Tx) -> None:
            now = tx.dialect.now
            rows = tx.execute(f"SELECT instance, host, pid, run_id, expires_at - {now} "
                              f"FROM engines WHERE engine_id = ?{tx.dialect.for_update}",
                              (self.engine_id,))
            if rows and self.shared:
                _, other_host, other_pid, other_run, left = rows[0]
                alive = left > 0 and not (other_host == host and not _pid_alive(other_pid))
                if alive:
                    raise JournalError(
                        f"engine id {self.engine_id!r} is held by pid {other_pid} on "
                        f"{other_host} (run {other_run}) for {left:.1f} s more: another "
                        "engine with this id is running; give this one another --engine-id, "
                        "or wait for that lease to expire if the process is gone")
            tx.execute(
                "INSERT INTO engines (engine_id, instance, pipeline, host, pid, run_id, "
                f"started_at, renewed_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, {now}, {now}, "
                f"{now} + ?) ON CONFLICT (engine_id) DO UPDATE SET instance = "
                "excluded.instance, pipeline = excluded.pipeline, host = excluded.host, "
                "pid = excluded.pid, run_id = excluded.run_id, started_at = "
                "excluded.started_at, renewed_at = excluded.renewed_at, expires_at = "
                "excluded.expires_at",
                (self.engine_id, self._instance, pipeline, host, pid, self.run_id,
                 self.lease_ms / 1000))
            final = ",".join("?" * len(_FINAL_TRADE_STATES))
            tx.execute(f"DELETE FROM leases WHERE engine_id = ? AND trade_id IN (SELECT id "
                       f"FROM trades WHERE state IN ({final}))",
                       (self.engine_id, *_FINAL_TRADE_STATES))
            if not self.shared:  # one writer: whoever wrote before is gone
                tx.execute("UPDATE engines SET expires_at = 0 WHERE engine_id <> ?",
                           (self.engine_id,))
                tx.execute("UPDATE halts SET engine_id = ? WHERE lifted_at IS NULL AND "
                           "engine_id <> ? AND NOT EXISTS (SELECT 1 FROM halts h WHERE "
                           "h.engine_id = ? AND h.cause = halts.cause AND "
                           "h.subject = halts.subject)",
                           (self.engine_id, self.engine_id, self.engine_id))

        self._run(register)

    async def renew_engine(self) -> bool:
        """Extend this engine's lease; False if another process took the id over."""
        now = self.store.dialect.now
        count = await self._call(lambda tx: tx.rowcount(
            f"UPDATE engines SET renewed_at = {now}, expires_at = {now} + ? "
            "WHERE engine_id = ? AND instance = ?",
            (self.lease_ms / 1000, self.engine_id, self._instance)), durable=False)
        return count == 1

    def retire_engine(self) -> None:
        """A clean stop: the lease ends now, so another engine may adopt what is left open."""
        self._run(lambda tx: tx.execute(
            "UPDATE engines SET expires_at = 0 WHERE engine_id = ? AND instance = ?",
            (self.engine_id, self._instance)))

    def orphaned_trades(self) -> list[tuple[str, str, list[str]]]:
        """(trade id, engine id, venue ids) of open trades whose engine's lease expired."""
        now = self.store.dialect.now
        placeholders = ",".join("?" * len(_FINAL_TRADE_STATES))
        rows = self.query(
            "SELECT t.id, t.engine_id FROM trades t LEFT JOIN engines e ON "
            f"e.engine_id = t.engine_id WHERE t.state NOT IN ({placeholders}) AND "
            f"t.engine_id <> ? AND (e.engine_id IS NULL OR e.expires_at < {now}) "
            "ORDER BY t.created_at", (*_FINAL_TRADE_STATES, self.engine_id))
        out = []
        for trade_id, engine_id in rows:
            venues = [r[0] for r in self.query(
                "SELECT DISTINCT venue FROM legs WHERE trade_id = ?", (trade_id,))]
            if not venues:
                opp = json.loads(self.query("SELECT opportunity FROM trades WHERE id = ?",
                                            (trade_id,))[0][0])
                venues = sorted({leg["venue"] for leg in opp["legs"]})
            out.append((trade_id, engine_id, venues))
        return out

    def adopt(self, trade_id: str, previous: str) -> bool:
        """Take a dead engine's open trade over (with its leases and halts), unless
        another engine did first, or its engine came back."""
        now = self.store.dialect.now

        def adopt(tx: Tx) -> bool:
            took = tx.rowcount(
                "UPDATE trades SET engine_id = ? WHERE id = ? AND engine_id = ? AND NOT "
                f"EXISTS (SELECT 1 FROM engines e WHERE e.engine_id = ? AND e.expires_at >= "
                f"{now})", (self.engine_id, trade_id, previous, previous))
            if took:
                tx.execute("UPDATE leases SET engine_id = ? WHERE trade_id = ?",
                           (self.engine_id, trade_id))
                tx.execute("UPDATE halts SET engine_id = ? WHERE engine_id = ? AND "
                           "subject = ? AND lifted_at IS NULL",
                           (self.engine_id, previous, trade_id))
            return bool(took)

        return self._run(adopt)

    # ------------------------------------------------------------------ leases

    async def claim(self, trade_id: str, instruments: Sequence[tuple[str, str]]) -> str:
        """Lease ``instruments`` (venue, instrument) to this engine for ``trade_id``:
        "" when all are ours, else who holds one (and nothing is claimed). Leases of a
        dead engine whose trade is over are cleared on the way."""
        keys = sorted(set(instruments))  # one order for every engine: no deadlock
        now = self.store.dialect.now

        def claim(tx: Tx) -> str:
            for venue, instrument in keys:
                rows: list[tuple[Any, ...]] = []
                while not rows:  # a lease released between the two statements: again
                    tx.execute("INSERT INTO leases (venue, instrument, engine_id, trade_id, "
                               f"claimed_at) VALUES (?, ?, ?, ?, {now}) ON CONFLICT (venue, "
                               "instrument) DO NOTHING",
                               (venue, instrument, self.engine_id, trade_id))
                    rows = tx.execute("SELECT engine_id, trade_id FROM leases WHERE venue = ? "
                                      f"AND instrument = ?{tx.dialect.for_update}",
                                      (venue, instrument))
                holder, held_for = rows[0]
                if holder == self.engine_id:
                    tx.execute("UPDATE leases SET trade_id = ? WHERE venue = ? AND "
                               "instrument = ?", (trade_id, venue, instrument))
                    continue
                state = tx.execute("SELECT state FROM trades WHERE id = ?", (held_for,))
                left = tx.execute(f"SELECT expires_at - {now} FROM engines WHERE "
                                  "engine_id = ?", (holder,))
                if (not left or left[0][0] < 0) and (not state
                                                     or state[0][0] in _FINAL_TRADE_STATES):
                    tx.execute("UPDATE leases SET engine_id = ?, trade_id = ?, claimed_at = "
                               f"{now} WHERE venue = ? AND instrument = ?",
                               (self.engine_id, trade_id, venue, instrument))
                    continue
                raise _Refused(f"{venue}:{instrument} is leased by engine {holder} "
                               f"(trade {held_for})")
            return ""

        try:
            return await self._call(claim, durable=False)
        except _Refused as refused:
            return refused.why

    def release(self, trade_id: str) -> None:
        """The trade no longer needs its instruments (queued with the next commit)."""
        self._write(False, [("DELETE FROM leases WHERE trade_id = ? AND engine_id = ?",
                             (trade_id, self.engine_id))])

    def leases(self) -> list[tuple[str, str, str, str]]:
        """(venue, instrument, engine id, trade id) of every lease, for people."""
        return [tuple(r) for r in self.query(  # type: ignore[misc]
            "SELECT venue, instrument, engine_id, trade_id FROM leases "
            "ORDER BY engine_id, venue, instrument")]

    def engines(self) -> list[dict[str, Any]]:
        now = self.store.dialect.now
        keys = ("engine_id", "pipeline", "host", "pid", "run_id", "lease_left_s")
        return [dict(zip(keys, r, strict=True)) for r in self.query(
            f"SELECT engine_id, pipeline, host, pid, run_id, expires_at - {now} FROM engines "
            "ORDER BY engine_id")]

    # ------------------------------------------------------------------ capital book

    def open_book(self, name: str, bankroll: Decimal) -> Decimal | None:
        """Create capital book ``name`` or set its bankroll; returns the bankroll it had
        when that differed (every engine sharing a book should say the same)."""
        def open_(tx: Tx) -> Decimal | None:
            tx.execute("INSERT INTO capital_books (name, bankroll, used) VALUES (?, ?, '0') "
                       "ON CONFLICT (name) DO NOTHING", (name, str(bankroll)))
            had = Decimal(tx.execute("SELECT bankroll FROM capital_books WHERE name = ?"
                                     f"{tx.dialect.for_update}", (name,))[0][0])
            if had == bankroll:
                return None
            tx.execute("UPDATE capital_books SET bankroll = ? WHERE name = ?",
                       (str(bankroll), name))
            return had

        return self._run(open_)

    async def reserve(self, book: str, trade_id: str,
                      amount: Decimal) -> tuple[bool, Decimal]:
        """Reserve ``amount`` of ``book`` for a trade, atomically against every engine:
        (reserved, what is available now)."""
        def reserve(tx: Tx) -> tuple[bool, Decimal]:
            bankroll, used = tx.execute(f"SELECT bankroll, used FROM capital_books WHERE "
                                        f"name = ?{tx.dialect.for_update}", (book,))[0]
            available = Decimal(bankroll) - Decimal(used)
            if amount > available:
                return False, available
            tx.execute("UPDATE capital_books SET used = ? WHERE name = ?",
                       (str(Decimal(used) + amount), book))
            tx.execute(f"INSERT INTO capital_entries (trade_id, book, engine_id, reserved, "
                       f"state, at) VALUES (?, ?, ?, ?, 'reserved', {tx.dialect.now})",
                       (trade_id, book, self.engine_id, str(amount)))
            return True, available - amount

        return await self._call(reserve, durable=False)

    def settle_capital(self, trade_id: str, spent: Decimal) -> None:
        """A trade is final: its reservation becomes what it spent (queued; idempotent,
        whichever engine finishes the trade)."""
        self._write(False, [lambda tx: _settle(tx, trade_id, spent)])

    def reconcile_book(self, book: str, trades: Sequence[tuple[str, bool, Decimal]]) -> None:
        """At start: (trade id, final, amount) for this engine's executed trades; a final
        trade still reserved is settled at ``amount`` spent; a trade the book has never
        seen (a journal from before the book) is entered."""
        def reconcile(tx: Tx) -> None:
            seen = dict(tx.execute("SELECT trade_id, state FROM capital_entries "
                                   "WHERE book = ?", (book,)))
            for trade_id, final, amount in trades:
                state = seen.get(trade_id)
                if state is None:
                    _add_used(tx, book, amount)
                    tx.execute("INSERT INTO capital_entries (trade_id, book, engine_id, "
                               f"reserved, spent, state, at) VALUES (?, ?, ?, ?, ?, ?, "
                               f"{tx.dialect.now})",
                               (trade_id, book, self.engine_id, "0" if final else str(amount),
                                str(amount) if final else "0",
                                "final" if final else "reserved"))
                elif final and state == "reserved":
                    _settle(tx, trade_id, amount)

        self._run(reconcile)

    def book(self, name: str) -> tuple[Decimal, Decimal, Decimal] | None:
        """(bankroll, used, reserved now) of a capital book, or None."""
        rows = self.query("SELECT bankroll, used FROM capital_books WHERE name = ?", (name,))
        if not rows:
            return None
        reserved = sum((Decimal(r[0]) for r in self.query(
            "SELECT reserved FROM capital_entries WHERE book = ? AND state = 'reserved'",
            (name,))), Decimal(0))
        return Decimal(rows[0][0]), Decimal(rows[0][1]), reserved


_LEG_UPSERT = (
    "INSERT INTO legs (trade_id, idx, venue, instrument, side, size, limit_price, "
    "target_price, tick_size, purpose, state, attempts, error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trade_id, idx) DO UPDATE SET "
    "venue = excluded.venue, instrument = excluded.instrument, side = excluded.side, "
    "size = excluded.size, limit_price = excluded.limit_price, target_price = "
    "excluded.target_price, tick_size = excluded.tick_size, purpose = excluded.purpose, "
    "state = excluded.state, attempts = excluded.attempts, error = excluded.error")

_HALTS = ("CREATE TABLE halts (engine_id TEXT NOT NULL DEFAULT '', cause TEXT NOT NULL, "
          "subject TEXT NOT NULL, reason TEXT NOT NULL, run_id TEXT NOT NULL, "
          "created_at {real} NOT NULL, lifted_at {real}, "
          "PRIMARY KEY (engine_id, cause, subject))")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _apply(tx: Tx, items: Sequence[Item]) -> None:
    for item in items:
        if isinstance(item, tuple):
            tx.execute(*item)
        else:
            item(tx)


def _settle(tx: Tx, trade_id: str, spent: Decimal) -> None:
    """Book row first, then the entry: the one lock order every engine uses."""
    rows = tx.execute("SELECT book FROM capital_entries WHERE trade_id = ? AND "
                      "state = 'reserved'", (trade_id,))
    if not rows:
        return  # settled already, or never reserved here
    book = rows[0][0]
    tx.execute(f"SELECT 1 FROM capital_books WHERE name = ?{tx.dialect.for_update}", (book,))
    entry = tx.execute(f"SELECT reserved FROM capital_entries WHERE trade_id = ? AND "
                       f"state = 'reserved'{tx.dialect.for_update}", (trade_id,))
    if not entry:
        return  # another engine settled it while this one waited for the book
    _add_used(tx, book, spent - Decimal(entry[0][0]))
    tx.execute(f"UPDATE capital_entries SET state = 'final', spent = ?, at = {tx.dialect.now} "
               "WHERE trade_id = ?", (str(spent), trade_id))


def _add_used(tx: Tx, book: str, delta: Decimal) -> None:
    """Move a capital book's ``used`` by ``delta`` (exact: amounts are decimal strings,
    added here, never by the database's arithmetic)."""
    used = Decimal(tx.execute(f"SELECT used FROM capital_books WHERE name = ?"
                              f"{tx.dialect.for_update}", (book,))[0][0])
    tx.execute("UPDATE capital_books SET used = ? WHERE name = ?", (str(used + delta), book))


def _load_trade(tx: Tx, trade_id: str) -> Trade:
    rows = tx.execute("SELECT strategy, state, opportunity, reject_reason, error FROM trades "
                      "WHERE id = ?", (trade_id,))
    if not rows:
        raise KeyError(trade_id)
    row = rows[0]
    trade = Trade(id=trade_id, opportunity=_opportunity_from_json(row[2]), strategy=row[0],
                  state=TradeState(row[1]), reject_reason=row[3], error=row[4])
    fills: dict[int, list[tuple[Any, ...]]] = {}
    for f in tx.execute("SELECT idx, fill_id, client_order_id, price, size, fee FROM fills "
                        "WHERE trade_id = ?", (trade_id,)):
        fills.setdefault(f[0], []).append(f[1:])
    orders: dict[int, list[tuple[Any, ...]]] = {}
    for o in tx.execute("SELECT idx, client_order_id, venue, instrument, side, price, size, "
                        "time_in_force, venue_order_id FROM orders WHERE trade_id = ? "
                        "ORDER BY created_at, client_order_id", (trade_id,)):
        orders.setdefault(o[0], []).append(o[1:])
    for r in tx.execute("SELECT idx, venue, instrument, side, size, limit_price, target_price, "
                        "tick_size, purpose, state, attempts, error FROM legs WHERE "
                        "trade_id = ? ORDER BY idx", (trade_id,)):
        leg = Leg(trade_id=trade_id, index=r[0], venue=r[1], instrument=r[2],
                  side=Side(r[3]), size=Decimal(r[4]), limit_price=Decimal(r[5]),
                  target_price=Decimal(r[6]), tick_size=Decimal(r[7]), purpose=r[8],
                  state=LegState(r[9]), attempts=r[10], error=r[11])
        for f in fills.get(leg.index, ()):
            leg.fills[f[0]] = Fill(f[0], f[1], f[2], f[3], f[4])
        for o in orders.get(leg.index, ()):
            request = OrderRequest(o[0], o[1], o[2], Side(o[3]), Decimal(o[4]),
                                   Decimal(o[5]), TimeInForce(o[6]))
            # After a restart the fate of every order of an open leg is unknown until
            # the venue says: the reconciler asks it by these ids.
            final = leg.state.is_final
            leg.orders[o[0]] = OrderRef(request, o[7], done=final, lost=not final,
                                        final=final)
        (trade.legs if leg.purpose == "entry" else trade.unwind_legs).append(leg)
    return trade


def _has_table(tx: Tx, name: str) -> bool:
    if tx.dialect is SQLITE:
        return bool(tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = ?", (name,)))
    return tx.execute("SELECT to_regclass(?)", (name,))[0][0] is not None


def _columns(tx: Tx, table: str) -> set[str]:
    if tx.dialect is SQLITE:
        return {r[1] for r in tx.execute(f"PRAGMA table_info({table})")}
    return {r[0] for r in tx.execute("SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = ? AND table_schema = "
                                     "current_schema()", (table,))}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
