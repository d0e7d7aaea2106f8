"""The simulated Kalshi Trade API v2: RSA-PSS auth, legacy and V2 orders, fills, websocket.

Kalshi has one YES book per market, so the engine holds one instrument per ticker: a bid
buys YES, an ask sells YES; buying NO at q is an ask at 1 - q. A position is signed (+YES,
-NO); netting YES against NO releases $1 a pair, which is how the balance is computed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from pr3dict_core.model import ONE, ZERO, Market, OrderStatus, Side, TimeInForce
from pr3dict_kalshi import protocol as kp
from pr3dict_paper.matching import InvalidOrder, Match, MatchingEngine
from pr3dict_paper.scenario import MarketProcess, ScenarioSpec

from .common import Account, Faults, Hub, http_error, json_response, now_ms, ws_loop

if TYPE_CHECKING:
    from .server import SimServer

MARKET_MAKER = "mm"
VENUE = "kalshi"
P = kp.API_PREFIX


def kerr(status: int, code: str, message: str, details: str = "") -> web.HTTPException:
    return http_error(status, {"error": {"code": code, "message": message, "details": details,
                                         "service": "exchange"}})


@attrs.define(eq=False)
class KMarket:
    id: str
    ticker: str
    event_ticker: str
    title: str
    tick: Decimal

    @property
    def market_id(self) -> str:
        """The market's UUID, which websocket book messages carry beside the ticker."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pr3dict-sim/kalshi/{self.ticker}"))


@attrs.define(eq=False)
class KOrder:
    id: str
    account: Account
    client_order_id: str
    market: KMarket
    book_side: str  # bid | ask (YES book)
    price: Decimal  # YES price in dollars
    count: Decimal
    tif: str
    post_only: bool
    created_ms: int
    side: str = "yes"  # legacy shape, as placed
    action: str = "buy"
    v2: bool = False
    status: str = "resting"
    filled: Decimal = ZERO
    taker_cost: Decimal = ZERO  # in the order's own outcome terms (YES or NO dollars)
    maker_cost: Decimal = ZERO
    taker_fees: Decimal = ZERO
    maker_fees: Decimal = ZERO
    updated_ms: int = 0
    engine_id: str = ""  # the order's id in the matching engine (a new one after an amend)


@attrs.define(eq=False)
class KFill:
    fill_id: str
    trade_id: str
    order: KOrder
    is_taker: bool
    count: Decimal
    yes_price: Decimal
    fee: Decimal
    ts_ms: int


KEEP_FILLS = 100_000  # fills the listings (GET /portfolio/fills, /markets/trades) page over


