"""The ``paper`` venue: the matching engine over a scenario, in process.

Orders go through the same matching engine the ``pr3dict sim`` server uses, with per-venue
latency and injected faults (rejects, partial fills, replies lost after the order was
applied). Deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import AmbiguousOutcome, BuildContext, OrderRejected, UnknownOrder
from pr3dict_core.config import check_input_file, output
from pr3dict_core.execution import KEEP_FINISHED_ORDERS, on_wire
from pr3dict_core.model import (
    Book,
    Fill,
    Market,
    OrderAck,
    OrderRequest,
    Side,
    TimeInForce,
    quantize_down,
)

from .matching import MatchingEngine, MatchingError, UnknownOrderError
from .scenario import MarketProcess, ScenarioSpec, load_scenario

MARKET_MAKER = "mm"


# One fee function per venue, shared with the connector and `pr3dict sim`: the paper venue
# charges exactly what the connector expects and the simulator charges.


def polymarket_fee(rate: Decimal):  # type: ignore[no-untyped-def]
    """Polymarket's taker fee (``pr3dict_polymarket.protocol.fee``, imported only for a
    venue that charges it: the protocol module brings keccak)."""
    from pr3dict_polymarket import protocol as pm_protocol

    def fee(instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return pm_protocol.fee(rate, size, price)

    return fee


def kalshi_fee(rate: Decimal):  # type: ignore[no-untyped-def]
    """Kalshi's taker fee (``pr3dict_kalshi.protocol.fee``; ``rate`` is the coefficient);
    imported only for a venue that charges it (the protocol module brings cryptography)."""
    from pr3dict_kalshi import protocol as kalshi_protocol

    def fee(instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return kalshi_protocol.fee(size, price, coefficient=rate)

    return fee


FEE_MODELS = {"polymarket": polymarket_fee, "kalshi": kalshi_fee}


@frozen
class OutcomeSet:
    """Mutually exclusive markets of one event (Polymarket negative risk): at most one
    resolves YES; with ``exhaustive`` exactly one does."""

    id: str
    markets: tuple[str, ...]  # market ids on this venue
    exhaustive: bool
    title: str = ""


class PaperVenue:
    """An in-process venue over a scenario file (see ``docs/pipeline-reference.md``)."""

    type: ClassVar[str] = "paper"

    @frozen(kw_only=True)
    class Config:
        simulated: ClassVar[bool] = True  # never a real venue: refused in live mode
        scenario: str
        seed: int | None = None  # overrides the scenario's seed
        latency_ms: float | None = attrs.field(default=None, validator=attrs.validators.optional(
            attrs.validators.ge(0)))
        faults: bool = True  # False turns the scenario's injected faults off
        account: str = "pr3dict"
        # Keep the venue's state (books, orders, positions) in this file across runs, so a
        # killed engine restarts against a venue that remembers, as a real one does.
        state_file: str | None = output(default=None)

    def __init__(self, id: str, spec: ScenarioSpec, *, seed: int, latency_ms: float,
                 faults: bool = True, account: str = "pr3dict", process: bool = True,
                 state_file: Path | None = None):
        self.id = id
        self.spec = spec
        self.account = account
        self.latency_s = latency_ms / 1000
        self.faults = spec.faults if faults else None
        self.fee = FEE_MODELS[spec.fee_model](spec.effective_fee_rate)
        # Our finished orders and fills stay queryable as long as the engine remembers their
        # legs (its KEEP_FINISHED_ORDERS), not the matching engine's default 100,000.
        self.engine = MatchingEngine(fee=self.fee, untracked=frozenset({MARKET_MAKER}),
                                     max_final_orders=KEEP_FINISHED_ORDERS,
                                     max_fills=KEEP_FINISHED_ORDERS)
        self._markets = [
            Market(venue=id, market_id=m.id, yes=f"{m.id}:yes", no=f"{m.id}:no", title=m.title,
                   tick_size=spec.tick_size, min_size=spec.min_size, size_step=spec.size_step)
            for m in spec.markets
        ]
        for m in self._markets:
            for inst in (m.yes, m.no):
                self.engine.add_instrument(inst, tick_size=spec.tick_size, min_size=spec.min_size)
        # process=False leaves the books to whoever scripts them (tests, `pr3dict test`).
        self.process = MarketProcess(spec, self._markets, seed) if process else None
        self.seed = seed
        self._orders_seen: dict[str, int] = {}
        self.state_file = state_file
        self._books: dict[str, Book] = {}
        self._order = {inst: n for n, inst in enumerate(
            inst for m in self._markets for inst in (m.yes, m.no))}  # instrument -> position
        self._quoted: dict[str, tuple[object, int, int]] = {}
        self._subscribers: list[Callable[[OrderAck], None]] = []
        self._events = tuple(OutcomeSet(e.id, tuple(e.markets), e.exhaustive, e.title)
                             for e in spec.events)
        self._heartbeat: float | None = None  # time.monotonic() of the last books delivered
        self.steps = 0

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> PaperVenue:
        path = ctx.path(config.scenario)
        check_input_file(path, "scenario", "scenario file")
        spec = load_scenario(path)
        return cls(id, spec, seed=spec.seed if config.seed is None else config.seed,
                   latency_ms=spec.latency_ms if config.latency_ms is None else config.latency_ms,
                   faults=config.faults, account=config.account,
                   state_file=None if config.state_file is None
                   else ctx.output_path(config.state_file))

    # ------------------------------------------------------------------ persistence

    _PERSISTED = ("engine", "process", "steps", "_orders_seen", "_quoted", "_books")

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        state = pickle.loads(self.state_file.read_bytes())
        for name in self._PERSISTED:
            setattr(self, name, state[name])
        self.engine._fee = self.fee

    def _save(self) -> None:
        """Write the whole venue state atomically (temp file, fsync, rename): a crash leaves
        either the old state (the request never arrived) or the new one."""
        if self.state_file is None:
            return
        self.engine._fee = None  # a closure; restored on load
        try:
            data = pickle.dumps({name: getattr(self, name) for name in self._PERSISTED})
        finally:
            self.engine._fee = self.fee
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._load()
        if self.process is not None and not self.steps:
            self._quote()
            self._save()
        self._heartbeat = time.monotonic()

    async def close(self) -> None:
        self.engine.cancel_all(self.account)

    def markets(self) -> Sequence[Market]:
        return self._markets

    def events(self) -> Sequence[OutcomeSet]:
        """Sets of mutually exclusive markets (the scenario's ``[[events]]``)."""
        return self._events

    def last_heartbeat(self) -> float | None:
        """``time.monotonic()`` when this venue last delivered books (None: never)."""
        return self._heartbeat

    # ------------------------------------------------------------------ books

    def _quote(self) -> None:
        """Requote markets whose fair price or arbitrage window moved, or whose liquidity
        someone took since the last quote; leave the rest (and their sequences) alone."""
        assert self.process is not None
        engine = self.engine
        for st in self.process.states:
            key = st.quote_key()
            m = st.market
            last = self._quoted.get(m.market_id)
            sequences = (engine.sequence(m.yes), engine.sequence(m.no))
            if last is not None and last == (key, *sequences):
                continue
            if last is not None and last[0] == key and st.arb_steps_left > 0:
                # Someone took liquidity during an arbitrage window: the market closes the
                # dislocation rather than offering the same edge again next step.
                st.arb_steps_left = 0
                key = st.quote_key()
            for inst, side, levels in self.process.quotes(st):
                fills = engine.set_liquidity(MARKET_MAKER, inst,
                                             Side.SELL if side == "ask" else Side.BUY, levels)
                self._push(fills)
            self._quoted[m.market_id] = (key, engine.sequence(m.yes), engine.sequence(m.no))

    def subscribe_orders(self, callback: Callable[[OrderAck], None]) -> None:
        """Push our orders' updates when the market maker's moving quotes fill them."""
        self._subscribers.append(callback)

    def _push(self, fills: Sequence[Fill]) -> None:
        if not self._subscribers:
            return
        for cid in dict.fromkeys(f.client_order_id for f in fills):
            try:
                ack = self.engine.get(self.account, cid)
            except UnknownOrderError:
                continue  # another account's order
            for callback in self._subscribers:
                callback(ack)

    def set_book(self, instrument: str, *, bids: Sequence[tuple[Decimal, Decimal]] = (),
                 asks: Sequence[tuple[Decimal, Decimal]] = ()) -> None:
        """Replace the market maker's quotes on one instrument (scripted books in tests and
        ``process = false`` scenarios); fills of our resting orders are pushed."""
        self._push(self.engine.set_liquidity(MARKET_MAKER, instrument, Side.BUY, bids))
        self._push(self.engine.set_liquidity(MARKET_MAKER, instrument, Side.SELL, asks))

    def book(self, instrument: str) -> Book | None:
        seq = self.engine.sequence(instrument)
        cached = self._books.get(instrument)
        if cached is None or cached.sequence != seq:
            bids, asks = self.engine.book(instrument)
            cached = Book(self.id, instrument, bids, asks, sequence=seq)
            self._books[instrument] = cached
        return cached

    async def poll_books(self) -> Sequence[Book]:
        """Advance the market one step and return the books that changed."""
        if self.process is not None:
            self.process.step()
            self._quote()
        self.steps += 1
        self._save()
        self._heartbeat = time.monotonic()
        # In market order (same seed, same run), only what changed: O(changes), not O(markets).
        order = self._order
        changed = []
        for inst in sorted(self.engine.take_changed(), key=lambda i: order.get(i, -1)):
            book = self.book(inst)
            if book is not None:
                changed.append(book)
        return changed

    # ------------------------------------------------------------------ orders

    async def place_order(self, request: OrderRequest) -> OrderAck:
        on_wire()  # handed over: what a connector's written request is
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        faults = self.faults
        size = request.size
        if faults is not None:
            # Faults are drawn per (seed, instrument, n-th order on it), not from one shared
            # sequence, so concurrent trades on other markets cannot change who gets which
            # fault (one trade per instrument is in flight at a time): same seed, same run.
            n = self._orders_seen[request.instrument] = \
                self._orders_seen.get(request.instrument, 0) + 1
            rng = random.Random(f"{self.seed}:{request.instrument}:{n}")

            def draw(rate: Decimal) -> bool:
                return bool(rate) and rng.random() < float(rate)  # a probability, not money

            if draw(faults.reject_rate):
                raise OrderRejected(f"paper venue {self.id}: injected reject")
            if request.time_in_force is not TimeInForce.FOK and draw(faults.partial_fill_rate):
                part = quantize_down(size * Decimal(rng.randint(25, 75)) / 100,
                                     self.spec.size_step)
                if part >= self.spec.min_size and size - part >= self.spec.min_size:
                    size = part
            lose_reply = draw(faults.timeout_rate)
        else:
            lose_reply = False
        try:
            ack = self.engine.submit(self.account, request.client_order_id, request.instrument,
                                     request.side, request.price, size, request.time_in_force)
        except MatchingError as exc:  # bad tick/size, unknown instrument, reused id
            raise OrderRejected(f"paper venue {self.id}: {exc}") from None
        self._save()
        if lose_reply:
            raise AmbiguousOutcome(f"paper venue {self.id}: reply lost after the order was applied")
        return ack

    async def cancel_order(self, client_order_id: str) -> OrderAck:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        try:
            ack = self.engine.cancel(self.account, client_order_id)
        except UnknownOrderError:
            raise UnknownOrder(client_order_id) from None
        self._save()
        return ack

    async def get_order(self, client_order_id: str) -> OrderAck:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        try:
            return self.engine.get(self.account, client_order_id)
        except UnknownOrderError:
            raise UnknownOrder(client_order_id) from None

    def positions(self) -> Mapping[str, Decimal]:
        return self.engine.positions(self.account)

    def cash(self) -> Decimal:
        return self.engine.cash(self.account)
