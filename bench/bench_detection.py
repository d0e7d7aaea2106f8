"""Detection benchmark: incremental book updates per second across 10,000 markets, one core.

Each detector watches 10,000 binary markets (binary_complement: one venue; cross_venue:
5,000 mapped pairs over two venues; multi_outcome: 2,000 five-outcome negative-risk sets).
A stream of book updates (a new ask ladder for one instrument; about 1 in 100 opens an
arbitrage) is applied to an in-memory venue and handed to ``detect`` one update at a time,
and in batches of 100 as a venue poll would deliver them. Books are built before timing, so
the numbers are the detector's work: finding what the update touches, the cheap
top-of-book test, and walking depth and sizing when there is an edge. Also shown: one full
rescan of every market, what a non-incremental detector pays per update.

    python bench/bench_detection.py [--markets 10000] [--updates 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from decimal import Decimal

from pr3dict_core.model import Book, Level, Market
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_detectors.cross_venue import CrossVenue, Pair
from pr3dict_detectors.multi_outcome import MultiOutcome
from pr3dict_paper.venue import OutcomeSet, kalshi_fee, polymarket_fee

D = Decimal
TICK = D("0.01")
TARGET = 50_000  # DESIGN.md section 9


class DictVenue:
    """Books in a dict: ``book()`` is a lookup, so the timing is the detector's."""

    type = "bench"

    def __init__(self, vid: str, markets: Sequence[Market], fee, events=()):  # type: ignore[no-untyped-def]
        self.id = vid
        self._markets = list(markets)
        self.books: dict[str, Book] = {}
        self.fee = fee
        self._events = list(events)

    def markets(self) -> Sequence[Market]:
        return self._markets

    def events(self) -> Sequence[OutcomeSet]:
        return self._events

    def book(self, instrument: str) -> Book | None:
        return self.books.get(instrument)


def ladder(vid: str, inst: str, best: int, size: int = 40, levels: int = 3) -> Book:
    return Book(vid, inst, bids=(), asks=tuple(Level((best + i) * TICK, D(size))
                                               for i in range(levels)))


def binary_setup(n: int, rng: random.Random):
    markets = [Market("v", f"m{i}", f"m{i}:yes", f"m{i}:no") for i in range(n)]
    venue = DictVenue("v", markets, polymarket_fee(D("0.02")))
    fair = {m.market_id: rng.randint(10, 90) for m in markets}
    for m in markets:
        venue.books[m.yes] = ladder("v", m.yes, fair[m.market_id] + 1)
        venue.books[m.no] = ladder("v", m.no, 100 - fair[m.market_id] + 1)
    det = BinaryComplement("bench", BinaryComplement.Config(venues=("v",), max_size=D(25)))
    det.bind({"v": venue})

    def update(k: int) -> tuple[DictVenue, Book]:
        m = markets[rng.randrange(n)]
        f = fair[m.market_id] = min(max(fair[m.market_id] + rng.choice((-1, 1)), 5), 95)
        yes = rng.random() < 0.5
        inst = m.yes if yes else m.no
        best = (f if yes else 100 - f) + 1
        if rng.random() < 0.01:
            best -= 4  # the pair now sums to 0.98: an edge
        return venue, ladder("v", inst, best)

    return det, [venue], update, lambda: [det.evaluate(m) for m in markets]


def cross_setup(n: int, rng: random.Random):
    pairs_n = n // 2
    a = [Market("poly", f"p{i}", f"p{i}:yes", f"p{i}:no") for i in range(pairs_n)]
    b = [Market("kalshi", f"K{i}", f"K{i}:yes", f"K{i}:no", size_step=D(1))
         for i in range(pairs_n)]
    poly = DictVenue("poly", a, polymarket_fee(D("0.02")))
    kalshi = DictVenue("kalshi", b, kalshi_fee(D("0.07")))
    fair = [rng.randint(10, 90) for _ in range(pairs_n)]
    inverted = [i % 5 == 0 for i in range(pairs_n)]
    for i in range(pairs_n):
        fb = 100 - fair[i] if inverted[i] else fair[i]
        poly.books[a[i].yes] = ladder("poly", a[i].yes, fair[i] + 1)
        poly.books[a[i].no] = ladder("poly", a[i].no, 100 - fair[i] + 1)
        kalshi.books[b[i].yes] = ladder("kalshi", b[i].yes, fb + 1)
        kalshi.books[b[i].no] = ladder("kalshi", b[i].no, 100 - fb + 1)
    pairs = [Pair(f"x{i}", "poly", a[i].market_id, "kalshi", b[i].market_id, inverted[i],
                  i % 50 != 0, i) for i in range(pairs_n)]
    det = CrossVenue("bench", CrossVenue.Config(venues=("poly", "kalshi"), mapping="-",
                                                max_size=D(25)), pairs)
    det.bind({"poly": poly, "kalshi": kalshi})

    def update(k: int) -> tuple[DictVenue, Book]:
        i = rng.randrange(pairs_n)
        on_a = rng.random() < 0.5
        venue, m = (poly, a[i]) if on_a else (kalshi, b[i])
        yes = rng.random() < 0.5
        f = fair[i] if on_a or not inverted[i] else 100 - fair[i]
        best = (f if yes else 100 - f) + 1 + rng.choice((-1, 0, 1))
        if rng.random() < 0.01:
            best -= 8  # a dislocation on one venue
        return venue, ladder(venue.id, m.yes if yes else m.no, max(best, 1))

    def rescan() -> None:
        for s in det.states:
            list(det.evaluate(s))

    return det, [poly, kalshi], update, rescan


