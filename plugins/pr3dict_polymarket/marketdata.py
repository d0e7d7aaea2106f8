"""Polymarket market-data parsing, shared by the connector, ``pr3dict record``, the
``replay`` venue and shadow runs: one place turns the CLOB's book messages into books."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from pr3dict_venuekit.books import LocalBook

log = logging.getLogger("pr3dict.venues.polymarket")

Changed = Callable[[str], None]  # told the instrument whose book changed


def apply_book(books: Mapping[str, LocalBook], summary: Mapping[str, Any],
               changed: Changed) -> None:
    """A full book of one token (``/books`` item or websocket ``book`` event)."""
    token = str(summary["asset_id"])
    local = books.get(token)
    if local is None:
        return
    bids = [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in summary["bids"]]
    asks = [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in summary["asks"]]
    if local.bids != dict(bids) or local.asks != dict(asks):
        local.snapshot(bids, asks)
        changed(token)


def apply_books_reply(books: Mapping[str, LocalBook], text: str, changed: Changed) -> None:
    """The body of ``POST /books``: a list of book summaries."""
    for summary in json.loads(text):
        apply_book(books, summary, changed)


def events(text: str) -> Iterable[Mapping[str, Any]]:
    data = json.loads(text)
    return data if isinstance(data, list) else [data]


def apply_market_message(books: Mapping[str, LocalBook], text: str, changed: Changed,
                         venue_id: str = "") -> None:
    """One market-websocket message: ``book`` snapshots and ``price_change`` levels."""
    for event in events(text):
        kind = event.get("event_type")
        if kind == "book":
            apply_book(books, event, changed)
        elif kind == "price_change":
            for change in event.get("price_changes", []):
                token = str(change["asset_id"])
                local = books.get(token)
                if local is None:
                    continue
                local.set_level(change["side"] == "BUY", Decimal(change["price"]),
                                Decimal(change["size"]))
                changed(token)
        elif kind == "tick_size_change":
            log.warning("venue %s: tick size of %s changed to %s", venue_id,
                        event.get("asset_id"), event.get("new_tick_size"))
