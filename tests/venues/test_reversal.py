"""A fill the venue reverses after the trade was final (Polymarket: a trade MATCHED, then
FAILED on chain) reopens the trade with a journaled break, and it is completed or unwound
like any short leg; the journal ends equal to the venue."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from venue_fixtures import pm_book, poly_venue

from pr3dict_core.config import ExecutionSection
from pr3dict_core.journal import Journal
from pr3dict_core.model import TradeState, is_reversal
from pr3dict_core.pipeline import Engine
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_paper.scenario import SimFaultSpec
from pr3dict_strategies.market import MarketStrategy

D = Decimal


async def until(cond, timeout=10.0):
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_a_reversed_fill_breaks_the_committed_trade(make_sim, tmp_path):
    sim = await make_sim(faults=SimFaultSpec(trade_failed_rate=D(1), settle_ms=40))
    venue = poly_venue(sim)
    engine = Engine(
        venues={"poly": venue},
        detectors=[BinaryComplement("c", BinaryComplement.Config(venues=("poly",),
                                                                 max_size=D(10)))],
        strategy=MarketStrategy(MarketStrategy.Config()),
        execution=ExecutionSection(deadline_ms=300, order_timeout_ms=1000,
                                   rollback="complete_or_unwind"))
    engine.journal = Journal(tmp_path / "j.sqlite", engine.run_id)
    await engine.start()
    m = venue.markets()[0]
    pm_book(sim, m.yes, bids=[("0.40", 50)], asks=[("0.45", 10)])
    pm_book(sim, m.no, bids=[("0.45", 50)], asks=[("0.50", 10)])
    await until(lambda: venue.book(m.no).best_ask is not None
                and venue.book(m.no).best_ask.price == D("0.50")
                and venue.book(m.yes).best_ask.price == D("0.45"))
    (trade,) = await engine.scan_and_execute()
    assert trade.state is TradeState.COMMITTED  # both legs matched
    # Both trades fail on chain a moment later: the shares go back.
    await until(lambda: trade.state is TradeState.ROLLED_BACK and not engine.halts)
    held = await venue.venue_positions()  # the venue's own word
    await engine.close()
    assert TradeState.COMMITTED in trade.history  # committed, then broken
    assert all(leg.filled == 0 for leg in trade.legs)
    assert any(is_reversal(f) for leg in trade.legs for f in leg.fills.values())
    journal = Journal(tmp_path / "j.sqlite")
    try:
        transitions = [tuple(r) for r in journal.query(
            "SELECT from_state, to_state FROM transitions WHERE trade_id = ? AND idx IS NULL",
            (trade.id,))]
        booked = {i: q for (_, i), q in journal.positions().items() if q}
        state = journal.query("SELECT state FROM trades WHERE id = ?", (trade.id,))[0][0]
    finally:
        journal.close()
    assert ("committed", "rolling_back") in transitions  # the break is journaled
    assert state == "rolled_back"
    assert booked == {k: v for k, v in held.items() if v} == {}
