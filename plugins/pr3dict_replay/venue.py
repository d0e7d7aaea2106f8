"""The ``replay`` venue (a recording played into books) and the shadow venue (live public
books); both fill orders locally with ``FillSimulator`` and never send one anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext
from pr3dict_core.config import ConfigError, ConfigProblem
from pr3dict_core.execution import on_wire
from pr3dict_core.model import Book, Market, OrderAck, OrderRequest, Pr3dictError
from pr3dict_venuekit.orders import OrderRecord

from .decode import Decoder
from .feeds import Feed
from .fills import FillSimulator
from .format import RecordingError, read_recording

# The order latency a simulated venue assumes when its table sets none: an order meets the
# books received about one round trip after those it was decided on (docs/replay.md#order-latency).
# Polymarket: ~88 ms measured from US-East (the far venue of a host near Kalshi); Kalshi
# publishes none and none was measured: 20 ms, the top of the near-venue estimate.
DEFAULT_LATENCY_MS = {"polymarket": 90.0, "kalshi": 20.0}


def order_latency_ms(venue_type: str, configured: float | None) -> float:
    return DEFAULT_LATENCY_MS[venue_type] if configured is None else configured


class SimulatedVenue:
    """Books from a ``Decoder``, orders through a ``FillSimulator``: the part replay and
    shadow share."""

    type: ClassVar[str] = ""

    def __init__(self, id: str, venue_type: str, clock: Callable[[], float] = time.time):
        self.id = id
        self.venue_type = venue_type
        self.decoder = Decoder(id, venue_type, self._changed_cb, self._traded_cb)
        self._by_instrument: dict[str, Market] = {}
        self.fills = FillSimulator(id, self.decoder.books, self._by_instrument.get,
                                   self.decoder.fee, self.decoder.twin, clock)
        # instruments changed since the last poll, in the order they changed (a dict: a
        # replay's order without sorting, which the set it replaced needed per cycle)
        self._changed: dict[str, None] = {}
        self._subscribers: list[Callable[[OrderAck], None]] = []
        self._heartbeat: float | None = None
        self.orders_sent = 0

    def _changed_cb(self, instrument: str) -> None:
        self._changed[instrument] = None
        if not self.fills.resting:
            return
        self._tell(self.fills.on_book(instrument))

    def _traded_cb(self, instrument: str, maker_bid: bool, price: Decimal,
                   size: Decimal) -> None:
        if self.fills.resting:
            self._tell(self.fills.on_trade(instrument, maker_bid, price, size))

    def _tell(self, records: list[OrderRecord]) -> None:
        for rec in records:
            ack = rec.ack()
            for callback in self._subscribers:
                callback(ack)

    def _markets_loaded(self) -> None:
        self._by_instrument.clear()
        self._by_instrument.update({i: m for m in self.decoder.markets for i in (m.yes, m.no)})

    def apply(self, record: Mapping[str, Any]) -> None:
        self.decoder.apply(record)
        if record["k"] == "markets":
            self._markets_loaded()

    # ------------------------------------------------------------------ venue protocol

    def markets(self) -> Sequence[Market]:
        return self.decoder.markets

    def book(self, instrument: str) -> Book | None:
        # Detectors call this several times per message: the cached Book without a call.
        local = self.decoder.books.get(instrument)
        if local is None:
            return None
        return local._book or local.book()

    def _take_changed(self) -> list[Book]:
        changed, self._changed = self._changed, {}
        self._heartbeat = time.monotonic()
        books = self.decoder.books  # every instrument told changed has a book
        return [books[i].book() for i in changed]

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return self.decoder.fee(instrument, price, size)

    def positions(self) -> Mapping[str, Decimal]:
        return {k: v for k, v in sorted(self.fills.positions.items()) if v}

    def subscribe_orders(self, callback: Callable[[OrderAck], None]) -> None:
        self._subscribers.append(callback)

    def last_heartbeat(self) -> float | None:
        return self._heartbeat

    async def _arrive(self) -> None:
        """Wait until an order sent now reaches the (simulated) venue."""

    async def place_order(self, request: OrderRequest) -> OrderAck:
        on_wire()  # handed over: what a connector's written request is
        await self._arrive()
        self.orders_sent += 1
        return self.fills.submit(request)

    async def cancel_order(self, client_order_id: str) -> OrderAck:
        await self._arrive()
        return self.fills.cancel(client_order_id)

    async def get_order(self, client_order_id: str) -> OrderAck:
        return self.fills.get(client_order_id).ack()


# --------------------------------------------------------------------------- replay


class Player:
    """One recording read once, shared by every replay venue over it (one clock).

    ``advance`` applies the next batch: the next record and all received within
    ``batch_ns`` of it. Replayed time, not wall time, decides what an order sees, so the
    same recording and orders give the same fills. It is also the ``TimeSource`` of a
    ``pr3dict_core.clock.ReplayedTimeLoop``: on that loop (``pr3dict run``) a batch is due
    at its time like a timer, and the loop paces it (``speed``) and moves time to the
    engine's timers. On another loop (a script's ``asyncio.run``) the batch is applied at
    once, after waiting for real time when ``speed`` is a number.
    """

    def __init__(self, path: Path, *, speed: float | None, batch_ns: int):
        self.path = path
        self.speed = speed
        self.batch_ns = batch_ns
        self.venues: dict[str, ReplayVenue] = {}  # recorded venue id -> replay venue
        self._records: Iterator[dict[str, Any]] = read_recording(path)
        self._next: dict[str, Any] | None = None
        self.header: dict[str, Any] = {}
        self.markets: dict[str, dict[str, Any]] = {}
        self.now_ns = 0
        self.cycle_ns = 0
        self.generation = 0
        self.exhausted = False
        self.applied = 0
        self._wall0: float | None = None
        self._batch: asyncio.Future[None] | None = None
        self._t0 = 0
        self._started = False

    def _peek(self) -> dict[str, Any] | None:
        if self._next is None and not self.exhausted:
            self._next = next(self._records, None)
            if self._next is None:
                self.exhausted = True
        return self._next

    def start(self) -> None:
        """Read the header and the markets records that follow it."""
        if self._started:
            return
        self._started = True
        first = self._peek()
        if first is None:
            raise RecordingError(f"{self.path}: empty recording")
        self.header = first
        self._next = None
        while (r := self._peek()) is not None and r["k"] == "markets":
            self.markets[r["v"]] = r
            self._next = None
        if r is not None:
            self.now_ns = self.cycle_ns = self._t0 = r["t"]

    async def _pace(self, t_ns: int) -> None:
        assert self.speed is not None
        if self._wall0 is None:
            self._wall0 = time.monotonic()
        due = self._wall0 + (t_ns - self._t0) / 1e9 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    @property
    def start_ns(self) -> int:
        """The recording's time at the start of the run (``TimeSource``)."""
        return self._t0

    def jump(self, t_ns: int) -> None:
        """``TimeSource``: the replayed-time loop moves time to a timer's (``advance_to``)."""
        self.advance_to(t_ns)

    def next_ns(self) -> int | None:
        """``TimeSource``: the next record's time (None: the recording is over)."""
        r = self._peek()
        return None if r is None else r["t"]

    async def advance(self) -> None:
        # Counted first: a venue polled while this one waits (for the batch's time, or for
        # real time when paced) waits for this batch instead of starting another
        # (``settled``).
        self.generation += 1
        self._batch = asyncio.get_running_loop().create_future()
        try:
            await self._advance()
        finally:
            self._batch.set_result(None)

    async def settled(self) -> None:
        """Return once the batch being applied (if any) is applied."""
        if self._batch is not None and not self._batch.done():
            await asyncio.shield(self._batch)

    async def _advance(self) -> None:
        r = self._peek()
        if r is not None:
            first = r["t"]
            loop = asyncio.get_running_loop()
            if getattr(loop, "source", None) is self:
                # Replayed time (pr3dict_core.clock): the batch is due at its first record's
                # time. The loop gets there once every task waits; timers that fall earlier
                # (a deadline, a chase, the exposure worker) fire first, at their own time.
                if first > self.now_ns:
                    when = (first - self._t0) * 1e-9
                    if loop.idle_before(when):  # what the timer would do, without one
                        self.jump(loop.ns(when))
                        if loop.woken():  # fills woke tasks: they run first, as then
                            due = loop.create_future()
                            loop.call_soon(_wake, due)
                            await due
                    else:
                        due = loop.create_future()
                        loop.call_at(when, _wake, due)
                        await due
            elif self.speed is not None:
                await self._pace(first)
            self._apply_until(first + self.batch_ns)
        self.cycle_ns = self.now_ns

    def _apply_until(self, end: int) -> None:
        """Apply every record received until ``end`` (ns), in order."""
        r = self._peek()
        if r is None or r["t"] > end:
            return
        self._next = None
        records, now, n = self._records, self.now_ns, 0
        venues = self.venues
        ws = {vid: v.decoder._apply_ws for vid, v in venues.items()}
        while True:  # the hot loop of a replay: no call it can do without
            t = r["t"]
            if t > now:
                now = self.now_ns = t
            n += 1
            if r["k"] == "ws":
                apply_ws = ws.get(r["v"])
                if apply_ws is not None:
                    try:
                        apply_ws(r["raw"])
                    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
                        venues[r["v"]].decoder.bad_message(exc)
            else:
                venue = venues.get(r.get("v", ""))
                if venue is not None:
                    venue.apply(r)
            r = next(records, None)
            if r is None:
                self.exhausted = True
                break
            if r["t"] > end:
                self._next = r
                break
        self.applied += n

    def close(self) -> None:
        """Release the file (the last venue over this recording closed)."""
        close = getattr(self._records, "close", None)
        if close is not None:
            close()
        self.exhausted = True

    def advance_to(self, t_ns: int) -> None:
        self._apply_until(t_ns)
        self.now_ns = max(self.now_ns, t_ns)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _speed(value: Any) -> float | None:
    """None for "max", else the multiple of real time."""
    if value == "max":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"'speed' must be \"max\" or a positive number: {value!r}")
    return float(value)


