"""The built-in detectors skip a set of legs when a change of its books cannot change the
answer: it found nothing last time and its asks and the limits are the same, or its best
asks rejected it and the changed book's best ask is no better. A set offered last time is
offered again on any change (the engine may not have taken it). The books are
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
        self.reads = 0

    def markets(self) -> list[Market]:
        return self._markets

    def book(self, instrument: str) -> Book:
        self.reads += 1  # how many books a detector read: what pricing a set costs
        return self.books[instrument].book()

    def fee(self, instrument: str, price: D, size: D) -> D:
        return D(0)

    def ask(self, instrument: str, price: str, size: str) -> Book:
        self.books[instrument].set_level(False, D(price), D(size))
        return self.book(instrument)

    def bid(self, instrument: str, price: str, size: str) -> Book:
        self.books[instrument].set_level(True, D(price), D(size))
        return self.book(instrument)


def priced(venue: BookVenue, detector, changed: list[Book]) -> tuple[list, int]:
    """What ``detector`` offers for ``changed``, and how many books it read to say so."""
    before = venue.reads
    opps = list(detector.detect(changed))
    return opps, venue.reads - before


def test_complement_skips_what_cannot_change_its_answer():
    venue = BookVenue("v", "m")
    gate = CapitalGate("cap", CapitalGate.Config(bankroll=D(100)))
    det = BinaryComplement("c", BinaryComplement.Config(venues=("v",), capital_gate="cap"),
                           built={"gates": {"cap": gate}})
    det.bind({"v": venue})
    venue.ask("m:no", "0.50", "10")
    assert priced(venue, det, [venue.ask("m:yes", "0.55", "10")]) == ([], 2)  # 1.05: rejected

    yes = venue.book("m:yes")
    after = venue.bid("m:yes", "0.40", "5")  # the bids alone
    assert after.asks is yes.asks and after is not yes
    assert priced(venue, det, [after]) == ([], 0)  # nothing read
    assert priced(venue, det, [venue.ask("m:yes", "0.60", "7")]) == ([], 0)  # best no better

    opps, reads = priced(venue, det, [venue.ask("m:yes", "0.45", "10")])  # better: priced
    assert [o.size for o in opps] == [D(10)] and reads == 2
    # Offered: the engine may not have taken it (a trade in flight, a gate), so any change
    # of its books offers it again.
    opps, _ = priced(venue, det, [venue.bid("m:no", "0.30", "1")])
    assert [o.size for o in opps] == [D(10)]

    gate.reserved["other"] = D(98)  # the limits change: the same books are sized again
    (opp,) = det.detect([venue.book("m:yes")])
    assert opp.size == D("2.10") and det.last_plan.limited_by == "capital"  # 2 / 0.95

    venue.ask("m:no", "0.50", "0")  # the 0.50 ask goes: nothing to buy at all
    assert priced(venue, det, [venue.ask("m:no", "0.58", "10")]) == ([], 2)
    assert priced(venue, det, [venue.bid("m:no", "0.31", "1")]) == ([], 0)


def test_cross_venue_prices_only_the_hedge_a_change_can_move():
    poly, kalshi = BookVenue("poly", "a"), BookVenue("kalshi", "A")
    pair = Pair(id="p", index=0, venue_a="poly", a="a", venue_b="kalshi", b="A",
                inverted=False, equivalent=True)
    det = CrossVenue("x", CrossVenue.Config(venues=("poly", "kalshi"), mapping="unused"),
                     [pair])
    det.bind({"poly": poly, "kalshi": kalshi})
    # YES_a + NO_A = 0.90 clears the bar; NO_a + YES_A = 1.02 does not
    poly.ask("a:yes", "0.45", "10")
    poly.ask("a:no", "0.57", "10")
    kalshi.ask("A:yes", "0.45", "10")
    (opp,) = det.detect([kalshi.ask("A:no", "0.45", "10"), poly.book("a:yes"),
                         poly.book("a:no"), kalshi.book("A:yes")])
    assert [leg.instrument for leg in opp.legs] == ["a:yes", "A:no"]

    # the rejected hedge's bids, or an ask no better than its best: nothing read
    assert priced(poly, det, [poly.bid("a:no", "0.30", "9")]) == ([], 0)
    assert priced(poly, det, [poly.ask("a:no", "0.58", "9")]) == ([], 0)
    # its best ask better: priced (read both books), and it clears the bar now
    (opp,), reads = priced(poly, det, [poly.ask("a:no", "0.50", "4")])
    assert [leg.instrument for leg in opp.legs] == ["a:no", "A:yes"] and opp.size == D(4)
    assert reads == 1  # poly's book of a:no (kalshi's A:yes is kalshi's read)

    # a new ask on a:yes prices its own hedge (YES_a + NO_A) only
    (opp,) = det.detect([poly.ask("a:yes", "0.44", "3")])
    assert [leg.instrument for leg in opp.legs] == ["a:yes", "A:no"]
    assert opp.legs[0].best_price == D("0.44") and opp.cost == D("0.44") * 3 + D("0.45") * 7 \
        + D("0.45") * 10
