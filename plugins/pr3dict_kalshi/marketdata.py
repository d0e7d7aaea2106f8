"""Kalshi market-data parsing, shared by the connector, ``pr3dict record``, the ``replay``
venue and shadow runs. Kalshi quotes YES and NO bids of one market; each side's asks are
1 - the other side's bids, so one message updates two books."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pr3dict_core.model import ONE, ZERO, Market
from pr3dict_venuekit.books import LocalBook, price

from . import protocol as kp

Changed = Callable[[str], None]
Levels = list[tuple[Decimal, Decimal]]


def rest_orderbook(body: Mapping[str, Any]) -> tuple[Levels, Levels]:
    """(YES bids, NO bids) of a ``GET /markets/{ticker}/orderbook`` reply."""
    fp = body.get("orderbook_fp")
    if fp is not None:
        yes = [(Decimal(p), Decimal(q)) for p, q in fp.get("yes_dollars") or []]
        no = [(Decimal(p), Decimal(q)) for p, q in fp.get("no_dollars") or []]
    else:
        ob = body.get("orderbook") or {}
        yes = [(Decimal(p) / 100, Decimal(q)) for p, q in ob.get("yes") or []]
        no = [(Decimal(p) / 100, Decimal(q)) for p, q in ob.get("no") or []]
    return yes, no


def apply_snapshot(books: Mapping[str, LocalBook], market: Market | None, yes: Levels,
                   no: Levels, changed: Changed) -> None:
    """YES and NO bids -> two books: each side's asks are 1 - the other's bids."""
    if market is None:
        return
    y, n = books[market.yes], books[market.no]
    y_asks = [(ONE - p, q) for p, q in no]
    n_asks = [(ONE - p, q) for p, q in yes]
    if y.bids != dict(yes) or y.asks != dict(y_asks):
        y.snapshot(yes, y_asks)
        n.snapshot(no, n_asks)
        changed(market.yes)
        changed(market.no)


def apply_delta(books: Mapping[str, LocalBook], market: Market | None, side: str,
                price: Decimal, delta: Decimal, changed: Changed) -> None:
    if market is None:
        return
    bid_book, ask_book = (market.yes, market.no) if side == "yes" else (market.no, market.yes)
    bids, asks = books[bid_book], books[ask_book]
    size = bids.bids.get(price, ZERO) + delta  # the same size on both books
    bids.set_level(True, price, size)
    asks.set_level(False, ONE - price, size)
    changed(market.yes)
    changed(market.no)


def apply_book_message(books: Mapping[str, LocalBook], tickers: Mapping[str, Market],
                       kind: str, body: Mapping[str, Any], changed: Changed) -> None:
    """An ``orderbook_snapshot`` or ``orderbook_delta`` websocket message body."""
    if kind == "orderbook_snapshot":
        apply_snapshot(books, tickers.get(body["market_ticker"]),
                       [(Decimal(p), Decimal(q)) for p, q in body.get("yes_dollars_fp") or []],
                       [(Decimal(p), Decimal(q)) for p, q in body.get("no_dollars_fp") or []],
                       changed)
    else:
        apply_delta(books, tickers.get(body["market_ticker"]), body["side"],
                    price(body["price_dollars"]), Decimal(body["delta_fp"]), changed)


def trade(market: Market | None, body: Mapping[str, Any]
          ) -> list[tuple[str, bool, Decimal, Decimal]]:
    """A public ``trade`` message body -> (instrument, maker side is the bid?, price, count)
    for both books: a taker buying YES at p traded against YES asks at p, which are the NO
    bids at 1 - p (and the other way round)."""
    if market is None:
        return []
    yes_price, count = Decimal(body["yes_price_dollars"]), Decimal(body["count_fp"])
    if body["taker_side"] == "yes":
        return [(market.yes, False, yes_price, count), (market.no, True, ONE - yes_price, count)]
    return [(market.no, False, ONE - yes_price, count), (market.yes, True, yes_price, count)]


GetJson = Callable[..., Awaitable[Any]]  # (path, params=None) -> parsed JSON


async def load_markets(get: GetJson, venue_id: str, tickers: Sequence[str],
                       max_markets: int) -> list[Market]:
    """The markets to trade (``tickers``, or the first open ones), from public endpoints."""
    if tickers:
        raw = [m["market"] for m in await asyncio.gather(
            *(get(f"/markets/{t}") for t in tickers))]
    else:
        raw, cursor = [], ""
        while len(raw) < max_markets:
            want = min(kp.MARKETS_PER_PAGE, max_markets - len(raw))
            page = await get("/markets", {"status": "open", "limit": str(want),
                                          **({"cursor": cursor} if cursor else {})})
            raw.extend(page.get("markets", []))
            cursor = page.get("cursor") or ""
            if not cursor:
                break
        raw = raw[:max_markets]
    markets = []
    for m in raw:
        ticker = m["ticker"]
        tick = Decimal(m.get("tick_size", 1)) / 100
        fractional = bool(m.get("fractional_trading_enabled"))
        markets.append(Market(venue=venue_id, market_id=ticker, yes=f"{ticker}:yes",
                              no=f"{ticker}:no", title=m.get("title", ticker), tick_size=tick,
                              min_size=kp.COUNT_Q if fractional else ONE,
                              size_step=kp.COUNT_Q if fractional else ONE))
    return markets