def _check_speed(_: Any, __: Any, value: Any) -> None:
    _speed(value)


class ReplayVenue(SimulatedVenue):
    """Plays one venue of a recording (see ``docs/recording.md`` and ``docs/replay.md``)."""

    type: ClassVar[str] = "replay"

    @frozen(kw_only=True)
    class Config:
        recording: str
        # The recorded venue id to play; default: this venue's id.
        source: str | None = None
        # Order latency in recorded time; default: the venue type's (DEFAULT_LATENCY_MS).
        latency_ms: float | None = attrs.field(
            default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
        # Extra latency drawn uniformly in [0, jitter_ms] per order from ``seed``.
        jitter_ms: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
        speed: Any = attrs.field(default="max", validator=_check_speed)
        seed: int = 0
        # Records received within this many ms of a cycle's first are one cycle's books.
        batch_ms: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))

    def __init__(self, id: str, player: Player, *, source: str, latency_ms: float | None = None,
                 jitter_ms: float = 0.0, seed: int = 0):
        self.player = player
        self.time_source = player  # the run's clock when every venue replays this recording
        self.source = source
        self.jitter_ns = int(jitter_ms * 1e6)
        self.rng = random.Random(seed)
        self._generation = 0
        try:
            player.start()
        except RecordingError as exc:  # a bad input file: a configuration problem
            raise ConfigError([ConfigProblem(str(player.path), "", str(exc))]) from None
        rec = player.markets.get(source)
        if rec is None:
            raise ConfigError([ConfigProblem(
                str(player.path), "", f"has no venue {source!r} for venue {id} (it has "
                f"{', '.join(sorted(player.markets)) or 'none'}); set `source`")])
        super().__init__(id, rec["venue_type"], clock=lambda: player.now_ns / 1e9)
        self.latency_ns = int(order_latency_ms(self.venue_type, latency_ms) * 1e6)
        if source in player.venues:
            raise Pr3dictError(f"venue {id}: recorded venue {source!r} is replayed twice")
        player.venues[source] = self
        self.apply(rec)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> ReplayVenue:
        path = ctx.path(config.recording)
        player = None
        for other in ctx.built.get("venues", {}).values():
            if isinstance(other, ReplayVenue) and other.player.path == path:
                player = other.player  # one clock for every venue of one recording
        if player is None:
            player = Player(path, speed=_speed(config.speed),
                            batch_ns=int(config.batch_ms * 1e6))
        return cls(id, player, source=config.source or id, latency_ms=config.latency_ms,
                   jitter_ms=config.jitter_ms, seed=config.seed)

    async def start(self) -> None:
        self._heartbeat = time.monotonic()

    async def close(self) -> None:
        for rec in list(self.fills.records.values()):
            self.fills.cancel(rec.client_order_id)
        self.player.venues.pop(self.source, None)
        if not self.player.venues:
            self.player.close()

    def exhausted(self) -> bool:
        """The recording is over and every change was delivered: a run may stop."""
        return self.player.exhausted and self.player._peek() is None and not self._changed

    async def poll_books(self) -> Sequence[Book]:
        if self._generation == self.player.generation:  # first venue polled this cycle
            await self.player.advance()
        else:
            await self.player.settled()
        self._generation = self.player.generation
        return self._take_changed()

    async def _arrive(self) -> None:
        # Latency is replayed time only: no real wait, even when paced (``speed`` paces the
        # books between cycles), so orders are handled in the same order at any speed.
        delay = self.latency_ns + (self.rng.randint(0, self.jitter_ns) if self.jitter_ns else 0)
        self.player.advance_to(max(self.player.now_ns, self.player.cycle_ns + delay))


