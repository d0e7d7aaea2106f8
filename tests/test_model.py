"""Domain rules: Decimal only, state machines that refuse illegal transitions, idempotent fills."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pr3dict_core.model import (
    LEG_TRANSITIONS,
    TRADE_TRANSITIONS,
    Fill,
    IllegalTransition,
    Leg,
    LegState,
    Level,
    Opportunity,
    Side,
    Trade,
    TradeState,
    client_order_id,
    fill_cost,
    to_decimal,
)


def make_leg(**kw) -> Leg:
    base = dict(trade_id="t", index=0, venue="v", instrument="m:yes", side=Side.BUY,
                size=Decimal(10), limit_price=Decimal("0.5"), target_price=Decimal("0.5"))
    base.update(kw)
    return Leg(**base)


def test_floats_are_refused():
    with pytest.raises(TypeError, match="float"):
        to_decimal(0.1)
    with pytest.raises(TypeError):
        Level(0.5, 10)
    assert Level("0.5", 10).price == Decimal("0.5")


def test_prices_must_be_probabilities():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Level("1.01", 1)


@given(st.lists(st.sampled_from(list(LegState)), max_size=12))
def test_leg_state_machine_follows_its_table(path):
    leg = make_leg()
    for new in path:
        allowed = new in LEG_TRANSITIONS[leg.state]
        before = leg.state
        if allowed:
            leg.transition(new)
            assert leg.state is new and leg.history[-1] is before
        else:
            with pytest.raises(IllegalTransition):
                leg.transition(new)
            assert leg.state is before
    if leg.state.is_final:
        assert LEG_TRANSITIONS[leg.state] == frozenset()


@given(st.lists(st.sampled_from(list(TradeState)), max_size=8))
def test_trade_state_machine_follows_its_table(path):
    opp = Opportunity(id="o", detector="d", kind="binary_complement", legs=(), size=1,
                      edge_per_share=0, cost=0)
    trade = Trade(id="t", opportunity=opp)
    for new in path:
        if new in TRADE_TRANSITIONS[trade.state]:
            trade.transition(new)
        else:
            with pytest.raises(IllegalTransition):
                trade.transition(new)


def test_final_states_have_no_exit():
    for state in (LegState.FILLED, LegState.CANCELLED, LegState.REJECTED):
        assert state.is_final and not LEG_TRANSITIONS[state]
    assert not LegState.UNRESOLVED.is_final  # unknown is never final


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 5)), max_size=30))
def test_duplicate_fills_never_double_count(events):
    leg = make_leg(size=Decimal(1000))
    truth: dict[str, int] = {}
    for fid, size in events:
        fill = Fill(f"f{fid}", "c", "0.5", truth.setdefault(f"f{fid}", size))
        leg.add_fills([fill])
    assert leg.filled == sum(truth.values())


def test_client_order_ids_are_deterministic():
    assert client_order_id("t1", 0, 1) == client_order_id("t1", 0, 1) == "t1-0-1"
    leg = make_leg(trade_id="t9", index=1)
    assert leg.next_client_order_id() == "t9-1-1"
    assert leg.next_client_order_id() == "t9-1-2"
    assert leg.current_client_order_id() == "t9-1-2"


def test_fill_cost_walks_depth():
    levels = (Level("0.40", 5), Level("0.41", 5), Level("0.45", 100))
    assert fill_cost(levels, Decimal(7)) == (Decimal(7), Decimal("2.82"))
    assert fill_cost(levels[:1], Decimal(7)) == (Decimal(5), Decimal("2.00"))


def test_trade_pnl_counts_hedged_sets_at_payout():
    opp = Opportunity(id="o", detector="d", kind="binary_complement", legs=(), size=10,
                      edge_per_share="0.02", cost="9.8")
    trade = Trade(id="t", opportunity=opp)
    yes = make_leg(instrument="m:yes")
    no = make_leg(index=1, instrument="m:no")
    yes.add_fills([Fill("a", "c", "0.48", 10, fee="0.05")])
    no.add_fills([Fill("b", "c", "0.50", 10, fee="0.05")])
    trade.legs = [yes, no]
    assert trade.hedged_size == 10
    assert trade.realised_pnl == Decimal("10") - Decimal("4.8") - Decimal("5.0") - \
        Decimal("0.10")