class KalshiSim:
    def __init__(self, server: SimServer, spec: ScenarioSpec):
        self.server = server
        self.spec = spec
        sim = spec.sim
        self.faults: Faults = server.faults
        self.multiplier = sim.kalshi_fee_multiplier
        if spec.fee_model == "kalshi" and spec.fee_rate is not None:
            self.multiplier = sim.kalshi_fee_multiplier * spec.fee_rate / kp.TAKER_COEFFICIENT
        self.maker_fees = sim.kalshi_maker_fees
        self.engine = MatchingEngine(fee=self._fee, on_match=self._matches_append)
        self._matches: list[Match] = []
        event_of = {mid: ev for ev in spec.events for mid in ev.markets}
        self.markets: list[KMarket] = []
        for ms in spec.markets:
            ticker = kp.ticker_for(ms.id)
            ev = event_of.get(ms.id)
            self.markets.append(KMarket(ms.id, ticker, kp.ticker_for(ev.id) if ev else ticker,
                                        ms.title or ms.id, spec.tick_size))
        self.by_ticker = {m.ticker: m for m in self.markets}
        for m in self.markets:
            self.engine.add_instrument(m.ticker, tick_size=m.tick, min_size=ONE)
        self.process = MarketProcess(
            spec, [Market(VENUE, m.id, f"{m.ticker}#yes", f"{m.ticker}#no")
                   for m in self.markets], spec.seed)
        self._quoted: dict[str, tuple[object, int]] = {}
        self.orders: dict[str, KOrder] = {}
        self.by_client: dict[tuple[str, str], KOrder] = {}
        self._amended: dict[str, str] = {}  # engine id of an amended order -> its order id
        # The latest KEEP_FILLS fills, for the listings; what the fills add up to (a market's
        # volume and last price, an account's fees and traded value per market) is kept as
        # it goes, so a long run stays flat and a market's JSON does not walk every fill.
        self.fills: deque[KFill] = deque(maxlen=KEEP_FILLS)
        self._volume: dict[str, Decimal] = {}  # ticker -> taker count
        self._last_price: dict[str, Decimal] = {}  # ticker -> its last fill's YES price
        # (account name, ticker) -> [fees, traded value, last fill's time]
        self._by_position: dict[tuple[str, str], list[Any]] = {}
        self.maker_fees_paid: dict[str, Decimal] = {}
        self.hub = Hub()
        self._published: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._published_seq: dict[str, int] = {}
        self._rng = server.rng
        self.page_size = server.page_size

    def _fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return kp.fee(size, price, self.multiplier)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(P + "/exchange/status", self.status)
        r.add_get(P + "/exchange/user_data_timestamp", self.user_data_timestamp)
        r.add_get(P + "/markets/trades", self.trades)
        r.add_get(P + "/markets/orderbooks", self.orderbooks)
        r.add_get(P + "/portfolio/settlements", self.settlements)
        r.add_get(P + "/portfolio/summary/total_resting_order_value", self.resting_value)
        r.add_get(P + "/markets", self.list_markets)
        r.add_get(P + "/markets/{ticker}", self.get_market)
        r.add_get(P + "/markets/{ticker}/orderbook", self.orderbook)
        r.add_get(P + "/portfolio/balance", self.balance_ep)
        r.add_get(P + "/portfolio/positions", self.positions_ep)
        r.add_get(P + "/portfolio/fills", self.fills_ep)
        r.add_get(P + "/portfolio/orders", self.list_orders)
        r.add_get(P + "/portfolio/orders/queue_positions", self.queue_positions)
        r.add_get(P + "/portfolio/orders/{order_id}/queue_position", self.queue_position)
        r.add_get(P + "/portfolio/orders/{order_id}", self.get_order)
        if self.spec.sim.kalshi_legacy_orders:
            r.add_post(P + "/portfolio/orders/batched", self.batch_create_legacy)
            r.add_delete(P + "/portfolio/orders/batched", self.batch_cancel_legacy)
            r.add_post(P + "/portfolio/orders", self.create_legacy)
            r.add_delete(P + "/portfolio/orders/{order_id}", self.cancel_legacy)
            r.add_post(P + "/portfolio/orders/{order_id}/decrease", self.decrease_legacy)
            r.add_post(P + "/portfolio/orders/{order_id}/amend", self.amend_legacy)
        r.add_post(P + "/portfolio/events/orders/{order_id}/amend", self.amend_v2)
        r.add_post(P + "/portfolio/events/orders/{order_id}/decrease", self.decrease_v2)
        r.add_post(P + "/portfolio/events/orders/batched", self.batch_create_v2)
        r.add_delete(P + "/portfolio/events/orders/batched", self.batch_cancel_v2)
        r.add_post(P + "/portfolio/events/orders", self.create_v2)
        r.add_delete(P + "/portfolio/events/orders", self.cancel_all_v2)
        r.add_delete(P + "/portfolio/events/orders/{order_id}", self.cancel_v2)
        r.add_get(kp.WS_PATH, self.ws)

    # ------------------------------------------------------------------ auth

    def _auth(self, request: web.Request, path: str | None = None) -> Account:
        h = request.headers
        key_id = h.get("KALSHI-ACCESS-KEY", "")
        ts = h.get("KALSHI-ACCESS-TIMESTAMP", "")
        sig = h.get("KALSHI-ACCESS-SIGNATURE", "")
        account = self.server.account_by_kalshi_key(key_id)
        if account is None or not sig:
            raise kerr(401, kp.AUTH, "authentication failed: unknown api key")
        try:
            skew = abs(time.time() * 1000 - int(ts)) / 1000
        except ValueError:
            raise kerr(401, kp.AUTH, "authentication failed: bad timestamp") from None
        if skew > self.spec.sim.max_clock_skew_s:
            raise kerr(401, kp.AUTH, "authentication failed: timestamp out of range")
        if not kp.verify(account.kalshi_public_key, sig, ts, request.method,
                         path or request.path):
            raise kerr(401, kp.AUTH, "authentication failed: invalid signature")
        return account

    async def _read_auth(self, request: web.Request) -> Account:
        account = self._auth(request)
        await self.server.throttle(request, account.name, "read", self._limited)
        return account

    async def _write_auth(self, request: web.Request) -> Account:
        account = self._auth(request)
        await self.server.throttle(request, account.name, "write", self._limited)
        return account

    def _limited(self) -> web.HTTPException:
        return kerr(429, kp.RATE, "too many requests")

    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError:
            raise kerr(400, kp.INVALID_ORDER, "invalid JSON body") from None

    # ------------------------------------------------------------------ market data

    async def status(self, request: web.Request) -> web.Response:
        return json_response({"exchange_active": True, "trading_active": True})

    async def user_data_timestamp(self, request: web.Request) -> web.Response:
        """The simulator's portfolio data is never stale: now."""
        await self._read_auth(request)
        return json_response({"as_of_time": _iso(now_ms())})

    async def trades(self, request: web.Request) -> web.Response:
        """Public trades (one per match, newest first), optionally for one ticker."""
        ticker = request.query.get("ticker")
        seen: set[str] = set()
        items = []
        for f in reversed(self.fills):
            if f.trade_id in seen or (ticker and f.order.market.ticker != ticker):
                continue
            seen.add(f.trade_id)
            taker = f.order.book_side if f.is_taker else (
                "ask" if f.order.book_side == "bid" else "bid")
            taker_side = "yes" if taker == "bid" else "no"
            items.append({
                "trade_id": f.trade_id, "ticker": f.order.market.ticker,
                "price": float(f.yes_price), "count": int(f.count),
                "count_fp": kp.count_fp(f.count), "yes_price": int(f.yes_price * 100),
                "no_price": int((ONE - f.yes_price) * 100),
                "yes_price_dollars": kp.dollars(f.yes_price),
                "no_price_dollars": kp.dollars(ONE - f.yes_price), "taker_side": taker_side,
                "taker_outcome_side": taker_side, "taker_book_side": taker,
                "is_block_trade": False, "created_time": _iso(f.ts_ms)})
        return self._page(request, items, "trades")

    async def settlements(self, request: web.Request) -> web.Response:
        """Simulated markets never settle: always an empty page."""
        await self._read_auth(request)
        return json_response({"settlements": [], "cursor": ""})

    async def resting_value(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        cents = int(self._reserved(account) * 100)
        return json_response({"total_resting_order_value": cents,
                              "resting_order_value_breakdown": [
                                  {"exchange_index": 0,
                                   "balance": kp.dollars(Decimal(cents) / 100)}]})

    def market_json(self, m: KMarket) -> dict[str, Any]:
        """A market as GET /markets sends it: every field the official SDK's ``Market``
        model requires (kalshi_python_sync 3.x), cents and ``_dollars`` twins, ``_fp`` counts."""
        bids, asks = self.engine.book(m.ticker, 1)
        yb = bids[0].price if bids else ZERO
        ya = asks[0].price if asks else ONE
        yb_size = bids[0].size if bids else ZERO
        ya_size = asks[0].size if asks else ZERO
        volume = self._volume.get(m.ticker, ZERO)
        last = self._last_price.get(m.ticker, ZERO)
        far, opened = "2099-01-01T00:00:00Z", "2025-01-01T00:00:00Z"
        return {
            "ticker": m.ticker, "event_ticker": m.event_ticker, "market_type": "binary",
            "title": m.title, "subtitle": "", "yes_sub_title": m.title, "no_sub_title": m.title,
            "created_time": opened, "updated_time": opened, "open_time": opened,
            "close_time": far, "settlement_bounds_type": "default",
            "yes_bid_size_fp": kp.count_fp(yb_size), "yes_ask_size_fp": kp.count_fp(ya_size),
            "expected_expiration_time": far, "expiration_time": far,
            "latest_expiration_time": far, "settlement_timer_seconds": 300,
            "status": "active", "response_price_units": "usd_cent",
            "yes_bid": int(yb * 100), "yes_ask": int(ya * 100),
            "no_bid": int((ONE - ya) * 100), "no_ask": int((ONE - yb) * 100),
            "yes_bid_dollars": kp.dollars(yb), "yes_ask_dollars": kp.dollars(ya),
            "no_bid_dollars": kp.dollars(ONE - ya), "no_ask_dollars": kp.dollars(ONE - yb),
            "last_price": int(last * 100), "last_price_dollars": kp.dollars(last),
            "volume": int(volume), "volume_fp": kp.count_fp(volume),
            "volume_24h": int(volume), "volume_24h_fp": kp.count_fp(volume),
            "result": "", "can_close_early": True,
            "open_interest": int(volume), "open_interest_fp": kp.count_fp(volume),
            "notional_value": 100, "notional_value_dollars": "1.0000",
            "previous_yes_bid": 0, "previous_yes_bid_dollars": "0.0000",
            "previous_yes_ask": 0, "previous_yes_ask_dollars": "0.0000",
            "previous_price": 0, "previous_price_dollars": "0.0000",
            "liquidity": 0, "liquidity_dollars": "0.0000", "expiration_value": "",
            "category": "", "risk_limit_cents": 0, "tick_size": int(m.tick * 100),
            "rules_primary": m.title, "rules_secondary": "",
            "price_level_structure": "linear_cent",
            "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": kp.dollars(m.tick)}],
            "fractional_trading_enabled": False,
        }

    async def list_markets(self, request: web.Request) -> web.Response:
        q = request.query
        items = self.markets
        tickers = q.get("tickers")
        if tickers:
            wanted = set(tickers.split(","))
            items = [m for m in items if m.ticker in wanted]
        return self._page(request, items, "markets", render=self.market_json)

    def _market(self, request: web.Request) -> KMarket:
        m = self.by_ticker.get(request.match_info["ticker"])
        if m is None:
            raise kerr(404, kp.MARKET_NOT_FOUND, "market not found")
        return m

    async def get_market(self, request: web.Request) -> web.Response:
        return json_response({"market": self.market_json(self._market(request))})

    def book_sides(self, m: KMarket) -> tuple[list[tuple[Decimal, Decimal]],
                                               list[tuple[Decimal, Decimal]]]:
        """(YES bids, NO bids), each ascending by price (best last)."""
        bids, asks = self.engine.book(m.ticker)
        yes = sorted((lv.price, lv.size) for lv in bids)
        no = sorted((ONE - lv.price, lv.size) for lv in asks)
        return yes, no

    def orderbook_fp(self, m: KMarket) -> dict[str, Any]:
        yes, no = self.book_sides(m)
        return {"yes_dollars": [[kp.dollars(p), kp.count_fp(s)] for p, s in yes],
                "no_dollars": [[kp.dollars(p), kp.count_fp(s)] for p, s in no]}

    async def orderbooks(self, request: web.Request) -> web.Response:
        """Several markets' books at once, in request order (unknown ones left out), in the
        ``orderbook_fp`` shape (docs.kalshi.com "Get Multiple Market Orderbooks":
        ``{"orderbooks": [{"ticker", "orderbook_fp"}]}``). ``tickers`` is repeated (the
        OpenAPI array form) or comma separated; 1 to 100 of them, as the venue allows."""
        wanted = [t for value in request.query.getall("tickers", [])
                  for t in value.split(",") if t]
        if not 1 <= len(wanted) <= kp.ORDERBOOKS_PER_REQUEST:
            raise kerr(400, kp.MISSING, "tickers: 1 to 100 market tickers")
        return json_response({"orderbooks": [
            {"ticker": t, "orderbook_fp": self.orderbook_fp(self.by_ticker[t])}
            for t in wanted if t in self.by_ticker]})

    async def orderbook(self, request: web.Request) -> web.Response:
        m = self._market(request)
        yes, no = self.book_sides(m)
        try:
            depth = int(request.query.get("depth", "0"))
        except ValueError:
            raise kerr(400, kp.INVALID_ORDER, "invalid depth") from None
        if depth > 0:
            yes, no = yes[-depth:], no[-depth:]
        return json_response({
            "orderbook": {
                "yes": [[int(p * 100), int(s)] for p, s in yes],
                "no": [[int(p * 100), int(s)] for p, s in no],
                # dollar levels are [price, count] strings (the SDK's Orderbook model)
                "yes_dollars": [[kp.dollars(p), str(int(s))] for p, s in yes],
                "no_dollars": [[kp.dollars(p), str(int(s))] for p, s in no]},
            "orderbook_fp": {
                "yes_dollars": [[kp.dollars(p), kp.count_fp(s)] for p, s in yes],
                "no_dollars": [[kp.dollars(p), kp.count_fp(s)] for p, s in no]},
        })

    # ------------------------------------------------------------------ portfolio

    def balance(self, account: Account) -> Decimal:
        name = account.name
        short = sum((-q for q in self.engine.positions(name).values() if q < 0), ZERO)
        return (account.balance + self.engine.cash(name) - short
                - self.maker_fees_paid.get(name, ZERO))

    def positions(self, account: Account) -> dict[str, Decimal]:
        return {t: q for t, q in self.engine.positions(account.name).items()}

    async def balance_ep(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        bal = self.balance(account)
        return json_response({"balance": int(bal * 100), "balance_dollars": kp.dollars(bal),
                              "portfolio_value": int(bal * 100), "updated_ts": int(time.time())})

    async def positions_ep(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        items = []
        for ticker, q in sorted(self.positions(account).items()):
            if not q and not request.query.get("count_filter") == "all":
                continue
            fees, traded, last_ms = self._by_position.get((account.name, ticker),
                                                           (ZERO, ZERO, None))
            items.append({"ticker": ticker, "position": int(q), "position_fp": kp.count_fp(q),
                          "market_exposure": 0, "market_exposure_dollars": "0.0000",
                          "total_traded": int(traded * 100),
                          "total_traded_dollars": kp.dollars(traded),
                          "realized_pnl": 0, "realized_pnl_dollars": "0.0000",
                          "last_updated_ts": _iso(last_ms if last_ms is not None else now_ms()),
                          "exchange_index": 0,
                          "fees_paid": int(fees * 100),
                          "fees_paid_dollars": kp.dollars(fees),
                          "resting_orders_count": sum(
                              1 for o in self.orders.values() if o.account is account
                              and o.market.ticker == ticker and o.status == "resting")})
        return self._page(request, items, "market_positions", extra={"event_positions": []})

    def _page(self, request: web.Request, items: list[Any], key: str,
              extra: dict[str, Any] | None = None,
              render: Callable[[Any], Any] | None = None) -> web.Response:
        """One page of ``items``; ``render`` turns only that page's items into JSON."""
        q = request.query
        try:
            limit = min(int(q.get("limit", str(self.page_size))), 1000)
            start = int(q["cursor"]) if q.get("cursor") else 0
        except ValueError:
            raise kerr(400, kp.INVALID_ORDER, "invalid cursor or limit") from None
        page = items[start:start + max(limit, 1)]
        nxt = start + len(page)
        if render is not None:
            page = [render(item) for item in page]
        out = {key: page, "cursor": str(nxt) if nxt < len(items) else ""}
        out.update(extra or {})
        return json_response(out)

    # ------------------------------------------------------------------ orders

    def order_json(self, o: KOrder) -> dict[str, Any]:
        no_price = ONE - o.price
        outcome_price = o.price if o.side == "yes" else no_price
        remaining = o.count - o.filled if o.status == "resting" else ZERO
        return {
            "order_id": o.id, "user_id": o.account.name, "client_order_id": o.client_order_id,
            "ticker": o.market.ticker, "side": o.side, "action": o.action, "type": "limit",
            "status": o.status, "book_side": o.book_side,
            "outcome_side": "yes" if o.book_side == "bid" else "no",
            "yes_price": int(o.price * 100), "no_price": int(no_price * 100),
            "yes_price_dollars": kp.dollars(o.price), "no_price_dollars": kp.dollars(no_price),
            "price_dollars": kp.dollars(outcome_price),
            "exchange_index": 0,
            "fill_count": int(o.filled), "remaining_count": int(remaining),
            "initial_count": int(o.count), "fill_count_fp": kp.count_fp(o.filled),
            "remaining_count_fp": kp.count_fp(remaining), "initial_count_fp": kp.count_fp(o.count),
            "taker_fees": int(o.taker_fees * 100), "maker_fees": int(o.maker_fees * 100),
            "taker_fees_dollars": kp.dollars(o.taker_fees),
            "maker_fees_dollars": kp.dollars(o.maker_fees),
            "taker_fill_cost": int(o.taker_cost * 100), "maker_fill_cost": int(o.maker_cost * 100),
            "taker_fill_cost_dollars": kp.dollars(o.taker_cost),
            "maker_fill_cost_dollars": kp.dollars(o.maker_cost),
            "time_in_force": o.tif, "post_only": o.post_only,
            "expiration_time": None, "created_time": _iso(o.created_ms),
            "last_update_time": _iso(o.updated_ms or o.created_ms),
            "self_trade_prevention_type": "taker_at_cross", "order_group_id": None,
            "queue_position": 0,
        }

    def _parse_legacy(self, account: Account, body: Any) -> KOrder:
        if not isinstance(body, dict):
            raise kerr(400, kp.INVALID_ORDER, "invalid order")
        missing = [k for k in ("ticker", "side", "action", "count") if k not in body]
        if missing:
            raise kerr(400, kp.MISSING, f"missing parameters: {', '.join(missing)}")
        side, action = body["side"], body["action"]
        if side not in ("yes", "no") or action not in ("buy", "sell"):
            raise kerr(400, kp.INVALID_ORDER, "side must be yes|no and action buy|sell")
        m = self.by_ticker.get(str(body["ticker"]))
        if m is None:
            raise kerr(404, kp.MARKET_NOT_FOUND, "market not found")
        try:
            count = Decimal(str(body["count"]))
            if "yes_price" in body:
                price = Decimal(int(body["yes_price"])) / 100
            elif "no_price" in body:
                price = ONE - Decimal(int(body["no_price"])) / 100
            elif "yes_price_dollars" in body:
                price = Decimal(str(body["yes_price_dollars"]))
            elif "no_price_dollars" in body:
                price = ONE - Decimal(str(body["no_price_dollars"]))
            elif body.get("type") == "market":
                price = None  # type: ignore[assignment]
            else:
                raise kerr(400, kp.MISSING, "missing parameters: yes_price or no_price")
        except (InvalidOperation, ValueError, TypeError):
            raise kerr(400, kp.INVALID_ORDER, "invalid price or count") from None
        bid = (side == "yes") == (action == "buy")
        if price is None:  # a market order: the most aggressive price
            price = ONE - m.tick if bid else m.tick
        tif = body.get("time_in_force") or "good_till_canceled"
        if body.get("type") == "market" and tif == "good_till_canceled":
            tif = "fill_or_kill" if body.get("buy_max_cost") else "immediate_or_cancel"
        return self._new_order(account, m, "bid" if bid else "ask", price, count, tif,
                               bool(body.get("post_only", False)),
                               str(body.get("client_order_id") or ""), side, action, False)

    def _parse_v2(self, account: Account, body: Any) -> KOrder:
        if not isinstance(body, dict):
            raise kerr(400, kp.INVALID_ORDER, "invalid order")
        missing = [k for k in ("ticker", "side", "count", "price", "time_in_force",
                               "self_trade_prevention_type") if k not in body]
        if missing:
            raise kerr(400, kp.MISSING, f"missing parameters: {', '.join(missing)}")
        if body["side"] not in ("bid", "ask"):
            raise kerr(400, kp.INVALID_ORDER, "side must be bid or ask")
        m = self.by_ticker.get(str(body["ticker"]))
        if m is None:
            raise kerr(404, kp.MARKET_NOT_FOUND, "market not found")
        try:
            price, count = Decimal(str(body["price"])), Decimal(str(body["count"]))
        except (InvalidOperation, ValueError):
            raise kerr(400, kp.INVALID_ORDER, "invalid price or count") from None
        bid = body["side"] == "bid"
        return self._new_order(account, m, body["side"], price, count, body["time_in_force"],
                               bool(body.get("post_only", False)),
                               str(body.get("client_order_id") or ""),
                               "yes" if bid else "no", "buy", True)

    def _new_order(self, account: Account, m: KMarket, book_side: str, price: Decimal,
                   count: Decimal, tif: str, post_only: bool, cid: str, side: str, action: str,
                   v2: bool) -> KOrder:
        if tif not in kp.TIME_IN_FORCE:
            raise kerr(400, kp.INVALID_ORDER, f"invalid time_in_force {tif!r}")
        if not price.is_finite() or price % m.tick or not m.tick <= price <= ONE - m.tick:
            raise kerr(400, kp.INVALID_PRICE,
                       f"price {price} is not a valid price for this market (tick {m.tick})")
        if not count.is_finite() or count < 1 or count % 1:
            raise kerr(400, kp.INVALID_ORDER, "count must be a whole number of contracts >= 1")
        if post_only and tif != "good_till_canceled":
            raise kerr(400, kp.INVALID_ORDER, "post_only requires good_till_canceled")
        if cid and (account.name, cid) in self.by_client:
            raise kerr(409, kp.DUPLICATE, "an order with this client_order_id already exists")
        if len(cid) > 64:
            raise kerr(400, kp.INVALID_ORDER, "client_order_id is too long")
        order = KOrder(str(uuid.UUID(int=self._rng.getrandbits(128), version=4)), account, cid,
                       m, book_side, price, count, tif, post_only, now_ms(), side, action, v2)
        cost = self._cost(order, count)
        if self.balance(account) - self._reserved(account) < cost:
            raise kerr(400, kp.INSUFFICIENT_BALANCE, "insufficient balance")
        return order

    def _cost(self, o: KOrder, count: Decimal) -> Decimal:
        pos = self.engine.positions(o.account.name).get(o.market.ticker, ZERO)
        if o.book_side == "bid":  # buys YES; closes NO first
            return o.price * max(count - max(-pos, ZERO), ZERO)
        return (ONE - o.price) * max(count - max(pos, ZERO), ZERO)

    def _reserved(self, account: Account) -> Decimal:
        return sum((self._cost(o, o.count - o.filled) for o in self.orders.values()
                    if o.account is account and o.status == "resting"), ZERO)

    def _execute(self, o: KOrder) -> None:
        tif = {"good_till_canceled": TimeInForce.GTC, "immediate_or_cancel": TimeInForce.FAK,
               "fill_or_kill": TimeInForce.FOK}[o.tif]
        self._matches.clear()
        try:
            o.engine_id = o.engine_id or o.id
            ack = self.engine.submit(o.account.name, o.engine_id, o.market.ticker,
                                     Side.BUY if o.book_side == "bid" else Side.SELL, o.price,
                                     o.count, tif, post_only=o.post_only, timestamp=time.time())
        except InvalidOrder as exc:
            raise kerr(400, kp.INVALID_ORDER, exc.message) from None
        if ack.status is OrderStatus.REJECTED:
            raise kerr(400, kp.POST_ONLY, "post only order would cross the book")
        if tif is TimeInForce.FOK and ack.status is OrderStatus.CANCELLED and not ack.filled:
            self._matches.clear()
            raise kerr(400, kp.FOK_NOT_FILLED,
                       "fill or kill order could not be fully filled")
        self.orders[o.id] = o
        if o.client_order_id:
            self.by_client[(o.account.name, o.client_order_id)] = o
        o.status = {OrderStatus.OPEN: "resting", OrderStatus.FILLED: "executed"}.get(
            ack.status, "canceled")
        o.updated_ms = now_ms()
        self._record_matches()
        self._push_order(o)
        self.publish_books()

    def _matches_append(self, match: Match) -> None:
        self._matches.append(match)

    def _record_matches(self) -> None:
        matches, self._matches = self._matches, []
        ts = now_ms()
        touched: list[KOrder] = []
        for m in matches:
            trade_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            for is_taker, cid, fee in ((True, m.taker_client_order_id, m.taker_fee),
                                       (False, m.maker_client_order_id, None)):
                order = self.orders.get(self._amended.get(cid, cid))
                if order is None:
                    continue  # the market maker's side
                if fee is None:
                    fee = kp.fee(m.size, m.maker_price, self.multiplier, kp.MAKER_COEFFICIENT) \
                        if self.maker_fees else ZERO
                    name = order.account.name
                    self.maker_fees_paid[name] = self.maker_fees_paid.get(name, ZERO) + fee
                yes_price = m.taker_price if is_taker else m.maker_price
                outcome_price = yes_price if order.side == "yes" else ONE - yes_price
                order.filled += m.size
                if is_taker:
                    order.taker_cost += m.size * outcome_price
                    order.taker_fees += fee
                else:
                    order.maker_cost += m.size * outcome_price
                    order.maker_fees += fee
                if order.status == "resting" and order.filled >= order.count:
                    order.status = "executed"
                order.updated_ms = ts
                fill = KFill(str(uuid.UUID(int=self._rng.getrandbits(128), version=4)), trade_id,
                             order, is_taker, m.size, yes_price, fee, ts)
                self._record_fill(fill)
                self._push_fill(fill)
                if order not in touched:
                    touched.append(order)
        for order in touched:
            self._push_order(order)

    def _record_fill(self, fill: KFill) -> None:
        order = fill.order
        ticker = order.market.ticker
        self.fills.append(fill)
        if fill.is_taker:
            self._volume[ticker] = self._volume.get(ticker, ZERO) + fill.count
        self._last_price[ticker] = fill.yes_price
        totals = self._by_position.setdefault((order.account.name, ticker), [ZERO, ZERO, 0])
        totals[0] += fill.fee
        totals[1] += fill.count * (fill.yes_price if order.side == "yes" else ONE - fill.yes_price)
        totals[2] = fill.ts_ms

    def v2_ack(self, o: KOrder) -> dict[str, Any]:
        filled = o.filled
        notional = o.taker_cost + o.maker_cost
        if o.side == "no":  # V2 reports YES-book prices
            notional = filled - notional
        out: dict[str, Any] = {
            "order_id": o.id, "client_order_id": o.client_order_id,
            "fill_count": kp.count_fp(filled),
            "remaining_count": kp.count_fp(o.count - filled if o.status == "resting" else ZERO),
            "ts_ms": o.updated_ms or o.created_ms}
        if filled:
            out["average_fill_price"] = kp.dollars(notional / filled)
            out["average_fee_paid"] = kp.dollars((o.taker_fees + o.maker_fees) / filled)
        return out

    async def _create(self, account: Account, body: Any, *, v2: bool) -> KOrder:
        o = self._parse_v2(account, body) if v2 else self._parse_legacy(account, body)
        if self.faults.draw(self.faults.spec.error_rate):
            raise kerr(500, kp.INTERNAL, "internal server error")
        self._execute(o)
        if self.faults.draw(self.faults.spec.accepted_timeout_rate):
            import asyncio
            await asyncio.sleep(self.faults.spec.hang_ms / 1000)
        return o

    async def create_legacy(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        o = await self._create(account, await self._json(request), v2=False)
        return json_response({"order": self.order_json(o)}, status=201)

    async def create_v2(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        o = await self._create(account, await self._json(request), v2=True)
        return json_response(self.v2_ack(o), status=201)

    async def _batch_create(self, request: web.Request, v2: bool) -> list[Any]:
        account = await self._write_auth(request)
        body = await self._json(request)
        items = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise kerr(400, kp.MISSING, "missing parameters: orders")
        if len(items) > 20:
            raise kerr(400, kp.INVALID_ORDER, "too many orders in batch (max 20)")
        out = []
        for item in items:
            cid = item.get("client_order_id") if isinstance(item, dict) else None
            try:
                o = self._parse_v2(account, item) if v2 else self._parse_legacy(account, item)
                self._execute(o)
            except web.HTTPException as exc:
                err = json.loads(exc.text or "{}").get("error")
                out.append({"client_order_id": cid, "error": err} if not v2 else
                           {"order_id": None, "client_order_id": cid, "error": err})
                continue
            if v2:
                out.append(dict(self.v2_ack(o), error=None))
            else:
                out.append({"client_order_id": o.client_order_id, "order": self.order_json(o),
                            "error": None})
        return out

    # Kalshi's batch create (docs.kalshi.com BatchCreateOrders / BatchCreateOrdersV2): 201
    # {"orders": [...]} with one result per order, in order, each with its own error.
    async def batch_create_legacy(self, request: web.Request) -> web.Response:
        return json_response({"orders": await self._batch_create(request, False)}, status=201)

    async def batch_create_v2(self, request: web.Request) -> web.Response:
        return json_response({"orders": await self._batch_create(request, True)}, status=201)

    def _cancel(self, account: Account, order_id: str) -> tuple[KOrder, Decimal]:
        o = self.orders.get(order_id)
        if o is None or o.account is not account:
            raise kerr(404, kp.NOT_FOUND, "order not found")
        if o.status != "resting":
            raise kerr(404, kp.NOT_FOUND, "order is not resting")
        self.engine.cancel(account.name, o.engine_id)
        reduced = o.count - o.filled
        o.status = "canceled"
        o.updated_ms = now_ms()
        self._push_order(o)
        self.publish_books()
        return o, reduced

    async def _decrease(self, request: web.Request) -> KOrder:
        """Decrease a resting order by ``reduce_by`` or to ``reduce_to`` (exactly one; K
        docs "Decrease Order"): it keeps its place in the queue; to zero it is cancelled."""
        account = await self._write_auth(request)
        body = await self._json(request)
        o = self.orders.get(request.match_info["order_id"])
        if o is None or o.account is not account:
            raise kerr(404, kp.NOT_FOUND, "order not found")
        if not isinstance(body, dict) or (body.get("reduce_by") is None) == \
                (body.get("reduce_to") is None):
            raise kerr(400, kp.INVALID_ORDER, "exactly one of reduce_by or reduce_to")
        try:
            remaining = o.count - o.filled
            by = Decimal(str(body["reduce_by"])) if body.get("reduce_by") is not None \
                else remaining - Decimal(str(body["reduce_to"]))
        except (InvalidOperation, ValueError):
            raise kerr(400, kp.INVALID_ORDER, "invalid reduce_by or reduce_to") from None
        if o.status != "resting":
            raise kerr(404, kp.NOT_FOUND, "order is not resting")
        if not by.is_finite() or by < 0 or by % 1:
            raise kerr(400, kp.INVALID_ORDER, "invalid reduce_by or reduce_to")
        by = min(by, remaining)
        self.engine.decrease(account.name, o.engine_id, by)
        o.count -= by
        if o.count <= o.filled:
            o.status = "canceled"
        o.updated_ms = now_ms()
        self._push_order(o)
        self.publish_books()
        return o

    async def _amend(self, request: web.Request, v2: bool) -> tuple[dict[str, Any], KOrder]:
        """Amend a resting order's price and/or total count (filled + to rest; K docs "Amend
        Order"): it keeps its id, leaves the queue and is matched again at the new price."""
        account = await self._write_auth(request)
        body = await self._json(request)
        o = self.orders.get(request.match_info["order_id"])
        if o is None or o.account is not account:
            raise kerr(404, kp.NOT_FOUND, "order not found")
        if not isinstance(body, dict) or body.get("ticker") != o.market.ticker:
            raise kerr(400, kp.INVALID_ORDER, "ticker does not match the order")
        try:
            if v2:
                if body.get("side") != o.book_side:
                    raise kerr(400, kp.INVALID_ORDER, "side does not match the order")
                price, count = Decimal(str(body["price"])), Decimal(str(body["count"]))
            else:
                if (body.get("side"), body.get("action")) != (o.side, o.action):
                    raise kerr(400, kp.INVALID_ORDER, "side/action do not match the order")
                count = Decimal(str(body.get("count", o.count)))
                price = o.price
                if "yes_price" in body:
                    price = Decimal(int(body["yes_price"])) / 100
                elif "no_price" in body:
                    price = ONE - Decimal(int(body["no_price"])) / 100
                elif "yes_price_dollars" in body:
                    price = Decimal(str(body["yes_price_dollars"]))
                elif "no_price_dollars" in body:
                    price = ONE - Decimal(str(body["no_price_dollars"]))
        except (KeyError, InvalidOperation, ValueError, TypeError):
            raise kerr(400, kp.INVALID_ORDER, "invalid price or count") from None
        if o.status != "resting":
            raise kerr(404, kp.NOT_FOUND, "order is not resting")
        m = o.market
        if not price.is_finite() or price % m.tick or not m.tick <= price <= ONE - m.tick:
            raise kerr(400, kp.INVALID_PRICE,
                       f"price {price} is not a valid price for this market (tick {m.tick})")
        if not count.is_finite() or count % 1 or count <= o.filled:
            raise kerr(400, kp.INVALID_ORDER, "count must be whole and above the filled count")
        old = self.order_json(o)
        new_cid = str(body.get("updated_client_order_id") or "")
        if new_cid and new_cid != o.client_order_id:
            if (account.name, new_cid) in self.by_client:
                raise kerr(409, kp.DUPLICATE, "an order with this client_order_id already exists")
            self.by_client.pop((account.name, o.client_order_id), None)
            o.client_order_id = new_cid
            self.by_client[(account.name, new_cid)] = o
        self.engine.cancel(account.name, o.engine_id)
        o.engine_id = f"{o.id}#{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"
        self._amended[o.engine_id] = o.id
        o.price, o.count = price, count
        self._matches.clear()
        ack = self.engine.submit(account.name, o.engine_id, m.ticker,
                                 Side.BUY if o.book_side == "bid" else Side.SELL, price,
                                 count - o.filled, TimeInForce.GTC, timestamp=time.time())
        o.updated_ms = now_ms()
        self._record_matches()
        if ack.status is not OrderStatus.OPEN and o.status == "resting":
            o.status = "executed"
        self._push_order(o)
        self.publish_books()
        return old, o

    async def amend_legacy(self, request: web.Request) -> web.Response:
        old, o = await self._amend(request, v2=False)
        return json_response({"old_order": old, "order": self.order_json(o)})

    async def amend_v2(self, request: web.Request) -> web.Response:
        _, o = await self._amend(request, v2=True)
        return json_response(self.v2_ack(o))

    async def decrease_legacy(self, request: web.Request) -> web.Response:
        return json_response({"order": self.order_json(await self._decrease(request))})

    async def decrease_v2(self, request: web.Request) -> web.Response:
        o = await self._decrease(request)
        remaining = o.count - o.filled if o.status == "resting" else ZERO
        return json_response({"order_id": o.id, "client_order_id": o.client_order_id,
                              "remaining_count": kp.count_fp(remaining), "ts_ms": o.updated_ms})

    async def cancel_legacy(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        o, reduced = self._cancel(account, request.match_info["order_id"])
        return json_response({"order": self.order_json(o), "reduced_by": int(reduced),
                              "reduced_by_fp": kp.count_fp(reduced)})

    async def cancel_v2(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        o, reduced = self._cancel(account, request.match_info["order_id"])
        return json_response({"order_id": o.id, "client_order_id": o.client_order_id,
                              "reduced_by": kp.count_fp(reduced), "ts_ms": o.updated_ms})

    async def batch_cancel_legacy(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        body = await self._json(request)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            raise kerr(400, kp.MISSING, "missing parameters: ids")
        out = []
        for oid in ids:
            try:
                o, reduced = self._cancel(account, str(oid))
                out.append({"order_id": o.id, "order": self.order_json(o),
                            "reduced_by": int(reduced), "error": None})
            except web.HTTPException as exc:
                out.append({"order_id": oid, "order": None, "reduced_by": 0,
                            "error": json.loads(exc.text or "{}").get("error")})
        return json_response({"orders": out})

    async def batch_cancel_v2(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        body = await self._json(request)
        items = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise kerr(400, kp.MISSING, "missing parameters: orders")
        out = []
        for item in items:
            oid = str(item.get("order_id")) if isinstance(item, dict) else ""
            try:
                o, reduced = self._cancel(account, oid)
                out.append({"order_id": o.id, "client_order_id": o.client_order_id,
                            "reduced_by": kp.count_fp(reduced), "ts_ms": o.updated_ms,
                            "error": None})
            except web.HTTPException as exc:
                out.append({"order_id": oid, "client_order_id": None, "reduced_by": "0.00",
                            "error": json.loads(exc.text or "{}").get("error")})
        return json_response({"orders": out})

    async def cancel_all_v2(self, request: web.Request) -> web.Response:
        account = await self._write_auth(request)
        self.cancel_account(account)
        return web.Response(status=204)

    def cancel_account(self, account: Account) -> None:
        for o in list(self.orders.values()):
            if o.account is account and o.status == "resting":
                self._cancel(account, o.id)

    def _queue(self, o: KOrder) -> dict[str, Any]:
        """Contracts ahead of the order at its price (K docs: price-time priority); both the
        3.2 SDK's integer and the current ``_fp`` string."""
        ahead = self.engine.queue_ahead(o.account.name, o.engine_id) or ZERO
        return {"queue_position": int(ahead), "queue_position_fp": kp.count_fp(ahead)}

    async def queue_position(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        o = self.orders.get(request.match_info["order_id"])
        if o is None or o.account is not account or o.status != "resting":
            raise kerr(404, kp.NOT_FOUND, "order not found")
        return json_response(self._queue(o))

    async def queue_positions(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        tickers = {t for t in request.query.get("market_tickers", "").split(",") if t}
        event = request.query.get("event_ticker")
        return json_response({"queue_positions": [
            dict(self._queue(o), order_id=o.id, market_ticker=o.market.ticker)
            for o in self.orders.values() if o.account is account and o.status == "resting"
            and (not tickers or o.market.ticker in tickers)
            and (not event or o.market.event_ticker == event)]})

    async def get_order(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        o = self.orders.get(request.match_info["order_id"])
        if o is None or o.account is not account:
            raise kerr(404, kp.NOT_FOUND, "order not found")
        return json_response({"order": self.order_json(o)})

    async def list_orders(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        q = request.query
        items = [self.order_json(o) for o in self.orders.values() if o.account is account
                 and (not q.get("ticker") or o.market.ticker == q["ticker"])
                 and (not q.get("status") or o.status == q["status"])
                 and (not q.get("client_order_id") or o.client_order_id == q["client_order_id"])]
        items.reverse()  # newest first, as the venue lists them
        return self._page(request, items, "orders")

    def fill_json(self, f: KFill) -> dict[str, Any]:
        o = f.order
        return {
            "fill_id": f.fill_id, "trade_id": f.trade_id, "order_id": o.id,
            "client_order_id": o.client_order_id, "ticker": o.market.ticker,
            "market_ticker": o.market.ticker, "side": o.side, "action": o.action,
            # buy-yes and sell-no are YES bids: the outcome side is "yes" (K SDK Order docs)
            "outcome_side": "yes" if o.book_side == "bid" else "no",
            "exchange_index": 0,
            "book_side": o.book_side, "count": int(f.count), "count_fp": kp.count_fp(f.count),
            "yes_price": int(f.yes_price * 100), "no_price": int((ONE - f.yes_price) * 100),
            "yes_price_fixed": kp.dollars(f.yes_price),
            "no_price_fixed": kp.dollars(ONE - f.yes_price),
            "yes_price_dollars": kp.dollars(f.yes_price),
            "no_price_dollars": kp.dollars(ONE - f.yes_price), "is_taker": f.is_taker,
            # deprecated in the SDK ("use yes_price or no_price"); its unit is not
            # documented: the simulator sends the fill's own side's price in dollars
            "price": float(f.yes_price if o.side == "yes" else ONE - f.yes_price),
            "fee_cost": kp.dollars(f.fee), "created_time": _iso(f.ts_ms), "ts": f.ts_ms // 1000,
        }

    async def fills_ep(self, request: web.Request) -> web.Response:
        account = await self._read_auth(request)
        q = request.query
        items = [self.fill_json(f) for f in reversed(self.fills) if f.order.account is account
                 and (not q.get("ticker") or f.order.market.ticker == q["ticker"])
                 and (not q.get("order_id") or f.order.id == q["order_id"])]
        return self._page(request, items, "fills")

    # ------------------------------------------------------------------ market maker

    def step(self) -> None:
        self.process.step()
        self.requote()

    def requote(self, states: Sequence[Any] | None = None, *, publish: bool = True) -> None:
        """The scenario's YES and NO quotes on one YES book: NO bids become YES asks at
        1 - q, NO asks YES bids; an intra-market YES+NO window cannot exist here.
        ``states``: the markets to requote (default: all); then what changed is published."""
        engine = self.engine
        for st in self.process.states if states is None else states:
            key = st.quote_key()
            ticker = st.market.yes.split("#")[0]
            last = self._quoted.get(ticker)
            if last is not None and last == (key, engine.sequence(ticker)):
                continue
            sides: dict[Side, dict[Decimal, Decimal]] = {Side.BUY: {}, Side.SELL: {}}
            for inst, side, levels in self.process.quotes(st):
                yes = inst.endswith("#yes")
                for price, size in levels:
                    book_side = Side.BUY if (side == "bid") == yes else Side.SELL
                    p = price if yes else ONE - price
                    sides[book_side][p] = sides[book_side].get(p, ZERO) + size
            for side in (Side.SELL, Side.BUY):
                self._matches.clear()
                engine.set_liquidity(MARKET_MAKER, ticker, side, sorted(sides[side].items()),
                                     timestamp=time.time())
                self._record_matches()
            self._quoted[ticker] = (key, engine.sequence(ticker))
        if publish:
            self.publish_books()

    # ------------------------------------------------------------------ websocket

    def publish_books(self) -> None:
        subs = [(ws, st) for ws, st in self.hub.sockets.items() if st.get("book_sid")]
        touched = self.engine.take_changed()  # only markets whose books moved: O(changes)
        for m in (self.by_ticker[t] for t in sorted(touched) if t in self.by_ticker):
            seq = self.engine.sequence(m.ticker)
            if self._published_seq.get(m.ticker) == seq:
                continue
            self._published_seq[m.ticker] = seq
            yes, no = self.book_sides(m)
            new = (dict(yes), dict(no))
            old = self._published.get(m.ticker, ({}, {}))
            self._published[m.ticker] = new
            if not subs:
                continue
            deltas = []
            for idx, side in ((0, "yes"), (1, "no")):
                for price in sorted(set(old[idx]) | set(new[idx])):
                    d = new[idx].get(price, ZERO) - old[idx].get(price, ZERO)
                    if d:
                        deltas.append((price, d, side))
            for ws, st in subs:
                if m.ticker not in st["tickers"]:
                    continue
                for price, d, side in deltas:
                    st["seq"] += 1
                    self.hub.send(ws, {"type": "orderbook_delta", "sid": st["book_sid"],
                                       "seq": st["seq"], "msg": {
                                           "market_ticker": m.ticker,
                                           "market_id": m.market_id,
                                           "price_dollars": kp.dollars(price),
                                           "delta_fp": kp.count_fp(d), "side": side,
                                           "ts": _iso(now_ms()), "ts_ms": now_ms()}})

    def _snapshot(self, ws: web.WebSocketResponse, st: dict[str, Any], ticker: str) -> None:
        m = self.by_ticker[ticker]
        yes, no = self._published.get(ticker) or tuple(map(dict, self.book_sides(m)))
        st["seq"] += 1
        self.hub.send(ws, {"type": "orderbook_snapshot", "sid": st["book_sid"], "seq": st["seq"],
                           "msg": {"market_ticker": ticker, "market_id": m.market_id,
                                   "yes_dollars_fp": [[kp.dollars(p), kp.count_fp(s)]
                                                      for p, s in sorted(yes.items())],
                                   "no_dollars_fp": [[kp.dollars(p), kp.count_fp(s)]
                                                     for p, s in sorted(no.items())]}})

    async def ws(self, request: web.Request) -> web.StreamResponse:
        account = self._auth(request, kp.WS_PATH)
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        st: dict[str, Any] = {"account": account, "seq": 0, "tickers": set(), "book_sid": 0,
                              "fill_sid": 0, "order_sid": 0, "next_sid": 1}
        self.hub.add(ws, st)

        def on_text(text: str) -> None:
            try:
                msg = json.loads(text)
                cmd, params, mid = msg["cmd"], msg.get("params", {}), msg.get("id")
            except (ValueError, KeyError, TypeError):
                self.hub.send(ws, {"id": None, "type": "error",
                                   "msg": {"code": 1, "msg": "Unable to process message"}})
                return
            if cmd != "subscribe":
                self.hub.send(ws, {"id": mid, "type": "error",
                                   "msg": {"code": 5, "msg": "Unknown command"}})
                return
            tickers = params.get("market_tickers") or (
                [params["market_ticker"]] if params.get("market_ticker") else [])
            for channel in params.get("channels", []):
                key = {"orderbook_delta": "book_sid", "fill": "fill_sid",
                       "user_orders": "order_sid"}.get(channel)
                if key is None:
                    self.hub.send(ws, {"id": mid, "type": "error",
                                       "msg": {"code": 8, "msg": "Unknown channel name"}})
                    continue
                if not st[key]:
                    st[key] = st["next_sid"]
                    st["next_sid"] += 1
                self.hub.send(ws, {"id": mid, "type": "subscribed",
                                   "msg": {"channel": channel, "sid": st[key]}})
                if channel == "orderbook_delta":
                    for t in tickers:
                        if t in self.by_ticker and t not in st["tickers"]:
                            st["tickers"].add(t)
                            self._snapshot(ws, st, t)

        try:
            await ws_loop(ws, on_text)
        finally:
            self.hub.remove(ws)
        return ws

    def _push_fill(self, f: KFill) -> None:
        for ws, st in self.hub.sockets.items():
            if st["account"] is f.order.account and st["fill_sid"]:
                pos = self.engine.positions(st["account"].name).get(f.order.market.ticker, ZERO)
                msg = self.fill_json(f)
                msg.update({"post_position_fp": kp.count_fp(pos), "ts_ms": f.ts_ms})
                self.hub.send(ws, {"type": "fill", "sid": st["fill_sid"], "msg": msg})

    def _push_order(self, o: KOrder) -> None:
        for ws, st in self.hub.sockets.items():
            if st["account"] is o.account and st["order_sid"]:
                self.hub.send(ws, {"type": "user_order", "sid": st["order_sid"],
                                   "msg": self.order_json(o)})


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
