"""The ``polymarket`` venue: Polymarket's CLOB over aiohttp.

- Auth: L1 (EIP-712 ``ClobAuth``) derives the API credentials unless they are configured;
  every trading call carries L2 HMAC headers over the exact body sent.
- Orders: V2 (or V1) EIP-712 orders signed locally, for the neg-risk exchange when the
  market is neg-risk. The salt comes from the client order id and the signed order is kept,
  so a resend is the same order (the venue answers "Duplicated") and the order id (its
  EIP-712 hash) is known before the reply: ``get_order`` works by client id even when the
  reply was lost.
- Books: ``/books`` snapshots, then the market websocket (``book`` and ``price_change``).
  Fills and order updates arrive on the user websocket and are pushed to the engine.
- Units: prices in USDC per share and sizes in shares (``Decimal``); amounts on the wire in
  1e-6 units. Tick, minimum size and the $1 marketable-BUY minimum are checked before
  anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

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
    VenueUnavailable,
)
from pr3dict_core.config import OptionError, SecretRef
from pr3dict_core.model import (
    ONE,
    ZERO,
    Fill,
    Market,
    OrderAck,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
)
from pr3dict_venuekit.base import ConnectorBase
from pr3dict_venuekit.http import (
    Reply,
    check_mode,
    embedded_scenario,
    endpoint_problems,
    secret,
    strip_comments,
)
from pr3dict_venuekit.orders import OrderRecord, amount

from . import marketdata as md
from . import protocol as pm
from .signing import ZERO_BYTES32, OrderDomain, Signer, l1_headers, l2_headers

log = logging.getLogger("pr3dict.venues.polymarket")

_gt0 = attrs.validators.gt(0)
_ge0 = attrs.validators.ge(0)


def map_error(reply: Reply, what: str) -> VenueError:
    """A non-200 CLOB reply as a typed error (for requests that place orders)."""
    try:
        body = reply.json()
        message = body.get("error") if isinstance(body, dict) else None
    except AmbiguousOutcome:
        message = None
    message = str(message or reply.text[:200] or f"HTTP {reply.status}")
    text = f"{what}: HTTP {reply.status}: {message}"
    if reply.status in (401, 403):
        return AuthenticationFailed(text)
    if reply.status == 429:
        return RateLimited(text)
    if reply.status == 425:
        return VenueUnavailable(text)  # the matching engine is restarting: nothing happened
    if reply.status >= 500 or reply.status < 400:
        return AmbiguousOutcome(text)
    if pm.ERR_BALANCE in message:
        return InsufficientBalance(text)
    return OrderRejected(text)


class PolymarketVenue(ConnectorBase):
    """See the module docstring and ``docs/venues.md``."""

    type: ClassVar[str] = "polymarket"

    @frozen(kw_only=True)
    class Config:
        rest_url: str = "https://clob.polymarket.com"
        ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws"
        # Start an in-process `pr3dict sim` on a free loopback port from this scenario file
        # and talk to it over HTTP/WS (rest_url and ws_url are then ignored).
        embedded_sim: str | None = None
        private_key: SecretRef  # the signing wallet (EOA), hex
        api_key: SecretRef | None = None  # L2 credentials; derived through L1 when absent
        api_secret: SecretRef | None = None
        api_passphrase: SecretRef | None = None
        nonce: int = attrs.field(default=0, validator=_ge0)  # L1 nonce for derivation
        funder: str | None = None  # the maker (proxy / safe) address; default: the signer
        signature_type: int = attrs.field(default=0, validator=attrs.validators.in_((0, 1, 2)))
        # Polygon mainnet or the Amoy testnet: the exchange contracts exist on those only.
        chain_id: int = attrs.field(default=137, validator=attrs.validators.in_((137, 80002)))
        order_version: Literal[1, 2] = 2
        markets: tuple[str, ...] = ()  # condition ids; empty: every listed market
        max_markets: int = attrs.field(default=50, validator=attrs.validators.ge(1))
        request_timeout_ms: int = attrs.field(default=2000, validator=_gt0)
        max_requests_per_s: float = attrs.field(default=200.0, validator=_gt0)
        heartbeat_interval_ms: int = attrs.field(default=5000, validator=_ge0)  # 0 = off
        poll_wait_ms: int = attrs.field(default=100, validator=_ge0)
        websocket: bool = True  # False: poll /books every cycle, query orders
        # Shadow mode only: simulated order latency, ms (default: docs/replay.md#latency).
        latency_ms: float | None = attrs.field(
            default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))

        @property
        def simulated(self) -> bool:
            """With ``embedded_sim`` it never reaches the real venue: refused in live mode."""
            return self.embedded_sim is not None

        def check_mode(self, mode: str) -> list[tuple[str, str]]:
            return endpoint_problems(self, mode)

    def __init__(self, id: str, config: Config, *, private_key: str,
                 api_creds: tuple[str, str, str] | None = None, mode: str = "paper",
                 base_dir: Path | None = None):
        embedded = None
        if config.embedded_sim is not None:
            path = Path(config.embedded_sim)
            embedded = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        super().__init__(id, rest_url=config.rest_url, ws_url=config.ws_url,
                         timeout_s=config.request_timeout_ms / 1000,
                         rate_per_s=config.max_requests_per_s,
                         poll_wait_s=config.poll_wait_ms / 1000, websocket=config.websocket,
                         embedded_sim=embedded)
        self.config = config
        self.mode = mode
        self.signer = Signer(strip_comments(private_key))
        self.maker = config.funder or self.signer.address
        self._creds = api_creds
        self._fee_rates: dict[str, Decimal] = {}
        self._neg_risk: dict[str, bool] = {}
        self._domains: dict[bool, OrderDomain] = {}
        # cid -> (order id, body, EIP-712 digest): built once, so a resend is the same order
        self._signed: dict[str, tuple[str, dict[str, Any], bytes]] = {}
        self._acked: set[str] = set()  # client ids the venue has confirmed receiving
        self._trades: dict[str, dict[str, tuple[Decimal, Decimal, str]]] = {}  # order -> trades
        self._final_trades: set[str] = set()  # trade ids CONFIRMED or FAILED on chain
        self._market_ws: aiohttp.ClientWebSocketResponse | None = None
        self._user_ws: aiohttp.ClientWebSocketResponse | None = None
        self._heartbeat_id = ""

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> PolymarketVenue:
        if ctx.mode == "shadow":  # public market data only; orders filled locally
            from pr3dict_replay.venue import ShadowVenue  # no secret is read below

            return ShadowVenue.for_connector(id, cls.type, config, ctx)  # type: ignore[return-value]
        embedded_scenario(ctx, config)
        key = secret(ctx, config.private_key)
        assert key is not None
        try:
            Signer(strip_comments(key))
        except Exception:  # never echo the key, nor an error that may quote it
            raise OptionError("private_key", "not a valid hex private key (32 bytes) in "
                              f"{config.private_key!r}") from None
        parts = [secret(ctx, r) for r in (config.api_key, config.api_secret,
                                          config.api_passphrase)]
        if any(parts) and not all(parts):
            raise OptionError("api_key", "api_key, api_secret and api_passphrase go together")
        creds = (parts[0], parts[1], parts[2]) if all(parts) else None
        return cls(id, config, private_key=key, api_creds=creds,  # type: ignore[arg-type]
                   mode=ctx.mode, base_dir=ctx.base_dir)

    def __repr__(self) -> str:
        return f"PolymarketVenue({self.id!r}, {self.rest_url}, signer={self.signer.address})"

    def point_at_sim(self, sim: Any) -> None:
        self.rest_url, self.ws_url = sim.polymarket_url, sim.polymarket_ws
        self.http.base_url = self.rest_url

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.start_embedded_sim()
        check_mode(self.id, self.mode, self.rest_url, self.ws_url)
        await self.http.start()
        if self._creds is None:
            self._creds = await self.derive_api_key()
        await self.load_markets()
        await self.refresh_books()
        self._changed = set(self.books)
        if self.use_websocket:
            market_ready, user_ready = asyncio.Event(), asyncio.Event()
            self.spawn(self.run_websocket(self._connect_market, self._open_market,
                                          self._on_market, "market", market_ready), "market-ws")
            self.spawn(self.run_websocket(self._connect_user, self._open_user, self._on_user,
                                          "user", user_ready), "user-ws")
            self.spawn(self.ping_loop(lambda: self._market_ws), "market-ping")
            self.spawn(self.ping_loop(lambda: self._user_ws), "user-ping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(market_ready.wait(), user_ready.wait()),
                                       self.timeout_s * 2)
        if self.config.heartbeat_interval_ms:
            await self.heartbeat()
            self.spawn(self._heartbeat_loop(), "heartbeat")

    async def close(self) -> None:
        await self.stop_tasks()
        await self.http.close()
        await self.stop_embedded_sim()

    # ------------------------------------------------------------------ requests

    def _l2(self, method: str, path: str, body: str | None) -> dict[str, str]:
        assert self._creds is not None
        api_key, api_secret, passphrase = self._creds
        return l2_headers(self.signer.address, api_key, api_secret, passphrase,
                          str(int(time.time())), method, path, body)

    async def _call(self, method: str, path: str, *, body: Any = None,
                    params: Mapping[str, str] | None = None, auth: bool = True) -> Reply:
        text = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = self._l2(method, path, text) if auth else None
        await self.limiter.acquire()
        reply = await self.http.request(method, path, params=params, body=text,
                                        headers=headers)
        self.heard()
        return reply

    async def _get_json(self, path: str, params: Mapping[str, str] | None = None,
                        auth: bool = False) -> Any:
        reply = await self._call("GET", path, params=params, auth=auth)
        if reply.status != 200:
            raise map_error(reply, f"venue {self.id}: GET {path}")
        return reply.json()

    async def derive_api_key(self) -> tuple[str, str, str]:
        """L1: derive (or create) this wallet's API credentials."""
        for method, path in (("GET", "/auth/derive-api-key"), ("POST", "/auth/api-key")):
            headers = l1_headers(self.signer, str(int(time.time())), self.config.nonce,
                                 self.config.chain_id)
            await self.limiter.acquire()
            reply = await self.http.request(method, path, headers=headers)
            if reply.status == 200:
                body = reply.json()
                try:
                    return body["apiKey"], body["secret"], body["passphrase"]
                except (KeyError, TypeError):
                    raise AmbiguousOutcome(f"venue {self.id}: malformed api key reply") from None
        raise map_error(reply, f"venue {self.id}: L1 authentication")

    async def load_markets(self) -> None:
        infos = await md.load_markets(self._get_json, self.id, self.config.markets,
                                      self.config.max_markets)
        for info in infos:
            m = info.market
            self._fee_rates[m.yes] = self._fee_rates[m.no] = info.fee_rate
            self._neg_risk[m.market_id] = info.neg_risk
        self.set_markets([info.market for info in infos])

    async def refresh_books(self) -> None:
        tokens = [inst for m in self._markets for inst in (m.yes, m.no)]
        for start in range(0, len(tokens), 500):
            body = [{"token_id": t} for t in tokens[start:start + 500]]
            reply = await self._call("POST", "/books", body=body, auth=False)
            if reply.status != 200:
                raise map_error(reply, f"venue {self.id}: POST /books")
            for summary in reply.json():
                self._apply_book(summary)

    def _apply_book(self, summary: Mapping[str, Any]) -> None:
        md.apply_book(self.books, summary, self.mark_changed, self._set_rules)

    # ------------------------------------------------------------------ websockets

    async def _connect_market(self) -> aiohttp.ClientWebSocketResponse:
        assert self.http.session is not None
        ws = await self.http.session.ws_connect(self.ws_url + "/market", heartbeat=None,
                                                timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
        self._market_ws = ws
        return ws

    async def _open_market(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Subscribe to every token, ``SUBSCRIBE_TOKENS`` a message (the first one opens the
        feed, the others add to it): each answer, a book snapshot per token, stays well
        under the websocket's message limit (one message for 20,000 tokens does not)."""
        tokens = [inst for m in self._markets for inst in (m.yes, m.no)]
        step = pm.SUBSCRIBE_TOKENS
        await ws.send_str(json.dumps({"assets_ids": tokens[:step], "type": "market",
                                      "custom_feature_enabled": False}))
        for start in range(step, len(tokens), step):
            await ws.send_str(json.dumps({"assets_ids": tokens[start:start + step],
                                          "operation": "subscribe"}))

    def _on_market(self, text: str) -> None:
        md.apply_market_message(self.books, text, self.mark_changed, self.id,
                                self._set_rules)

    def _set_rules(self, token: str, tick: Any, min_size: Any) -> None:
        """A new tick size (``tick_size_change``, book snapshots) or minimum order size
        (book snapshots): the pre-send ``check`` uses them from now on."""
        market = self.market_of(token)
        if market is None:
            return
        new_tick = Decimal(str(tick)) if tick not in (None, "") else market.tick_size
        new_min = Decimal(str(min_size)) if min_size not in (None, "") else market.min_size
        if (new_tick, new_min) == (market.tick_size, market.min_size):
            return
        if not (ZERO < new_tick < ONE and new_min > ZERO):
            log.warning("venue %s: ignored tick %s / min size %s for %s", self.id, tick,
                        min_size, token)
            return
        log.warning("venue %s: %s tick size %s -> %s, min size %s -> %s", self.id,
                    market.market_id, market.tick_size, new_tick, market.min_size, new_min)
        updated = attrs.evolve(market, tick_size=new_tick, min_size=new_min)
        self.set_markets([updated if m is market else m for m in self._markets])

    async def _connect_user(self) -> aiohttp.ClientWebSocketResponse:
        assert self.http.session is not None
        ws = await self.http.session.ws_connect(self.ws_url + "/user", heartbeat=None,
                                                timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
        self._user_ws = ws
        return ws

    async def _open_user(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self._creds is not None
        api_key, api_secret, passphrase = self._creds
        await ws.send_str(json.dumps({
            "auth": {"apiKey": api_key, "secret": api_secret, "passphrase": passphrase},
            "markets": [m.market_id for m in self._markets], "type": "user"}))
        if self.ws_connects > 2:  # a reconnect: updates may have been missed meanwhile
            self.spawn(self._resync(), "resync")

    async def _resync(self) -> None:
        for rec in list(self.records.values()):
            if rec.status is OrderStatus.OPEN and rec.client_order_id in self._acked:
                with contextlib.suppress(VenueError):
                    await self.get_order(rec.client_order_id)

    def _on_user(self, text: str) -> None:
        data = json.loads(text)
        for event in data if isinstance(data, list) else [data]:
            kind = event.get("event_type")
            if kind == "trade":
                self._on_trade(event)
            elif kind == "order":
                rec = self.by_venue_id.get(str(event.get("id")))
                if rec is None:
                    continue
                # Shares matched before their trade message arrives: at the order's price,
                # with the taker fee (conservative); the record is cumulative, so the trade
                # message, when it comes, adds nothing twice.
                matched = event.get("size_matched")
                grew = False
                if matched not in (None, ""):
                    shares = amount(matched, "size_matched", rec.size) - self._failed_shares(rec)
                    if shares > rec.filled:
                        grew = self.observe(rec, filled=shares,
                                            fee_model=self._fee_model(rec.instrument))
                if self._apply_status(rec, str(event.get("status", ""))) or grew:
                    self.emit(rec)

    def _on_trade(self, trade: Mapping[str, Any]) -> None:
        """A trade touching our orders: as taker (its taker order) or maker (maker_orders)."""
        changed = []
        status = str(trade.get("status", ""))
        taker = self.by_venue_id.get(str(trade.get("taker_order_id", "")))
        if taker is not None:
            size = amount(trade.get("size"), "size")
            if self._add_trade(taker, str(trade["id"]), size,
                               size * amount(trade.get("price"), "price", ONE),
                               status, taker_side=True):
                changed.append(taker)
        for entry in trade.get("maker_orders") or []:
            rec = self.by_venue_id.get(str(entry.get("order_id", "")))
            if rec is not None:
                size = amount(entry.get("matched_amount"), "matched_amount")
                if self._add_trade(rec, str(trade["id"]), size,
                                   size * amount(entry.get("price"), "price", ONE),
                                   status, taker_side=False):
                    changed.append(rec)
        for rec in changed:
            self.emit(rec)

    def _add_trade(self, rec: OrderRecord, trade_id: str, size: Decimal, notional: Decimal,
                   status: str, *, taker_side: bool) -> bool:
        """Fold one trade into its order's record. A trade that FAILED on chain after it
        was counted is reversed: a ``reversal:`` fill takes its shares back out."""
        if not (size.is_finite() and notional.is_finite()) or size <= 0 or notional < 0:
            raise MalformedReply(f"venue {self.id}: trade {trade_id}: bad size or price")
        trades = self._trades.setdefault(rec.venue_order_id, {})
        known = trades.get(trade_id)
        if status in ("CONFIRMED", "FAILED"):
            self._final_trades.add(trade_id)
        if status == "FAILED":
            if known is not None and known[2] == "FAILED":
                return False
            if known is None:
                # Never seen live (an earlier process's order, or a query after the fact):
                # count it, then reverse it, so the view says what happened to the shares.
                self._count(rec, trades, trade_id, size, notional, taker_side)
            trades[trade_id] = (size, notional, "FAILED")
            if trade_id not in self.failed_trades:
                self.failed_trades.append(trade_id)
            log.warning("venue %s: trade %s of order %s FAILED on chain; its %s shares "
                        "are reversed", self.id, trade_id, rec.client_order_id, size)
            self.add_position(rec.instrument, rec.side.opposite, size)
            rec.reverse(f"reversal:{rec.venue_order_id}:{trade_id}", size, notional)
            return True
        if known is not None:
            return False
        return self._count(rec, trades, trade_id, size, notional, taker_side)

    def _count(self, rec: OrderRecord, trades: dict[str, tuple[Decimal, Decimal, str]],
               trade_id: str, size: Decimal, notional: Decimal, taker_side: bool) -> bool:
        trades[trade_id] = (size, notional, "taker" if taker_side else "maker")
        live = [(s_, n) for s_, n, st in trades.values() if st != "FAILED"]
        filled = sum((s_ for s_, _ in live), ZERO)
        total = sum((n for _, n in live), ZERO)
        if filled <= rec.filled:
            return False
        fee_model = self._fee_model(rec.instrument) if taker_side else None
        return self.observe(rec, filled=filled, notional=total, fee_model=fee_model)

    def _failed_shares(self, rec: OrderRecord) -> Decimal:
        return sum((s_ for s_, _, st in self._trades.get(rec.venue_order_id, {}).values()
                    if st == "FAILED"), ZERO)

    # ------------------------------------------------------------------ heartbeats

    async def heartbeat(self) -> None:
        reply = await self._call("POST", "/v1/heartbeats",
                                 body={"heartbeat_id": self._heartbeat_id or None})
        if reply.status == 200:
            self._heartbeat_id = str(reply.json().get("heartbeat_id", ""))
        else:
            log.warning("venue %s: heartbeat refused: HTTP %s %s", self.id, reply.status,
                        reply.text[:120])
            if reply.status in (401, 403):  # refused credentials: the engine stops
                self.auth_failure = f"heartbeat refused: HTTP {reply.status}"
            self._heartbeat_id = ""

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_ms / 1000)
            try:
                await self.heartbeat()
            except VenueError as exc:
                log.warning("venue %s: heartbeat failed: %s", self.id, exc)

    # ------------------------------------------------------------------ fees and rules

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return pm.fee(self._fee_rates.get(instrument, ZERO), size, price)

    def _fee_model(self, instrument: str):  # type: ignore[no-untyped-def]
        rate = self._fee_rates.get(instrument, ZERO)
        return lambda size, price: pm.fee(rate, size, price)

    def check(self, request: OrderRequest) -> Market:
        """The venue's rules, enforced before anything is sent (raises OrderRejected)."""
        market = self.market_of(request.instrument)
        if market is None:
            raise OrderRejected(f"venue {self.id}: unknown instrument {request.instrument!r}")
        tick, price, size = market.tick_size, request.price, request.size
        if price % tick or not tick <= price <= ONE - tick:
            raise OrderRejected(f"venue {self.id}: price {price} breaks the tick size {tick}")
        if size % pm.SIZE_STEP or size <= 0:
            raise OrderRejected(f"venue {self.id}: size {size} is not a multiple of 0.01")
        if size < market.min_size:
            raise OrderRejected(f"venue {self.id}: size {size} below the minimum "
                                f"{market.min_size}")
        if request.side is Side.BUY and request.time_in_force is not TimeInForce.GTC \
                and price * size < 1:
            raise OrderRejected(f"venue {self.id}: a marketable BUY needs at least $1 "
                                f"(got ${price * size})")
        return market

    # ------------------------------------------------------------------ orders

    def _domain(self, market: Market) -> OrderDomain:
        neg = self._neg_risk.get(market.market_id, False)
        domain = self._domains.get(neg)
        if domain is None:
            domain = self._domains[neg] = OrderDomain.for_market(
                self.config.chain_id, neg, self.config.order_version)
        return domain

    def build_order(self, request: OrderRequest, *, post_only: bool = False
                    ) -> tuple[str, dict[str, Any]]:
        """The signed order body and its id (the EIP-712 hash), cached by client order id."""
        order_id, body = self._build(request, post_only)
        if "signature" not in body["order"]:
            self.sign_order(request)
        return order_id, body

    def _build(self, request: OrderRequest, post_only: bool = False
               ) -> tuple[str, dict[str, Any]]:
        """The order body (unsigned until ``sign_order``) and its id, cached by client id.

        A FOK/FAK BUY is signed as the venue wants a market BUY (``pm.market_buy_amounts``):
        it may buy slightly fewer shares than ``request.size`` (at most 0.01 / price + 0.0001
        fewer, none when size x price is whole cents); its record carries that size.
        """
        cached = self._signed.get(request.client_order_id)
        if cached is not None:
            return cached[0], cached[1]
        market = self.check(request)
        side = "BUY" if request.side is Side.BUY else "SELL"
        size = request.size
        if side == "BUY" and request.time_in_force is not TimeInForce.GTC:
            maker_amount, taker_amount = pm.market_buy_amounts(request.price, request.size)
            if maker_amount < pm.UNIT:
                raise OrderRejected(f"venue {self.id}: a marketable BUY needs at least $1 "
                                    f"(got ${Decimal(maker_amount) / pm.UNIT})")
            size = Decimal(taker_amount) / pm.UNIT
        else:
            maker_amount, taker_amount = pm.amounts(side, request.price, request.size)
        salt = int.from_bytes(hashlib.sha256(request.client_order_id.encode()).digest()[:6],
                              "big")
        order: dict[str, Any] = {"salt": salt, "maker": self.maker,
                                 "signer": self.signer.address}
        if self.config.order_version == 1:
            order.update(taker="0x0000000000000000000000000000000000000000")
        order.update(tokenId=request.instrument, makerAmount=str(maker_amount),
                     takerAmount=str(taker_amount), side=side)
        if self.config.order_version == 1:
            order.update(expiration="0", nonce="0",
                         feeRateBps=str(int(self._fee_rates.get(request.instrument, ZERO)
                                            * 10000)))
        else:
            order.update(expiration="0")
        order["signatureType"] = self.config.signature_type
        if self.config.order_version == 2:
            order.update(timestamp=str(time.time_ns() // 1_000_000), metadata=ZERO_BYTES32,
                         builder=ZERO_BYTES32)
        domain = self._domain(market)
        digest = domain.digest(order)
        order_type = {TimeInForce.GTC: "GTC", TimeInForce.FOK: "FOK",
                      TimeInForce.FAK: "FAK"}[request.time_in_force]
        assert self._creds is not None
        body: dict[str, Any] = {"order": order, "owner": self._creds[0], "orderType": order_type}
        if self.config.order_version == 2:
            body["deferExec"] = False
        body["postOnly"] = post_only
        order_id = "0x" + digest.hex()
        self._signed[request.client_order_id] = (order_id, body, digest)
        if request.client_order_id not in self.records:
            rec = OrderRecord(request.client_order_id, order_id, request.instrument,
                              request.side, request.price, size, market.market_id)
            self.records[request.client_order_id] = rec
            self.by_venue_id[order_id] = rec
        return order_id, body

    def prepare_order(self, request: OrderRequest) -> str:
        """Build and hash the order before its intent is journaled: its id (the EIP-712
        hash) goes into the journal, so the order can be found after a crash or a lost
        reply (the V2 order carries a timestamp: it could not be rebuilt). The signature
        (``sign_order``) is made while the intent commits: it does not change the id."""
        order_id, _ = self._build(request)
        return order_id

    def sign_order(self, request: OrderRequest) -> None:
        """Sign a prepared order (deterministic, RFC 6979). Pure CPU on a body nothing else
        touches until it is sent: the engine runs it in a thread during the intent's commit."""
        _, body, digest = self._signed[request.client_order_id]
        body["order"]["signature"] = self.signer.sign_digest(digest)

    def adopt_order(self, request: OrderRequest, venue_order_id: str) -> None:
        """Know an order the journal holds (an earlier process's, or a lost reply's)."""
        if request.client_order_id in self.records or not venue_order_id:
            return
        market = self.market_of(request.instrument)
        rec = OrderRecord(request.client_order_id, venue_order_id, request.instrument,
                          request.side, request.price, request.size,
                          market.market_id if market else "")
        self.records[request.client_order_id] = rec
        self.by_venue_id[venue_order_id] = rec

    async def place_order(self, request: OrderRequest) -> OrderAck:
        _order_id, body = self.build_order(request)
        rec = self.records[request.client_order_id]
        reply = await self._call("POST", "/order", body=body)
        if reply.status != 200:
            error = map_error(reply, f"venue {self.id}: place {request.client_order_id}")
            if isinstance(error, OrderRejected) and "Duplicated" in str(error):
                return await self.get_order(request.client_order_id)  # a resend: it is there
            if isinstance(error, OrderRejected):
                rec.finish(OrderStatus.REJECTED, str(error))
            raise error
        return self._placed(rec, request.time_in_force, reply.json())

    def _placed(self, rec: OrderRecord, tif: TimeInForce, result: Any) -> OrderAck:
        """Fold a placement reply into the record, trusting nothing unchecked: anything
        that is not a clear refusal or a coherent acceptance is ambiguous (reconciled)."""
        if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
            raise AmbiguousOutcome(f"venue {self.id}: malformed order reply {result!r:.120}")
        message = result.get("errorMsg") or ""
        if not result["success"]:
            message = str(message or "rejected")
            rec.finish(OrderStatus.REJECTED, message)
            if pm.ERR_BALANCE in message:
                raise InsufficientBalance(f"venue {self.id}: {message}")
            raise OrderRejected(f"venue {self.id}: {message}")
        if message:  # accepted and an error at once: we cannot tell which is true
            raise AmbiguousOutcome(f"venue {self.id}: success with error {message!r:.120}")
        order_id = result.get("orderID")
        if order_id not in (None, "", rec.venue_order_id):
            raise AmbiguousOutcome(f"venue {self.id}: reply is about order {order_id!r}")
        status = str(result.get("status", "")).lower()
        if status not in pm.INSERT_STATUSES:
            raise AmbiguousOutcome(f"venue {self.id}: unknown order status {status!r}")
        self._acked.add(rec.client_order_id)
        if status == "delayed":
            raise AmbiguousOutcome(f"venue {self.id}: order {rec.venue_order_id} is delayed "
                                   "(matching later)")
        try:
            taking = amount(result.get("takingAmount") or "0", "takingAmount")
            making = amount(result.get("makingAmount") or "0", "makingAmount")
        except MalformedReply as exc:
            raise AmbiguousOutcome(f"venue {self.id}: {exc}") from None
        shares, notional = (taking, making) if rec.side is Side.BUY else (making, taking)
        if shares > rec.size or (shares and not ZERO <= notional <= shares):
            raise AmbiguousOutcome(f"venue {self.id}: amounts {taking}/{making} do not fit "
                                   f"an order of {rec.size} at {rec.price}")
        trade_ids = result.get("tradeIDs") or []
        if status == "matched" and not shares and trade_ids:
            # Trades without amounts: the shares arrive with the trade messages (or the
            # query); closing the order now would book 0.
            raise AmbiguousOutcome(f"venue {self.id}: matched without amounts")
        if shares > rec.filled:
            self.observe(rec, filled=shares, notional=notional,
                         fee_model=self._fee_model(rec.instrument))
            # These trades are now counted: their websocket copies must not add them again.
            trades = self._trades.setdefault(rec.venue_order_id, {})
            counted = sum((s_ for s_, _, _ in trades.values()), ZERO)
            for tid in trade_ids:
                if str(tid) not in trades:
                    trades[str(tid)] = (shares - counted, notional - sum(
                        (n for _, n, _ in trades.values()), ZERO), "reply")
                    counted = shares
        if tif is not TimeInForce.GTC or status == "unmatched":
            rec.finish(OrderStatus.CANCELLED, "unfilled remainder cancelled")
        return rec.ack()

    async def place_orders(self, requests: Sequence[OrderRequest]
                           ) -> list[OrderAck | VenueError]:
        """Batch place (``POST /orders``, 15 a request, the requests sent at once);
        per-order results in order."""
        chunks = [requests[i:i + pm.BATCH_LIMIT]
                  for i in range(0, len(requests), pm.BATCH_LIMIT)]
        parts = await asyncio.gather(*(self._place_chunk(chunk) for chunk in chunks))
        return [result for part in parts for result in part]

    async def _place_chunk(self, chunk: Sequence[OrderRequest]) -> list[OrderAck | VenueError]:
        bodies, recs = [], []
        results: list[OrderAck | VenueError | None] = []
        for request in chunk:
            try:
                _, body = self.build_order(request)
            except VenueError as exc:
                results.append(exc)
                continue
            results.append(None)
            bodies.append(body)
            recs.append((self.records[request.client_order_id], request.time_in_force))
        if bodies:
            reply = await self._call("POST", "/orders", body=bodies)
            if reply.status != 200:
                error = map_error(reply, f"venue {self.id}: batch place")
                replies: list[Any] = [error] * len(bodies)
            else:
                replies = reply.json()
                if not isinstance(replies, list) or len(replies) != len(bodies):
                    raise AmbiguousOutcome(f"venue {self.id}: malformed batch reply")
            it = iter(zip(recs, replies, strict=False))
            for i, slot in enumerate(results):
                if slot is not None:
                    continue
                (rec, tif), item = next(it)
                if isinstance(item, VenueError):
                    results[i] = item
                    continue
                try:
                    results[i] = self._placed(rec, tif, item)
                except VenueError as exc:
                    results[i] = exc
        return [r for r in results if r is not None]

    async def cancel_order(self, client_order_id: str) -> OrderAck:
        rec = self.record(client_order_id)
        if rec.status is not OrderStatus.OPEN:
            return rec.ack()
        reply = await self._call("DELETE", "/order", body={"orderID": rec.venue_order_id})
        if reply.status != 200:
            raise map_error(reply, f"venue {self.id}: cancel {client_order_id}")
        result = reply.json()
        if not isinstance(result, dict):
            raise AmbiguousOutcome(f"venue {self.id}: malformed cancel reply")
        if rec.venue_order_id in (result.get("canceled") or []):
            if not self.use_websocket:  # fills that came before the cancel
                await self.get_order(client_order_id)
            # With the user websocket on, fills before the cancel were pushed already (or
            # arrive late and are pushed then: a final leg still gains fills).
            rec.finish(OrderStatus.CANCELLED, "cancelled")
            return rec.ack()
        return await self.get_order(client_order_id)

    async def cancel_all(self) -> list[str]:
        reply = await self._call("DELETE", "/cancel-all")
        if reply.status != 200:
            raise map_error(reply, f"venue {self.id}: cancel all")
        ids = [str(x) for x in reply.json().get("canceled") or []]
        for oid in ids:
            rec = self.by_venue_id.get(oid)
            if rec is not None:
                rec.finish(OrderStatus.CANCELLED, "cancelled")
        return ids

    async def get_order(self, client_order_id: str) -> OrderAck:
        """The venue's view of an order, by its id (journaled before it was sent)."""
        rec = self.record(client_order_id)
        reply = await self._call("GET", f"/data/order/{rec.venue_order_id}")
        if reply.status == 404:
            if client_order_id in self._acked or rec.filled:
                return rec.ack()  # known to have arrived: the venue forgot a final order
            raise UnknownOrder(f"venue {self.id}: the venue has no order {client_order_id!r}")
        if reply.status in (401, 403):
            raise map_error(reply, f"venue {self.id}: query {client_order_id}")
        if reply.status != 200:
            raise AmbiguousOutcome(f"venue {self.id}: query {client_order_id}: HTTP "
                                   f"{reply.status} {reply.text[:120]}")
        order = reply.json()
        if not isinstance(order, dict) or "status" not in order:
            raise AmbiguousOutcome(f"venue {self.id}: malformed order {order!r:.120}")
        if str(order.get("id")) != rec.venue_order_id or \
                str(order.get("asset_id", rec.instrument)) != rec.instrument:
            raise AmbiguousOutcome(f"venue {self.id}: the venue answered about order "
                                   f"{order.get('id')!r}, not {rec.venue_order_id!r}")
        matched = amount(order.get("size_matched") or "0", "size_matched", rec.size)
        self._acked.add(client_order_id)
        for tid in order.get("associate_trades") or []:
            if str(tid) in self._final_trades:
                continue  # CONFIRMED or FAILED: nothing about it changes any more
            trades = await self._get_json("/data/trades", {"id": str(tid)}, auth=True)
            for trade in trades.get("data", []) if isinstance(trades, dict) else []:
                self._on_trade(trade)
        # Shares matched but not listed as trades yet: at the limit price. Shares of trades
        # that failed on chain are not held.
        matched -= self._failed_shares(rec)
        if matched > rec.filled:
            self.observe(rec, filled=matched)
        self._apply_status(rec, str(order["status"]))
        return rec.ack()

    @staticmethod
    def _apply_status(rec: OrderRecord, status: str) -> bool:
        status = status.upper()
        before = rec.status
        if status.startswith("CANCELED") or status in ("UNMATCHED", "INVALID"):
            rec.finish(OrderStatus.CANCELLED, status.lower())
        elif status == "MATCHED" and rec.filled >= rec.size:
            rec.finish(OrderStatus.FILLED)
        return rec.status is not before

    # ------------------------------------------------------------------ account

    async def balance(self) -> Decimal:
        """Collateral (USDC / pUSD) the venue says this wallet holds."""
        body = await self._get_json("/balance-allowance", {"asset_type": "COLLATERAL",
                                                           "signature_type":
                                                           str(self.config.signature_type)},
                                    auth=True)
        return Decimal(body["balance"]) / pm.UNIT

    async def venue_positions(self) -> dict[str, Decimal]:
        """Shares per token as the venue sees them (one query per token)."""
        tokens = [inst for m in self._markets for inst in (m.yes, m.no)]
        out = {}
        for token in tokens:
            body = await self._get_json("/balance-allowance", {"asset_type": "CONDITIONAL",
                                                               "token_id": token}, auth=True)
            qty = Decimal(body["balance"]) / pm.UNIT
            if qty:
                out[token] = qty
        return out

    async def fills(self, market: str | None = None) -> list[Fill]:
        """Every trade of ours, one Fill per trade and order (cursor-paginated query)."""
        out: list[Fill] = []
        cursor = pm.INITIAL_CURSOR
        params = {"market": market} if market else {}
        while cursor != pm.END_CURSOR:
            page = await self._get_json("/data/trades", {**params, "next_cursor": cursor},
                                        auth=True)
            for t in page.get("data", []):
                if t.get("status") == "FAILED":
                    continue
                taker = self.by_venue_id.get(str(t.get("taker_order_id")))
                if taker is not None:
                    size, price = Decimal(t["size"]), Decimal(t["price"])
                    out.append(Fill(str(t["id"]), taker.client_order_id, price, size,
                                    self.fee(taker.instrument, price, size)))
                for m in t.get("maker_orders") or []:
                    rec = self.by_venue_id.get(str(m.get("order_id")))
                    if rec is not None:
                        out.append(Fill(str(t["id"]), rec.client_order_id, Decimal(m["price"]),
                                        Decimal(m["matched_amount"])))
            cursor = page.get("next_cursor") or pm.END_CURSOR
        return out


def _opt_dec(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value not in (None, "") else None
