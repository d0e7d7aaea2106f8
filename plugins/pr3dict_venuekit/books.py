"""Local order books kept from snapshots and deltas, handed out as immutable ``Book``s."""

from __future__ import annotations

import time
from bisect import bisect_left
from decimal import Decimal

from pr3dict_core.model import ONE, ZERO, Book, Level

_new = object.__new__
_set = object.__setattr__


def _level(price: Decimal, size: Decimal) -> Level:
    """``Level(price, size)`` for a Decimal price in [0, 1] and a positive Decimal size (as
    every caller here has), without attrs' four per-field calls: one level is built per
    book change. Anything else goes through ``Level`` itself, which converts or refuses."""
    if type(price) is not Decimal or type(size) is not Decimal or not ZERO <= price <= ONE:
        return Level(price, size)
    level = _new(Level)
    _set(level, "price", price)
    _set(level, "size", size)
    return level


class LocalBook:
    """One instrument's levels (price -> size per side) and, kept in step with them, each
    side's ``Level``s best first. A change patches the one level it touches (found by
    bisection), so ``book()`` costs one ``Book`` however deep the book is: books are
    rebuilt after every message of a feed (and of a replay). A side that did not change
    keeps its very tuple, so a reader may skip work by identity. A bad price raises before
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
        sides = [tuple(_level(p, a[p]) for p in ask_prices),
                 tuple(_level(p, b[p]) for p in bid_prices)]
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
        sides = self._sides
        levels = sides[bid]
        if size > ZERO:
            level = _level(price, size)
            if present:
                sides[bid] = (*levels[:i], level, *levels[i + 1:])
            else:
                keys.insert(i, key)
                sides[bid] = (*levels[:i], level, *levels[i:])
            (self.bids if bid else self.asks)[price] = size
        elif present:
            del keys[i]
            sides[bid] = levels[:i] + levels[i + 1:]
            del (self.bids if bid else self.asks)[price]
        self.seq += 1
        self._book = None

    def add_level(self, bid: bool, price: Decimal, delta: Decimal) -> None:
        side = self.bids if bid else self.asks
        self.set_level(bid, price, side.get(price, ZERO) + delta)

    def trim(self, best_bid: Decimal | None, best_ask: Decimal | None) -> bool:
        """Drop levels better than the venue's own best bid / best ask (stale levels a lost
        or reordered delta left behind, which would cross the book). True if any went."""
        bid_keys, ask_keys = self._keys[True], self._keys[False]
        stale_bids = best_bid is not None and bid_keys and bid_keys[0] < -best_bid
        stale_asks = best_ask is not None and ask_keys and ask_keys[0] < best_ask
        if not (stale_bids or stale_asks):  # the usual case: two comparisons
            return False
        if stale_bids:
            self._drop(True, bisect_left(bid_keys, -best_bid))  # type: ignore[operator]
        if stale_asks:
            self._drop(False, bisect_left(ask_keys, best_ask))
        self.seq += 1
        self._book = None
        return True

    def _drop(self, bid: bool, n: int) -> None:
        """Remove the side's best ``n`` levels."""
        side = self.bids if bid else self.asks
        for level in self._sides[bid][:n]:
            del side[level.price]
        del self._keys[bid][:n]
        self._sides[bid] = self._sides[bid][n:]

    def book(self) -> Book:
        if self._book is None:
            self._book = Book(self.venue, self.instrument, self._sides[True],
                              self._sides[False], timestamp=time.time(), sequence=self.seq)
        return self._book
