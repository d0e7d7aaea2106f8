"""The simulated Polymarket CLOB: REST (L1/L2 auth, orders, queries) and the two websockets.

Orders are V2 (or V1) EIP-712 signed; the signer is recovered and must be the API key's
address. Matching is the paper engine with complementary matching (MINT/MERGE) between each
market's YES and NO tokens. A taker's execution is one trade (with one entry per maker
order); trades go MATCHED -> MINED -> CONFIRMED, or FAILED when the scenario says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from pr3dict_core.model import ZERO, Market, OrderStatus, Side, TimeInForce
from pr3dict_paper.matching import InvalidOrder, Match, MatchingEngine
from pr3dict_paper.scenario import MarketProcess, ScenarioSpec
from pr3dict_polymarket import protocol as pm
from pr3dict_polymarket.signing import (
    OrderDomain,
    SignatureError,
    clob_auth_digest,
    hmac_signature,
    recover,
    to_checksum_address,
)

from .common import Account, Faults, Hub, http_error, json_response, now_ms, ws_loop

if TYPE_CHECKING:
    from .server import SimServer

MARKET_MAKER = "mm"
VENUE = "polymarket"
ENGINE_MIN_SIZE = Decimal("0.0001")  # the venue's size rules are checked before the engine


@attrs.define(eq=False)
class PMarket:
    id: str  # scenario id
    condition_id: str
    question_id: str
    yes: str
    no: str
    title: str
    tick: Decimal
    min_size: Decimal
    neg_risk: bool
    fee_rate: Decimal
    neg_risk_market_id: str = ""
    last_trade: Decimal | None = None


@attrs.define(eq=False)
class Creds:
    account: Account
    api_key: str
    secret: str
    passphrase: str


@attrs.define(eq=False)
class POrder:
    id: str
    account: Account
    owner: str  # api key
    maker: str
    market: PMarket
    token: str
    side: str  # BUY | SELL
    price: Decimal
    size: Decimal
    order_type: str
    post_only: bool
    expiration: int
    created: int
    status: str = "LIVE"
    delayed: bool = False
    trades: list[str] = attrs.field(factory=list)
    filled: Decimal = ZERO

    @property
    def outcome(self) -> str:
        return "Yes" if self.token == self.market.yes else "No"


@attrs.define(eq=False)
class PTrade:
    id: str
    taker: POrder | None  # None when the market maker took
    taker_account: str
    market: PMarket
    token: str
    side: str
    size: Decimal
    price: Decimal
    fee: Decimal
    makers: list[tuple[POrder | None, Match]]
    match_time: int
    status: str = "MATCHED"
    updated: int = 0
    tx_hash: str = ""  # set once MINED: the settlement transaction (py-clob-client-v2 waits)


class PolymarketSim:
    def __init__(self, server: SimServer, spec: ScenarioSpec):
        self.server = server
        self.spec = spec
        sim = spec.sim
        self.faults: Faults = server.faults
        self.chain_id = sim.chain_id
        self.engine = MatchingEngine(on_match=self._matches_append)
        self._matches: list[Match] = []
        fee_rate = sim.polymarket_fee_rate
        if fee_rate is None:
            fee_rate = spec.effective_fee_rate if spec.fee_model == "polymarket" else Decimal(0)
        min_size = sim.polymarket_min_size or spec.min_size
        event_of = {mid: ev for ev in spec.events for mid in ev.markets}
        self.markets: list[PMarket] = []
        for ms in spec.markets:
            cid, qid, yes, no = pm.sim_market_ids(ms.id)
            ev = event_of.get(ms.id)
            self.markets.append(PMarket(
                ms.id, cid, qid, yes, no, ms.title or ms.id, spec.tick_size, min_size,
                ev is not None, fee_rate,
                ("0x" + hashlib.sha256(ev.id.encode()).hexdigest()) if ev else ""))
        self.by_condition = {m.condition_id: m for m in self.markets}
        self.by_token = {t: m for m in self.markets for t in (m.yes, m.no)}
        for m in self.markets:
            for t in (m.yes, m.no):
                self.engine.add_instrument(t, tick_size=m.tick, min_size=ENGINE_MIN_SIZE)
            self.engine.pair(m.yes, m.no)
        self.process = MarketProcess(
            spec, [Market(VENUE, m.id, m.yes, m.no) for m in self.markets], spec.seed)
        self._quoted: dict[str, tuple[object, int, int]] = {}
        self.domains = {(v, nr): OrderDomain.for_market(self.chain_id, nr, v)
                        for v in (1, 2) for nr in (False, True)}
        self.creds: dict[str, Creds] = {}
        self.orders: dict[str, POrder] = {}
        self.trades: dict[str, PTrade] = {}
        self.trade_log: list[PTrade] = []
        self.fees_paid: dict[str, Decimal] = {}
        self.cash_adj: dict[str, Decimal] = {}
        self.pos_adj: dict[str, dict[str, Decimal]] = {}
        self.market_hub = Hub()
        self.user_hub = Hub()
        self._published: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._published_seq: dict[str, int] = {}
        self._uuid_rng = server.rng
        self.page_size = server.page_size

    # ------------------------------------------------------------------ routes

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        for path, handler in (
            ("/", self.ok), ("/time", self.time), ("/version", self.version), ("/ok", self.ok),
            ("/simplified-markets", self.list_simplified), ("/sampling-markets", self.list_markets),
            ("/sampling-simplified-markets", self.list_simplified),
            ("/markets-by-token/{token_id}", self.market_by_token),
            ("/auth/api-keys", self.api_keys),
            ("/auth/ban-status/closed-only", self.closed_only),
            ("/notifications", self.notifications), ("/order-scoring", self.order_scoring),
            ("/book", self.book), ("/tick-size", self.tick_size), ("/neg-risk", self.neg_risk),
            ("/fee-rate", self.fee_rate), ("/midpoint", self.midpoint), ("/price", self.price),
            ("/spread", self.spread), ("/last-trade-price", self.last_trade_price),
            ("/markets", self.list_markets), ("/markets/{condition_id}", self.get_market),
            ("/clob-markets/{condition_id}", self.clob_market),
            ("/auth/derive-api-key", self.derive_api_key),
            ("/data/order/{order_id}", self.get_order), ("/data/orders", self.get_orders),
            ("/data/trades", self.get_trades), ("/balance-allowance", self.balance_allowance),
            ("/balance-allowance/update", self.balance_allowance),
            ("/ws/market", self.ws_market), ("/ws/user", self.ws_user),
        ):
            r.add_get(path, handler)
        r.add_post("/books", self.books)
        r.add_post("/midpoints", self.midpoints)
        r.add_post("/prices", self.prices)
        r.add_post("/spreads", self.spreads)
        r.add_post("/last-trades-prices", self.last_trades_prices)
        r.add_delete("/notifications", self.drop_notifications)
        r.add_post("/orders-scoring", self.orders_scoring)
        r.add_delete("/auth/api-key", self.delete_api_key)
        r.add_post("/auth/api-key", self.create_api_key)
        r.add_post("/order", self.post_order)
        r.add_post("/orders", self.post_orders)
        r.add_delete("/order", self.cancel_order)
        r.add_delete("/orders", self.cancel_orders)
        r.add_delete("/cancel-all", self.cancel_all)
        r.add_delete("/cancel-market-orders", self.cancel_market_orders)
        r.add_post("/v1/heartbeats", self.heartbeat)

    # ------------------------------------------------------------------ market data

    async def time(self, request: web.Request) -> web.Response:
        return json_response(int(time.time()))

    async def version(self, request: web.Request) -> web.Response:
        return json_response({"version": 2})

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text='"OK"', content_type="application/json")

    def _token(self, request: web.Request, key: str = "token_id") -> tuple[PMarket, str]:
        token = request.query.get(key, "")
        if not token.isdigit():
            raise http_error(400, {"error": "Invalid token id"})
        market = self.by_token.get(token)
        if market is None:
            raise http_error(404, {"error": pm.ERR_NO_BOOK})
        return market, token

    def book_json(self, market: PMarket, token: str) -> dict[str, Any]:
        bids, asks = self.engine.book(token)
        summary = {
            "market": market.condition_id, "asset_id": token, "timestamp": str(now_ms()),
            "hash": "",
            # best bid and best ask are the LAST elements, as the CLOB sends them
            "bids": [{"price": pm.dec(lv.price), "size": pm.dec(lv.size)}
                     for lv in reversed(bids)],
            "asks": [{"price": pm.dec(lv.price), "size": pm.dec(lv.size)}
                     for lv in reversed(asks)],
            "min_order_size": pm.dec(market.min_size), "tick_size": pm.dec(market.tick),
            "neg_risk": market.neg_risk,
            "last_trade_price": pm.dec(market.last_trade) if market.last_trade else "",
        }
        summary["hash"] = hashlib.sha1(json.dumps(summary, separators=(",", ":")).encode()
                                       ).hexdigest()
        return summary

    async def book(self, request: web.Request) -> web.Response:
        market, token = self._token(request)
        return json_response(self.book_json(market, token))

    async def books(self, request: web.Request) -> web.Response:
        """``POST /books``: ``[{"token_id"}]`` (at most 500) -> ``[OrderBookSummary]``, one per
        known token, as py-clob-client's ``get_order_books(params=[BookParams(...)])`` sends
        and reads it (shared/research/venues.md A2; docs.polymarket.com, "Get order books")."""
        try:
            items = json.loads(await request.text())
            tokens = [str(item["token_id"]) for item in items]
        except (ValueError, TypeError, KeyError):
            raise http_error(400, {"error": "Invalid payload"}) from None
        if len(tokens) > 500:
            raise http_error(400, {"error": "Too many token ids, max allowed: 500"})
        out = []
        for token in tokens:
            market = self.by_token.get(token)
            if market is not None:
                out.append(self.book_json(market, token))
        return json_response(out)

    async def _book_params(self, request: web.Request) -> list[tuple[str, str]]:
        """``[{"token_id", "side"?}]`` bodies of the batch price endpoints (max 500)."""
        try:
            items = json.loads(await request.text())
            out = [(str(i["token_id"]), str(i.get("side", ""))) for i in items]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise http_error(400, {"error": "Invalid payload"}) from None
        if len(out) > 500:
            raise http_error(400, {"error": "Too many token ids, max allowed: 500"})
        return [(t, side) for t, side in out if t in self.by_token]

    async def midpoints(self, request: web.Request) -> web.Response:
        out = {}
        for token, _ in await self._book_params(request):
            bid, ask = self._best(token)
            if bid is not None and ask is not None:
                out[token] = pm.dec((bid + ask) / 2)
        return json_response(out)

    async def prices(self, request: web.Request) -> web.Response:
        out: dict[str, dict[str, str]] = {}
        for token, side in await self._book_params(request):
            bid, ask = self._best(token)
            for s in ((side,) if side in ("BUY", "SELL") else ("BUY", "SELL")):
                value = bid if s == "BUY" else ask
                if value is not None:
                    out.setdefault(token, {})[s] = pm.dec(value)
        return json_response(out)

    async def spreads(self, request: web.Request) -> web.Response:
        out = {}
        for token, _ in await self._book_params(request):
            bid, ask = self._best(token)
            if bid is not None and ask is not None:
                out[token] = pm.dec(ask - bid)
        return json_response(out)

    async def last_trades_prices(self, request: web.Request) -> web.Response:
        return json_response([dict(self._last_trade(self.by_token[t], t), token_id=t)
                              for t, _ in await self._book_params(request)])

    async def tick_size(self, request: web.Request) -> web.Response:
        market, _ = self._token(request)
        return json_response({"minimum_tick_size": float(market.tick)})

    async def neg_risk(self, request: web.Request) -> web.Response:
        market, _ = self._token(request)
        return json_response({"neg_risk": market.neg_risk})

    async def fee_rate(self, request: web.Request) -> web.Response:
        market, _ = self._token(request)
        return json_response({"base_fee": int(market.fee_rate * 10000)})

    def _best(self, token: str) -> tuple[Decimal | None, Decimal | None]:
        bids, asks = self.engine.book(token, 1)
        return (bids[0].price if bids else None), (asks[0].price if asks else None)

    async def midpoint(self, request: web.Request) -> web.Response:
        _, token = self._token(request)
        bid, ask = self._best(token)
        if bid is None or ask is None:
            raise http_error(404, {"error": "No orderbook exists for the requested token id"})
        return json_response({"mid": pm.dec((bid + ask) / 2)})

    async def price(self, request: web.Request) -> web.Response:
        _, token = self._token(request)
        side = request.query.get("side", "")
        if side not in ("BUY", "SELL"):
            raise http_error(400, {"error": "Invalid side"})
        bid, ask = self._best(token)
        # the live CLOB answers the best bid for BUY and the best ask for SELL (the side of
        # the book's resting orders; py-clob-client PR #78)
        value = bid if side == "BUY" else ask
        if value is None:
            raise http_error(404, {"error": pm.ERR_NO_BOOK})
        return json_response({"price": pm.dec(value)})

    async def spread(self, request: web.Request) -> web.Response:
        _, token = self._token(request)
        bid, ask = self._best(token)
        if bid is None or ask is None:
            raise http_error(404, {"error": pm.ERR_NO_BOOK})
        return json_response({"spread": pm.dec(ask - bid)})

    async def last_trade_price(self, request: web.Request) -> web.Response:
        market, token = self._token(request)
        return json_response(self._last_trade(market, token))

    def _last_trade(self, market: PMarket, token: str) -> dict[str, Any]:
        """``{"price", "side"}`` of the token's last trade (docs: get-last-trade-price)."""
        for t in reversed(self.trade_log):
            if t.token == token:
                return {"price": pm.dec(t.price), "side": t.side}
        return {"price": "0.5", "side": ""}

    def token_price(self, token: str) -> float:
        """A token's price in ``/markets``: the book's midpoint, else its last trade."""
        bid, ask = self._best(token)
        if bid is not None and ask is not None:
            return float((bid + ask) / 2)  # a JSON number on the wire, as the CLOB sends it
        return float(self._last_trade(self.by_token[token], token)["price"])

    def tokens_json(self, m: PMarket) -> list[dict[str, Any]]:
        return [{"token_id": t, "outcome": o, "price": self.token_price(t), "winner": False}
                for t, o in ((m.yes, "Yes"), (m.no, "No"))]

    def market_json(self, m: PMarket) -> dict[str, Any]:
        return {
            "condition_id": m.condition_id, "question_id": m.question_id, "question": m.title,
            "market_slug": m.id, "tokens": self.tokens_json(m),
            "minimum_order_size": float(m.min_size), "minimum_tick_size": float(m.tick),
            "neg_risk": m.neg_risk, "neg_risk_market_id": m.neg_risk_market_id,
            "neg_risk_request_id": "", "accepting_orders": True, "active": True,
            "closed": False, "enable_order_book": True, "maker_base_fee": 0,
            "taker_base_fee": int(m.fee_rate * 10000), "seconds_delay": 0,
            "end_date_iso": "", "tags": [], "rewards": None,
        }

    def simplified_json(self, m: PMarket) -> dict[str, Any]:
        return {"condition_id": m.condition_id, "tokens": self.tokens_json(m), "rewards": None,
                "active": True, "closed": False, "archived": False, "accepting_orders": True}

    async def list_markets(self, request: web.Request) -> web.Response:
        """``/markets`` and ``/sampling-markets`` (every simulated market is "sampling")."""
        return self._page(request, self.markets, self.market_json)

    async def list_simplified(self, request: web.Request) -> web.Response:
        return self._page(request, self.markets, self.simplified_json)

    async def market_by_token(self, request: web.Request) -> web.Response:
        """The market of one token (py-clob-client-v2 resolves a token's condition with it;
        beyond ``condition_id`` the live shape is not documented)."""
        m = self.by_token.get(request.match_info["token_id"])
        if m is None:
            raise http_error(404, {"error": pm.ERR_MARKET})
        return json_response({"condition_id": m.condition_id, "primary_token_id": m.yes,
                              "secondary_token_id": m.no})

    def _market(self, request: web.Request) -> PMarket:
        market = self.by_condition.get(request.match_info["condition_id"])
        if market is None:
            raise http_error(404, {"error": pm.ERR_MARKET})
        return market

    async def get_market(self, request: web.Request) -> web.Response:
        return json_response(self.market_json(self._market(request)))

    async def clob_market(self, request: web.Request) -> web.Response:
        m = self._market(request)
        info: dict[str, Any] = {
            "c": m.condition_id, "t": [{"t": m.yes, "o": "Yes"}, {"t": m.no, "o": "No"}],
            "mts": float(m.tick), "mos": float(m.min_size), "ao": True, "r": None,
            "mbf": 0, "tbf": int(m.fee_rate * 10000)}
        if m.neg_risk:
            info["nr"] = True
        if m.fee_rate:
            info["fd"] = {"r": float(m.fee_rate), "e": 1, "to": True}
        return json_response(info)

    # ------------------------------------------------------------------ auth

    def _skew_ok(self, ts: str) -> bool:
        try:
            return abs(time.time() - int(ts)) <= self.spec.sim.max_clock_skew_s
        except ValueError:
            return False

    def _creds_for(self, account: Account, address: str, nonce: int) -> Creds:
        seed = f"{self.server.secret}|{address.lower()}|{nonce}".encode()
        digest = hashlib.sha256(seed).digest()
        api_key = str(uuid.UUID(bytes=digest[:16], version=4))
        creds = self.creds.get(api_key)
        if creds is None:
            import base64
            secret = base64.urlsafe_b64encode(hashlib.sha256(digest + b"secret").digest()
                                              ).decode()
            passphrase = hashlib.sha256(digest + b"pass").hexdigest()
            creds = self.creds[api_key] = Creds(account, api_key, secret, passphrase)
        return creds

    def _l1(self, request: web.Request) -> Creds:
        h = request.headers
        address, sig = h.get("POLY_ADDRESS", ""), h.get("POLY_SIGNATURE", "")
        ts, nonce_text = h.get("POLY_TIMESTAMP", ""), h.get("POLY_NONCE", "0")
        try:
            nonce = int(nonce_text)
            digest = clob_auth_digest(address, ts, nonce, self.chain_id)
            signer = recover(digest, sig)
        except (ValueError, SignatureError):
            raise http_error(401, {"error": pm.ERR_L1}) from None
        if signer.lower() != address.lower() or not self._skew_ok(ts):
            raise http_error(401, {"error": pm.ERR_L1})
        account = self.server.account_by_address(signer)
        if account is None:
            raise http_error(401, {"error": pm.ERR_L1})
        return self._creds_for(account, signer, nonce)

    async def create_api_key(self, request: web.Request) -> web.Response:
        c = self._l1(request)
        return json_response({"apiKey": c.api_key, "secret": c.secret,
                              "passphrase": c.passphrase})

    derive_api_key = create_api_key

    async def api_keys(self, request: web.Request) -> web.Response:
        creds = self._l2(request, "")
        return json_response({"apiKeys": [c.api_key for c in self.creds.values()
                                          if c.account is creds.account]})

    async def delete_api_key(self, request: web.Request) -> web.Response:
        creds = self._l2(request, "")
        self.creds.pop(creds.api_key, None)
        return json_response("OK")

    async def closed_only(self, request: web.Request) -> web.Response:
        """Accounts are never restricted to closing positions in the simulator."""
        self._l2(request, "")
        return json_response({"closed_only": False})

    async def notifications(self, request: web.Request) -> web.Response:
        """No notifications are generated (the live venue sends e.g. order-fill notices)."""
        self._l2(request, "")
        return json_response([])

    async def order_scoring(self, request: web.Request) -> web.Response:
        """Whether an order earns liquidity rewards: the simulator runs no rewards program."""
        self._l2(request, "")
        return json_response({"scoring": False})

    async def orders_scoring(self, request: web.Request) -> web.Response:
        body = await request.text()
        self._l2(request, body)
        try:
            ids = [str(i) for i in json.loads(body)]
        except (ValueError, TypeError):
            raise http_error(400, {"error": "Invalid payload"}) from None
        return json_response({i: False for i in ids})

    async def drop_notifications(self, request: web.Request) -> web.Response:
        self._l2(request, "")
        return json_response("OK")

    def _l2(self, request: web.Request, body: str) -> Creds:
        h = request.headers
        creds = self.creds.get(h.get("POLY_API_KEY", ""))
        if creds is None or not hmac.compare_digest(h.get("POLY_PASSPHRASE", ""),
                                                    creds.passphrase):
            raise http_error(401, {"error": pm.ERR_UNAUTHORIZED})
        ts = h.get("POLY_TIMESTAMP", "")
        address = h.get("POLY_ADDRESS", "")
        if creds.account.polymarket_address is None or \
                address.lower() != creds.account.polymarket_address.lower():
            raise http_error(401, {"error": pm.ERR_UNAUTHORIZED})
        try:
            expected = hmac_signature(creds.secret, ts, request.method, request.path, body)
        except ValueError:
            raise http_error(401, {"error": pm.ERR_UNAUTHORIZED}) from None
        if not hmac.compare_digest(expected, h.get("POLY_SIGNATURE", "")) \
                or not self._skew_ok(ts):
            raise http_error(401, {"error": pm.ERR_UNAUTHORIZED})
        return creds

    # ------------------------------------------------------------------ ledger

    def balance(self, account: Account) -> Decimal:
        name = account.name
        return (account.balance + self.engine.cash(name) - self.fees_paid.get(name, ZERO)
                + self.cash_adj.get(name, ZERO))

    def positions(self, account: Account) -> dict[str, Decimal]:
        out = self.engine.positions(account.name)
        for token, qty in self.pos_adj.get(account.name, {}).items():
            out[token] = out.get(token, ZERO) + qty
        return out

    def _reserved(self, account: Account) -> tuple[Decimal, dict[str, Decimal]]:
        cash, shares = ZERO, {}
        for o in self.orders.values():
            if o.account is not account or o.status not in ("LIVE", "DELAYED"):
                continue
            left = o.size - o.filled
            if o.side == "BUY":
                cash += left * o.price
            else:
                shares[o.token] = shares.get(o.token, ZERO) + left
        return cash, shares

    # ------------------------------------------------------------------ orders

    def _parse_order(self, creds: Creds, item: Any) -> POrder:
        """Check one order object of a POST /order body; raises an error reply."""
        if not isinstance(item, dict) or not isinstance(item.get("order"), dict):
            raise http_error(400, {"error": pm.ERR_PAYLOAD})
        o = item["order"]
        if item.get("owner") != creds.api_key:
            raise http_error(400, {"error": pm.ERR_OWNER})
        order_type = item.get("orderType", "GTC")
        if order_type not in pm.ORDER_TYPES:
            raise http_error(400, {"error": pm.ERR_PAYLOAD})
        try:
            signer = to_checksum_address(o["signer"])
            maker = to_checksum_address(o["maker"])
            side = o["side"]
            token = str(o["tokenId"])
            maker_amount, taker_amount = int(o["makerAmount"]), int(o["takerAmount"])
            sig_type = int(o.get("signatureType", 0))
            version = 2 if "timestamp" in o and "feeRateBps" not in o else 1
            expiration = int(o.get("expiration") or 0)
            signature = str(o["signature"])
            if side not in ("BUY", "SELL"):
                raise ValueError(side)
        except (KeyError, ValueError, TypeError):
            raise http_error(400, {"error": pm.ERR_PAYLOAD}) from None
        if signer.lower() != (creds.account.polymarket_address or "").lower():
            raise http_error(400, {"error": pm.ERR_SIGNER})
        if sig_type == 0 and maker != signer:
            raise http_error(400, {"error": pm.ERR_PAYLOAD})
        market = self.by_token.get(token)
        if market is None:
            raise http_error(404, {"error": pm.ERR_MARKET})
        domain = self.domains[(version, market.neg_risk)]
        try:
            digest = domain.digest(o)
            if recover(digest, signature) != signer:
                raise SignatureError("signer mismatch")
        except (SignatureError, ValueError):
            raise http_error(401, {"error": pm.ERR_SIGNATURE}) from None
        order_id = "0x" + digest.hex()
        try:
            price, size = pm.implied(side, maker_amount, taker_amount)
        except ValueError:
            raise http_error(400, {"error": pm.ERR_PAYLOAD}) from None
        if order_id in self.orders:
            raise http_error(400, {"error": pm.err_duplicate(order_id)})
        tick = market.tick
        if order_type in ("FOK", "FAK") and side == "BUY":
            # A market BUY signs dollars (maker, 2 decimals) for shares (taker, <= 4
            # decimals): its implied price is off tick and the venue takes it (clob-client
            # PR #61); more precise amounts are refused (py-clob-client-v2 #99, rs #114).
            if maker_amount % 10_000 or taker_amount % 100:
                raise http_error(400, {"error": pm.ERR_MARKET_BUY_AMOUNTS})
            if not tick <= price <= 1 - tick:
                raise http_error(400, {"error": pm.err_tick(order_id, price, tick)})
        else:
            if price % tick or not tick <= price <= 1 - tick:
                raise http_error(400, {"error": pm.err_tick(order_id, price, tick)})
            if size % pm.SIZE_STEP:
                raise http_error(400, {"error": pm.ERR_BUY_AMOUNTS if side == "BUY"
                                       else pm.ERR_PAYLOAD})
        # minimum_order_size (shares) binds limit orders; a marketable BUY has the $1
        # minimum instead (py-clob-client #301, nautilus_trader #3874)
        if size < market.min_size and not (order_type in ("FOK", "FAK") and side == "BUY"):
            raise http_error(400, {"error": pm.err_size(order_id, size, market.min_size)})
        post_only = bool(item.get("postOnly", False))
        if post_only and order_type not in ("GTC", "GTD"):
            raise http_error(400, {"error": "invalid post-only order: only GTC and GTD orders "
                                            "can be post-only"})
        now = int(time.time())
        if order_type == "GTD":
            if expiration <= now + 60:
                raise http_error(400, {"error": pm.ERR_EXPIRATION})
        elif expiration:
            raise http_error(400, {"error": pm.ERR_EXPIRATION})
        if order_type in ("FOK", "FAK") and side == "BUY" and price * size < 1:
            raise http_error(400, {"error": pm.err_marketable_min(pm.dec(price * size))})
        cash, shares = self._reserved(creds.account)
        if side == "BUY":
            if self.balance(creds.account) - cash < price * size:
                raise http_error(400, {"error": pm.ERR_BALANCE})
        elif self.positions(creds.account).get(token, ZERO) - shares.get(token, ZERO) < size:
            raise http_error(400, {"error": pm.ERR_BALANCE})
        return POrder(order_id, creds.account, creds.api_key, maker, market, token, side, price,
                      size, order_type, post_only, expiration, now)

    async def _place(self, creds: Creds, item: Any, *, faults: bool) -> dict[str, Any]:
        order = self._parse_order(creds, item)
        if faults and self.faults.draw(self.faults.spec.error_rate):
            raise http_error(500, {"error": pm.ERR_INTERNAL})
        if faults and order.order_type in ("FOK", "FAK", "GTC", "GTD") and \
                self.faults.draw(self.faults.spec.delayed_rate) and self._marketable(order):
            order.status, order.delayed = "DELAYED", True
            self.orders[order.id] = order
            self._push_order(order, "PLACEMENT")
            loop = asyncio.get_running_loop()
            loop.call_later(self.faults.spec.delay_ms / 1000, self._run_delayed, order)
            return {"success": True, "errorMsg": "", "orderID": order.id, "status": "delayed",
                    "takingAmount": "", "makingAmount": "", "transactionsHashes": [],
                    "tradeIDs": []}
        reply = self._execute(order)
        if faults and self.faults.draw(self.faults.spec.accepted_timeout_rate):
            await asyncio.sleep(self.faults.spec.hang_ms / 1000)
        return reply

    def _marketable(self, order: POrder) -> bool:
        bid, ask = self._best(order.token)
        comp = self.engine.complement(order.token)
        cbid, cask = self._best(comp) if comp else (None, None)
        if order.side == "BUY":
            return (ask is not None and ask <= order.price) or \
                (cbid is not None and 1 - cbid <= order.price)
        return (bid is not None and bid >= order.price) or \
            (cask is not None and 1 - cask >= order.price)

    def _run_delayed(self, order: POrder) -> None:
        if order.status != "DELAYED":
            return  # cancelled meanwhile
        order.delayed = False
        try:
            self._execute(order, delayed=True)
        except web.HTTPException:
            order.status = "CANCELED"
            self._push_order(order, "CANCELLATION")
        self.publish_books()

    def _execute(self, order: POrder, delayed: bool = False) -> dict[str, Any]:
        tif = {"GTC": TimeInForce.GTC, "GTD": TimeInForce.GTC, "FOK": TimeInForce.FOK,
               "FAK": TimeInForce.FAK}[order.order_type]
        self._matches.clear()
        try:
            # an off-tick market BUY price matches exactly like the tick below it
            limit = order.price - order.price % order.market.tick
            ack = self.engine.submit(order.account.name, order.id, order.token,
                                     Side.BUY if order.side == "BUY" else Side.SELL,
                                     limit, order.size, tif, post_only=order.post_only,
                                     timestamp=time.time())
        except InvalidOrder as exc:  # validated above; a safety net
            raise http_error(400, {"error": f"order {order.id} is invalid. {exc.message}"}
                             ) from None
        self.orders[order.id] = order
        trades = self._record_matches()
        filled = ack.filled
        order.filled = filled
        if ack.status is OrderStatus.REJECTED:
            order.status = "CANCELED"
            self._push_order(order, "CANCELLATION")
            self.publish_books()
            raise http_error(400, {"error": pm.ERR_POST_ONLY})
        if ack.status is OrderStatus.CANCELLED and filled == ZERO:
            order.status = "CANCELED"
            if delayed:
                self._push_order(order, "CANCELLATION")
            self.publish_books()
            raise http_error(400, {"error": pm.ERR_FOK if order.order_type == "FOK"
                                   else pm.ERR_FAK})
        if ack.status is OrderStatus.OPEN:
            order.status = "LIVE"
        elif ack.status is OrderStatus.FILLED:
            order.status = "MATCHED"
        else:
            order.status = "CANCELED"
        if delayed or ack.status is OrderStatus.OPEN:
            self._push_order(order, "PLACEMENT" if not delayed else "UPDATE")
        for trade in trades:
            self._push_trade(trade)
            for maker, _ in trade.makers:
                if maker is not None:
                    self._push_order(maker, "UPDATE")
        self.publish_books()
        notional = sum((f.size * f.price for f in ack.fills), ZERO)
        if order.side == "BUY":
            taking, making = filled, notional
        else:
            taking, making = notional, filled
        return {"success": True, "errorMsg": "", "orderID": order.id,
                "status": "matched" if filled else "live",
                "takingAmount": pm.dec(taking) if filled else "",
                "makingAmount": pm.dec(making) if filled else "",
                "transactionsHashes": [], "tradeIDs": [t.id for t in trades]}

    def _matches_append(self, match: Match) -> None:
        self._matches.append(match)

    def _record_matches(self) -> list[PTrade]:
        """Turn the engine's matches of the last call into trades (one per taker order)."""
        if not self._matches:
            return []
        groups: dict[str, list[Match]] = {}
        for m in self._matches:
            groups.setdefault(m.taker_client_order_id, []).append(m)
        self._matches.clear()
        out = []
        now = int(time.time())
        for taker_id, matches in groups.items():
            first = matches[0]
            taker = self.orders.get(taker_id) if first.taker_account != MARKET_MAKER else None
            market = self.by_token[first.instrument]
            size = sum((m.size for m in matches), ZERO)
            notional = sum((m.size * m.taker_price for m in matches), ZERO)
            price = notional / size
            fee = pm.fee(market.fee_rate, size, price) if taker is not None else ZERO
            if taker is not None:
                name = taker.account.name
                self.fees_paid[name] = self.fees_paid.get(name, ZERO) + fee
            makers: list[tuple[POrder | None, Match]] = []
            for m in matches:
                maker = self.orders.get(m.maker_client_order_id) \
                    if m.maker_account != MARKET_MAKER else None
                if maker is not None:
                    maker.filled += m.size
                    if maker.filled >= maker.size:
                        maker.status = "MATCHED"
                makers.append((maker, m))
            trade = PTrade(str(uuid.UUID(int=self._uuid_rng.getrandbits(128), version=4)), taker,
                           first.taker_account, market, first.instrument,
                           first.taker_side.value.upper(), size, price, fee, makers, now,
                           updated=now)
            market.last_trade = price
            self.trades[trade.id] = trade
            self.trade_log.append(trade)
            if taker is not None:
                taker.trades.append(trade.id)
            for maker, _ in makers:
                if maker is not None:
                    maker.trades.append(trade.id)
            self._schedule_settlement(trade)
            out.append(trade)
        return out

    def _schedule_settlement(self, trade: PTrade) -> None:
        faults = self.faults
        fail = faults.draw(faults.spec.trade_failed_rate)
        delay = faults.spec.settle_ms / 1000
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._settle, trade, "FAILED" if fail else "MINED")
        if not fail:
            loop.call_later(delay * 2, self._settle, trade, "CONFIRMED")

    def _settle(self, trade: PTrade, status: str) -> None:
        if trade.status in ("FAILED", "CONFIRMED"):
            return
        trade.status = status
        trade.updated = int(time.time())
        if status == "MINED":
            trade.tx_hash = "0x" + hashlib.sha256(f"tx/{trade.id}".encode()).hexdigest()
        if status == "FAILED":
            self._reverse(trade)
        self._push_trade(trade)

    def _reverse(self, trade: PTrade) -> None:
        """A failed settlement: shares and collateral go back to where they were."""
        def undo(account: str, token: str, side: str, size: Decimal, notional: Decimal,
                 fee: Decimal) -> None:
            sign = 1 if side == "BUY" else -1
            pos = self.pos_adj.setdefault(account, {})
            pos[token] = pos.get(token, ZERO) - sign * size
            self.cash_adj[account] = self.cash_adj.get(account, ZERO) + sign * notional + fee

        undo(trade.taker_account, trade.token, trade.side, trade.size, trade.size * trade.price,
             trade.fee)
        for _, m in trade.makers:
            undo(m.maker_account, m.maker_instrument, m.maker_side.value.upper(), m.size,
                 m.size * m.maker_price, ZERO)

    # ------------------------------------------------------------------ order endpoints

    async def post_order(self, request: web.Request) -> web.Response:
        body = await request.text()
        creds = self._l2(request, body)
        await self.server.throttle(request, creds.api_key, "orders", self._rate_limited)
        try:
            item = json.loads(body)
        except ValueError:
            raise http_error(400, {"error": pm.ERR_PAYLOAD}) from None
        return json_response(await self._place(creds, item, faults=True))

    async def post_orders(self, request: web.Request) -> web.Response:
        # Polymarket's batch place: a JSON array of POST /order bodies, at most 15, each
        # processed on its own, one result per order in order (py-clob-client post_orders;
        # Polymarket CLOB docs "Place multiple orders").
        body = await request.text()
        creds = self._l2(request, body)
        await self.server.throttle(request, creds.api_key, "orders", self._rate_limited)
        try:
            items = json.loads(body)
        except ValueError:
            raise http_error(400, {"error": pm.ERR_PAYLOAD}) from None
        if not isinstance(items, list):
            raise http_error(400, {"error": pm.ERR_PAYLOAD})
        if len(items) > pm.BATCH_LIMIT:
            raise http_error(400, {"error": pm.err_batch(len(items))})
        if self.faults.draw(self.faults.spec.error_rate):
            raise http_error(500, {"error": pm.ERR_INTERNAL})
        out = []
        for item in items:  # processed independently: no atomicity, as the venue says
            try:
                out.append(await self._place(creds, item, faults=False))
            except web.HTTPException as exc:
                msg = json.loads(exc.text or "{}").get("error", "") if exc.text else ""
                order_id = ""
                if isinstance(item, dict) and isinstance(item.get("order"), dict):
                    order_id = self._try_id(item["order"])
                out.append({"success": False, "errorMsg": msg, "orderID": order_id,
                            "status": "", "takingAmount": "", "makingAmount": "",
                            "transactionsHashes": [], "tradeIDs": []})
        return json_response(out)

    def _try_id(self, o: dict[str, Any]) -> str:
        try:
            market = self.by_token[str(o["tokenId"])]
            version = 2 if "timestamp" in o and "feeRateBps" not in o else 1
            return self.domains[(version, market.neg_risk)].order_id(o)
        except Exception:
            return ""

    def _rate_limited(self) -> web.HTTPException:
        return http_error(429, {"error": pm.ERR_RATE})

    def _cancel(self, creds: Creds, ids: Iterable[str]) -> dict[str, Any]:
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for oid in ids:
            order = self.orders.get(oid)
            if order is None or order.account is not creds.account:
                not_canceled[oid] = pm.CANCEL_UNKNOWN
                continue
            if order.status == "DELAYED":
                order.status = "CANCELED"
                canceled.append(oid)
                self._push_order(order, "CANCELLATION")
                continue
            if order.status != "LIVE":
                not_canceled[oid] = pm.CANCEL_DONE
                continue
            self.engine.cancel(order.account.name, oid)
            order.status = "CANCELED"
            canceled.append(oid)
            self._push_order(order, "CANCELLATION")
        self.publish_books()
        return {"canceled": canceled, "not_canceled": not_canceled}

    async def _body(self, request: web.Request) -> tuple[str, Creds]:
        body = await request.text()
        creds = self._l2(request, body)
        await self.server.throttle(request, creds.api_key, "cancels", self._rate_limited)
        return body, creds

    async def cancel_order(self, request: web.Request) -> web.Response:
        body, creds = await self._body(request)
        try:
            oid = json.loads(body)["orderID"]
        except (ValueError, KeyError, TypeError):
            raise http_error(400, {"error": "Invalid payload"}) from None
        return json_response(self._cancel(creds, [str(oid)]))

    async def cancel_orders(self, request: web.Request) -> web.Response:
        body, creds = await self._body(request)
        try:
            ids = [str(x) for x in json.loads(body)]
        except (ValueError, TypeError):
            raise http_error(400, {"error": "Invalid payload"}) from None
        if len(ids) > 3000:
            raise http_error(400, {"error": "Too many orders in payload, max allowed: 3000"})
        return json_response(self._cancel(creds, ids))

    async def cancel_all(self, request: web.Request) -> web.Response:
        _, creds = await self._body(request)
        ids = [o.id for o in self.orders.values() if o.account is creds.account
               and o.status in ("LIVE", "DELAYED")]
        return json_response(self._cancel(creds, ids))

    async def cancel_market_orders(self, request: web.Request) -> web.Response:
        body, creds = await self._body(request)
        try:
            args = json.loads(body) if body else {}
        except ValueError:
            raise http_error(400, {"error": "Invalid payload"}) from None
        market, asset = args.get("market"), args.get("asset_id")
        ids = [o.id for o in self.orders.values() if o.account is creds.account
               and o.status in ("LIVE", "DELAYED")
               and (not market or o.market.condition_id == market)
               and (not asset or o.token == asset)]
        return json_response(self._cancel(creds, ids))

    def cancel_account(self, account: Account) -> None:
        """The dead-man switch fired: cancel every open order of ``account``."""
        for order in list(self.orders.values()):
            if order.account is account and order.status in ("LIVE", "DELAYED"):
                if order.status == "LIVE":
                    self.engine.cancel(account.name, order.id)
                order.status = "CANCELED"
                self._push_order(order, "CANCELLATION")
        self.publish_books()

    def expire(self, now: float) -> None:
        """GTD orders past their expiration are cancelled (the venue reports a cancel)."""
        for order in list(self.orders.values()):
            if order.status == "LIVE" and order.order_type == "GTD" and order.expiration \
                    and order.expiration <= now:
                self.engine.cancel(order.account.name, order.id)
                order.status = "CANCELED"
                self._push_order(order, "CANCELLATION")

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = await request.text()
        creds = self._l2(request, body)
        try:
            previous = (json.loads(body) or {}).get("heartbeat_id") if body else None
        except (ValueError, AttributeError):
            raise http_error(400, {"error": "Invalid payload"}) from None
        account = creds.account
        if account.heartbeat_id is not None and previous and previous != account.heartbeat_id:
            raise http_error(400, {"error": "invalid heartbeat id"})
        account.heartbeat_id = str(uuid.UUID(int=self._uuid_rng.getrandbits(128), version=4))
        account.heartbeat_at = time.monotonic()
        return json_response({"heartbeat_id": account.heartbeat_id})

    # ------------------------------------------------------------------ queries

    def order_json(self, o: POrder) -> dict[str, Any]:
        return {
            "id": o.id, "status": o.status, "owner": o.owner, "maker_address": o.maker,
            "market": o.market.condition_id, "asset_id": o.token, "side": o.side,
            "original_size": pm.dec(o.size), "size_matched": pm.dec(o.filled),
            "price": pm.dec(o.price), "outcome": o.outcome,
            "associate_trades": list(o.trades) or None, "created_at": o.created,
            "expiration": str(o.expiration), "order_type": o.order_type,
        }

    async def get_order(self, request: web.Request) -> web.Response:
        creds = self._l2(request, "")
        await self.server.throttle(request, creds.api_key, "reads", self._rate_limited)
        order = self.orders.get(request.match_info["order_id"])
        if order is None or order.account is not creds.account:
            raise http_error(404, {"error": pm.CANCEL_UNKNOWN})
        return json_response(self.order_json(order))

    def _page(self, request: web.Request, items: list[Any],
              render: Callable[[Any], Any] | None = None) -> web.Response:
        """One page of ``items``; ``render`` turns only that page's items into JSON (a
        listing of 10,000 markets is 100 pages: rendering all of them per page was O(n^2))."""
        try:
            start = pm.offset(request.query.get("next_cursor"))
        except ValueError:
            raise http_error(400, {"error": "invalid next_cursor"}) from None
        if start < 0:
            return json_response({"data": [], "next_cursor": pm.END_CURSOR,
                                  "limit": self.page_size, "count": 0})
        page = items[start:start + self.page_size]
        nxt = start + len(page)
        if render is not None:
            page = [render(item) for item in page]
        return json_response({"data": page, "next_cursor": pm.cursor(nxt) if nxt < len(items)
                              else pm.END_CURSOR, "limit": self.page_size, "count": len(page)})

    async def get_orders(self, request: web.Request) -> web.Response:
        creds = self._l2(request, "")
        await self.server.throttle(request, creds.api_key, "reads", self._rate_limited)
        q = request.query
        items = [self.order_json(o) for o in self.orders.values()
                 if o.account is creds.account and o.status in ("LIVE", "DELAYED")
                 and (not q.get("id") or o.id == q["id"])
                 and (not q.get("market") or o.market.condition_id == q["market"])
                 and (not q.get("asset_id") or o.token == q["asset_id"])]
        return self._page(request, items)

    def trade_json(self, t: PTrade, viewer: Account) -> dict[str, Any]:
        mine_taker = t.taker is not None and t.taker.account is viewer
        maker_entries = []
        for maker, m in t.makers:
            maker_entries.append({
                # the market maker's orders get hash-shaped ids like everyone's
                "order_id": maker.id if maker else
                "0x" + hashlib.sha256(f"mm/{m.maker_client_order_id}".encode()).hexdigest(),
                "owner": maker.owner if maker else "", "maker_address": maker.maker if maker
                else "", "matched_amount": pm.dec(m.size), "price": pm.dec(m.maker_price),
                "fee_rate_bps": "0", "asset_id": m.maker_instrument,
                "outcome": "Yes" if m.maker_instrument == t.market.yes else "No",
                "side": m.maker_side.value.upper()})
        return {
            "id": t.id, "taker_order_id": t.taker.id if t.taker else "",
            "market": t.market.condition_id, "asset_id": t.token, "side": t.side,
            "size": pm.dec(t.size), "fee_rate_bps": str(int(t.market.fee_rate * 10000)),
            "price": pm.dec(t.price), "status": t.status, "match_time": str(t.match_time),
            "last_update": str(t.updated), "outcome": "Yes" if t.token == t.market.yes else "No",
            "bucket_index": 0, "owner": t.taker.owner if t.taker else "",
            "maker_address": t.taker.maker if t.taker else "",
            "transaction_hash": t.tx_hash,
            "trader_side": "TAKER" if mine_taker else "MAKER", "maker_orders": maker_entries,
        }

    def _involves(self, t: PTrade, account: Account) -> bool:
        if t.taker is not None and t.taker.account is account:
            return True
        return any(maker is not None and maker.account is account for maker, _ in t.makers)

    async def get_trades(self, request: web.Request) -> web.Response:
        creds = self._l2(request, "")
        await self.server.throttle(request, creds.api_key, "reads", self._rate_limited)
        q = request.query
        before, after = q.get("before"), q.get("after")
        items = [self.trade_json(t, creds.account) for t in self.trade_log
                 if self._involves(t, creds.account)
                 and (not q.get("id") or t.id == q["id"])
                 and (not q.get("market") or t.market.condition_id == q["market"])
                 and (not q.get("asset_id") or t.token == q["asset_id"])
                 and (not before or t.match_time < int(before))
                 and (not after or t.match_time > int(after))]
        return self._page(request, items)

    async def balance_allowance(self, request: web.Request) -> web.Response:
        creds = self._l2(request, "")
        kind = request.query.get("asset_type", "COLLATERAL")
        if kind == "COLLATERAL":
            value = self.balance(creds.account)
        elif kind == "CONDITIONAL":
            value = self.positions(creds.account).get(request.query.get("token_id", ""), ZERO)
        else:
            raise http_error(400, {"error": "invalid asset_type"})
        return json_response({"balance": str(int(value * pm.UNIT)),
                              "allowance": str(2**256 - 1)})

    # ------------------------------------------------------------------ market maker

    def step(self) -> None:
        self.process.step()
        self.requote()

    def requote(self, states: Sequence[Any] | None = None, *, publish: bool = True) -> None:
        """Requote ``states`` (default: every market) and publish what changed."""
        engine = self.engine
        for st in self.process.states if states is None else states:
            key = st.quote_key()
            m = st.market
            last = self._quoted.get(m.market_id)
            if last is not None and last == (key, engine.sequence(m.yes), engine.sequence(m.no)):
                continue
            for inst, side, levels in self.process.quotes(st):
                self._matches.clear()
                engine.set_liquidity(MARKET_MAKER, inst, Side.SELL if side == "ask" else Side.BUY,
                                     levels, timestamp=time.time())
                for trade in self._record_matches():
                    self._push_trade(trade)
                    for maker, _ in trade.makers:
                        if maker is not None:
                            self._push_order(maker, "UPDATE")
            self._quoted[m.market_id] = (key, engine.sequence(m.yes), engine.sequence(m.no))
        if publish:
            self.publish_books()

    # ------------------------------------------------------------------ websockets

    def set_tick(self, market: PMarket, tick: Decimal) -> None:
        """Change a market's tick size and tell the market websocket (``tick_size_change``)."""
        old = market.tick
        if tick == old:
            return
        market.tick = tick
        for token in (market.yes, market.no):
            self.engine.add_instrument(token, tick_size=tick, min_size=ENGINE_MIN_SIZE)
        ts = str(now_ms())
        for ws, assets in self.market_hub.sockets.items():
            for token in (market.yes, market.no):
                if token in assets:
                    self.market_hub.send(ws, {
                        "event_type": "tick_size_change", "asset_id": token,
                        "market": market.condition_id, "old_tick_size": pm.dec(old),
                        "new_tick_size": pm.dec(tick), "timestamp": ts})

    def _auto_tick(self, m: PMarket) -> None:
        """The CLOB narrows a market's tick from 0.01 to 0.001 once its book trades beyond
        0.96 or below 0.04 (Polymarket docs: tick_size_change); whether and when it widens
        back is not documented: the simulator widens when the book is back inside."""
        if self.spec.tick_size != Decimal("0.01"):
            return
        bid, ask = self._best(m.yes)
        extreme = any(p is not None and not Decimal("0.04") <= p <= Decimal("0.96")
                      for p in (bid, ask))
        self.set_tick(m, Decimal("0.001") if extreme else self.spec.tick_size)

    def publish_books(self) -> None:
        """Send price_change events for every level that changed since the last publish."""
        changes: dict[str, list[dict[str, Any]]] = {}
        touched = self.engine.take_changed()  # only markets whose books moved: O(changes)
        for m in dict.fromkeys(self.by_token[t] for t in sorted(touched) if t in self.by_token):
            self._auto_tick(m)
            for token in (m.yes, m.no):
                seq = self.engine.sequence(token)
                if self._published_seq.get(token) == seq:
                    continue
                self._published_seq[token] = seq
                bids, asks = self.engine.book(token)
                new = ({lv.price: lv.size for lv in bids}, {lv.price: lv.size for lv in asks})
                old = self._published.get(token, ({}, {}))
                self._published[token] = new
                best_bid = pm.dec(bids[0].price) if bids else "0"
                best_ask = pm.dec(asks[0].price) if asks else "1"
                # each level carries the hash of the token's book after the change
                book_hash = self.book_json(m, token)["hash"]
                for idx, side in ((0, "BUY"), (1, "SELL")):
                    for price in sorted(set(old[idx]) | set(new[idx])):
                        size = new[idx].get(price, ZERO)
                        if old[idx].get(price) != size:
                            changes.setdefault(m.condition_id, []).append({
                                "asset_id": token, "price": pm.dec(price), "side": side,
                                "size": pm.dec(size), "hash": book_hash,
                                "best_bid": best_bid, "best_ask": best_ask})
        if not changes or not self.market_hub.sockets:
            return
        ts = str(now_ms())
        for ws, assets in self.market_hub.sockets.items():
            for cid, items in changes.items():
                mine = [c for c in items if c["asset_id"] in assets]
                if mine:
                    self.market_hub.send(ws, {"event_type": "price_change", "market": cid,
                                              "price_changes": mine, "timestamp": ts})

    async def ws_market(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        assets: set[str] = set()
        self.market_hub.add(ws, assets)

        def on_text(text: str) -> None:
            try:
                msg = json.loads(text)
                ids = [str(a) for a in msg.get("assets_ids", [])]
            except (ValueError, AttributeError, TypeError):
                self.market_hub.send(ws, {"error": "invalid message"})
                return
            if msg.get("operation") == "unsubscribe":
                assets.difference_update(ids)
                return
            new = [a for a in ids if a in self.by_token and a not in assets]
            assets.update(new)
            snapshots = [dict(self.book_json(self.by_token[a], a), event_type="book")
                         for a in new]
            if snapshots:
                self.market_hub.send(ws, snapshots)

        try:
            await ws_loop(ws, on_text)
        finally:
            self.market_hub.remove(ws)
        return ws

    async def ws_user(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        state: dict[str, Any] = {}

        def on_text(text: str) -> Any:
            try:
                msg = json.loads(text)
                auth = msg["auth"]
                creds = self.creds.get(auth["apiKey"])
            except (ValueError, KeyError, TypeError):
                creds = None
                auth = {}
            if creds is None or auth.get("secret") != creds.secret or \
                    auth.get("passphrase") != creds.passphrase:
                self.user_hub.send(ws, {"error": pm.ERR_UNAUTHORIZED})
                return ws.close(code=4001, message=b"unauthorized")
            state["account"] = creds.account
            state["markets"] = set(msg.get("markets") or [])
            self.user_hub.add(ws, state)
            return None

        try:
            await ws_loop(ws, on_text)
        finally:
            self.user_hub.remove(ws)
        return ws

    def _user_send(self, account: Account, market: PMarket, payload: dict[str, Any]) -> None:
        for ws, state in self.user_hub.sockets.items():
            if state.get("account") is account and (
                    not state["markets"] or market.condition_id in state["markets"]):
                self.user_hub.send(ws, payload)

    def _push_order(self, order: POrder, kind: str) -> None:
        if not self.user_hub.sockets:
            return
        # REST gives created_at as a number, the user channel as a string (live captures)
        payload = dict(self.order_json(order), event_type="order", type=kind,
                       order_owner=order.owner, timestamp=str(now_ms()),
                       created_at=str(order.created))
        if kind == "CANCELLATION" and order.status == "CANCELED" and not order.filled \
                and order.order_type == "FOK":
            payload["status"] = "CANCELED_" + pm.ERR_FOK
        self._user_send(order.account, order.market, payload)

    def _push_trade(self, trade: PTrade) -> None:
        if not self.user_hub.sockets:
            return
        accounts = []
        if trade.taker is not None:
            accounts.append(trade.taker.account)
        for maker, _ in trade.makers:
            if maker is not None and maker.account not in accounts:
                accounts.append(maker.account)
        for account in accounts:
            payload = dict(self.trade_json(trade, account), event_type="trade", type="TRADE",
                           trade_owner=account.name, timestamp=str(now_ms()))
            self._user_send(account, trade.market, payload)
