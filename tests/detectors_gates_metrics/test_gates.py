"""Risk gates: connectivity, portfolio heat, loss streak, daily loss, kill switch; each is told
every trade's outcome so its state stays current."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from dgm_helpers import asks, make_trade, paper, pending_trade
from hypothesis import given, settings
from hypothesis import strategies as st
from support import engine_for

from pr3dict_core.config import ConfigError, load_pipeline
from pr3dict_core.model import Pr3dictError, TradeState
from pr3dict_core.plugins import collect_components, make_plugin_manager
from pr3dict_gates.breakers import DailyLossGate, LossStreakGate
from pr3dict_gates.connectivity import ConnectivityGate
from pr3dict_gates.heat import PortfolioHeatGate, open_exposure
from pr3dict_gates.kill_switch import KillSwitchGate

WIN = (("v", "m:yes", "buy", 10, "0.45", 10), ("v", "m:no", "buy", 10, "0.50", 10))  # +0.5
LOSS = (("v", "m:yes", "buy", 10, "0.45", 10), ("v", "m:no", "buy", 10, "0.50", 0),
        ("v", "m:yes", "sell", 10, "0.40", 10, "unwind"))  # -0.5
FLAT = (("v", "m:yes", "buy", 10, "0.45", 0), ("v", "m:no", "buy", 10, "0.50", 0))


def test_trade_helpers_realise_what_they_say():
    assert make_trade(WIN).realised_pnl == D("0.5")
    assert make_trade(LOSS, state=TradeState.ROLLED_BACK).realised_pnl == D("-0.5")
    assert make_trade(FLAT, state=TradeState.ROLLED_BACK).realised_pnl == 0


# --------------------------------------------------------------------------- connectivity


class Heartbeat:
    type = "fake"

    def __init__(self, at):
        self.at = at

    def last_heartbeat(self):
        return self.at


def test_connectivity_rejects_silent_unknown_and_unwatchable_venues():
    now = [100.0]
    venues = {"v": Heartbeat(99.5), "w": Heartbeat(None), "x": object()}
    gate = ConnectivityGate("conn", ConnectivityGate.Config(max_age_ms=1000), venues,
                            clock=lambda: now[0])
    trade = pending_trade()
    assert gate.evaluate(trade).approved
    now[0] = 101.0
    assert gate.evaluate(trade).reason == "venue v silent for 1500 ms (max_age_ms 1000)"
    on_w = pending_trade(legs=(("w", "m:yes", "buy", "1", "0.5"),))
    assert gate.evaluate(on_w).reason == "venue w has not delivered books yet"
    on_x = pending_trade(legs=(("x", "m:yes", "buy", "1", "0.5"),))
    assert gate.evaluate(on_x).reason == "venue x reports no heartbeat"
    with pytest.raises(Pr3dictError, match=r"venue 'x' .* has no last_heartbeat"):
        ConnectivityGate("c", ConnectivityGate.Config(venues=("x",)), venues)


async def test_paper_venue_heartbeat_follows_its_polls():
    venue = paper()
    assert venue.last_heartbeat() is None
    await venue.start()
    first = venue.last_heartbeat()
    await venue.poll_books()
    assert venue.last_heartbeat() >= first


# --------------------------------------------------------------------------- heat


def test_heat_counts_in_flight_and_what_finished_trades_leave_open():
    gate = PortfolioHeatGate("heat", PortfolioHeatGate.Config(max_exposure=D(20)))
    a, b = pending_trade("9.5"), pending_trade("9.5")
    assert gate.evaluate(a).approved and gate.evaluate(b).approved
    c = pending_trade("2")
    assert gate.evaluate(c).reason == \
        "portfolio heat 19.0000 + trade 2.0000 would exceed max_exposure 20"
    # a finishes fully hedged: its cost leaves the heat; b leaves 10 naked YES at 0.45
    done_a = make_trade(WIN)
    done_a.id = a.id
    gate.on_trade_finished(done_a)
    stuck = make_trade((("v", "m:yes", "buy", 10, "0.45", 10),
                        ("v", "m:no", "buy", 10, "0.50", 0)), state=TradeState.ROLLED_BACK)
    stuck.id = b.id
    gate.on_trade_finished(stuck)
    assert gate.in_flight == {} and gate.heat == D("4.5")
    with_hedged = PortfolioHeatGate("h", PortfolioHeatGate.Config(max_exposure=D(100),
                                                                  include_hedged=True))
    with_hedged.on_trade_finished(make_trade(WIN))
    assert with_hedged.heat == D("9.5")
    assert open_exposure(make_trade(WIN), False) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=30))
def test_heat_never_admits_more_than_max_exposure(ops):
    gate = PortfolioHeatGate("heat", PortfolioHeatGate.Config(max_exposure=D(50)))
    open_trades = []
    for finish, cost in ops:
        if finish and open_trades:
            gate.on_trade_finished(_finished(open_trades.pop(0).id))
        else:
            trade = pending_trade(str(cost))
            if gate.evaluate(trade).approved:
                open_trades.append(trade)
        assert gate.heat <= 50


def _finished(trade_id):
    t = make_trade(WIN)
    t.id = trade_id
    return t


# --------------------------------------------------------------------------- loss streak


def test_loss_streak_opens_after_n_losses_and_a_win_resets_it():
    gate = LossStreakGate("s", LossStreakGate.Config(max_consecutive_losses=2))
    gate.on_trade_finished(make_trade(LOSS, state=TradeState.ROLLED_BACK))
    gate.on_trade_finished(make_trade(WIN))
    assert gate.streak == 0
    gate.on_trade_finished(make_trade(LOSS, state=TradeState.ROLLED_BACK))
    gate.on_trade_finished(make_trade(FLAT, state=TradeState.ROLLED_BACK))  # neutral
    assert gate.evaluate(pending_trade()).approved
    gate.on_trade_finished(make_trade(WIN, state=TradeState.UNRESOLVED))  # unknown = loss
    decision = gate.evaluate(pending_trade())
    assert not decision.approved and "2 consecutive losing trades" in decision.reason
    strict = LossStreakGate("s", LossStreakGate.Config(max_consecutive_losses=1,
                                                       count_failed=True))
    strict.on_trade_finished(make_trade(FLAT, state=TradeState.ROLLED_BACK))
    assert strict.is_open


def test_loss_streak_cooldown_lets_one_probe_through():
    now = [0.0]
    gate = LossStreakGate("s", LossStreakGate.Config(max_consecutive_losses=1, cooldown_s=10),
                          clock=lambda: now[0])
    gate.on_trade_finished(make_trade(LOSS, state=TradeState.ROLLED_BACK))
    assert not gate.evaluate(pending_trade()).approved
    now[0] = 11
    probe = pending_trade()
    assert gate.evaluate(probe).approved
    assert not gate.evaluate(pending_trade()).approved  # one probe at a time
    lost = make_trade(LOSS, state=TradeState.ROLLED_BACK)
    lost.id = probe.id
    gate.on_trade_finished(lost)  # the probe lost: open again, cooldown restarts
    assert not gate.evaluate(pending_trade()).approved
    now[0] = 22
    probe = pending_trade()
    assert gate.evaluate(probe).approved
    won = make_trade(WIN)
    won.id = probe.id
    gate.on_trade_finished(won)
    assert not gate.is_open and gate.evaluate(pending_trade()).approved


# --------------------------------------------------------------------------- daily loss


def test_daily_loss_limit_and_the_day_rolling_over():
    now = [datetime(2026, 3, 1, 12, tzinfo=UTC)]
    gate = DailyLossGate("d", DailyLossGate.Config(max_loss=D(1), reset_hour_utc=6),
                         now=lambda: now[0])
    gate.on_trade_finished(make_trade(LOSS, state=TradeState.ROLLED_BACK))  # -0.5
    gate.on_trade_finished(make_trade(WIN))  # +0.5: net 0
    gate.on_trade_finished(make_trade(LOSS, state=TradeState.ROLLED_BACK))
    assert gate.loss == D("0.5") and gate.evaluate(pending_trade()).approved
    gate.on_trade_finished(make_trade(LOSS, state=TradeState.ROLLED_BACK))
    decision = gate.evaluate(pending_trade())
    assert decision.reason == "daily loss 1.0000 reached max_loss 1 (day started " \
                              "2026-03-01 06:00 UTC)"
    now[0] += timedelta(hours=17)  # 05:00 next day: still the same trading day
    assert not gate.evaluate(pending_trade()).approved
    now[0] += timedelta(hours=1)
    assert gate.evaluate(pending_trade()).approved and gate.loss == 0
    gross = DailyLossGate("g", DailyLossGate.Config(max_loss=D("0.9"), gross=True))
    for t in (LOSS, WIN, LOSS):
        gross.on_trade_finished(make_trade(t, state=TradeState.ROLLED_BACK if t is LOSS
                                           else TradeState.COMMITTED))
    assert gross.loss == 1 and not gross.evaluate(pending_trade()).approved


# --------------------------------------------------------------------------- kill switch


def test_kill_switch_file_and_signal(tmp_path):
    flag = tmp_path / "STOP"
    gate = KillSwitchGate("k", KillSwitchGate.Config(file=str(flag), signal="SIGUSR2"), flag)
    assert gate.evaluate(pending_trade()).approved
    flag.touch()
    assert gate.evaluate(pending_trade()).reason == f"kill switch file {flag} exists"
    flag.unlink()
    assert gate.evaluate(pending_trade()).approved
    os.kill(os.getpid(), signal.SIGUSR2)
    assert gate.evaluate(pending_trade()).reason == "kill switch: signal SIGUSR2 received"
    flag.unlink(missing_ok=True)
    assert not gate.evaluate(pending_trade()).approved  # latched until restart


def test_kill_switch_needs_file_or_signal_and_not_sigusr1(write_pipeline):
    registry = collect_components(make_plugin_manager())
    base = '[pipeline]\nname = "k"\n[venues.sim]\ntype = "paper"\nscenario = "{demo}"\n' \
           '[detectors.c]\ntype = "binary_complement"\nvenues = ["sim"]\n' \
           '[gates.k]\ntype = "kill_switch"\n'
    with pytest.raises(ConfigError, match=r"gates\.k\.file: a kill switch needs `file`, `signal`"):
        load_pipeline(write_pipeline(base), registry)
    with pytest.raises(ConfigError, match=r"gates\.k\.signal: .*'SIGUSR2'"):
        load_pipeline(write_pipeline(base + 'signal = "SIGUSR1"\n', "b.toml"), registry)


# --------------------------------------------------------------------------- in the engine


async def test_gates_are_told_outcomes_so_streaks_and_heat_stay_current():
    venue = paper()
    streak = LossStreakGate("streak", LossStreakGate.Config(max_consecutive_losses=1))
    heat = PortfolioHeatGate("heat", PortfolioHeatGate.Config(max_exposure=D(100)))
    engine = engine_for(venue, gates=[heat, streak])
    await engine.start()
    asks(venue, "m:yes", ("0.45", 10), bids=[("0.40", 100)])
    asks(venue, "m:no", ("0.50", 10), bids=[("0.45", 100)])
    (opp,) = await engine.scan()
    asks(venue, "m:no", ("0.80", 10), bids=[("0.45", 100)])  # the NO leg will not fill
    first = await engine.execute_opportunity(opp)
    assert first.state is TradeState.ROLLED_BACK and first.realised_pnl < 0
    assert streak.streak == 1 and streak.is_open
    assert heat.in_flight == {}
    asks(venue, "m:yes", ("0.45", 10), bids=[("0.40", 100)])
    asks(venue, "m:no", ("0.50", 10), bids=[("0.45", 100)])
    (opp,) = await engine.scan()
    second = await engine.execute_opportunity(opp)
    await engine.close()
    assert second.state is TradeState.REJECTED and second.gate == "streak"
    assert venue.positions().get("m:yes", 0) == 0
