"""binary_complement walks depth, sizes equal shares and subtracts fees."""

from __future__ import annotations

from decimal import Decimal as D

from support import scripted_venue, set_book

from pr3dict_core.model import Side
from pr3dict_detectors.complement import BinaryComplement


def detector(venue, **kw):
    det = BinaryComplement("c", BinaryComplement.Config(venues=(venue.id,), **kw))
    det.bind({venue.id: venue})
    return det


def books(venue):
    return [venue.book("m:yes"), venue.book("m:no")]


def test_walks_depth_while_each_share_clears_min_edge():
    venue = scripted_venue()
    set_book(venue, "m:yes", asks=[("0.40", 10), ("0.42", 10)])
    set_book(venue, "m:no", asks=[("0.55", 5), ("0.56", 20)])
    (opp,) = detector(venue, min_edge=D("0.01")).detect(books(venue))
    # 5 @ 0.95, 5 @ 0.96, 10 @ 0.98 -> 20 shares
    assert opp.size == 20
    assert [leg.side for leg in opp.legs] == [Side.BUY, Side.BUY]
    assert {leg.size for leg in opp.legs} == {D(20)}  # equal shares, never equal dollars
    assert (opp.legs[0].price, opp.legs[1].price) == (D("0.42"), D("0.56"))
    assert (opp.legs[0].best_price, opp.legs[1].best_price) == (D("0.40"), D("0.55"))
    assert opp.cost == D("4.75") + D("4.80") + D("9.80")
    assert opp.edge_per_share * opp.size == D(20) - opp.cost

    (opp,) = detector(venue, min_edge=D("0.03")).detect(books(venue))
    assert opp.size == 10


def test_fees_are_subtracted_and_can_kill_an_edge():
    venue = scripted_venue(fee_rate="0.02")
    set_book(venue, "m:yes", asks=[("0.40", 10)])
    set_book(venue, "m:no", asks=[("0.55", 10)])
    (opp,) = detector(venue, min_edge=D("0.01")).detect(books(venue))
    fees = D(10) * D("0.02") * (D("0.40") * D("0.60") + D("0.55") * D("0.45"))
    assert opp.fees == fees
    assert opp.edge_per_share == (D("0.05") * 10 - fees) / 10
    assert not list(detector(venue, min_edge=D("0.045")).detect(books(venue)))


def test_no_edge_no_opportunity_and_max_size_caps():
    venue = scripted_venue()
    set_book(venue, "m:yes", asks=[("0.50", 10)])
    set_book(venue, "m:no", asks=[("0.50", 10)])
    assert not list(detector(venue, min_edge=D("0.001")).detect(books(venue)))
    set_book(venue, "m:no", asks=[("0.45", 10)])
    (opp,) = detector(venue, min_edge=D("0.01"), max_size=D("3.5")).detect(books(venue))
    assert opp.size == D("3.5")


def test_only_changed_markets_are_evaluated():
    venue = scripted_venue(markets=("a", "b"))
    for m in ("a", "b"):
        set_book(venue, f"{m}:yes", asks=[("0.40", 10)])
        set_book(venue, f"{m}:no", asks=[("0.50", 10)])
    det = detector(venue, min_edge=D("0.01"))
    found = list(det.detect([venue.book("b:no")]))
    assert [o.legs[0].market_id for o in found] == ["b"]


def test_below_min_size_is_ignored():
    venue = scripted_venue()
    set_book(venue, "m:yes", asks=[("0.40", 1)])
    set_book(venue, "m:no", asks=[("0.50", 1)])
    assert len(list(detector(venue, min_edge=D("0.01")).detect(books(venue)))) == 1
    assert not list(detector(venue, min_edge=D("0.01"), max_size=D("0.5")).detect(books(venue)))
