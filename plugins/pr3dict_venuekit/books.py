"""Local order books kept from snapshots and deltas, handed out as immutable ``Book``s."""

from __future__ import annotations

import time
from decimal import Decimal

from pr3dict_core.model import ZERO, Book, Level


class LocalBook:
    """One instrument's levels (price -> size per side). ``book()`` caches until a change,
    and rebuilds only the side that changed, reusing the ``Level``s whose size did not:
    books are rebuilt after every message of a feed (and of a replay)."""

    __slots__ = ("_book", "_levels", "_sides", "asks", "bids", "instrument", "seq", "venue")

    def __init__(self, venue: str, instrument: str):
        self.venue = venue
        self.instrument = instrument
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq = 0
        self._book: Book | None = None
        self._sides: list[tuple[Level, ...] | None] = [None, None]  # built asks, bids
        self._levels: dict[tuple[bool, Decimal], Level] = {}  # (bid?, price) -> last built

    def snapshot(self, bids: list[tuple[Decimal, Decimal]],
                 asks: list[tuple[Decimal, Decimal]]) -> None:
        self.bids = {p: s for p, s in bids if s > ZERO}
        self.asks = {p: s for p, s in asks if s > ZERO}
        self.seq += 1
        self._book = None
        self._sides = [None, None]

    def set_level(self, bid: bool, price: Decimal, size: Decimal) -> None:
        """Absolute size at a level; 0 deletes it."""
        side = self.bids if bid else self.asks
        if size > ZERO:
            side[price] = size
        else:
            side.pop(price, None)
        self.seq += 1
        self._book = None
        self._sides[bid] = None

    def trim(self, best_bid: Decimal | None, best_ask: Decimal | None) -> bool:
        """Drop levels better than the venue's own best bid / best ask (stale levels a lost
        or reordered delta left behind, which would cross the book). True if any went."""
        stale_bids = [p for p in self.bids if best_bid is not None and p > best_bid]
        stale_asks = [p for p in self.asks if best_ask is not None and p < best_ask]
        for p in stale_bids:
            del self.bids[p]
        for p in stale_asks:
            del self.asks[p]
        if stale_bids or stale_asks:
            self.seq += 1
            self._book = None
        return bool(stale_bids or stale_asks)

    def add_level(self, bid: bool, price: Decimal, delta: Decimal) -> None:
        side = self.bids if bid else self.asks
        self.set_level(bid, price, side.get(price, ZERO) + delta)

    def _side(self, bid: bool) -> tuple[Level, ...]:
        built = self._sides[bid]
        if built is None:
            levels = self._levels
            side = self.bids if bid else self.asks
            out = []
            for p in sorted(side, reverse=bid):
                size = side[p]
                level = levels.get((bid, p))
                if level is None or level.size != size:
                    level = levels[bid, p] = Level(p, size)
                out.append(level)
            built = self._sides[bid] = tuple(out)
        return built

    def book(self) -> Book:
        if self._book is None:
            self._book = Book(self.venue, self.instrument, self._side(True), self._side(False),
                              timestamp=time.time(), sequence=self.seq)
        return self._book
