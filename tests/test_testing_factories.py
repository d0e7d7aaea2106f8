"""pr3dict_core.testing's factories and stub venue, used the way a plugin author would."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pr3dict_core.components import AmbiguousOutcome, UnknownOrder, Venue
from pr3dict_core.config import ExecutionSection
from pr3dict_core.model import OrderRequest, OrderStatus, Side, TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_core.testing import (
    StubVenue,
    make_book,
    make_opportunity,
    make_trade,
    make_trade_record,
)
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_gates.capital import CapitalGate
from pr3dict_sinks.basic import MemorySink
from pr3dict_strategies.market import MarketStrategy

D = Decimal


def test_make_book_and_opportunity():
    book = make_book("m:yes", bids=[("0.44", 5)], asks=[("0.46", "7.5")])
    assert book.best_bid.price == D("0.44") and book.best_ask.size == D("7.5")
    opp = make_opportunity(("0.45", "0.50"), size="10", fees="0.1")
    assert [leg.instrument for leg in opp.legs] == ["m:yes", "m:no"]
    assert opp.cost == D("9.6") and opp.expected_profit == D("0.4")
    three = make_opportunity(("0.3", "0.3", "0.3"), kind="multi_outcome")
    assert [leg.instrument for leg in three.legs] == ["m:0", "m:1", "m:2"]
    with pytest.raises(TypeError, match="float"):
        make_book(asks=[(0.5, 1)])


def test_make_trade_reaches_each_state_legally():
    committed = make_trade(state="committed")
    assert committed.state is TradeState.COMMITTED and committed.hedged_size == D(10)
    assert committed.realised_pnl == D("0.5")  # 10 * (1 - 0.45 - 0.50)
    half = make_trade(state=TradeState.ROLLED_BACK, filled=["10", "4"])
    assert half.hedged_size == D(4) and half.history[-1] is TradeState.ROLLING_BACK
    rejected = make_trade(state="rejected", reject_reason="too big", gate="capital")
    assert (rejected.legs, rejected.reject_reason, rejected.gate) == ([], "too big", "capital")
    record = make_trade_record(trade=committed)
    assert record.state == "committed" and len(record.legs) == 2
    assert record.legs[0].average_price == D("0.45")


async def test_a_gate_unit_test_with_factories():
    gate = CapitalGate("capital", CapitalGate.Config(bankroll=D(5)))
    decision = await gate.evaluate(make_trade(state="detected"))
    assert not decision.approved and "trade cost 9.5000 (worst case) exceeds" in decision.reason
    assert (await gate.evaluate(make_trade(make_opportunity(size="5"),
                                           state="detected"))).approved


async def test_stub_venue_replies_as_scripted():
    venue = StubVenue()
    assert isinstance(venue, Venue)
    venue.script("partial:3", "rest", "reject", AmbiguousOutcome("timed out"))

    def order(n):
        return OrderRequest(f"c{n}", "stub", "m:yes", Side.BUY, "0.5", "10")

    partial = await venue.place_order(order(1))
    assert (partial.status, partial.filled) == (OrderStatus.CANCELLED, D(3))
    resting = await venue.place_order(order(2))
    assert resting.status is OrderStatus.OPEN
    assert (await venue.cancel_order("c2")).status is OrderStatus.CANCELLED
    assert (await venue.place_order(order(3))).status is OrderStatus.REJECTED
    with pytest.raises(AmbiguousOutcome):
        await venue.place_order(order(4))
    assert (await venue.place_order(order(5))).status is OrderStatus.FILLED  # default
    with pytest.raises(UnknownOrder):
        await venue.get_order("c4")
    assert venue.positions() == {"m:yes": D(13)}
    assert [r.client_order_id for r in venue.requests] == ["c1", "c2", "c3", "c4", "c5"]


async def test_stub_venue_drives_an_engine_to_rollback():
    venue = StubVenue()
    venue.set_book("m:yes", bids=[("0.43", 100)], asks=[("0.45", 10)])
    venue.set_book("m:no", bids=[("0.48", 100)], asks=[("0.50", 10)])
    venue.script("fill", "reject")  # YES fills, NO is refused: the YES shares are sold back
    sink = MemorySink("mem")
    engine = Engine(
        venues={"stub": venue},
        detectors=[BinaryComplement("c", BinaryComplement.Config(venues=("stub",)))],
        strategy=MarketStrategy(MarketStrategy.Config(max_attempts=1)), sinks=[sink],
        execution=ExecutionSection(deadline_ms=50))
    async with engine:
        (trade,) = await engine.scan_and_execute()
    assert trade.state is TradeState.ROLLED_BACK
    assert [(r.instrument, r.side) for r in venue.requests][-1] == ("m:yes", Side.SELL)
    assert venue.positions()["m:yes"] == 0
    assert [r.state for r in sink.records] == ["rolled_back"]
