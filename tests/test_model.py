"""Domain rules: Decimal only, state machines that refuse illegal transitions, idempotent fills."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pr3dict_core.model import (
    LEG_TABLE,
    TRADE_TRANSITIONS,
    Fill,
    IllegalTransition,
    Leg,
    LegState,
    Level,
    Opportunity,
    OrderAck,
    OrderRef,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
    Trade,
    TradeState,
    Trigger,
    VenueOutcome,
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


def _request(cid: str, size: int = 10) -> OrderRequest:
    return OrderRequest(cid, "v", "m:yes", Side.BUY, "0.5", size, TimeInForce.GTC)


# (order index, trigger, cumulative shares the venue reports, order still open)
events = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(list(Trigger)),
                            st.integers(0, 10), st.booleans()), max_size=25)


@given(events)
def test_a_leg_changes_only_through_its_table(script):
    """Random outcomes in random order: the table decides every change; a pair it lacks is
    refused and changes nothing; UNRESOLVED exactly while some order's fate is unknown;
    a final leg never leaves the final states; out-of-order acks never double-count."""
    leg = make_leg()
    best: dict[str, int] = {}
    for index, trigger, shares, open_ in script:
        cid = f"t-0-{index + 1}"
        if trigger is Trigger.SENT and cid not in leg.orders and not leg.state.is_final:
            leg.orders[cid] = OrderRef(_request(cid))
        if cid not in leg.orders and trigger is not Trigger.CLOSED:
            continue
        ack = None
        if trigger is Trigger.ACKED:
            status = OrderStatus.OPEN if open_ and shares < 10 else OrderStatus.CANCELLED
            ack = OrderAck(cid, status, (Fill(f"{cid}:x", cid, "0.5", shares),) if shares
                           else ())
        before = (leg.state, leg.filled, leg.resting)
        was_final = leg.state.is_final
        if (leg.state, trigger) not in LEG_TABLE:
            with pytest.raises(IllegalTransition):
                leg.apply(VenueOutcome(trigger, cid, ack))
            assert (leg.state, leg.filled, leg.resting) == before
            continue
        try:
            leg.apply(VenueOutcome(trigger, cid, ack))
        except IllegalTransition:  # CLOSED while an order may rest
            assert trigger is Trigger.CLOSED and leg.resting
            continue
        if ack is not None and not was_final:
            best[cid] = max(best.get(cid, 0), shares)
        if was_final:
            assert leg.state.is_final
        elif trigger is not Trigger.ACKED or not leg.state.is_final:
            assert (leg.state is LegState.UNRESOLVED) == leg.unknown or leg.state.is_final
        if not was_final:
            assert leg.filled == sum(best.values())  # stale acks never double-count


def test_final_states_refuse_to_reopen_without_the_venue():
    leg = make_leg()
    leg.orders["t-0-1"] = OrderRef(_request("t-0-1"))
    leg.apply(VenueOutcome(Trigger.SENT, "t-0-1"))
    leg.apply(VenueOutcome(Trigger.ACKED, "t-0-1", OrderAck(
        "t-0-1", OrderStatus.FILLED, (Fill("f", "t-0-1", "0.5", 10),))))
    assert leg.state is LegState.FILLED and not leg.resting
    for trigger in (Trigger.LOST, Trigger.REFUSED, Trigger.NOT_FOUND, Trigger.CLOSED):
        leg.apply(VenueOutcome(trigger, "t-0-1"))
        assert leg.state is LegState.FILLED
    # Only the venue's own word changes it: a reversed fill.
    delta = leg.apply(VenueOutcome(Trigger.ACKED, "t-0-1", OrderAck(
        "t-0-1", OrderStatus.FILLED, (Fill("f", "t-0-1", "0.5", 10),
                                      Fill("reversal:f", "t-0-1", "0.5", -4)))))
    assert delta == -4 and leg.filled == 6 and leg.state is LegState.CANCELLED
    assert not LegState.UNRESOLVED.is_final  # unknown is never final


def test_unresolved_until_the_venue_answers_every_lost_order():
    leg = make_leg()
    for cid in ("t-0-1", "t-0-2"):
        leg.orders[cid] = OrderRef(_request(cid))
        leg.apply(VenueOutcome(Trigger.SENT, cid))
    with pytest.raises(IllegalTransition):  # nothing new goes out while unresolved
        leg.apply(VenueOutcome(Trigger.LOST, "t-0-1", error="TimeoutError")) or \
            leg.apply(VenueOutcome(Trigger.SENT, "t-0-3"))
    leg.apply(VenueOutcome(Trigger.LOST, "t-0-2", error="TimeoutError"))
    assert leg.state is LegState.UNRESOLVED
    leg.apply(VenueOutcome(Trigger.NOT_FOUND, "t-0-1"))
    assert leg.state is LegState.UNRESOLVED  # the second is still unknown
    leg.apply(VenueOutcome(Trigger.ACKED, "t-0-2", OrderAck(
        "t-0-2", OrderStatus.CANCELLED, (Fill("g", "t-0-2", "0.5", 3),))))
    assert leg.state is LegState.PARTIALLY_FILLED and not leg.resting
    leg.apply(VenueOutcome(Trigger.CLOSED))
    assert leg.state is LegState.CANCELLED and leg.filled == 3


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
    yes.fills["a"] = Fill("a", "c", "0.48", 10, fee="0.05")
    no.fills["b"] = Fill("b", "c", "0.50", 10, fee="0.05")
    trade.legs = [yes, no]
    assert trade.hedged_size == 10
    assert trade.realised_pnl == Decimal("10") - Decimal("4.8") - Decimal("5.0") - \
        Decimal("0.10")
