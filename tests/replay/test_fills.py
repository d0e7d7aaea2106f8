"""The local fill model of replay and shadow runs, on hand-made books."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------- recorded trades


def test_recorded_trades_work_through_the_queue_ahead_then_fill():
    books, sim = setup()
    books[M.yes].snapshot([(D("0.38"), D("30"))], [])
    sim.submit(order("r", Side.BUY, "0.38", "10", TimeInForce.GTC))
    assert sim.on_trade(M.yes, True, D("0.38"), D("25")) == []  # 5 still ahead
    [rec] = sim.on_trade(M.yes, True, D("0.38"), D("8"))  # 5 ahead, then 3 of ours
    assert (rec.filled, rec.fills[-1].price, rec.fills[-1].fee) == (D("3"), D("0.38"), D("0"))
    assert sim.on_trade(M.yes, False, D("0.38"), D("50")) == []  # against the asks: not us


@pytest.mark.parametrize("trade_first", [True, False])
def test_a_trade_and_the_level_decrease_it_causes_count_once_in_either_order(trade_first):
    books, sim = setup()
    books[M.yes].snapshot([(D("0.38"), D("30"))], [])
    sim.submit(order("r", Side.BUY, "0.38", "10", TimeInForce.GTC))

    def trade():
        return sim.on_trade(M.yes, True, D("0.38"), D("20"))

    def decrease():
        books[M.yes].set_level(True, D("0.38"), D("10"))
        return sim.on_book(M.yes)

    for event in (trade, decrease) if trade_first else (decrease, trade):
        assert event() == []  # 20 of the 30 ahead traded, counted once: 10 ahead
    [rec] = sim.on_trade(M.yes, True, D("0.38"), D("14"))
    assert rec.filled == D("4")


def test_a_trade_beyond_our_price_fills_us_first():
    books, sim = setup()
    books[M.yes].snapshot([(D("0.38"), D("30"))], [])
    sim.submit(order("r", Side.BUY, "0.38", "10", TimeInForce.GTC))
    [rec] = sim.on_trade(M.yes, True, D("0.37"), D("6"))  # a seller swept past 0.38
    assert rec.filled == D("6") and rec.fills[-1].price == D("0.38")


def test_our_orders_keep_price_then_time_priority():
    books, sim = setup()
    books[M.yes].snapshot([(D("0.38"), D("5")), (D("0.39"), D("5"))], [])
    sim.submit(order("early", Side.BUY, "0.38", "10", TimeInForce.GTC))
    sim.submit(order("late", Side.BUY, "0.38", "10", TimeInForce.GTC))
    sim.submit(order("better", Side.BUY, "0.39", "10", TimeInForce.GTC))
    touched = sim.on_trade(M.yes, True, D("0.37"), D("25"))  # swept past both prices
    assert [(r.client_order_id, r.filled) for r in touched] == [
        ("better", D("10")), ("early", D("10")), ("late", D("5"))]


def test_recorded_trade_messages_reach_the_decoder_of_both_venues():
    from pr3dict_replay.decode import Decoder, market_json

    seen = []
    for venue_type, market, raw in (
            ("polymarket", Market("p", "c", "1", "2"),
             '{"event_type":"last_trade_price","market":"c","asset_id":"1","price":"0.51",'
             '"side":"BUY","size":"25.0","fee_rate_bps":"0","timestamp":"1"}'),
            ("kalshi", Market("k", "T", "T:yes", "T:no"),
             '{"type":"trade","sid":2,"seq":1,"msg":{"trade_id":"x","market_ticker":"T",'
             '"yes_price_dollars":"0.5500","no_price_dollars":"0.4500","count_fp":"10.00",'
             '"taker_side":"no","ts":1}}')):
        decoder = Decoder(market.venue, venue_type, lambda i: None,
                          lambda *t: seen.append(t))
        decoder.set_markets({"markets": [market_json(market)]})
        decoder.apply_ws(raw)
    assert seen == [("1", False, D("0.51"), D("25.0")),  # a buyer took the asks
                    ("T:no", False, D("0.4500"), D("10.00")),  # a NO buyer took NO asks,
                    ("T:yes", True, D("0.5500"), D("10.00"))]  # which are the YES bids


# --------------------------------------------------------------------------- invariants

_prices = st.sampled_from([D("0.36"), D("0.37"), D("0.38"), D("0.39")])
_events = st.lists(st.one_of(
    st.tuples(st.just("submit"), _prices, st.integers(1, 20)),
    st.tuples(st.just("trade"), _prices, st.integers(1, 30)),
    st.tuples(st.just("level"), _prices, st.integers(0, 40)),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
), max_size=25)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(_prices, st.integers(1, 40), max_size=4), _events)
def test_resting_orders_never_overfill_never_jump_the_queue_and_keep_priority(levels, events):
    books, sim = setup()
    books[M.yes].snapshot([(p, D(s)) for p, s in levels.items()], [])  # no asks to cross
    orders = []  # [record, queue ahead at submission, volume at its price, volume past it]
    for n, event in enumerate(events):
        resting_before = [o for o in orders if o[0].status is OrderStatus.OPEN]
        if event[0] == "submit":
            _, price, size = event
            ahead = books[M.yes].bids.get(price, D(0))
            sim.submit(order(f"o{n}", Side.BUY, str(price), str(size), TimeInForce.GTC))
            orders.append([sim.get(f"o{n}"), ahead, D(0), D(0)])
            continue
        if event[0] == "cancel":
            if orders:
                sim.cancel(orders[event[1] % len(orders)][0].client_order_id)
            continue
        _, price, size = event
        if event[0] == "trade":
            touched = sim.on_trade(M.yes, True, price, D(size))
            volume = D(size)
        else:
            before = books[M.yes].bids.get(price, D(0))
            books[M.yes].set_level(True, price, D(size))
            touched = sim.on_book(M.yes)
            volume = max(before - D(size), D(0))
        for o in resting_before:
            if o[0].price == price:
                o[2] += volume
            elif o[0].price > price and event[0] == "trade":
                o[3] += volume
        for o in orders:
            rec, ahead, at_price, past = o
            assert rec.filled <= rec.size
            assert rec.filled <= past + max(at_price - ahead, D(0))  # never ahead of the queue
        for rec in touched:  # everything ahead of a filled order is complete
            for o in resting_before:
                ahead_of_it = (o[0].price > rec.price if event[0] == "trade" else False) or (
                    o[0].price == rec.price and orders.index(o) < next(
                        i for i, x in enumerate(orders) if x[0] is rec))
                if ahead_of_it:
                    assert o[0].filled == o[0].size, (o[0].client_order_id, rec.client_order_id)


def test_a_message_the_parsing_refuses_is_skipped_and_counted_as_the_connector_does():
    from pr3dict_replay.decode import Decoder, market_json

    decoder = Decoder("p", "polymarket", lambda i: None)
    decoder.set_markets({"markets": [market_json(Market("p", "c", "1", "2"))]})

    def change(price):
        return {"k": "ws", "t": 1, "v": "p", "raw": (
            '{"event_type":"price_change","market":"c","price_changes":[{"asset_id":"1",'
            f'"price":"{price}","side":"BUY","size":"5","best_bid":"{price}",'
            '"best_ask":"0.99"}]}')}

    decoder.apply(change("1.5"))  # no price above 1: refused before the book changes
    decoder.apply({"k": "ws", "t": 2, "v": "p", "raw": "{not json"})
    decoder.apply(change("0.40"))
    assert decoder.bad_messages == 2
    assert decoder.books["1"].bids == {D("0.40"): D("5")}


def test_a_trade_whose_level_decrease_never_came_is_forgotten_after_a_second():
    now = [0.0]
    books = {i: LocalBook("v", i) for i in (M.yes, M.no)}
    sim = FillSimulator("v", books, {M.yes: M, M.no: M}.get, lambda i, p, s: D(0),
                        lambda i: None, clock=lambda: now[0])
    books[M.yes].snapshot([(D("0.38"), D("30"))], [])
    sim.submit(order("r", Side.BUY, "0.38", "10", TimeInForce.GTC))
    sim.on_trade(M.yes, True, D("0.38"), D("20"))  # 10 ahead; a decrease of 20 is expected
    now[0] = 5.0  # ... but never came: a later decrease is new volume
    books[M.yes].set_level(True, D("0.38"), D("16"))
    [rec] = sim.on_book(M.yes)  # 14 gone: 10 ahead, then 4 of ours
    assert rec.filled == D("4")
