"""What the HTTP venue connectors share: books fed by a websocket, per-order records,
pushed order updates, positions, the rate limiter and the embedded simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from pr3dict_core.components import AmbiguousOutcome, UnknownOrder, VenueError
from pr3dict_core.model import ZERO, Book, Market, OrderAck, Side

from .books import LocalBook
from .http import HttpClient, TokenBucket
from .orders import OrderRecord

log = logging.getLogger("pr3dict.venues")


class ConnectorBase:
    """State and plumbing; subclasses speak their venue's protocol."""

    type = ""
    WS_BACKOFF_BASE_S = 0.05  # the first reconnect after a long-lived connection
    WS_BACKOFF_CAP_S = 5.0
    WS_STABLE_S = 5.0  # a connection that lived this long resets the backoff

    def __init__(self, id: str, *, rest_url: str, ws_url: str, timeout_s: float,
                 rate_per_s: float, poll_wait_s: float, websocket: bool,
                 embedded_sim: Path | None = None):
        self.id = id
        self.rest_url = rest_url
        self.ws_url = ws_url
        self.timeout_s = timeout_s
        self.poll_wait_s = poll_wait_s
        self.use_websocket = websocket
        self.embedded_sim = embedded_sim
        self.sim: Any = None  # the embedded SimServer, when there is one
        self.http = HttpClient(rest_url, timeout_s=timeout_s, venue_id=id)
        self.limiter = TokenBucket(rate_per_s, burst=max(rate_per_s / 5, 1.0))
        self._markets: list[Market] = []
        self._by_instrument: dict[str, Market] = {}
        self.books: dict[str, LocalBook] = {}
        self._changed: set[str] = set()
        self._book_event = asyncio.Event()
        self.records: dict[str, OrderRecord] = {}  # client order id -> record
        self.by_venue_id: dict[str, OrderRecord] = {}
        self._subscribers: list[Callable[[OrderAck], None]] = []
        self._positions: dict[str, Decimal] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self.ws_connects = 0  # how many times the websockets (re)connected
        self.ws_reconnects: dict[str, int] = {}  # feed name -> reconnect attempts
        self._jitter = random.Random()
        self.failed_trades: list[str] = []
        self._last_seen: float | None = None  # monotonic time of the last venue message
        self.bad_messages = 0  # websocket messages that could not be handled (ignored)
        self._bad_logged_at: float | None = None

    def connection_stats(self) -> dict[str, Any]:
        """Websocket health for metrics: connects, and reconnects per feed."""
        return {"ws_connects": self.ws_connects, "ws_reconnects": dict(self.ws_reconnects)}

    def last_heartbeat(self) -> float | None:
        """When the venue was last heard from (a websocket message or a reply); the
        ``connectivity`` gate reads it."""
        return self._last_seen

    def heard(self) -> None:
        self._last_seen = time.monotonic()

    # ------------------------------------------------------------------ embedded simulator

    async def start_embedded_sim(self) -> None:
        if self.embedded_sim is None:
            return
        from pr3dict_sim import SimServer

        self.sim = SimServer.from_file(self.embedded_sim, port=0)
        await self.sim.start()
        self.point_at_sim(self.sim)

    def point_at_sim(self, sim: Any) -> None:
        raise NotImplementedError

    async def stop_embedded_sim(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None

    # ------------------------------------------------------------------ venue protocol

    def markets(self) -> Sequence[Market]:
        return self._markets

    def set_markets(self, markets: list[Market]) -> None:
        self._markets = markets
        self._by_instrument = {inst: m for m in markets for inst in (m.yes, m.no)}
        for m in markets:
            for inst in (m.yes, m.no):
                self.books.setdefault(inst, LocalBook(self.id, inst))

    def market_of(self, instrument: str) -> Market | None:
        return self._by_instrument.get(instrument)

    def book(self, instrument: str) -> Book | None:
        local = self.books.get(instrument)
        return local.book() if local is not None else None

    def mark_changed(self, instrument: str) -> None:
        self._changed.add(instrument)
        self._book_event.set()

    async def poll_books(self) -> Sequence[Book]:
        """Books that changed since the last call; waits up to ``poll_wait_ms`` for one."""
        if not self.use_websocket:
            await self.refresh_books()
        elif not self._changed and self.poll_wait_s > 0:
            self._book_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._book_event.wait(), self.poll_wait_s)
        changed, self._changed = self._changed, set()
        self._book_event.clear()
        return [self.books[i].book() for i in sorted(changed) if i in self.books]

    async def refresh_books(self) -> None:
        raise NotImplementedError

    def positions(self) -> Mapping[str, Decimal]:
        return {k: v for k, v in self._positions.items() if v}

    def subscribe_orders(self, callback: Callable[[OrderAck], None]) -> None:
        self._subscribers.append(callback)

    def emit(self, record: OrderRecord) -> None:
        ack = record.ack()
        for callback in self._subscribers:
            try:
                callback(ack)
            except Exception:  # a subscriber's bug must not stop the feed
                log.exception("venue %s: order subscriber failed", self.id)

    def add_position(self, instrument: str, side: Side, size: Decimal) -> None:
        sign = 1 if side is Side.BUY else -1
        self._positions[instrument] = self._positions.get(instrument, ZERO) + sign * size

    def observe(self, record: OrderRecord, **kwargs: Any) -> bool:
        """Fold a cumulative view into a record; positions follow new fills."""
        before = record.filled
        added = record.observe(**kwargs)
        if added:
            self.add_position(record.instrument, record.side, record.filled - before)
        return added

    def record(self, client_order_id: str) -> OrderRecord:
        rec = self.records.get(client_order_id)
        if rec is None:
            raise UnknownOrder(f"venue {self.id}: no order {client_order_id!r} was sent")
        return rec

    # ------------------------------------------------------------------ background tasks

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.id}:{name}")
        self._tasks.append(task)

    async def stop_tasks(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def reconnect_delay(self, failures: int) -> float:
        """Seconds before the next websocket connect after ``failures`` consecutive failed
        or short-lived connections: capped exponential backoff with jitter (half to all of
        it), so a venue that accepts and drops at once is not hammered by every client in
        step."""
        ceiling = min(self.WS_BACKOFF_CAP_S, self.WS_BACKOFF_BASE_S * 2 ** min(failures, 30))
        return ceiling * self._jitter.uniform(0.5, 1.0)  # timing, not money

    async def run_websocket(self, connect: Callable[[], Awaitable[aiohttp.ClientWebSocketResponse]],
                            on_open: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]],
                            on_message: Callable[[str], None], name: str,
                            ready: asyncio.Event | None = None) -> None:
        """Keep one websocket open: reconnect with backoff, resubscribe, resync on reconnect.

        Every reconnect waits ``reconnect_delay`` (the backoff grows while connections fail
        or last under ``WS_STABLE_S``), takes a token of the client-side rate limiter, is
        logged and counted in ``ws_reconnects[name]``; ``on_open`` then subscribes again,
        which brings a fresh snapshot.
        """
        failures = 0
        first = True
        while not self._closing:
            if not first:
                delay = self.reconnect_delay(failures)
                self.ws_reconnects[name] = self.ws_reconnects.get(name, 0) + 1
                log.warning("venue %s: %s websocket reconnect #%d in %.2f s (%d failed in a "
                            "row)", self.id, name, self.ws_reconnects[name], delay, failures)
                await asyncio.sleep(delay)
                await self.limiter.acquire()
            first = False
            try:
                ws = await connect()
            except (aiohttp.ClientError, OSError, TimeoutError, VenueError) as exc:
                log.warning("venue %s: %s websocket connect failed: %s", self.id, name, exc)
                failures += 1
                continue
            self.ws_connects += 1
            opened = time.monotonic()
            try:
                await on_open(ws)
                if ready is not None:
                    ready.set()
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        self._last_seen = time.monotonic()
                        if msg.data == "PONG":
                            continue
                        try:
                            on_message(msg.data)
                        except Exception as exc:
                            self._bad_message(name, msg.data, exc)
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                      aiohttp.WSMsgType.CLOSE):
                        break
            except (aiohttp.ClientError, OSError, VenueError, AmbiguousOutcome) as exc:
                log.warning("venue %s: %s websocket failed: %s", self.id, name, exc)
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
            failures = 0 if time.monotonic() - opened >= self.WS_STABLE_S else failures + 1

    # A venue (or a hostile peer) can send garbage at line rate: one line per interval.
    BAD_MESSAGE_LOG_INTERVAL_S = 10.0

    def _bad_message(self, name: str, data: str, exc: Exception) -> None:
        """Count an unusable websocket message; log one line now and then, never a traceback
        (that is at DEBUG level, for whoever debugs the connector)."""
        self.bad_messages += 1
        log.debug("venue %s: bad %s message %.200s", self.id, name, data, exc_info=True)
        now = time.monotonic()
        if self._bad_logged_at is not None and \
                now - self._bad_logged_at < self.BAD_MESSAGE_LOG_INTERVAL_S:
            return
        self._bad_logged_at = now
        log.warning("venue %s: ignored a bad %s message (%s: %s); %d so far: %.120r", self.id,
                    name, type(exc).__name__, str(exc)[:200], self.bad_messages, data)

    async def ping_loop(self, get_ws: Callable[[], Any], every_s: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            ws = get_ws()
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.send_str("PING")


def now_ms() -> str:
    return str(time.time_ns() // 1_000_000)
