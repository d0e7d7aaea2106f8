"""The ``kalshi`` connector against the simulator: V2 and legacy orders, the YES book seen
as two books, idempotent client order ids, error shapes and faults."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import aiohttp
import pytest
from test_polymarket import until
from venue_fixtures import KALSHI_KEY_ID, KALSHI_PEM, k_book, kalshi_venue

from pr3dict_core.components import (
    AmbiguousOutcome,
    InsufficientBalance,
    OrderRejected,
    RateLimited,
)
from pr3dict_core.model import OrderRequest, OrderStatus, Side, TimeInForce
from pr3dict_kalshi import protocol as kp
from pr3dict_paper.scenario import RateLimitSpec, SimFaultSpec

D = Decimal


def req(cid, inst, side=Side.BUY, price="0.55", size="10", tif=TimeInForce.FAK):
    return OrderRequest(cid, "kalshi", inst, side, D(price), D(size), tif)


async def signed(sim, method, path, body=None, key=None):
    ts = str(int(time.time() * 1000))
    headers = kp.headers(KALSHI_KEY_ID, key or kp.load_private_key(KALSHI_PEM), ts, method,
                         "/trade-api/v2" + path)
    async with aiohttp.ClientSession() as s:
        async with s.request(method, sim.kalshi_url + path, headers=headers,
                             data=None if body is None else json.dumps(body)) as r:
            return r.status, await r.json()


async def test_one_yes_book_is_two_books(kalshi, sim):
    m = kalshi.markets()[0]
    assert (m.market_id, m.yes, m.no) == ("M1", "M1:yes", "M1:no")
    assert (m.min_size, m.size_step, m.tick_size) == (D(1), D(1), D("0.01"))
    k_book(sim, "M1", bids=[("0.45", 10), ("0.44", 20)], asks=[("0.52", 30)])
    await until(lambda: kalshi.book("M1:yes").asks and
                kalshi.book("M1:yes").asks[0].price == D("0.52"))
    yes, no = kalshi.book("M1:yes"), kalshi.book("M1:no")
    assert [(lv.price, lv.size) for lv in yes.bids] == [(D("0.45"), D(10)), (D("0.44"), D(20))]
    assert [(lv.price, lv.size) for lv in no.bids] == [(D("0.48"), D(30))]
    assert [(lv.price, lv.size) for lv in no.asks] == [(D("0.55"), D(10)), (D("0.56"), D(20))]
    status, body = await signed(sim, "GET", "/markets/M1/orderbook")
    assert status == 200
    assert body["orderbook_fp"]["yes_dollars"] == [["0.4400", "20.00"], ["0.4500", "10.00"]]
    assert body["orderbook"]["no"] == [[48, 30]]


@pytest.mark.parametrize("api", ["v2", "legacy"])
async def test_buy_yes_and_no_with_fees_positions_and_balance(make_sim, api):
    sim = await make_sim()
    venue = kalshi_venue(sim, api=api)
    await venue.start()
    k_book(sim, "M1", bids=[("0.45", 50)], asks=[("0.52", 50)])
    before = await venue.balance()
    ack = await venue.place_order(req("y1", "M1:yes", price="0.55", size="10"))
    assert ack.status is OrderStatus.FILLED and ack.fills[0].price == D("0.52")
    assert ack.fills[0].fee == kp.fee(D(10), D("0.52")) == D("0.18")
    ack = await venue.place_order(req("n1", "M1:no", price="0.56", size="4"))
    assert ack.filled == D(4) and ack.fills[0].price == D("0.55")  # 1 - the 0.45 YES bid
    assert venue.positions() == {"M1:yes": D(10), "M1:no": D(4)}
    # the venue nets YES against NO: 6 YES left, $4 released
    assert await venue.venue_positions() == {"M1:yes": D(6)}
    fees = D("0.18") + kp.fee(D(4), D("0.45"))
    assert await venue.balance() == before - D("5.20") - D("2.20") - fees + D(4)
    await venue.close()


async def test_resting_order_is_pushed_and_cancelled(kalshi, sim):
    pushed = []
    kalshi.subscribe_orders(pushed.append)
    ack = await kalshi.place_order(req("r1", "M1:no", price="0.40", size="10",
                                       tif=TimeInForce.GTC))
    assert ack.status is OrderStatus.OPEN
    k_book(sim, "M1", bids=[("0.62", 3)])  # a YES bid at 0.62 crosses our YES ask at 0.60
    await until(lambda: pushed and pushed[-1].filled == D(3))
    assert pushed[-1].fills[-1].price == D("0.40")
    done = await kalshi.cancel_order("r1")
    assert done.status is OrderStatus.CANCELLED and done.filled == D(3)
    assert (await kalshi.get_order("r1")).status is OrderStatus.CANCELLED


async def test_client_order_id_is_idempotent(kalshi, sim):
    k_book(sim, "M1", asks=[("0.52", 50)])
    first = await kalshi.place_order(req("same", "M1:yes", size="5"))
    kalshi.records["same"].venue_order_id = ""  # as after a lost reply
    again = await kalshi.place_order(req("same", "M1:yes", size="5"))
    assert again.filled == first.filled == D(5) and again.fills == first.fills
    status, body = await signed(sim, "POST", "/portfolio/events/orders", {
        "ticker": "M1", "side": "bid", "count": "5.00", "price": "0.5200",
        "time_in_force": "immediate_or_cancel", "self_trade_prevention_type": "taker_at_cross",
        "client_order_id": "same"})
    assert status == 409 and body["error"]["code"] == "order_already_exists"
    assert len([o for o in sim.kalshi.orders.values() if o.client_order_id == "same"]) == 1


async def test_error_shapes(kalshi, sim):
    status, body = await signed(sim, "POST", "/portfolio/events/orders", {
        "ticker": "M1", "side": "bid", "count": "5.00", "price": "0.5050",
        "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross"})
    assert status == 400 and body["error"]["code"] == "invalid_price"
    assert set(body["error"]) == {"code", "message", "details", "service"}
    status, body = await signed(sim, "POST", "/portfolio/events/orders", {"ticker": "M1"})
    assert status == 400 and body["error"]["code"] == "missing_parameters"
    status, body = await signed(sim, "GET", "/markets/NOPE/orderbook")
    assert status == 404 and body["error"]["code"] == "market_not_found"
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, body = await signed(sim, "GET", "/portfolio/balance", key=other)
    assert status == 401 and body["error"]["code"] == "authentication_error"
    with pytest.raises(InsufficientBalance, match="insufficient_balance"):
        await kalshi.place_order(req("rich", "M1:yes", price="0.90", size="5000",
                                     tif=TimeInForce.GTC))
    k_book(sim, "M1", asks=[("0.52", 3)])
    with pytest.raises(OrderRejected, match="fill_or_kill"):
        await kalshi.place_order(req("fok", "M1:yes", size="10", tif=TimeInForce.FOK))
    with pytest.raises(OrderRejected, match="whole number"):
        await kalshi.place_order(req("frac", "M1:yes", size="1.5"))


async def test_wrong_key_fails_at_start(sim):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from pr3dict_core.config import SecretRef
    from pr3dict_kalshi.venue import KalshiVenue

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    config = KalshiVenue.Config(rest_url=sim.kalshi_url, ws_url=sim.kalshi_ws,
                                key_id=KALSHI_KEY_ID, private_key=SecretRef(env="X"))
    venue = KalshiVenue("k", config, key_id=KALSHI_KEY_ID, private_key=pem)
    with pytest.raises(OrderRejected, match="401"):
        await venue.start()
    await venue.close()


@pytest.mark.parametrize("api", ["v2", "legacy"])
async def test_batch_create_and_cancel(make_sim, api):
    sim = await make_sim()
    venue = kalshi_venue(sim, api=api)
    await venue.start()
    results = await venue.place_orders([
        req("b1", "M1:yes", price="0.30", size="2", tif=TimeInForce.GTC),
        req("b2", "M1:no", price="0.30", size="2", tif=TimeInForce.GTC),
        req("b3", "M1:yes", price="0.301", size="2", tif=TimeInForce.GTC),
        req("b4", "M2:yes", price="0.90", size="9000", tif=TimeInForce.GTC)])
    assert [type(r).__name__ for r in results] == ["OrderAck", "OrderAck", "OrderRejected",
                                                    "InsufficientBalance"]
    acks = await venue.cancel_orders(["b1", "b2"])
    assert [a.status for a in acks] == [OrderStatus.CANCELLED] * 2
    assert all(o.status == "canceled" for o in sim.kalshi.orders.values())
    await venue.close()


async def test_fills_query_is_cursor_paginated(kalshi, sim):
    k_book(sim, "M1", asks=[("0.52", 100)])
    for i in range(5):  # sim page size 3
        await kalshi.place_order(req(f"f{i}", "M1:yes", size="2"))
    fills = await kalshi.fills()
    assert len(fills) == 5 and {f.price for f in fills} == {D("0.52")}


async def test_timeout_after_accept_resolves_by_client_id(make_sim):
    sim = await make_sim(faults=SimFaultSpec(accepted_timeout_rate=D(1), hang_ms=2000))
    venue = kalshi_venue(sim, request_timeout_ms=150)
    await venue.start()
    k_book(sim, "M1", asks=[("0.52", 50)])
    with pytest.raises(AmbiguousOutcome):
        await venue.place_order(req("amb", "M1:yes", size="5"))
    ack = await venue.get_order("amb")  # found by scanning the market's orders
    assert ack.filled == D(5) and ack.venue_order_id
    await venue.close()


async def test_rate_limited_and_5xx(make_sim):
    sim = await make_sim(faults=SimFaultSpec(rate_limits={
        "write": RateLimitSpec(requests=1, per_s=0.1)}))
    venue = kalshi_venue(sim)
    await venue.start()
    await venue.place_order(req("q1", "M1:yes", price="0.30", size="1", tif=TimeInForce.GTC))
    with pytest.raises(RateLimited):
        await venue.place_order(req("q2", "M1:yes", price="0.30", size="1",
                                    tif=TimeInForce.GTC))
    await venue.close()
    sim = await make_sim(faults=SimFaultSpec(error_rate=D(1)))
    venue = kalshi_venue(sim)
    await venue.start()
    with pytest.raises(AmbiguousOutcome, match="500"):
        await venue.place_order(req("e1", "M1:yes", size="1"))
    await venue.close()


async def test_websocket_drop_reconnects(make_sim):
    sim = await make_sim(clock=True, step_ms=20, faults=SimFaultSpec(ws_drop_every_s=0.1))
    venue = kalshi_venue(sim)
    await venue.start()
    await until(lambda: venue.ws_connects >= 3, timeout=5)
    assert venue.ws_reconnects["feed"] >= 2
    bids, _ = sim.kalshi.engine.book("M2")
    await until(lambda: venue.book("M2:yes").bids == bids)
    await venue.close()


async def test_legacy_order_endpoints_gone(make_sim):
    """Kalshi retires POST /portfolio/orders: the default V2 connector does not notice; a
    legacy-configured one gets each order refused, nothing crashes. (What status the live
    venue will answer is not announced: the simulator answers as for a route it does not
    serve, 405 where the path has other methods.)"""
    sim = await make_sim(kalshi_legacy_orders=False)
    venue = kalshi_venue(sim)
    await venue.start()
    k_book(sim, "M1", bids=[("0.45", 50)], asks=[("0.52", 50)])
    ack = await venue.place_order(req("v1", "M1:yes", price="0.55", size="3"))
    assert ack.status is OrderStatus.FILLED
    results = await venue.place_orders([
        req("v2", "M1:yes", price="0.30", size="2", tif=TimeInForce.GTC),
        req("v3", "M1:no", price="0.30", size="2", tif=TimeInForce.GTC)])
    assert [r.status for r in results] == [OrderStatus.OPEN] * 2
    assert [a.status for a in await venue.cancel_orders(["v2", "v3"])] == \
        [OrderStatus.CANCELLED] * 2
    assert (await venue.get_order("v1")).filled == D(3)
    await venue.close()
    legacy = kalshi_venue(sim, api="legacy")
    await legacy.start()
    with pytest.raises(OrderRejected, match="405"):
        await legacy.place_order(req("l1", "M1:yes", price="0.55", size="3"))
    await legacy.close()


async def test_amend_to_a_crossing_price_fills_and_decrease_keeps_the_order(kalshi, sim):
    k_book(sim, "M1", bids=[("0.45", 50)], asks=[("0.52", 50)])
    ack = await kalshi.place_order(req("am", "M1:yes", price="0.30", size="5",
                                       tif=TimeInForce.GTC))
    oid = kalshi.records["am"].venue_order_id
    base = f"/portfolio/events/orders/{oid}"
    status, body = await signed(sim, "POST", base + "/decrease", {"reduce_by": "1.00"})
    assert (status, body["remaining_count"]) == (200, "4.00")
    status, body = await signed(sim, "POST", base + "/amend", {
        "ticker": "M1", "side": "bid", "price": "0.5500", "count": "4.00"})
    assert status == 200 and body["order_id"] == oid
    assert (body["fill_count"], body["average_fill_price"]) == ("4.00", "0.5200")
    assert ack.status is OrderStatus.OPEN
    status, body = await signed(sim, "POST", base + "/amend", {
        "ticker": "M1", "side": "bid", "price": "0.5500", "count": "4.00"})
    assert status == 404  # no longer resting


async def test_fill_history_is_bounded_and_totals_count_every_fill(make_sim, monkeypatch):
    # A long run stays flat: the listings page over the last KEEP_FILLS fills, while a
    # market's volume and last price and a position's fees and traded value count all.
    from pr3dict_sim import kalshi as ksim
    monkeypatch.setattr(ksim, "KEEP_FILLS", 3)
    sim = await make_sim()
    venue = kalshi_venue(sim)
    await venue.start()
    k_book(sim, "M1", bids=[("0.45", 50)], asks=[("0.52", 50)])
    for i in range(5):
        ack = await venue.place_order(req(f"y{i}", "M1:yes", price="0.55", size="2"))
        assert ack.filled == D(2)
    status, body = await signed(sim, "GET", "/portfolio/fills")
    assert status == 200 and len(body["fills"]) == 3  # the last three of ours
    status, body = await signed(sim, "GET", "/portfolio/positions")
    (pos,) = [p for p in body["market_positions"] if p["ticker"] == "M1"]
    assert pos["position_fp"] == "10.00" and pos["total_traded_dollars"] == "5.2000"
    assert pos["fees_paid_dollars"] == kp.dollars(5 * kp.fee(D(2), D("0.52")))
    status, body = await signed(sim, "GET", "/markets/M1")
    assert body["market"]["volume_fp"] == "10.00"
    assert body["market"]["last_price_dollars"] == "0.5200"
    await venue.close()
