"""Executing trades on a scripted paper venue: commit, rollback, unwind, unresolved legs."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from support import arb_books, engine_for, scripted_venue, set_book

from pr3dict_core import telemetry as tm
from pr3dict_core.components import AmbiguousOutcome, UnknownOrder
from pr3dict_core.model import LegState, Side, TradeState
from pr3dict_core.testing import span_tree
from pr3dict_gates.capital import CapitalGate
from pr3dict_gates.position import MaxPositionGate
from pr3dict_paper.scenario import FaultSpec


def hedged(venue) -> bool:
    pos = venue.positions()
    return pos.get("m:yes", D(0)) == pos.get("m:no", D(0))


async def test_all_legs_fill_and_commit(tracer_provider, span_exporter):
    venue = scripted_venue()
    engine = engine_for(venue, tracer_provider=tracer_provider)
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan() or [None]
    (trade,) = [await engine.execute_opportunity(opp)]
    await engine.close()
    assert trade.state is TradeState.COMMITTED
    assert [leg.state for leg in trade.legs] == [LegState.FILLED, LegState.FILLED]
    assert venue.positions() == {"m:yes": D(10), "m:no": D(10)}
    assert trade.realised_pnl == D("0.5")
    assert engine.sinks[0].records[0].state == "committed"
    spans = span_exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == tm.SPAN_OPPORTUNITY]
    assert span_tree(spans, root) == [tm.SPAN_OPPORTUNITY, [
        [tm.SPAN_DETECT, []], [tm.SPAN_EXECUTE, [[tm.SPAN_SUBMIT, []], [tm.SPAN_SUBMIT, []]]],
        [tm.SPAN_FINALIZE, []]]]
    assert root.attributes[tm.TRADE_STATE] == "committed"
    submits = [s for s in spans if s.name == tm.SPAN_SUBMIT]
    assert {s.attributes[tm.LEG_VENUE] for s in submits} == {"v"}
    assert {s.attributes[tm.LEG_INSTRUMENT] for s in submits} == {"m:yes", "m:no"}
    assert len({s.context.trace_id for s in spans}) == 1  # one trace per opportunity


async def test_missing_leg_rolls_back_by_unwinding_what_filled(tracer_provider, span_exporter):
    venue = scripted_venue()
    engine = engine_for(venue, tracer_provider=tracer_provider)
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.70", 50)])  # NO leg gone
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.state is TradeState.ROLLED_BACK
    yes, no = trade.legs
    assert (yes.state, no.state) == (LegState.FILLED, LegState.CANCELLED)
    (unwind,) = trade.unwind_legs
    assert (unwind.side, unwind.purpose, unwind.state) == (Side.SELL, "unwind", LegState.FILLED)
    assert venue.positions().get("m:yes", D(0)) == 0  # flat
    assert trade.rollback_cost == (D("0.45") - D("0.43")) * 10
    assert trade.realised_pnl == -trade.rollback_cost
    spans = span_exporter.get_finished_spans()
    (rollback,) = [s for s in spans if s.name == tm.SPAN_ROLLBACK]
    kids = [s for s in spans if s.parent and s.parent.span_id == rollback.context.span_id]
    assert [k.attributes[tm.LEG_PURPOSE] for k in kids] == ["unwind"]


async def test_partial_fill_keeps_the_hedged_part_and_unwinds_the_excess():
    venue = scripted_venue()
    engine = engine_for(venue)
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.50", 4), ("0.80", 50)])
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.state is TradeState.ROLLED_BACK
    assert trade.hedged_size == 4
    assert venue.positions() == {"m:yes": D(4), "m:no": D(4)}
    assert hedged(venue)


class FlakyVenue:
    """Wraps a paper venue: place_order on NO raises a plain bug; optionally queries fail."""

    def __init__(self, inner, *, queries_fail=False, error=None):
        self._inner = inner
        self.queries_fail = queries_fail
        self.error = error or RuntimeError("connector bug")

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def place_order(self, request):
        if request.instrument.endswith(":no"):
            raise self.error
        return await self._inner.place_order(request)

    async def get_order(self, cid):
        if self.queries_fail:
            raise ConnectionError("venue unreachable")
        return await self._inner.get_order(cid)


async def test_component_raising_rolls_back_and_run_goes_on(tracer_provider, span_exporter):
    inner = scripted_venue()
    venue = FlakyVenue(inner)
    engine = engine_for(inner, tracer_provider=tracer_provider)
    engine.venues["v"] = venue
    await engine.start()
    arb_books(inner)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    # The bug made the NO leg's outcome unknown; the venue says it never saw it.
    assert trade.legs[1].state is LegState.REJECTED
    assert LegState.UNRESOLVED in trade.legs[1].history
    assert trade.state is TradeState.ROLLED_BACK
    assert hedged(inner) and inner.positions().get("m:yes", D(0)) == 0
    failing = [s for s in span_exporter.get_finished_spans() if s.name == tm.SPAN_SUBMIT
               and s.attributes.get(tm.ERROR_TYPE) == "RuntimeError"]
    assert failing and failing[0].events[0].name == "exception"
    assert not engine.halted
    # The run goes on: the next trade works once the venue behaves.
    venue.error = None
    venue.place_order = inner.place_order  # type: ignore[method-assign]
    arb_books(inner)
    (opp,) = await engine.scan()
    assert (await engine.execute_opportunity(opp)).state is TradeState.COMMITTED
    await engine.close()


async def test_reply_lost_after_send_is_unresolved_then_reconciled():
    venue = scripted_venue(faults=FaultSpec(timeout_rate=D(1)))
    engine = engine_for(venue)
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    # Never assumed failed: the venue's truth (both filled) wins.
    assert trade.state is TradeState.COMMITTED
    assert all(LegState.UNRESOLVED in leg.history for leg in trade.legs)
    assert venue.positions() == {"m:yes": D(10), "m:no": D(10)}


async def test_unreconcilable_leg_leaves_trade_unresolved_and_fails_closed():
    inner = scripted_venue()
    venue = FlakyVenue(inner, queries_fail=True, error=AmbiguousOutcome("timeout after send"))
    engine = engine_for(inner)
    engine.venues["v"] = venue
    await engine.start()
    arb_books(inner)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    assert trade.state is TradeState.UNRESOLVED
    assert trade.legs[1].state is LegState.UNRESOLVED
    assert "unresolved" in engine.halted
    arb_books(inner)
    (opp,) = await engine.scan()
    nxt = await engine.execute_opportunity(opp)
    assert nxt.state is TradeState.REJECTED and "unresolved" in nxt.reject_reason
    assert engine.statistics().unresolved == 1
    await engine.close()


async def test_gate_rejection_sends_no_order(tracer_provider, span_exporter):
    venue = scripted_venue()
    gates = [MaxPositionGate("pos", MaxPositionGate.Config(max_leg_size=D(100))),
             CapitalGate("cap", CapitalGate.Config(bankroll=D(5)))]
    engine = engine_for(venue, gates=gates, tracer_provider=tracer_provider)
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.state is TradeState.REJECTED and trade.gate == "cap"
    # 9.50 at the detected prices; the reserve is the worst case: 5 unwind ticks on both legs.
    assert "trade cost 10.5000 (worst case) exceeds per-trade limit 5.0000" in trade.reject_reason
    assert venue.engine.open_orders("pr3dict") == [] and venue.positions() == {}
    assert gates[0].reserved == {}  # the earlier gate's reservation was released
    evals = [s for s in span_exporter.get_finished_spans() if s.name == tm.SPAN_GATE]
    assert [(s.attributes[tm.GATE_ID], s.attributes[tm.GATE_APPROVED]) for s in evals] == [
        ("pos", True), ("cap", False)]
    assert not [s for s in span_exporter.get_finished_spans() if s.name == tm.SPAN_SUBMIT]


async def test_capital_is_reserved_so_concurrent_trades_never_double_spend():
    venue = scripted_venue(markets=("a", "b"), latency_ms=5)
    cap = CapitalGate("cap", CapitalGate.Config(bankroll=D(12), hedged_sets_are_cash=False))
    engine = engine_for(venue, gates=[cap])
    await engine.start()
    arb_books(venue, "a")
    arb_books(venue, "b")
    opps = await engine.scan()
    assert len(opps) == 2  # each costs 9.5
    trades = await asyncio.gather(*(engine.execute_opportunity(o) for o in opps))
    await engine.close()
    assert sorted(t.state for t in trades) == [TradeState.COMMITTED, TradeState.REJECTED]
    assert cap.reserved == {} and cap.deployed == D("9.5")


async def test_hand_built_trade_through_the_api():
    venue = scripted_venue()
    engine = engine_for(venue)
    arb_books(venue)
    from pr3dict_core.model import LegSpec

    trade = await engine.execute_trade([
        LegSpec("v", "m:yes", Side.BUY, "0.45", 5), LegSpec("v", "m:no", Side.BUY, "0.50", 5)])
    await engine.close()
    assert trade.state is TradeState.COMMITTED and trade.hedged_size == 5
    assert engine.statistics().committed == 1


async def test_unknown_order_on_cancel_is_not_a_crash():
    venue = scripted_venue()
    try:
        await venue.cancel_order("never-sent")
    except UnknownOrder:
        pass
    else:  # pragma: no cover - the assertion below documents the contract
        raise AssertionError("cancelling an unknown order must raise UnknownOrder")


async def test_the_root_span_says_why_a_trade_rolled_back(tracer_provider, span_exporter):
    from pr3dict_strategies.market import MarketStrategy

    venue = scripted_venue()
    engine = engine_for(venue, tracer_provider=tracer_provider, strategy=MarketStrategy(
        MarketStrategy.Config(max_slippage_ticks=0, time_in_force="FOK")))
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.50", 6)])  # FOK cannot fill
    set_book(venue, "m:yes", bids=[("0.30", 100)], asks=[("0.45", 10)])  # unwind at a loss
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.state is TradeState.ROLLED_BACK and trade.realised_pnl < 0
    (root,) = [s for s in span_exporter.get_finished_spans() if s.name == tm.SPAN_OPPORTUNITY]
    assert root.status.status_code.name == "ERROR"
    assert root.attributes[tm.TRADE_STATE] == "rolled_back"
    assert root.attributes[tm.TRADE_ERROR]
