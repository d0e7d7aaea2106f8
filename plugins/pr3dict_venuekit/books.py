"""Local order books kept from snapshots and deltas, handed out as immutable ``Book``s."""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
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


_PRICES: dict[object, Decimal] = {}  # str keys only
_MAX_PRICES = 20_000  # a price has at most 4 decimals on either venue: ~10,001 in [0, 1]


def price(text: object) -> Decimal:
    """``Decimal(text)`` for a price as a feed writes it, parsed once per distinct text: a
    feed repeats the same few hundred prices (0.05 against 0.11 us a parse, measured for
    bench/bench_replay.py). Sizes vary too much to be worth it. Bounded: past
    ``_MAX_PRICES`` distinct texts (a hostile feed) it only parses."""
    value = _PRICES.get(text)
    if value is None:
        value = Decimal(text)  # type: ignore[arg-type]
        if type(text) is str and len(_PRICES) < _MAX_PRICES:  # 0.5 == "0.5" would share
            _PRICES[text] = value
    return value


class LocalBook:
    """One instrument's levels (price -> size per side) and, kept in step with them, each
    side's ``Level``s in price order. A change patches the one level it touches (found by
    bisection) in a list; ``book()`` turns only the sides that changed into tuples, so it
    costs one ``Book`` however deep the book is: books are rebuilt after every message of
    a feed (and of a replay). A side that did not change keeps its very tuple, so a reader
    may skip work by identity. A bad price raises before anything changes (``Level``
    checks it)."""

    __slots__ = ("_book", "_keys", "_levels", "_tuples", "asks", "bids", "instrument", "seq",
                 "venue")

    def __init__(self, venue: str, instrument: str):
        self.venue = venue
        self.instrument = instrument
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq = 0
        self._book: Book | None = None
        # [asks, bids]: prices ascending (_keys) and their Levels in the same order; a
        # side's tuple best first, None once the side changed (rebuilt by ``book()``)
        self._keys: list[list[Decimal]] = [[], []]
        self._levels: list[list[Level]] = [[], []]
        self._tuples: list[tuple[Level, ...] | None] = [(), ()]

    def snapshot(self, bids: list[tuple[Decimal, Decimal]],
                 asks: list[tuple[Decimal, Decimal]]) -> None:
        b = {p: s for p, s in bids if s > ZERO}
        a = {p: s for p, s in asks if s > ZERO}
        bid_prices, ask_prices = sorted(b), sorted(a)
        levels = [[_level(p, a[p]) for p in ask_prices], [_level(p, b[p]) for p in bid_prices]]
        self.bids, self.asks, self._levels = b, a, levels
        self._keys = [ask_prices, bid_prices]
        self._tuples = [None, None]
        self.seq += 1
        self._book = None

    def set_level(self, bid: bool, price: Decimal, size: Decimal) -> None:
        """Absolute size at a level; 0 deletes it."""
        keys = self._keys[bid]
        i = bisect_left(keys, price)
        present = i < len(keys) and keys[i] == price
        if size > ZERO:
            level = _level(price, size)
            if present:
                self._levels[bid][i] = level
            else:
                keys.insert(i, price)
                self._levels[bid].insert(i, level)
            (self.bids if bid else self.asks)[price] = size
            self._tuples[bid] = None
        elif present:  # (nothing there to delete: the side keeps its tuple)
            del keys[i]
            del self._levels[bid][i]
            del (self.bids if bid else self.asks)[price]
            self._tuples[bid] = None
        self.seq += 1
        self._book = None

    def add_level(self, bid: bool, price: Decimal, delta: Decimal) -> None:
        side = self.bids if bid else self.asks
        self.set_level(bid, price, side.get(price, ZERO) + delta)

    def trim(self, best_bid: Decimal | None, best_ask: Decimal | None) -> bool:
        """Drop levels better than the venue's own best bid / best ask (stale levels a lost
        or reordered delta left behind, which would cross the book). True if any went."""
        bid_keys, ask_keys = self._keys[True], self._keys[False]
        stale_bids = best_bid is not None and bid_keys and bid_keys[-1] > best_bid
        stale_asks = best_ask is not None and ask_keys and ask_keys[0] < best_ask
        if not (stale_bids or stale_asks):  # the usual case: two comparisons
            return False
        if stale_bids and best_bid is not None:
            self._drop(True, bisect_right(bid_keys, best_bid), len(bid_keys))
        if stale_asks and best_ask is not None:
            self._drop(False, 0, bisect_left(ask_keys, best_ask))
        self.seq += 1
        self._book = None
        return True

    def _drop(self, bid: bool, start: int, stop: int) -> None:
        """Remove the side's levels ``start:stop`` (in price order)."""
        side = self.bids if bid else self.asks
        for price in self._keys[bid][start:stop]:
            del side[price]
        del self._keys[bid][start:stop]
        del self._levels[bid][start:stop]
        self._tuples[bid] = None

    def book(self) -> Book:
        if self._book is None:
            tuples = self._tuples
            asks = tuples[False]
            if asks is None:
                asks = tuples[False] = tuple(self._levels[False])
            bids = tuples[True]
            if bids is None:
                bids = tuples[True] = tuple(reversed(self._levels[True]))
            # Book(...) without attrs' per-field calls (every field is already what Book
            # holds): 1.0 -> 0.6 us, one per changed book per cycle (bench/bench_replay.py)
            book = self._book = _new(Book)
            _set(book, "venue", self.venue)
            _set(book, "instrument", self.instrument)
            _set(book, "bids", bids)
            _set(book, "asks", asks)
            _set(book, "timestamp", time.time())
            _set(book, "sequence", self.seq)
        return self._book
