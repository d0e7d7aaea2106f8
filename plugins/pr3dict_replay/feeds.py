"""Live public market data of one venue as records (``docs/recording.md``).

Polymarket's ``/markets``, ``/books`` and market websocket are public, and so are Kalshi's
``/markets`` and order books. Kalshi's websocket (snapshots and deltas) needs a signed
handshake: a feed given ``kalshi_key`` (``pr3dict record`` only) uses it, otherwise it polls
the REST order books. Every record carries its receive time in ns; reconnects, sequence gaps
and failed polls are marked with ``gap`` records. Used by ``pr3dict record`` (records go to a
file) and by shadow runs (records go to a ``Decoder``; no key, ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from pr3dict_core.components import VenueError
from pr3dict_kalshi import marketdata as kmd
from pr3dict_kalshi import protocol as kp
from pr3dict_polymarket import marketdata as pmd
from pr3dict_venuekit.http import HttpClient

from .decode import markets_record

log = logging.getLogger("pr3dict.replay")

Emit = Callable[[dict[str, Any]], None]


class Feed:
    """One venue's public market data: markets, periodic snapshots, the book stream."""

    def __init__(self, venue_id: str, venue_type: str, options: Any, emit: Emit, *,
                 snapshot_s: float = 60.0, poll_s: float = 0.5, base_dir: Path | None = None,
                 clock: Callable[[], int] = time.time_ns,
                 kalshi_key: tuple[str, Any] | None = None):
        self.venue_id = venue_id
        self.venue_type = venue_type
        self.options = options
        self.emit = emit
        self.snapshot_s = snapshot_s
        self.poll_s = poll_s
        self.clock = clock
        self.kalshi_key = kalshi_key  # (key id, RSA private key): sign the websocket handshake
        self.rest_url = options.rest_url
        self.ws_url = options.ws_url
        self.sim: Any = None
        embedded = getattr(options, "embedded_sim", None)
        self._embedded = None if embedded is None else (
            Path(embedded) if Path(embedded).is_absolute() else (base_dir or Path.cwd()) / embedded)
        self.http = HttpClient(self.rest_url, timeout_s=options.request_timeout_ms / 1000,
                               venue_id=venue_id)
        self.markets_rec: dict[str, Any] = {}
        self._tokens: list[str] = []
        self._tickers: list[str] = []
        self._last_raw: dict[str, str] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.connects = 0
        self.gaps = 0
        self.messages = 0
        self.ready = asyncio.Event()  # the stream is subscribed

    async def _get_json(self, path: str, params: Any = None) -> Any:
        reply = await self.http.request("GET", path, params=params)
        if reply.status != 200:
            raise VenueError(f"venue {self.venue_id}: GET {path}: HTTP {reply.status}")
        return reply.json()

    async def start(self) -> None:
        if self._embedded is not None:
            from pr3dict_sim import SimServer

            self.sim = SimServer.from_file(self._embedded, port=0)
            await self.sim.start()
            if self.venue_type == "polymarket":
                self.rest_url, self.ws_url = self.sim.polymarket_url, self.sim.polymarket_ws
            else:
                self.rest_url, self.ws_url = self.sim.kalshi_url, self.sim.kalshi_ws
            self.http.base_url = self.rest_url
        await self.http.start()
        o = self.options
        if self.venue_type == "polymarket":
            infos = await pmd.load_markets(self._get_json, self.venue_id, o.markets,
                                           o.max_markets)
            markets = [i.market for i in infos]
            fees = {t: i.fee_rate for i in infos for t in (i.market.yes, i.market.no)}
            neg = {i.market.market_id: i.neg_risk for i in infos}
            self._tokens = [t for m in markets for t in (m.yes, m.no)]
            self.markets_rec = markets_record(self.venue_id, "polymarket", 0, markets, fees,
                                              Decimal(1), neg)
        else:
            markets = await kmd.load_markets(self._get_json, self.venue_id, o.markets,
                                             o.max_markets)
            self._tickers = [m.market_id for m in markets]
            self.markets_rec = markets_record(self.venue_id, "kalshi", 0, markets, {},
                                              Decimal(o.fee_multiplier), {})

    def emit_markets(self) -> None:
        self.emit(dict(self.markets_rec, t=self.clock()))

    def stream(self) -> None:
        """Start the snapshot loop and the book stream (after ``emit_markets``)."""
        self._spawn(self._snapshot_loop())
        if self.venue_type == "polymarket":
            self._spawn(self._websocket())
        elif self.kalshi_key is not None:
            self._spawn(self._kalshi_websocket())
        else:
            self._spawn(self._poll_loop())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.http.close()
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    def gap(self, reason: str) -> None:
        self.gaps += 1
        self.emit({"k": "gap", "t": self.clock(), "v": self.venue_id, "reason": reason})

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self, force: bool = True) -> None:
        """Full books over REST, one record per reply."""
        if self.venue_type == "polymarket":
            for start in range(0, len(self._tokens), 500):
                body = json.dumps([{"token_id": t} for t in self._tokens[start:start + 500]])
                sent = self.clock()
                reply = await self.http.request("POST", "/books", body=body)
                if reply.status != 200:
                    raise VenueError(f"venue {self.venue_id}: POST /books: HTTP {reply.status}")
                self.emit({"k": "rest", "t": self.clock(), "v": self.venue_id,
                           "sent": sent, "path": "/books", "raw": reply.text})
            return
        sent = self.clock()
        replies = await asyncio.gather(*(self.http.request("GET", f"/markets/{t}/orderbook")
                                         for t in self._tickers))
        t = self.clock()
        for ticker, reply in zip(self._tickers, replies, strict=True):
            if reply.status != 200:
                raise VenueError(f"venue {self.venue_id}: order book {ticker}: "
                                 f"HTTP {reply.status}")
            if force or self._last_raw.get(ticker) != reply.text:
                self._last_raw[ticker] = reply.text
                self.emit({"k": "rest", "t": t, "v": self.venue_id, "sent": sent,
                           "path": f"/markets/{ticker}/orderbook", "ticker": ticker,
                           "raw": reply.text})

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot_s)
            try:
                await self.snapshot()
            except (VenueError, aiohttp.ClientError, OSError) as exc:
                log.warning("venue %s: snapshot failed: %s", self.venue_id, exc)
                self.gap(f"snapshot failed: {exc}")

    async def _poll_loop(self) -> None:
        """Kalshi without a websocket: order books polled; a record when one changed."""
        first = True
        while True:
            try:
                await self.snapshot(force=first)
                if first:
                    self.connects += 1
                    self.emit({"k": "connect", "t": self.clock(), "v": self.venue_id,
                               "n": self.connects, "channel": "rest-poll"})
                    self.ready.set()
                first = False
            except (VenueError, aiohttp.ClientError, OSError) as exc:
                self.gap(f"poll failed: {exc}")
                first = True  # the next good poll is a full snapshot again
            await asyncio.sleep(self.poll_s)

    # ------------------------------------------------------------------ polymarket websocket

    async def _connect(self, connect: Callable[[], Awaitable[aiohttp.ClientWebSocketResponse]],
                       channel: str) -> aiohttp.ClientWebSocketResponse:
        """Connect, with capped exponential backoff; each failure is marked as a gap, each
        connection as a ``connect`` record."""
        backoff = 0.05
        while True:
            try:
                ws = await connect()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.gap(f"connect failed: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.connects += 1
            self.emit({"k": "connect", "t": self.clock(), "v": self.venue_id,
                       "n": self.connects, "channel": channel})
            return ws

    async def _websocket(self) -> None:
        assert self.http.session is not None
        session = self.http.session
        while True:
            ws = await self._connect(lambda: session.ws_connect(
                self.ws_url + "/market", heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0)), "market")
            pinger = asyncio.ensure_future(self._ping(ws))
            try:
                await ws.send_str(json.dumps({"assets_ids": self._tokens, "type": "market",
                                              "custom_feature_enabled": False}))
                self.ready.set()
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        if msg.data != "PONG":
                            self.messages += 1
                            self.emit({"k": "ws", "t": self.clock(), "v": self.venue_id,
                                       "raw": msg.data})
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                      aiohttp.WSMsgType.CLOSE):
                        break
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("venue %s: market websocket failed: %s", self.venue_id, exc)
            finally:
                pinger.cancel()
                with contextlib.suppress(Exception):
                    await ws.close()
            self.gap("websocket closed")  # a resubscription sends fresh book snapshots
            await asyncio.sleep(0.02)

    @staticmethod
    async def _ping(ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await asyncio.sleep(10)
            with contextlib.suppress(Exception):
                await ws.send_str("PING")

    # ------------------------------------------------------------------ kalshi websocket

    async def _kalshi_websocket(self) -> None:
        """Order book snapshots and deltas, and public trades (resting orders of a replay
        queue on them); a sequence gap in a subscription reconnects (fresh snapshots)."""
        assert self.kalshi_key is not None and self.http.session is not None
        key_id, key = self.kalshi_key
        path = urlsplit(self.ws_url).path
        session = self.http.session
        while True:
            ws = await self._connect(lambda: session.ws_connect(
                self.ws_url, heartbeat=10.0, timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                # signed anew for every attempt: the timestamp is part of the signature
                headers=kp.headers(key_id, key, str(time.time_ns() // 1_000_000), "GET",
                                   path)), "orderbook_delta")
            reason = "websocket closed"
            try:
                await ws.send_str(json.dumps({"id": 1, "cmd": "subscribe", "params": {
                    "channels": ["orderbook_delta", "trade"], "market_tickers": self._tickers}}))
                self.ready.set()
                seqs: dict[Any, int] = {}  # sid -> last seq: each subscription counts its own
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                        aiohttp.WSMsgType.CLOSE):
                            break
                        continue
                    self.messages += 1
                    self.emit({"k": "ws", "t": self.clock(), "v": self.venue_id,
                               "raw": msg.data})
                    data = orjson.loads(msg.data)
                    n, sid = data.get("seq"), data.get("sid")
                    if n is not None:
                        seq = seqs.get(sid, 0)
                        if seq and n != seq + 1:
                            reason = f"sequence gap ({n} after {seq})"
                            break
                        seqs[sid] = n
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("venue %s: websocket failed: %s", self.venue_id, exc)
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
            self.gap(reason)  # the resubscription sends fresh snapshots
            await asyncio.sleep(0.02)
