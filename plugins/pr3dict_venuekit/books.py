"""Local order books kept from snapshots and deltas, handed out as immutable ``Book``s."""

from __future__ import annotations

import time
from bisect import bisect_left
from decimal import Decimal

from pr3dict_core.model import ZERO, Book, Level


class LocalBook:
    """One instrument's levels (price -> size per side) and, kept in step with them, each
    side's ``Level``s best first. A change patches the one level it touches (found by
    bisection), so ``book()`` costs one ``Book`` however deep the book is: books are
    rebuilt after every message of a feed (and of a replay). A bad price raises before
    anything changes (``Level`` checks it)."""

    __slots__ = ("_book", "_keys", "_sides", "asks", "bids", "instrument", "seq", "venue")

    def __init__(self, venue: str, instrument: str):
        self.venue = venue
        self.instrument = instrument
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq = 0
        self._book: Book | None = None
        # [asks, bids], best first; _keys holds their sort keys (ask price, -bid price)
        self._sides: list[tuple[Level, ...]] = [(), ()]
        self._keys: list[list[Decimal]] = [[], []]

    def snapshot(self, bids: list[tuple[Decimal, Decimal]],
                 asks: list[tuple[Decimal, Decimal]]) -> None:
        b = {p: s for p, s in bids if s > ZERO}
        a = {p: s for p, s in asks if s > ZERO}
        bid_prices, ask_prices = sorted(b, reverse=True), sorted(a)
        sides = [tuple(Level(p, a[p]) for p in ask_prices),
                 tuple(Level(p, b[p]) for p in bid_prices)]
        self.bids, self.asks, self._sides = b, a, sides
        self._keys = [ask_prices, [-p for p in bid_prices]]
        self.seq += 1
        self._book = None

    def set_level(self, bid: bool, price: Decimal, size: Decimal) -> None:
        """Absolute size at a level; 0 deletes it."""
        keys = self._keys[bid]
        key = -price if bid else price
        i = bisect_left(keys, key)
        present = i < len(keys) and keys[i] == key
        levels = self._sides[bid]
        side = self.bids if bid else self.asks
        if size > ZERO:
            level = Level(price, size)
            if present:
                self._sides[bid] = (*levels[:i], level, *levels[i + 1:])
            else:
                keys.insert(i, key)
                self._sides[bid] = (*levels[:i], level, *levels[i:])
            side[price] = size
        elif present:
            del keys[i]
            self._sides[bid] = levels[:i] + levels[i + 1:]
            del side[price]
        self.seq += 1
        self._book = None

    def add_level(self, bid: bool, price: Decimal, delta: Decimal) -> None:
        side = self.bids if bid else self.asks
        self.set_level(bid, price, side.get(price, ZERO) + delta)

    def trim(self, best_bid: Decimal | None, best_ask: Decimal | None) -> bool:
        """Drop levels better than the venue's own best bid / best ask (stale levels a lost
        or reordered delta left behind, which would cross the book). True if any went."""
        dropped = False
        for bid, best in ((True, best_bid), (False, best_ask)):
            if best is None:
                continue
            keys = self._keys[bid]
            n = bisect_left(keys, -best if bid else best)  # the levels better than best
            if n:
                side = self.bids if bid else self.asks
                for level in self._sides[bid][:n]:
                    del side[level.price]
                del keys[:n]
                self._sides[bid] = self._sides[bid][n:]
                dropped = True
        if dropped:
            self.seq += 1
            self._book = None
        return dropped

    def book(self) -> Book:
        if self._book is None:
            self._book = Book(self.venue, self.instrument, self._sides[True],
                              self._sides[False], timestamp=time.time(), sequence=self.seq)
        return self._book
