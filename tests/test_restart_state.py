"""What must survive a restart does: halts (with their cause and exposure) and the gates'
state come back from the journal before any entry, and exposure left by a rollback is
worked in the background until hedged or flat."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from support import arb_books, engine_for, scripted_venue, set_book

from pr3dict_core.config import ExecutionSection
from pr3dict_core.journal import Journal
from pr3dict_core.model import TradeState
from pr3dict_gates.breakers import DailyLossGate, LossStreakGate
from pr3dict_gates.capital import CapitalGate

EXECUTION = ExecutionSection(deadline_ms=50, reconcile_timeout_ms=300, unwind_deadline_ms=60,
                             max_unwind_loss=D("0.2"))


def gates():
    return [CapitalGate("cap", CapitalGate.Config(bankroll=D(100), hedged_sets_are_cash=False)),
            DailyLossGate("day", DailyLossGate.Config(max_loss=D(50))),
            LossStreakGate("streak", LossStreakGate.Config(max_consecutive_losses=5))]


def engine(venue, path, gate_list):
    e = engine_for(venue, gates=gate_list, execution=EXECUTION)
    e.journal = Journal(path, e.run_id)
    return e


async def until(condition, timeout_s: float = 20.0) -> None:
    """Wait for a condition the engine's background work makes true (bounded)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


def exposure_books(venue):
    """The NO leg can fill only 4 of 10 and nobody bids for YES: the unwind cannot sell."""
    set_book(venue, "m:yes", bids=[], asks=[("0.45", 10)])
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.50", 4), ("0.70", 50)])


async def test_exposure_halt_and_gate_state_survive_a_restart(tmp_path):
    venue = scripted_venue()
    path = tmp_path / "journal.sqlite"

    first = engine(venue, path, gates())
    await first.start()
    arb_books(venue)
    (opp,) = await first.scan()
    committed = await first.execute_opportunity(opp)
    assert committed.state is TradeState.COMMITTED
    arb_books(venue)
    (opp,) = await first.scan()
    exposure_books(venue)  # between detection and execution
    rolled = await first.execute_opportunity(opp)
    assert rolled.state is TradeState.ROLLED_BACK and "still held" in rolled.error
    assert ("exposure", rolled.id) in first.halts  # entries stop, the shares are worked
    cap, day, _ = first.gates
    deployed, day_pnl = cap.deployed, day.pnl
    await first.close()  # the process goes away with the shares still held

    second = engine(venue, path, gates())
    await second.start()
    # Before any entry: the halt and the gates' state are back.
    assert ("exposure", rolled.id) in second.halts
    cap2, day2, streak2 = second.gates
    assert cap2.deployed == deployed and cap2.reserved == {}
    assert day2.pnl == day_pnl
    assert streak2.streak == 1  # the rolled-back trade lost money
    arb_books(venue)
    (opp,) = await second.scan()
    set_book(venue, "m:yes", bids=[], asks=[("0.45", 10)])  # still nobody to sell to
    refused = await second.execute_opportunity(opp)
    assert refused.state is TradeState.REJECTED and refused.gate == "engine"
    assert "unhedged exposure" in refused.reject_reason
    # A bid appears: the background worker sells the excess within the loss cap.
    set_book(venue, "m:yes", bids=[("0.40", 100)], asks=[("0.45", 10)])
    await until(lambda: not second.halts)
    await second.close()
    held = venue.positions()
    assert held.get("m:yes", 0) == held.get("m:no", 0)
    journal = Journal(path)
    try:
        assert journal.active_halts() == []
        booked = {inst: q for (_, inst), q in journal.positions().items() if q}
    finally:
        journal.close()
    assert booked == {k: v for k, v in held.items() if v}


async def test_an_unresolved_trade_stays_reserved_across_a_restart(tmp_path):
    """A crash-looping process must not spend its bankroll twice: what a trade still open
    may cost stays reserved in the restored capital gate until it resolves."""
    venue = scripted_venue()
    path = tmp_path / "journal.sqlite"
    first = engine(venue, path, gates())
    await first.start()
    arb_books(venue)
    (opp,) = await first.scan()
    trade = await first.execute_opportunity(opp)
    journal = first.journal
    # Make the journal say the trade never finished (as a SIGKILL mid-trade leaves it).
    journal.query("UPDATE trades SET state = 'executing' WHERE id = ?", (trade.id,))
    await first.close()
    reopened = Journal(path)
    (open_trade,) = reopened.open_trades()
    reopened.close()
    cap = CapitalGate("cap", CapitalGate.Config(bankroll=D(100), hedged_sets_are_cash=False))
    cap.restore([open_trade])
    assert cap.reserved == {trade.id: open_trade.opportunity.cost}
    # The real restart reconciles it with the venue first: then it is spent, not reserved.
    second = engine(venue, path, gates())
    await second.start()
    assert second.gates[0].reserved == {}
    assert second.gates[0].deployed == -trade.cash_flow  # what it paid, fees included
    await second.close()
