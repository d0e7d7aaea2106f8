"""The journal: every trade, leg, order intent, fill and state transition, in SQLite.

WAL mode. An order's intent is committed with ``synchronous=FULL`` before the order goes
on the wire (an intent not on disk was never sent), with group commit across the legs sent
together. Everything else is committed ``NORMAL``: it survives a process crash, and the
next FULL commit makes it power-safe too (the WAL is one file, synced in order). At start
the engine reads the non-final trades back and reconciles them against the venues before
it trades.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

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

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    opportunity TEXT NOT NULL,
    reject_reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
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
    created_at REAL NOT NULL,
    venue_order_id TEXT NOT NULL DEFAULT ''
);
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
    cause TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    lifted_at REAL,
    PRIMARY KEY (cause, subject)
);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trade_id TEXT NOT NULL,
    idx INTEGER,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at REAL NOT NULL
);
"""

SCHEMA_VERSION = 2
# Applied in order to a journal whose user_version is below the key.
MIGRATIONS = {
    2: ["ALTER TABLE orders ADD COLUMN venue_order_id TEXT NOT NULL DEFAULT ''"],
}


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


class Journal:
    """One SQLite file; one connection, used from the event loop's thread only."""

    def __init__(self, path: str | Path, run_id: str = ""):
        self.path = Path(path)
        self.run_id = run_id
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        self._migrate()
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._flushed: asyncio.Future[None] | None = None  # a durable flush is scheduled
        self._scheduled = False  # a NORMAL flush is scheduled
        self._error: BaseException | None = None

    def _migrate(self) -> None:
        """Create the schema, or bring an older journal up to SCHEMA_VERSION."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        existing = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'trades'").fetchone() is not None
        if existing and version < SCHEMA_VERSION:
            for target in sorted(MIGRATIONS):
                if target > max(version, 1):
                    for sql in MIGRATIONS[target]:
                        self.db.execute(sql)
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.flush()
        self.db.close()

    def _sync(self, durable: bool) -> None:
        if durable != self._durable:
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    def _write(self, durable: bool, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Queue statements. NORMAL ones are committed together at the end of the event
        loop's current iteration (one transaction for all the engine did in it); a durable
        write commits everything queued, in order, at once."""
        self._pending.extend(statements)
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
        if self._flushed is not None:
            return  # a durable flush is coming and takes everything queued
        try:
            self.flush()
        except Exception as exc:  # raised again by the next intent: no order goes out
            self._error = exc

    def flush(self, durable: bool = False) -> None:
        """Commit everything queued (with fsync if ``durable``)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise JournalError(f"journal {self.path}: a write failed: {error}") from error
        if not self._pending:
            return
        statements, self._pending = self._pending, []
        self._sync(durable)
        db = self.db
        db.execute("BEGIN")
        try:
            for sql, params in statements:
                db.execute(sql, params)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ------------------------------------------------------------------ writes

    def trade_transition(self, trade: Trade, old: TradeState | None) -> None:
        """Persist a trade's state; final states and EXECUTING (intent) are durable."""
        now = time.time()
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if old is None:
            opp = _opportunity_json(trade.opportunity)
            statements.append((
                "INSERT OR IGNORE INTO trades (id, run_id, strategy, state, opportunity, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (trade.id, self.run_id, trade.strategy, trade.state.value, opp, now, now)))
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
        # the next intent's FULL commit syncs it anyway. UNRESOLVED is synced at once: it
        # is what stops new entries after a restart.
        self._write(trade.state is TradeState.UNRESOLVED, statements)

    def leg_created(self, leg: Leg) -> None:
        self._write(False, [self._leg_row(leg)])

    def _leg_row(self, leg: Leg) -> tuple[str, tuple[Any, ...]]:
        return ("INSERT OR REPLACE INTO legs (trade_id, idx, venue, instrument, side, size, "
                "limit_price, target_price, tick_size, purpose, state, attempts, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (leg.trade_id, leg.index, leg.venue, leg.instrument, leg.side.value,
                 str(leg.size), str(leg.limit_price), str(leg.target_price), str(leg.tick_size),
                 leg.purpose, leg.state.value, leg.attempts, leg.error))

    async def order_intent(self, leg: Leg, request: OrderRequest,
                           venue_order_id: str = "") -> None:
        """Durable before the order goes on the wire, with the venue's id for it when that
        is known before sending. Group commit: the intents of every leg that reaches this
        point in the same loop iteration share one fsync."""
        if self._error is not None:
            self.flush()  # raises the earlier failure: no order goes out
        self._pending.extend(self._intent_rows(leg, request, venue_order_id))
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        await asyncio.shield(self._flushed)

    def _flush(self) -> None:
        done, self._flushed = self._flushed, None
        assert done is not None
        try:
            self.flush(durable=True)
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    def _intent_rows(self, leg: Leg, request: OrderRequest,
                     venue_order_id: str) -> list[tuple[str, tuple[Any, ...]]]:
        return [
            self._leg_row(leg),
            ("INSERT OR IGNORE INTO orders (client_order_id, trade_id, idx, venue, instrument, "
             "side, price, size, time_in_force, created_at, venue_order_id) "
             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             (request.client_order_id, leg.trade_id, leg.index, request.venue,
              request.instrument, request.side.value, str(request.price), str(request.size),
              request.time_in_force.value, time.time(), venue_order_id)),
        ]

    def leg_transition(self, leg: Leg, old: LegState) -> None:
        """A leg changed (its state, or the venue's view of its fills): the row, the
        transition, the venue's order ids, and its fills as the venue now reports them."""
        now = time.time()
        statements = [self._leg_row(leg)]
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
        # NORMAL survives a process crash; the trade's outcome, written FULL right after,
        # syncs the WAL and with it these frames (WAL is one sequential file).
        self._write(False, statements)

    @staticmethod
    def _fill_row(leg: Leg, f: Fill) -> tuple[str, tuple[Any, ...]]:
        return ("INSERT OR IGNORE INTO fills (fill_id, trade_id, idx, client_order_id, price, "
                "size, fee) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (f.fill_id, leg.trade_id, leg.index, f.client_order_id, str(f.price),
                 str(f.size), str(f.fee)))

    # ------------------------------------------------------------------ reads

    def has_run(self, run_id: str) -> bool:
        self.flush()
        return self.db.execute("SELECT 1 FROM trades WHERE run_id = ? LIMIT 1",
                               (run_id,)).fetchone() is not None

    def open_trades(self) -> list[Trade]:
        """Trades not in a final state, with their legs and fills, as last persisted."""
        self.flush()
        placeholders = ",".join("?" * len(_FINAL_TRADE_STATES))
        rows = self.db.execute(
            f"SELECT id FROM trades WHERE state NOT IN ({placeholders}) ORDER BY created_at",
            _FINAL_TRADE_STATES).fetchall()
        return [self.load_trade(r[0]) for r in rows]

    def load_trade(self, trade_id: str) -> Trade:
        self.flush()
        row = self.db.execute(
            "SELECT strategy, state, opportunity, reject_reason, error FROM trades WHERE id = ?",
            (trade_id,)).fetchone()
        if row is None:
            raise KeyError(trade_id)
        trade = Trade(id=trade_id, opportunity=_opportunity_from_json(row[2]), strategy=row[0],
                      state=TradeState(row[1]), reject_reason=row[3], error=row[4])
        for leg in self._legs(trade_id):
            (trade.legs if leg.purpose == "entry" else trade.unwind_legs).append(leg)
        return trade

    def _legs(self, trade_id: str) -> Iterator[Leg]:
        for r in self.db.execute(
                "SELECT idx, venue, instrument, side, size, limit_price, target_price, "
                "tick_size, purpose, state, attempts, error FROM legs WHERE trade_id = ? "
                "ORDER BY idx", (trade_id,)):
            leg = Leg(trade_id=trade_id, index=r[0], venue=r[1], instrument=r[2],
                      side=Side(r[3]), size=Decimal(r[4]), limit_price=Decimal(r[5]),
                      target_price=Decimal(r[6]), tick_size=Decimal(r[7]), purpose=r[8],
                      state=LegState(r[9]), attempts=r[10], error=r[11])
            for f in self.db.execute(
                    "SELECT fill_id, client_order_id, price, size, fee FROM fills "
                    "WHERE trade_id = ? AND idx = ?", (trade_id, leg.index)):
                leg.fills[f[0]] = Fill(f[0], f[1], f[2], f[3], f[4])
            for o in self.db.execute(
                    "SELECT client_order_id, venue, instrument, side, price, size, "
                    "time_in_force, venue_order_id FROM orders WHERE trade_id = ? AND idx = ? "
                    "ORDER BY created_at, client_order_id", (trade_id, leg.index)):
                request = OrderRequest(o[0], o[1], o[2], Side(o[3]), Decimal(o[4]),
                                       Decimal(o[5]), TimeInForce(o[6]))
                # After a restart the fate of every order of an open leg is unknown until
                # the venue says: the reconciler asks it by these ids.
                final = leg.state.is_final
                leg.orders[o[0]] = OrderRef(request, o[7], done=final, lost=not final,
                                            final=final)
            yield leg

    def recent_final_trades(self, since: float) -> list[Trade]:
        """Committed or rolled-back trades whose last change was at or after ``since``
        (wall time), oldest first."""
        self.flush()
        rows = self.db.execute(
            "SELECT id FROM trades WHERE state IN (?, ?) AND updated_at >= ? "
            "ORDER BY created_at", (TradeState.COMMITTED.value, TradeState.ROLLED_BACK.value,
                                    since)).fetchall()
        return [self.load_trade(r[0]) for r in rows]

    def executed_trades(self) -> list[Trade]:
        """Every trade that got past preflight, oldest first, with ``ended_at`` (wall time
        of its last change): what the risk gates rebuild their state from at start."""
        self.flush()
        rows = self.db.execute(
            "SELECT id, updated_at FROM trades WHERE state NOT IN (?, ?, ?) "
            "ORDER BY created_at", (TradeState.REJECTED.value, TradeState.DETECTED.value,
                                    TradeState.APPROVED.value)).fetchall()
        out = []
        for trade_id, updated in rows:
            trade = self.load_trade(trade_id)
            trade.ended_at = updated
            out.append(trade)
        return out

    # ------------------------------------------------------------------ halts

    def set_halt(self, cause: str, subject: str, reason: str) -> None:
        """A reason entries stop; durable at once (it must survive a crash)."""
        self._write(True, [(
            "INSERT OR REPLACE INTO halts (cause, subject, reason, run_id, created_at, "
            "lifted_at) VALUES (?, ?, ?, ?, ?, NULL)",
            (cause, subject, reason, self.run_id, time.time()))])

    def lift_halt(self, cause: str, subject: str) -> None:
        self._write(True, [("UPDATE halts SET lifted_at = ? WHERE cause = ? AND subject = ? "
                            "AND lifted_at IS NULL", (time.time(), cause, subject))])

    def active_halts(self) -> list[tuple[str, str, str]]:
        """(cause, subject, reason) of every halt not lifted, oldest first."""
        self.flush()
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT cause, subject, reason FROM halts WHERE lifted_at IS NULL "
            "ORDER BY created_at")]

    def trades(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        self.flush()
        sql = "SELECT id, run_id, strategy, state, error, reject_reason, created_at FROM trades"
        params: tuple[Any, ...] = ()
        if state:
            sql += " WHERE state = ?"
            params = (state,)
        sql += " ORDER BY created_at DESC LIMIT ?"
        keys = ("id", "run_id", "strategy", "state", "error", "reject_reason", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in self.db.execute(sql, (*params, limit))]

    def positions(self) -> dict[tuple[str, str], Decimal]:
        """Net shares per (venue, instrument) over every fill the journal knows."""
        self.flush()
        out: dict[tuple[str, str], Decimal] = {}
        for venue, inst, side, size in self.db.execute(
                "SELECT l.venue, l.instrument, l.side, f.size FROM fills f JOIN legs l "
                "ON l.trade_id = f.trade_id AND l.idx = f.idx"):
            signed = Decimal(size) if side == Side.BUY.value else -Decimal(size)
            out[(venue, inst)] = out.get((venue, inst), Decimal(0)) + signed
        return out
