"""The ``kalshi`` venue: Kalshi's Trade API v2 over aiohttp.

- Auth: every request is signed with RSA-PSS (``KALSHI-ACCESS-*`` headers), the websocket
  handshake too.
- Instruments: ``<ticker>:yes`` and ``<ticker>:no``. Kalshi has one YES book per market:
  the YES book's asks are 1 - NO bids and the NO book's asks 1 - YES bids. Buying NO at q is
  an ``ask`` at 1 - q on the V2 endpoint (legacy: side no, action buy, no_price q).
- Orders: V2 ``/portfolio/events/orders`` by default (``api = "legacy"`` uses
  ``/portfolio/orders``); ``client_order_id`` makes a resend idempotent (409 -> the original
  order is looked up). Whole contracts only; tick and price range checked before sending.
- Units: fixed-point dollar strings and counts on the wire, ``Decimal`` USDC per share here.
- Fees: ``ceil_to_cent(0.07 x C x P x (1 - P))`` for takers (the venue's reported fees are
  used for fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
import attrs
from attrs import frozen

from pr3dict_core.components import (
    AmbiguousOutcome,
    AuthenticationFailed,
    BuildContext,
    InsufficientBalance,
    MalformedReply,
    OrderRejected,
    RateLimited,
    UnknownOrder,
    VenueError,
)
from pr3dict_core.config import OptionError, SecretRef
from pr3dict_core.model import (
    ONE,
    Fill,
    Market,
    OrderAck,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
)
from pr3dict_venuekit.base import ConnectorBase, now_ms
from pr3dict_venuekit.http import (
    Reply,
    TokenBucket,
    check_mode,
    embedded_scenario,
    endpoint_problems,
    secret,
)
from pr3dict_venuekit.orders import OrderRecord, amount

from . import marketdata as md
from . import protocol as kp

log = logging.getLogger("pr3dict.venues.kalshi")

_gt0 = attrs.validators.gt(0)
_ge0 = attrs.validators.ge(0)
_TIF = {TimeInForce.GTC: "good_till_canceled", TimeInForce.FAK: "immediate_or_cancel",
        TimeInForce.FOK: "fill_or_kill"}


def error_of(reply: Reply) -> tuple[str, str]:
    """(code, message) of a Kalshi error body, nested or flat."""
    try:
        body = reply.json()
    except AmbiguousOutcome:
        return "", reply.text[:200]
    err = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        return "", str(err)
    return str(err.get("code", "")), str(err.get("message", "") or err.get("details", ""))


def map_error(reply: Reply, what: str) -> VenueError:
    code, message = error_of(reply)
    text = f"{what}: HTTP {reply.status}: {code}: {message}"
    if reply.status in (401, 403):
        return AuthenticationFailed(text)
    if reply.status == 429:
        return RateLimited(text)
    if reply.status >= 500 or reply.status < 400:
        return AmbiguousOutcome(text)
    if code in ("insufficient_balance", "insufficient_funds"):
        return InsufficientBalance(text)
    return OrderRejected(text)


class KalshiVenue(ConnectorBase):
    """See the module docstring and ``docs/venues.md``."""

    type: ClassVar[str] = "kalshi"

    @frozen(kw_only=True)
    class Config:
        rest_url: str = "https://api.elections.kalshi.com/trade-api/v2"
        ws_url: str = "wss://api.elections.kalshi.com/trade-api/ws/v2"
        embedded_sim: str | None = None  # scenario file: start an in-process `pr3dict sim`
        key_id: str  # the API key id (KALSHI-ACCESS-KEY); an identifier, not a secret
        private_key: SecretRef  # PEM RSA private key
        api: Literal["v2", "legacy"] = "v2"
        markets: tuple[str, ...] = ()  # tickers; empty: every open market listed
        max_markets: int = attrs.field(default=50, validator=attrs.validators.ge(1))
        request_timeout_ms: int = attrs.field(default=2000, validator=_gt0)
        read_per_s: float = attrs.field(default=18.0, validator=_gt0)  # Basic: 20 reads/s
        write_per_s: float = attrs.field(default=9.0, validator=_gt0)  # Basic: 10 writes/s
        fee_multiplier: Decimal = attrs.field(default=Decimal(1), validator=_ge0)
        poll_wait_ms: int = attrs.field(default=100, validator=_ge0)
        websocket: bool = True
        # Shadow mode only: simulated order latency, ms (default: docs/replay.md#latency).
        latency_ms: float | None = attrs.field(
            default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))

        @property
        def simulated(self) -> bool:
            """With ``embedded_sim`` it never reaches the real venue: refused in live mode."""
            return self.embedded_sim is not None

        def check_mode(self, mode: str) -> list[tuple[str, str]]:
            return endpoint_problems(self, mode)

    def __init__(self, id: str, config: Config, *, key_id: str, private_key: str,
                 mode: str = "paper", base_dir: Path | None = None):
        embedded = None
        if config.embedded_sim is not None:
            path = Path(config.embedded_sim)
            embedded = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        super().__init__(id, rest_url=config.rest_url, ws_url=config.ws_url,
                         timeout_s=config.request_timeout_ms / 1000,
                         rate_per_s=config.read_per_s, poll_wait_s=config.poll_wait_ms / 1000,
                         websocket=config.websocket, embedded_sim=embedded)
        self.config = config
        self.mode = mode
        self.key_id = key_id.strip()
        self._key = kp.load_private_key(private_key)
        self.write_limiter = TokenBucket(config.write_per_s,
                                         burst=max(config.write_per_s / 5, 1.0))
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._book_sid = 0
        self._book_seq = 0
        self._tickers: dict[str, Market] = {}

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> KalshiVenue:
        if ctx.mode == "shadow":  # public market data only; orders filled locally
            from pr3dict_replay.venue import ShadowVenue  # no secret is read below

            return ShadowVenue.for_connector(id, cls.type, config, ctx)  # type: ignore[return-value]
        embedded_scenario(ctx, config)
        key = secret(ctx, config.private_key)
        assert key is not None
        try:
            kp.load_private_key(key)
        except Exception:  # never echo the key, nor an error that may quote it
            raise OptionError("private_key", "not a valid PEM RSA private key in "
                              f"{config.private_key!r}") from None
        return cls(id, config, key_id=config.key_id, private_key=key, mode=ctx.mode,
                   base_dir=ctx.base_dir)

    def __repr__(self) -> str:
        return f"KalshiVenue({self.id!r}, {self.rest_url})"

    def point_at_sim(self, sim: Any) -> None:
        self.rest_url, self.ws_url = sim.kalshi_url, sim.kalshi_ws
        self.http.base_url = self.rest_url

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.start_embedded_sim()
        check_mode(self.id, self.mode, self.rest_url, self.ws_url)
        await self.http.start()
        await self.load_markets()
        await self.refresh_books()
        self._changed = set(self.books)
        await self._load_positions()
        if self.use_websocket:
            ready = asyncio.Event()
            self.spawn(self.run_websocket(self._connect, self._open, self._on_message, "feed",
                                          ready), "ws")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), self.timeout_s * 2)

    async def close(self) -> None:
        await self.stop_tasks()
        await self.http.close()
        await self.stop_embedded_sim()

    # ------------------------------------------------------------------ requests

    def _path(self, path: str) -> str:
        return urlsplit(self.rest_url).path.rstrip("/") + path

    async def _call(self, method: str, path: str, *, body: Any = None,
                    params: Any = None, write: bool = False) -> Reply:
        text = None if body is None else json.dumps(body, separators=(",", ":"))
        # Signed once the rate limiter lets it go: a request queued at start (hundreds of
        # them) must not carry a timestamp from before its wait.
        await (self.write_limiter if write else self.limiter).acquire()
        headers = kp.headers(self.key_id, self._key, now_ms(), method, self._path(path))
        reply = await self.http.request(method, path, params=params, body=text,
                                        headers=headers)
        self.heard()
        return reply

    async def _get(self, path: str, params: Any = None) -> Any:
        reply = await self._call("GET", path, params=params)
        if reply.status != 200:
            if reply.status == 404:
                raise UnknownOrder(f"venue {self.id}: GET {path}: not found")
            raise map_error(reply, f"venue {self.id}: GET {path}")
        return reply.json()

    async def load_markets(self) -> None:
        markets = await md.load_markets(self._get, self.id, self.config.markets,
                                        self.config.max_markets)
        self._tickers.update((m.market_id, m) for m in markets)
        self.set_markets(markets)

    async def refresh_books(self) -> None:
        """Every market's book, ``kp.ORDERBOOKS_PER_REQUEST`` tickers a request
        (``GET /markets/orderbooks``): 100 requests for 10,000 markets, not 10,000."""
        tickers = list(self._tickers)
        step = kp.ORDERBOOKS_PER_REQUEST
        replies = await asyncio.gather(*(
            self._get("/markets/orderbooks", [("tickers", t) for t in tickers[i:i + step]])
            for i in range(0, len(tickers), step)))
        for reply in replies:
            entries = reply.get("orderbooks") if isinstance(reply, dict) else None
            if not isinstance(entries, list):
                raise MalformedReply(f"venue {self.id}: GET /markets/orderbooks: no orderbooks")
            for entry in entries:
                if isinstance(entry, dict) and entry.get("ticker") in self._tickers:
                    yes, no = md.rest_orderbook(entry)
                    self._snapshot(entry["ticker"], yes, no)

    def _snapshot(self, ticker: str, yes: md.Levels, no: md.Levels) -> None:
        md.apply_snapshot(self.books, self._tickers.get(ticker), yes, no, self.mark_changed)

    async def _load_positions(self) -> None:
        cursor = ""
        while True:
            body = await self._get("/portfolio/positions", {"limit": "100",
                                                            **({"cursor": cursor} if cursor
                                                               else {})})
            for p in body.get("market_positions", []):
                m = self._tickers.get(p.get("ticker", ""))
                if m is None:
                    continue
                q = Decimal(p.get("position_fp") or p.get("position") or 0)
                if q > 0:
                    self._positions[m.yes] = q
                elif q < 0:
                    self._positions[m.no] = -q
            cursor = body.get("cursor") or ""
            if not cursor:
                break

    # ------------------------------------------------------------------ websocket

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        assert self.http.session is not None
        path = urlsplit(self.ws_url).path
        headers = kp.headers(self.key_id, self._key, now_ms(), "GET", path)
        ws = await self.http.session.ws_connect(self.ws_url, headers=headers, heartbeat=10.0,
                                                timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
        self._ws = ws
        return ws

    async def _open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._book_sid, self._book_seq = 0, 0
        await ws.send_str(json.dumps({"id": 1, "cmd": "subscribe", "params": {
            "channels": ["orderbook_delta"], "market_tickers": list(self._tickers)}}))
        await ws.send_str(json.dumps({"id": 2, "cmd": "subscribe", "params": {
            "channels": ["fill", "user_orders"]}}))
        if self.ws_connects > 1:  # a reconnect: order updates may have been missed
            self.spawn(self._resync(), "resync")

    async def _resync(self) -> None:
        for rec in list(self.records.values()):
            if rec.status is OrderStatus.OPEN and rec.venue_order_id:
                with contextlib.suppress(VenueError):
                    await self.get_order(rec.client_order_id)

    def _on_message(self, text: str) -> None:
        msg = json.loads(text)
        kind = msg.get("type")
        body = msg.get("msg") or {}
        if kind == "subscribed" and body.get("channel") == "orderbook_delta":
            self._book_sid = body.get("sid", 0)
        elif kind in ("orderbook_snapshot", "orderbook_delta"):
            seq = msg.get("seq")
            if seq is not None and self._book_seq and seq != self._book_seq + 1:
                log.warning("venue %s: book sequence gap (%s after %s): resyncing", self.id,
                            seq, self._book_seq)
                self._book_seq = 0
                if self._ws is not None:
                    self.spawn(self._ws.close(), "resubscribe")
                return
            self._book_seq = seq or self._book_seq
            md.apply_book_message(self.books, self._tickers, kind, body, self.mark_changed)
        elif kind == "user_order":
            rec = self.by_venue_id.get(str(body.get("order_id")))
            if rec is None and body.get("client_order_id"):
                rec = self.records.get(str(body["client_order_id"]))
                if rec is not None and not rec.venue_order_id:
                    self._bind(rec, str(body["order_id"]))
            if rec is not None and self._apply_order(rec, body):
                self.emit(rec)
        elif kind == "error":
            log.warning("venue %s: websocket error %s", self.id, body)

    # ------------------------------------------------------------------ rules and fees

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return kp.fee(size, price, self.config.fee_multiplier)

    def check(self, request: OrderRequest) -> Market:
        market = self.market_of(request.instrument)
        if market is None:
            raise OrderRejected(f"venue {self.id}: unknown instrument {request.instrument!r}")
        tick, price, size = market.tick_size, request.price, request.size
        if price % tick or not tick <= price <= ONE - tick:
            raise OrderRejected(f"venue {self.id}: price {price} breaks the tick size {tick}")
        if size % market.size_step or size < market.min_size:
            raise OrderRejected(f"venue {self.id}: size {size} is not a whole number of "
                                f"contracts >= {market.min_size}")
        return market

    def _wire(self, request: OrderRequest, market: Market) -> dict[str, Any]:
        """The request body: (YES-book side, YES price) for V2, or the legacy shape."""
        is_yes = request.instrument == market.yes
        buy = request.side is Side.BUY
        ticker = market.market_id
        if self.config.api == "v2":
            bid = is_yes == buy
            yes_price = request.price if is_yes else ONE - request.price
            return {"ticker": ticker, "side": "bid" if bid else "ask",
                    "count": kp.count_fp(request.size), "price": kp.dollars(yes_price),
                    "time_in_force": _TIF[request.time_in_force],
                    "self_trade_prevention_type": "taker_at_cross",
                    "client_order_id": request.client_order_id, "post_only": False}
        body: dict[str, Any] = {"ticker": ticker, "client_order_id": request.client_order_id,
                                "side": "yes" if is_yes else "no",
                                "action": "buy" if buy else "sell",
                                "count": int(request.size), "type": "limit",
                                "time_in_force": _TIF[request.time_in_force]}
        body["yes_price" if is_yes else "no_price"] = int(request.price * 100)
        return body

    # ------------------------------------------------------------------ orders

    def _bind(self, rec: OrderRecord, order_id: str) -> None:
        rec.venue_order_id = order_id
        self.by_venue_id[order_id] = rec

    def _new_record(self, request: OrderRequest, market: Market) -> OrderRecord:
        rec = self.records.get(request.client_order_id)
        if rec is None:
            rec = OrderRecord(request.client_order_id, "", request.instrument, request.side,
                              request.price, request.size, market.market_id)
            self.records[request.client_order_id] = rec
        return rec

    def adopt_order(self, request: OrderRequest, venue_order_id: str) -> None:
        """Know an order the journal holds (an earlier process's, or a lost reply's):
        found at the venue by its venue id, or by client_order_id when that is unknown."""
        if request.client_order_id in self.records:
            return
        market = self.market_of(request.instrument)
        rec = OrderRecord(request.client_order_id, "", request.instrument, request.side,
                          request.price, request.size, market.market_id if market else "")
        self.records[request.client_order_id] = rec
        if venue_order_id:
            self._bind(rec, venue_order_id)

    @property
    def _orders_path(self) -> str:
        return "/portfolio/events/orders" if self.config.api == "v2" else "/portfolio/orders"

    async def place_order(self, request: OrderRequest) -> OrderAck:
        market = self.check(request)
        rec = self._new_record(request, market)
        reply = await self._call("POST", self._orders_path, body=self._wire(request, market),
                                 write=True)
        if reply.status not in (200, 201):
            error = map_error(reply, f"venue {self.id}: place {request.client_order_id}")
            if reply.status == 409:  # this client order id exists: a resend
                return await self.get_order(request.client_order_id)
            if isinstance(error, OrderRejected):
                rec.finish(OrderStatus.REJECTED, str(error))
            raise error
        return self._placed(rec, request.time_in_force, reply.json())

    def _placed(self, rec: OrderRecord, tif: TimeInForce, body: Any) -> OrderAck:
        if not isinstance(body, dict):
            raise AmbiguousOutcome(f"venue {self.id}: malformed order reply {body!r:.120}")
        try:
            if "order" in body:  # legacy: a full Order object
                order = body["order"]
                self._bind(rec, str(order["order_id"]))
                self._apply_order(rec, order)
            else:
                if body.get("client_order_id") not in (None, rec.client_order_id):
                    raise AmbiguousOutcome(f"venue {self.id}: reply is about order "
                                           f"{body.get('client_order_id')!r}")
                self._bind(rec, str(body["order_id"]))
                filled = amount(body.get("fill_count") or "0", "fill_count", rec.size)
                remaining = amount(body.get("remaining_count") or "0", "remaining_count",
                                   rec.size)
                if filled:
                    avg = amount(body.get("average_fill_price") or "0", "average_fill_price",
                                 ONE)
                    fee = amount(body.get("average_fee_paid") or "0", "average_fee_paid",
                                 ONE) * filled
                    yes_notional = filled * avg
                    notional = yes_notional if rec.instrument.endswith(":yes") \
                        else filled - yes_notional
                    self.observe(rec, filled=filled, notional=notional, fees=fee)
                if remaining == 0:
                    rec.finish(OrderStatus.CANCELLED, "remainder cancelled")
        except (KeyError, TypeError, ArithmeticError, VenueError) as exc:
            raise AmbiguousOutcome(f"venue {self.id}: malformed order reply {body!r:.120}: "
                                   f"{exc}") from None
        return rec.ack()

    def _apply_order(self, rec: OrderRecord, order: Mapping[str, Any]) -> bool:
        """Fold a full Order object (REST or websocket) into a record."""
        before = (rec.status, rec.filled)
        if (rec.venue_order_id and str(order.get("order_id")) != rec.venue_order_id) or \
                order.get("client_order_id") not in (None, "", rec.client_order_id):
            raise AmbiguousOutcome(f"venue {self.id}: the venue answered about order "
                                   f"{order.get('order_id')!r}, not {rec.venue_order_id!r}")
        filled = amount(order.get("fill_count_fp") or order.get("fill_count") or "0",
                        "fill_count", rec.size)
        side = order.get("side") or order.get("outcome_side") or "yes"
        cost = amount(order.get("taker_fill_cost_dollars") or "0", "fill_cost") + amount(
            order.get("maker_fill_cost_dollars") or "0", "fill_cost")
        fees = amount(order.get("taker_fees_dollars") or "0", "fees") + amount(
            order.get("maker_fees_dollars") or "0", "fees")
        mine_yes = rec.instrument.endswith(":yes")
        if (side == "yes") != mine_yes:  # the venue priced it in the other outcome
            cost = filled - cost
        if filled > rec.filled:
            self.observe(rec, filled=filled, notional=cost, fees=fees)
        status = order.get("status")
        if status == "canceled":
            rec.finish(OrderStatus.CANCELLED, "cancelled")
        elif status == "executed":
            rec.finish(OrderStatus.CANCELLED if rec.filled < rec.size else OrderStatus.FILLED)
        return (rec.status, rec.filled) != before

    async def place_orders(self, requests: Sequence[OrderRequest]
                           ) -> list[OrderAck | VenueError]:
        """Batch create (20 a request, the requests sent at once), per-order results in
        order."""
        chunks = [requests[i:i + 20] for i in range(0, len(requests), 20)]
        parts = await asyncio.gather(*(self._place_chunk(chunk) for chunk in chunks))
        return [result for part in parts for result in part]

    async def _place_chunk(self, chunk: Sequence[OrderRequest]) -> list[OrderAck | VenueError]:
        results: list[OrderAck | VenueError | None] = []
        wires, recs = [], []
        for request in chunk:
            try:
                market = self.check(request)
            except VenueError as exc:
                results.append(exc)
                continue
            results.append(None)
            wires.append(self._wire(request, market))
            recs.append((self._new_record(request, market), request.time_in_force))
        if wires:
            reply = await self._call("POST", self._orders_path + "/batched",
                                     body={"orders": wires}, write=True)
            if reply.status not in (200, 201):
                items: list[Any] = [map_error(reply, f"venue {self.id}: batch")] * len(wires)
            else:
                items = (reply.json() or {}).get("orders")
                if not isinstance(items, list) or len(items) != len(wires):
                    raise AmbiguousOutcome(f"venue {self.id}: malformed batch reply")
            it = iter(zip(recs, items, strict=False))
            for i, slot in enumerate(results):
                if slot is not None:
                    continue
                (rec, tif), item = next(it)
                if isinstance(item, VenueError):
                    results[i] = item
                elif item.get("error"):
                    err = item["error"]
                    code = err.get("code", "") if isinstance(err, dict) else ""
                    message = f"venue {self.id}: {code}: {err}"
                    rec.finish(OrderStatus.REJECTED, message)
                    results[i] = InsufficientBalance(message) \
                        if code == kp.INSUFFICIENT_BALANCE else OrderRejected(message)
                else:
                    try:
                        results[i] = self._placed(rec, tif, item)
                    except VenueError as exc:
                        results[i] = exc
        return [r for r in results if r is not None]

    async def cancel_order(self, client_order_id: str) -> OrderAck:
        rec = self.record(client_order_id)
        if rec.status is not OrderStatus.OPEN:
            return rec.ack()
        if not rec.venue_order_id:
            await self.get_order(client_order_id)
            if rec.status is not OrderStatus.OPEN:
                return rec.ack()
        params = {"market_ticker": rec.market} if self.config.api == "v2" else None
        reply = await self._call("DELETE", f"{self._orders_path}/{rec.venue_order_id}",
                                 params=params, write=True)
        if reply.status == 404:  # not resting any more: its final state
            return await self.get_order(client_order_id)
        if reply.status != 200:
            raise map_error(reply, f"venue {self.id}: cancel {client_order_id}")
        body = reply.json()
        if isinstance(body, dict) and isinstance(body.get("order"), dict):
            self._apply_order(rec, body["order"])
        elif not self.use_websocket:
            await self.get_order(client_order_id)
        rec.finish(OrderStatus.CANCELLED, "cancelled")
        return rec.ack()

    async def cancel_orders(self, client_order_ids: Sequence[str]) -> list[OrderAck]:
        """Batch cancel (V2 ``DELETE /portfolio/events/orders/batched``)."""
        recs = [self.record(c) for c in client_order_ids]
        live = [r for r in recs if r.status is OrderStatus.OPEN and r.venue_order_id]
        if live:
            if self.config.api == "v2":
                body: Any = {"orders": [{"order_id": r.venue_order_id} for r in live]}
            else:
                body = {"ids": [r.venue_order_id for r in live]}
            reply = await self._call("DELETE", self._orders_path + "/batched", body=body,
                                     write=True)
            if reply.status != 200:
                raise map_error(reply, f"venue {self.id}: batch cancel")
            for item in (reply.json() or {}).get("orders", []):
                rec = self.by_venue_id.get(str(item.get("order_id")))
                if rec is None:
                    continue
                if isinstance(item.get("order"), dict):
                    self._apply_order(rec, item["order"])
                if not item.get("error"):
                    rec.finish(OrderStatus.CANCELLED, "cancelled")
        return [r.ack() for r in recs]

    async def get_order(self, client_order_id: str) -> OrderAck:
        rec = self.record(client_order_id)
        if not rec.venue_order_id:
            order = await self._find(rec)
            if order is None:
                raise UnknownOrder(f"venue {self.id}: the venue has no order "
                                   f"{client_order_id!r}")
            self._bind(rec, str(order["order_id"]))
        else:
            try:
                order = (await self._get(f"/portfolio/orders/{rec.venue_order_id}"))["order"]
            except (KeyError, TypeError):
                raise AmbiguousOutcome(f"venue {self.id}: malformed order reply") from None
        self._apply_order(rec, order)
        return rec.ack()

    async def _find(self, rec: OrderRecord) -> dict[str, Any] | None:
        """An order by client order id: scan this market's orders (newest first)."""
        cursor = ""
        while True:
            params = {"ticker": rec.market, "limit": "200"}
            if cursor:
                params["cursor"] = cursor
            body = await self._get("/portfolio/orders", params)
            for order in body.get("orders", []):
                if order.get("client_order_id") == rec.client_order_id:
                    return order
            cursor = body.get("cursor") or ""
            if not cursor:
                return None

    # ------------------------------------------------------------------ account

    async def balance(self) -> Decimal:
        body = await self._get("/portfolio/balance")
        if "balance_dollars" in body:
            return Decimal(body["balance_dollars"])
        return Decimal(body["balance"]) / 100

    async def fills(self, ticker: str | None = None) -> list[Fill]:
        """Every fill of ours (cursor-paginated), priced in the instrument's own terms."""
        out: list[Fill] = []
        cursor = ""
        while True:
            params = {"limit": "200", **({"ticker": ticker} if ticker else {}),
                      **({"cursor": cursor} if cursor else {})}
            body = await self._get("/portfolio/fills", params)
            for f in body.get("fills", []):
                rec = self.records.get(str(f.get("client_order_id", "")))
                yes = Decimal(f.get("yes_price_dollars") or f.get("yes_price_fixed") or 0)
                price = yes if rec is None or rec.instrument.endswith(":yes") else ONE - yes
                out.append(Fill(str(f["fill_id"]), str(f.get("client_order_id", "")), price,
                                Decimal(f.get("count_fp") or f.get("count") or 0),
                                Decimal(f.get("fee_cost") or 0)))
            cursor = body.get("cursor") or ""
            if not cursor:
                return out

    async def venue_positions(self) -> dict[str, Decimal]:
        self._positions = {}
        await self._load_positions()
        return dict(self.positions())

