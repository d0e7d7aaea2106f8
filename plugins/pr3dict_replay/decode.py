"""Recorded (or live) market-data records -> books, through the connectors' own parsing.

One ``Decoder`` per recorded venue. The recorder, the ``replay`` venue and shadow runs all
hand it the same records (``docs/recording.md``), so a replayed book is built exactly as the
live connector builds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from pr3dict_core.model import ZERO, Market
from pr3dict_kalshi import marketdata as kmd
from pr3dict_kalshi import protocol as kp
from pr3dict_polymarket import marketdata as pmd
from pr3dict_polymarket import protocol as pm
from pr3dict_venuekit.books import LocalBook

from .format import VENUE_TYPES, RecordingError

log = logging.getLogger("pr3dict.replay")


def market_json(m: Market) -> dict[str, str]:
    return {"market_id": m.market_id, "yes": m.yes, "no": m.no, "title": m.title,
            "tick_size": str(m.tick_size), "min_size": str(m.min_size),
            "size_step": str(m.size_step)}


class Decoder:
    """Books of one venue, fed records; ``changed(instrument)`` is told of every change."""

    def __init__(self, venue_id: str, venue_type: str, changed: Callable[[str], None],
                 traded: pmd.Traded | None = None):
        if venue_type not in VENUE_TYPES:
            raise RecordingError(f"venue {venue_id}: cannot decode a {venue_type!r} venue")
        self.venue_id = venue_id
        self.venue_type = venue_type
        self.changed = changed
        self.traded = traded  # told every recorded trade (resting orders queue on them)
        self.markets: list[Market] = []
        self.books: dict[str, LocalBook] = {}
        self.tickers: dict[str, Market] = {}
        self.fee_rates: dict[str, Decimal] = {}  # polymarket: token -> taker rate
        self.fee_multiplier = Decimal(1)  # kalshi
        self.neg_risk: dict[str, bool] = {}
        self.gaps = 0
        self.bad_messages = 0  # skipped: unparsable, or refused by the books (a bad price)
        # Kalshi deltas after a gap are skipped until the market's next snapshot.
        self._resync: set[str] = set()
        # the venue's websocket parser, chosen once (``apply_ws`` runs per message)
        self._apply_ws = self._polymarket_ws if venue_type == "polymarket" else self._kalshi_ws

    def set_markets(self, record: Mapping[str, Any]) -> None:
        markets = [Market(venue=self.venue_id, **m) for m in record["markets"]]
        self.markets = markets
        self.tickers = {m.market_id: m for m in markets}
        for m in markets:
            for inst in (m.yes, m.no):
                self.books.setdefault(inst, LocalBook(self.venue_id, inst))
        self.fee_rates = {k: Decimal(v) for k, v in record.get("fee_rates", {}).items()}
        self.fee_multiplier = Decimal(record.get("fee_multiplier", "1"))
        self.neg_risk = dict(record.get("neg_risk", {}))
        if self.venue_type == "kalshi":  # a part may start here: deltas wait for a snapshot
            self._resync = set(self.tickers)

    def apply_ws(self, raw: str) -> None:
        """One websocket message (the most frequent record)."""
        self._apply_ws(raw)

    def _polymarket_ws(self, raw: str) -> None:
        pmd.apply_market_message(self.books, raw, self.changed, self.venue_id,
                                 traded=self.traded)

    def _kalshi_ws(self, raw: str) -> None:
        msg = orjson.loads(raw)
        kind = msg.get("type")
        if kind == "orderbook_delta" or kind == "orderbook_snapshot":
            body = msg.get("msg") or {}
            if self._resync:
                ticker = body.get("market_ticker")
                if kind == "orderbook_snapshot":
                    self._resync.discard(ticker)
                elif ticker in self._resync:
                    return
            kmd.apply_book_message(self.books, self.tickers, kind, body, self.changed)
        elif kind == "trade" and self.traded is not None:
            body = msg.get("msg") or {}
            for trade in kmd.trade(self.tickers.get(body.get("market_ticker")), body):
                self.traded(*trade)

    def _book_record(self, kind: str, record: Mapping[str, Any]) -> None:
        if kind == "ws":
            self._apply_ws(record["raw"])
        elif self.venue_type == "polymarket":
            pmd.apply_books_reply(self.books, record["raw"], self.changed)
        else:
            self._resync.discard(record["ticker"])
            yes, no = kmd.rest_orderbook(orjson.loads(record["raw"]))
            kmd.apply_snapshot(self.books, self.tickers.get(record["ticker"]), yes, no,
                               self.changed)

    def bad_message(self, exc: Exception) -> None:
        """A message the connector's parsing refused is skipped, as the live connector
        skips it: counted, and the first ones logged (one line, no message text)."""
        self.bad_messages += 1
        if self.bad_messages <= 3:
            log.warning("venue %s: unusable market-data message skipped (%s: %s)",
                        self.venue_id, type(exc).__name__, str(exc)[:200])

    def apply(self, record: Mapping[str, Any]) -> None:
        kind = record["k"]
        if kind == "ws" or kind == "rest":
            try:
                self._book_record(kind, record)
            except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
                self.bad_message(exc)
        elif kind == "markets":
            self.set_markets(record)
        elif kind == "gap":
            self.gaps += 1
            if self.venue_type == "kalshi":
                self._resync = set(self.tickers)

    # ------------------------------------------------------------------ venue rules

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        """The taker fee, from the connector's own protocol module."""
        if self.venue_type == "polymarket":
            return pm.fee(self.fee_rates.get(instrument, ZERO), size, price)
        return kp.fee(size, price, self.fee_multiplier)

    def twin(self, instrument: str) -> str | None:
        """Kalshi's YES and NO books are one book: YES asks at p are NO bids at 1 - p."""
        if self.venue_type != "kalshi":
            return None
        ticker, _, side = instrument.rpartition(":")
        return f"{ticker}:{'no' if side == 'yes' else 'yes'}"

    def markets_record(self, t: int) -> dict[str, Any]:
        return markets_record(self.venue_id, self.venue_type, t, self.markets,
                              self.fee_rates, self.fee_multiplier, self.neg_risk)


def markets_record(venue_id: str, venue_type: str, t: int, markets: Sequence[Market],
                   fee_rates: Mapping[str, Decimal], fee_multiplier: Decimal,
                   neg_risk: Mapping[str, bool]) -> dict[str, Any]:
    return {"k": "markets", "t": t, "v": venue_id, "venue_type": venue_type,
            "markets": [market_json(m) for m in markets],
            "fee_rates": {k: str(v) for k, v in sorted(fee_rates.items())},
            "fee_multiplier": str(fee_multiplier), "neg_risk": dict(sorted(neg_risk.items()))}
