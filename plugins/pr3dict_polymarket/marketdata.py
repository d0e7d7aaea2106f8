"""Polymarket market-data parsing, shared by the connector, ``pr3dict record``, the
``replay`` venue and shadow runs: one place turns the CLOB's book messages into books."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
from attrs import frozen

from pr3dict_core.model import Market
from pr3dict_venuekit.books import LocalBook, price

from . import protocol as pm

log = logging.getLogger("pr3dict.venues.polymarket")

Changed = Callable[[str], None]  # told the instrument whose book changed
# told a recorded trade: (token, maker side is the bid?, price, size)
Traded = Callable[[str, bool, Decimal, Decimal], None]
# told a token's tick size and minimum order size when a message carries them
Rules = Callable[[str, Any, Any], None]


def _opt_price(value: Any) -> Decimal | None:
    return price(value if type(value) is str else str(value)) if value not in (None, "") \
        else None


def apply_book(books: Mapping[str, LocalBook], summary: Mapping[str, Any],
               changed: Changed, rules: Rules | None = None) -> None:
    """A full book of one token (``/books`` item or websocket ``book`` event)."""
    token = str(summary["asset_id"])
    local = books.get(token)
    if local is None:
        return
    if rules is not None:
        rules(token, summary.get("tick_size"), summary.get("min_order_size"))
    bids = [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in summary["bids"]]
    asks = [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in summary["asks"]]
    if local.bids != dict(bids) or local.asks != dict(asks):
        local.snapshot(bids, asks)
        changed(token)


def apply_books_reply(books: Mapping[str, LocalBook], text: str, changed: Changed) -> None:
    """The body of ``POST /books``: a list of book summaries."""
    for summary in orjson.loads(text):
        apply_book(books, summary, changed)


def apply_market_message(books: Mapping[str, LocalBook], text: str, changed: Changed,
                         venue_id: str = "", rules: Rules | None = None,
                         traded: Traded | None = None) -> None:
    """One market-websocket message: ``book`` snapshots, ``price_change`` levels (levels
    beyond the venue's best bid/ask after the event are stale and dropped),
    ``tick_size_change``, and ``last_trade_price`` (told to ``traded``: its ``side`` is the
    taker's, so a BUY traded against the asks)."""
    data = orjson.loads(text)
    for event in data if type(data) is list else (data,):
        kind = event.get("event_type")
        if kind == "price_change":  # the most frequent message: kept lean (a replay's hot path)
            changes = event.get("price_changes", ())
            for change in changes:
                token = change["asset_id"]
                local = books.get(token if type(token) is str else str(token))
                if local is None:
                    continue
                local.set_level(change["side"] == "BUY", price(change["price"]),
                                Decimal(change["size"]))
                changed(local.instrument)
            # then each token's best bid/ask, as its last change gives them
            last = changes if len(changes) < 2 else \
                {str(change["asset_id"]): change for change in changes}.values()
            for change in last:
                token = change["asset_id"]
                local = books.get(token if type(token) is str else str(token))
                if local is None:
                    continue
                bid, ask = _opt_price(change.get("best_bid")), _opt_price(change.get("best_ask"))
                if local.trim(bid, ask):
                    log.info("venue %s: dropped stale levels of %s beyond %s/%s", venue_id,
                             local.instrument, bid, ask)
        elif kind == "book":
            apply_book(books, event, changed, rules)
        elif kind == "last_trade_price":
            if traded is not None and event.get("asset_id") is not None:
                token = str(event["asset_id"])
                if token in books:
                    traded(token, event.get("side") == "SELL", Decimal(event["price"]),
                           Decimal(event["size"]))
        elif kind == "tick_size_change":
            if rules is not None:
                rules(str(event["asset_id"]), event.get("new_tick_size"), None)
            else:
                log.warning("venue %s: tick size of %s changed to %s", venue_id,
                            event.get("asset_id"), event.get("new_tick_size"))


@frozen
class MarketInfo:
    market: Market
    fee_rate: Decimal  # taker fee rate (``fd.r`` of /clob-markets)
    neg_risk: bool


GetJson = Callable[..., Awaitable[Any]]  # (path, params=None) -> parsed JSON


async def load_markets(get_json: GetJson, venue_id: str, ids: Sequence[str],
                       max_markets: int) -> list[MarketInfo]:
    """The markets to trade (``ids``, or the first listed ones), from public endpoints."""
    listed: list[dict[str, Any]] = []
    if not ids:
        cursor = pm.INITIAL_CURSOR
        while cursor != pm.END_CURSOR and len(listed) < max_markets:
            page = await get_json("/markets", {"next_cursor": cursor})
            listed.extend(m for m in page["data"] if m.get("enable_order_book", True)
                          and m.get("active", True) and not m.get("closed", False))
            cursor = page.get("next_cursor") or pm.END_CURSOR
        listed = listed[:max_markets]
    else:
        listed = list(await asyncio.gather(*(get_json(f"/markets/{cid}") for cid in ids)))
    infos = await asyncio.gather(*(get_json(f"/clob-markets/{m['condition_id']}")
                                   for m in listed))
    out = []
    for raw, info in zip(listed, infos, strict=False):
        tokens = {t["outcome"].lower(): str(t["token_id"]) for t in raw["tokens"]}
        yes, no = tokens.get("yes"), tokens.get("no")
        if yes is None or no is None:
            yes, no = (str(t["token_id"]) for t in raw["tokens"][:2])
        cid = raw["condition_id"]
        market = Market(
            venue=venue_id, market_id=cid, yes=yes, no=no,
            title=raw.get("question") or raw.get("market_slug") or cid,
            tick_size=Decimal(str(raw["minimum_tick_size"])),
            min_size=Decimal(str(raw["minimum_order_size"])), size_step=pm.SIZE_STEP)
        fd = info.get("fd") or {}
        rate = Decimal(str(fd.get("r", 0))) if fd else Decimal(0)
        out.append(MarketInfo(market, rate, bool(raw.get("neg_risk") or info.get("nr"))))
    return out