# --------------------------------------------------------------------------- shadow


class ShadowVenue(SimulatedVenue):
    """Live public market data of a real venue; orders filled locally. Built in place of
    the ``polymarket``/``kalshi`` connector when ``[pipeline] mode = "shadow"``: it holds no
    credentials and has no order path to the venue."""

    type: ClassVar[str] = "shadow"  # never built from a table: see ``for_connector``

    def __init__(self, id: str, venue_type: str, options: Any, *, base_dir: Path | None,
                 latency_ms: float | None = None, snapshot_s: float = 60.0,
                 poll_s: float = 0.5):
        super().__init__(id, venue_type)
        self.feed = Feed(id, venue_type, options, self._record, snapshot_s=snapshot_s,
                         poll_s=poll_s, base_dir=base_dir)
        if latency_ms is None:  # the venue table's ``latency_ms``, else the type's default
            latency_ms = getattr(options, "latency_ms", None)
        self.latency_s = order_latency_ms(venue_type, latency_ms) / 1000
        self.poll_wait_s = getattr(options, "poll_wait_ms", 100) / 1000
        self._event = asyncio.Event()

    @classmethod
    def for_connector(cls, id: str, venue_type: str, options: Any,
                      ctx: BuildContext) -> ShadowVenue:
        """What a connector's ``from_config`` returns in shadow mode (no secret resolved)."""
        return cls(id, venue_type, options, base_dir=ctx.base_dir)

    def _record(self, record: dict[str, Any]) -> None:
        self.apply(record)
        self._heartbeat = time.monotonic()
        self._event.set()

    async def start(self) -> None:
        await self.feed.start()
        self.feed.emit_markets()
        await self.feed.snapshot()
        self._changed = dict.fromkeys(self.decoder.books)
        self.feed.stream()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.feed.ready.wait(), self.feed.http.timeout_s * 2)

    async def close(self) -> None:
        for rec in list(self.fills.records.values()):
            self.fills.cancel(rec.client_order_id)
        await self.feed.close()

    async def poll_books(self) -> Sequence[Book]:
        if not self._changed and self.poll_wait_s > 0:
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), self.poll_wait_s)
        self._event.clear()
        return self._take_changed()

    async def _arrive(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
