"""The built-in detectors price a set of legs again only when one of its books changed and
its asks or the limits are new: a change of the bids alone yields nothing new. The books are
``LocalBook``s, which the connectors and the replay venue keep (an unchanged side keeps its
tuple)."""

from __future__ import annotations

from decimal import Decimal as D

from pr3dict_core.model import Book, Market
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_detectors.cross_venue import CrossVenue, Pair
from pr3dict_gates.capital import CapitalGate
from pr3dict_venuekit.books import LocalBook


class BookVenue:
    """Markets whose books are ``LocalBook``s the test changes (no fees)."""

    def __init__(self, vid: str, *market_ids: str):
        self.id = vid
        self._markets = [Market(vid, m, f"{m}:yes", f"{m}:no") for m in market_ids]
        self.books = {i: LocalBook(vid, i) for m in self._markets for i in (m.yes, m.no)}

    def markets(self) -> list[Market]:
        return self._markets

    def book(self, instrument: str) -> Book:
        return self.books[instrument].book()

    def fee(self, instrument: str, price: D, size: D) -> D:
        return D(0)

    def ask(self, instrument: str, price: str, size: str) -> Book:
        self.books[instrument].set_level(False, D(price), D(size))
        return self.book(instrument)

    def bid(self, instrument: str, price: str, size: str) -> Book:
        self.books[instrument].set_level(True, D(price), D(size))
        return self.book(instrument)


def test_complement_prices_again_only_for_new_asks_or_limits():
    venue = BookVenue("v", "m")
    gate = CapitalGate("cap", CapitalGate.Config(bankroll=D(100)))
    det = BinaryComplement("c", BinaryComplement.Config(venues=("v",), capital_gate="cap"),
                           built={"gates": {"cap": gate}})
    det.bind({"v": venue})
    venue.ask("m:no", "0.50", "10")
    (opp,) = det.detect([venue.ask("m:yes", "0.45", "10")])
    assert opp.size == D(10)

    before = venue.book("m:yes")
    after = venue.bid("m:yes", "0.40", "5")  # the bids alone
    assert after.asks is before.asks and after is not before
    assert list(det.detect([after])) == []

    (opp,) = det.detect([venue.ask("m:no", "0.50", "4")])  # fewer shares offered
    assert opp.size == D(4)

    gate.reserved["other"] = D(98)  # the limits change: the same books are sized again
    (opp,) = det.detect([venue.book("m:yes")])
    assert opp.size == D("2.10") and det.last_plan.limited_by == "capital"  # 2 / 0.95
    assert list(det.detect([venue.book("m:yes")])) == []  # and then nothing is new


def test_cross_venue_prices_only_the_hedge_whose_asks_changed():
    poly, kalshi = BookVenue("poly", "a"), BookVenue("kalshi", "A")
    pair = Pair(id="p", index=0, venue_a="poly", a="a", venue_b="kalshi", b="A",
                inverted=False, equivalent=True)
    det = CrossVenue("x", CrossVenue.Config(venues=("poly", "kalshi"), mapping="unused"),
                     [pair])
    det.bind({"poly": poly, "kalshi": kalshi})
    # both hedges clear the bar: YES_a + NO_A = 0.90 and NO_a + YES_A = 0.92
    poly.ask("a:yes", "0.45", "10")
    poly.ask("a:no", "0.47", "10")
    kalshi.ask("A:yes", "0.45", "10")
    opps = list(det.detect([kalshi.ask("A:no", "0.45", "10"), poly.book("a:yes"),
                            poly.book("a:no"), kalshi.book("A:yes")]))
    assert sorted(tuple(leg.instrument for leg in o.legs) for o in opps) == [
        ("a:no", "A:yes"), ("a:yes", "A:no")]

    # a new ask on a:yes prices its hedge (YES_a + NO_A) only
    (opp,) = det.detect([poly.ask("a:yes", "0.44", "3")])
    assert [leg.instrument for leg in opp.legs] == ["a:yes", "A:no"]
    assert opp.legs[0].best_price == D("0.44") and opp.cost == D("0.44") * 3 + D("0.45") * 7 \
        + D("0.45") * 10
    # bids alone: nothing new on either hedge
    assert list(det.detect([poly.bid("a:yes", "0.30", "9"), kalshi.bid("A:yes", "0.3", "9")
                            ])) == []
