"""Each strategy against the paper venue with scripted books: what fills, what is chased,
what is cancelled, and what the rollback policies do with a short leg."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from support import arb_books, engine_for, scripted_venue, set_book

from pr3dict_core.config import ExecutionSection
from pr3dict_core.metrics import TradeRecord
from pr3dict_core.model import LegState, TimeInForce, TradeState
from pr3dict_strategies.limit import HybridStrategy, LimitStrategy
from pr3dict_strategies.market import MarketStrategy


async def detect_then(engine, venue, change=None):
    """Detect on arb books, optionally change the books, then execute."""
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    if change:
        change()
    return opp


def no_leg_gone(venue):
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.70", 50)])


async def test_market_fak_takes_within_slippage_and_chases_remainder():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=MarketStrategy(MarketStrategy.Config(
        max_slippage_ticks=1)))
    opp = await detect_then(engine, venue, lambda: set_book(
        venue, "m:no", bids=[("0.48", 100)], asks=[("0.50", 6), ("0.51", 10), ("0.53", 10)]))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.state is TradeState.COMMITTED
    no = trade.legs[1]
    assert no.filled == 10 and no.average_price == D("0.504")  # 6 @ .50 + 4 @ .51
    assert no.slippage_ticks == D("0.4") and no.slippage == D("0.04")
    record = TradeRecord.from_trade(trade)
    assert record.slippage == D("0.04") and record.expected_edge == D("0.5")


async def test_market_fok_fills_all_or_nothing():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=MarketStrategy(MarketStrategy.Config(
        max_slippage_ticks=0, time_in_force="FOK")))
    opp = await detect_then(engine, venue, lambda: set_book(
        venue, "m:no", bids=[("0.48", 100)], asks=[("0.50", 6)]))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    no = trade.legs[1]
    assert no.filled == 0 and no.state is LegState.CANCELLED and no.attempts == 1
    assert trade.state is TradeState.ROLLED_BACK and venue.positions().get("m:yes", 0) == 0


async def test_limit_rests_and_fills_when_the_market_comes_to_it():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=LimitStrategy(),
                        execution=ExecutionSection(deadline_ms=500))
    opp = await detect_then(engine, venue, lambda: no_leg_gone(venue))
    task = asyncio.ensure_future(engine.execute_opportunity(opp))
    await asyncio.sleep(0.02)
    no = next(o for o in venue.engine.open_orders("pr3dict"))
    assert no.status == "open"  # resting at the detected price
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.50", 50)])  # crosses our bid
    trade = await task
    await engine.close()
    assert trade.state is TradeState.COMMITTED
    assert trade.legs[1].average_price == D("0.50") and trade.legs[1].attempts == 1
    assert trade.decided_at is not None and trade.finished_at - trade.decided_at < 0.5


async def test_limit_cancels_at_the_deadline_and_rolls_back():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=LimitStrategy(),
                        execution=ExecutionSection(deadline_ms=40))
    opp = await detect_then(engine, venue, lambda: no_leg_gone(venue))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.legs[1].state is LegState.CANCELLED
    assert venue.engine.open_orders("pr3dict") == []  # nothing left resting
    assert trade.state is TradeState.ROLLED_BACK and venue.positions().get("m:yes", 0) == 0


async def test_hybrid_falls_back_to_marketable_within_the_bound():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=HybridStrategy(HybridStrategy.Config(
        fallback_after_ms=20, max_slippage_ticks=2)), execution=ExecutionSection(deadline_ms=200))
    opp = await detect_then(engine, venue, lambda: set_book(
        venue, "m:no", bids=[("0.48", 100)], asks=[("0.52", 50)]))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    no = trade.legs[1]
    assert trade.state is TradeState.COMMITTED
    assert no.attempts == 2  # rested (GTC), then crossed (FAK)
    assert no.average_price == D("0.52") and no.slippage_ticks == D(2)


async def test_hybrid_does_not_chase_beyond_the_bound():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=HybridStrategy(HybridStrategy.Config(
        fallback_after_ms=10, max_slippage_ticks=1)), execution=ExecutionSection(deadline_ms=60))
    opp = await detect_then(engine, venue, lambda: set_book(
        venue, "m:no", bids=[("0.48", 100)], asks=[("0.53", 50)]))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.legs[1].filled == 0 and trade.legs[1].attempts == 1
    assert trade.state is TradeState.ROLLED_BACK


async def test_complete_or_unwind_buys_the_missing_shares_when_cheaper():
    venue = scripted_venue()
    engine = engine_for(venue, execution=ExecutionSection(
        deadline_ms=50, rollback="complete_or_unwind", unwind_slippage_ticks=2))
    opp = await detect_then(engine, venue, lambda: set_book(
        venue, "m:no", bids=[("0.40", 100)], asks=[("0.50", 4), ("0.51", 50)]))
    # The NO leg takes 4 @ 0.50; then the market strategy (2 ticks) would take 0.51 too,
    # so make the strategy strict to leave the leg short.
    engine.strategy = MarketStrategy(MarketStrategy.Config(max_slippage_ticks=0,
                                                           max_attempts=1))
    engine._executor.strategy = engine.strategy
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    (complete,) = trade.unwind_legs
    assert complete.purpose == "complete" and complete.filled == 6
    assert complete.average_price == D("0.51")
    assert trade.state is TradeState.COMMITTED and trade.hedged_size == 10
    assert venue.positions() == {"m:yes": D(10), "m:no": D(10)}


async def test_complete_or_unwind_unwinds_when_completing_costs_more():
    venue = scripted_venue()
    engine = engine_for(venue, execution=ExecutionSection(
        deadline_ms=50, rollback="complete_or_unwind", unwind_slippage_ticks=2))
    opp = await detect_then(engine, venue, lambda: set_book(
        venue, "m:no", bids=[("0.40", 100)], asks=[("0.50", 4), ("0.62", 50)]))
    engine.strategy = engine._executor.strategy = MarketStrategy(MarketStrategy.Config(
        max_slippage_ticks=0, max_attempts=1))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert [leg.purpose for leg in trade.unwind_legs] == ["unwind"]
    assert trade.state is TradeState.ROLLED_BACK and trade.hedged_size == 4
    assert venue.positions() == {"m:yes": D(4), "m:no": D(4)}


async def test_unwind_respects_the_loss_cap():
    venue = scripted_venue()
    engine = engine_for(venue, execution=ExecutionSection(deadline_ms=50, max_unwind_loss=D(
        "0.05")))
    opp = await detect_then(engine, venue, lambda: (
        no_leg_gone(venue), set_book(venue, "m:yes", bids=[("0.30", 100)], asks=[("0.45", 10)])))
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    # Selling YES at 0.30 would lose 0.15 a share, over the 0.05 cap: hold and say so.
    assert trade.state is TradeState.ROLLED_BACK
    assert trade.unwind_legs[0].filled == 0
    assert "unwind incomplete, still held: m:yes 10" in trade.error


def test_time_in_force_names_match_config():
    assert {t.value for t in TimeInForce} >= {"FAK", "FOK", "GTC"}


class ManualClock:
    """A clock the test moves: deadlines follow it, not the wall."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_deadlines_follow_the_injected_clock():
    """A one-minute limit deadline passes in milliseconds when the clock says so."""
    venue = scripted_venue()
    clock = ManualClock()
    engine = engine_for(venue, strategy=LimitStrategy(),
                        execution=ExecutionSection(deadline_ms=60_000))
    engine.clock = clock
    opp = await detect_then(engine, venue, lambda: no_leg_gone(venue))
    task = asyncio.ensure_future(engine.execute_opportunity(opp))
    while not venue.engine.open_orders("pr3dict"):
        await asyncio.sleep(0.001)  # readiness: both legs rest
    assert not task.done()
    clock.t += 61  # a minute later, on the engine's clock
    trade = await asyncio.wait_for(task, 5)
    await engine.close()
    assert trade.legs[1].state is LegState.CANCELLED and trade.legs[1].filled == 0
    assert trade.state is TradeState.ROLLED_BACK
    assert venue.engine.open_orders("pr3dict") == []