def multi_setup(n: int, rng: random.Random, outcomes: int = 5):
    sets_n = n // outcomes
    markets = [Market("v", f"e{j}o{k}", f"e{j}o{k}:yes", f"e{j}o{k}:no")
               for j in range(sets_n) for k in range(outcomes)]
    events = [OutcomeSet(f"e{j}", tuple(f"e{j}o{k}" for k in range(outcomes)), j % 10 != 0)
              for j in range(sets_n)]
    venue = DictVenue("v", markets, polymarket_fee(D("0.02")), events)
    fair = {m.market_id: 100 // outcomes for m in markets}
    for m in markets:
        venue.books[m.yes] = ladder("v", m.yes, fair[m.market_id] + 1)
        venue.books[m.no] = ladder("v", m.no, 100 - fair[m.market_id] + 1)
    det = MultiOutcome("bench", MultiOutcome.Config(venues=("v",), max_size=D(25)))
    det.bind({"v": venue})

    def update(k: int) -> tuple[DictVenue, Book]:
        m = markets[rng.randrange(len(markets))]
        yes = rng.random() < 0.8
        f = fair[m.market_id]
        best = (f if yes else 100 - f) + 1 + rng.choice((-1, 0, 1))
        if yes and rng.random() < 0.01:
            best -= 8  # the set now sums below 1
        return venue, ladder("v", m.yes if yes else m.no, max(best, 1))

    def rescan() -> None:
        for state in det.sets.values():
            det.evaluate(state)

    return det, [venue], update, rescan


def measure(setup, markets: int, updates: int, batch: int, seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    det, _, update, rescan = setup(markets, rng)
    stream = [update(k) for k in range(updates)]
    found = 0
    lat: list[float] = []
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        if batch == 1:
            perf = time.perf_counter
            for venue, book in stream:
                t0 = perf()
                venue.books[book.instrument] = book
                for _ in det.detect((book,)):
                    found += 1
                lat.append(perf() - t0)
        else:
            for i in range(0, len(stream), batch):
                chunk = stream[i:i + batch]
                for venue, book in chunk:
                    venue.books[book.instrument] = book
                for _ in det.detect([b for _, b in chunk]):
                    found += 1
        elapsed = time.perf_counter() - start
        t0 = time.perf_counter()
        rescan()
        full = time.perf_counter() - t0
    finally:
        gc.enable()
    return updates / elapsed, found, lat, full


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rows = []
    for name, setup in (("binary_complement", binary_setup), ("cross_venue", cross_setup),
                        ("multi_outcome", multi_setup)):
        best1 = best100 = 0.0
        lat: list[float] = []
        found = 0
        full = 0.0
        for r in range(args.repeat):
            rate, found, lat_r, full = measure(setup, args.markets, args.updates, 1, 11 + r)
            best1 = max(best1, rate)
            lat = lat_r if rate == best1 else lat
            rate100, _, _, _ = measure(setup, args.markets, args.updates, 100, 11 + r)
            best100 = max(best100, rate100)
        lat.sort()
        rows.append((name, best1, best100, statistics.median(lat) * 1e6,
                     lat[int(len(lat) * 0.99)] * 1e6, found, full * 1000))
    print(f"detection benchmark: {args.markets:,} markets, {args.updates:,} book updates, "
          f"one core, best of {args.repeat} (target >= {TARGET:,} updates/s)")
    header = ("detector", "updates/s (1)", "updates/s (100)", "p50 us", "p99 us",
              "opportunities", "full rescan ms", "target")
    widths = [18, 14, 16, 8, 8, 14, 15, 7]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                    enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for name, r1, r100, p50, p99, found, full in rows:
        ok = "ok" if min(r1, r100) >= TARGET else "MISS"
        cells = (name, f"{r1:,.0f}", f"{r100:,.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{found:,}",
                 f"{full:.1f}", ok)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(cells, widths, strict=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
