"""The local fill model of replay and shadow runs, on hand-made books."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from pr3dict_core.components import OrderRejected
from pr3dict_core.model import Market, OrderRequest, OrderStatus, Side, TimeInForce
from pr3dict_polymarket import protocol as pm
from pr3dict_replay.fills import FillSimulator
from pr3dict_venuekit.books import LocalBook

M = Market("v", "m", "m:yes", "m:no", tick_size=D("0.01"), min_size=D("1"), size_step=D("1"))


def setup(twin=None):
    books = {i: LocalBook("v", i) for i in (M.yes, M.no)}
    sim = FillSimulator("v", books, {M.yes: M, M.no: M}.get,
                        lambda i, p, s: pm.fee(D("0.02"), s, p), twin or (lambda i: None))
    return books, sim


def order(cid, side, price, size, tif=TimeInForce.FAK, inst=M.yes):
    return OrderRequest(cid, "v", inst, side, D(price), D(size), tif)


def test_a_taker_walks_displayed_depth_up_to_its_limit_and_pays_the_taker_fee():
    books, sim = setup()
    books[M.yes].snapshot([], [(D("0.40"), D("10")), (D("0.41"), D("10")), (D("0.45"), D("50"))])
    ack = sim.submit(order("a", Side.BUY, "0.42", "25"))
    assert ack.status is OrderStatus.CANCELLED  # FAK: 20 filled, 5 cancelled
    assert [(f.price, f.size) for f in ack.fills] == [(D("0.40"), D("10")), (D("0.41"), D("10"))]
    assert ack.fills[0].fee == pm.fee(D("0.02"), D("10"), D("0.40"))
    assert sim.positions[M.yes] == D("20")


def test_taken_depth_stays_taken_until_the_recorded_level_changes():
    books, sim = setup()
    books[M.yes].snapshot([], [(D("0.40"), D("10"))])
    assert sim.submit(order("a", Side.BUY, "0.40", "10")).status is OrderStatus.FILLED
    assert sim.submit(order("b", Side.BUY, "0.40", "10")).fills == ()  # nothing left
    books[M.yes].set_level(False, D("0.40"), D("12"))  # the market moved on
    assert sum(f.size for f in sim.submit(order("c", Side.BUY, "0.40", "10")).fills) == 10


def test_fok_fills_entirely_or_not_at_all_and_bad_ticks_are_rejected():
    books, sim = setup()
    books[M.yes].snapshot([], [(D("0.40"), D("5"))])
    ack = sim.submit(order("a", Side.BUY, "0.40", "10", TimeInForce.FOK))
    assert ack.status is OrderStatus.CANCELLED and ack.fills == ()
    with pytest.raises(OrderRejected):
        sim.submit(order("b", Side.BUY, "0.405", "1"))


def test_a_resting_order_fills_only_once_the_queue_ahead_is_depleted():
    books, sim = setup()
    books[M.yes].snapshot([(D("0.38"), D("30"))], [(D("0.40"), D("10"))])
    ack = sim.submit(order("r", Side.BUY, "0.38", "10", TimeInForce.GTC))
    assert ack.status is OrderStatus.OPEN and ack.fills == ()
    books[M.yes].set_level(True, D("0.38"), D("10"))  # 20 of the 30 ahead traded or left
    assert sim.on_book(M.yes) == []
    books[M.yes].set_level(True, D("0.38"), D("50"))  # joiners queue behind us
    assert sim.on_book(M.yes) == []
    books[M.yes].set_level(True, D("0.38"), D("46"))  # 4 more gone: 10 ahead -> 6 ahead
    assert sim.on_book(M.yes) == []
    books[M.yes].set_level(True, D("0.38"), D("36"))  # 10 gone: 6 ahead, then 4 of ours
    [rec] = sim.on_book(M.yes)
    assert (rec.filled, rec.fills[-1].price, rec.fills[-1].fee) == (D("4"), D("0.38"), D("0"))
    books[M.yes].set_level(False, D("0.37"), D("20"))  # an ask through our bid: the rest
    [rec] = sim.on_book(M.yes)
    assert rec.status is OrderStatus.FILLED and rec.filled == D("10")
    assert sim.cancel("r").status is OrderStatus.FILLED


def test_kalshi_yes_asks_are_no_bids_so_taking_one_takes_the_other():
    books, sim = setup(twin=lambda i: M.no if i == M.yes else M.yes)
    books[M.yes].snapshot([], [(D("0.40"), D("10"))])
    books[M.no].snapshot([(D("0.60"), D("10"))], [])
    assert sim.submit(order("a", Side.BUY, "0.40", "10")).status is OrderStatus.FILLED
    sell_no = sim.submit(order("b", Side.SELL, "0.60", "5", inst=M.no))
    assert sell_no.fills == ()  # the same 10 contracts were already taken
