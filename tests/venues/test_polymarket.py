"""The ``polymarket`` connector against the simulator: the whole order life cycle, every
error shape, faults, and the websocket feeds."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pytest
from venue_fixtures import OTHER_KEY, pm_book, poly_venue

from pr3dict_core.components import (
    AmbiguousOutcome,
    InsufficientBalance,
    OrderRejected,
    RateLimited,
    UnknownOrder,
    VenueUnavailable,
)
from pr3dict_core.model import OrderRequest, OrderStatus, Pr3dictError, Side, TimeInForce
from pr3dict_paper.scenario import RateLimitSpec, SimFaultSpec
from pr3dict_polymarket import protocol as pm
from pr3dict_polymarket.signing import hmac_signature

D = Decimal


def req(cid, inst, side=Side.BUY, price="0.50", size="10", tif=TimeInForce.FAK):
    return OrderRequest(cid, "poly", inst, side, D(price), D(size), tif)


async def until(cond, timeout=2.0):
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_markets_books_and_units(poly, sim):
    markets = poly.markets()
    assert [m.title for m in markets] == ["M1", "M2"]
    m = markets[0]
    assert m.market_id.startswith("0x") and len(m.market_id) == 66 and m.yes.isdigit()
    assert (m.tick_size, m.min_size, m.size_step) == (D("0.01"), D(5), D("0.01"))
    pm_book(sim, m.yes, bids=[("0.48", 10), ("0.47", 20)], asks=[("0.52", 30), ("0.55", 5)])
    await until(lambda: poly.book(m.yes).asks and poly.book(m.yes).asks[0].price == D("0.52"))
    book = poly.book(m.yes)
    assert [(lv.price, lv.size) for lv in book.bids] == [(D("0.48"), D(10)), (D("0.47"), D(20))]
    assert [(lv.price, lv.size) for lv in book.asks] == [(D("0.52"), D(30)), (D("0.55"), D(5))]
    changed = await poly.poll_books()
    assert m.yes in {b.instrument for b in changed}
    assert poly.fee(m.yes, D("0.5"), D("100")) == D("0.5")  # 100 * 0.02 * 0.25
    # the REST book is in the venue's order: best bid and best ask LAST
    async with aiohttp.ClientSession() as s:
        async with s.get(sim.url + "/book", params={"token_id": m.yes}) as r:
            raw = await r.json()
    assert raw["bids"][-1] == {"price": "0.48", "size": "10"}
    assert raw["asks"][-1] == {"price": "0.52", "size": "30"}


async def test_fak_buy_fills_with_fee_position_and_balance(poly, sim):
    m = poly.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", 6), ("0.42", 50)])
    before = await poly.balance()
    ack = await poly.place_order(req("c1", m.yes, price="0.45", size="10"))
    assert ack.status is OrderStatus.FILLED and ack.filled == D(10)
    notional = sum(f.size * f.price for f in ack.fills)
    assert notional == D("6") * D("0.40") + D(4) * D("0.42")
    fee = sum(f.fee for f in ack.fills)
    assert fee == pm.fee(D("0.02"), D(10), notional / 10)
    assert poly.positions()[m.yes] == D(10)
    assert (await poly.venue_positions())[m.yes] == D(10)
    assert await poly.balance() == before - notional - fee
    # the same client order id again: the same signed order, "Duplicated" -> its state
    again = await poly.place_order(req("c1", m.yes, price="0.45", size="10"))
    assert again.filled == D(10) and again.fills == ack.fills


async def test_gtc_rests_is_pushed_when_filled_and_cancel(poly, sim):
    m = poly.markets()[0]
    pushed = []
    poly.subscribe_orders(pushed.append)
    ack = await poly.place_order(req("r1", m.yes, price="0.45", size="10", tif=TimeInForce.GTC))
    assert ack.status is OrderStatus.OPEN and not ack.fills
    await until(lambda: D("0.45") in {lv.price for lv in poly.book(m.yes).bids})
    pm_book(sim, m.yes, asks=[("0.44", 6)])  # the market maker sells into our bid
    await until(lambda: pushed and pushed[-1].filled == D(6))
    assert pushed[-1].fills[-1].price == D("0.45") and pushed[-1].fills[-1].fee == 0  # maker
    got = await poly.get_order("r1")
    assert got.filled == D(6) and got.status is OrderStatus.OPEN
    done = await poly.cancel_order("r1")
    assert done.status is OrderStatus.CANCELLED and done.filled == D(6)
    assert (await poly.get_order("r1")).status is OrderStatus.CANCELLED
    with pytest.raises(UnknownOrder):
        await poly.get_order("never-sent")


async def test_complementary_mint_fills_a_yes_buy_from_a_no_bid(poly, sim, tmp_path):
    m = poly.markets()[0]
    pm_book(sim, m.yes, asks=[])
    pm_book(sim, m.no, bids=[("0.58", 20)])  # a NO bid at 0.58 is a YES ask at 0.42
    ack = await poly.place_order(req("mint", m.yes, price="0.45", size="10"))
    assert ack.filled == D(10) and ack.fills[0].price == D("0.42")
    trades = await poly.fills()
    assert trades[-1].price == D("0.42")


@pytest.mark.parametrize("case,expect,match", [
    ("tick", OrderRejected, "tick"), ("min", OrderRejected, "minimum"),
    ("dollar", OrderRejected, r"\$1"), ("unknown", OrderRejected, "unknown instrument"),
])
async def test_rules_are_enforced_before_sending(poly, case, expect, match):
    m = poly.markets()[0]
    request = {"tick": req("x", m.yes, price="0.505"), "min": req("x", m.yes, size="4"),
               "dollar": req("x", m.yes, price="0.10", size="5"),
               "unknown": req("x", "123", size="10")}[case]
    with pytest.raises(expect, match=match):
        await poly.place_order(request)


async def _post(sim, creds, address, body, path="/order", method="POST"):
    text = json.dumps(body, separators=(",", ":"))
    ts = str(int(__import__("time").time()))
    headers = {"POLY_ADDRESS": address, "POLY_SIGNATURE": hmac_signature(
        creds[1], ts, method, path, text), "POLY_TIMESTAMP": ts, "POLY_API_KEY": creds[0],
        "POLY_PASSPHRASE": creds[2], "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, sim.url + path, data=text, headers=headers) as r:
            return r.status, await r.json()


async def test_simulator_error_replies_are_the_venues(poly, sim):
    """What the venue answers when a client skips the checks the connector makes."""
    m = poly.markets()[0]
    address = poly.signer.address
    # a limit price off the tick, signed correctly
    poly._signed.clear()
    _, body = poly.build_order(req("e1", m.yes, price="0.50", tif=TimeInForce.GTC))
    body["order"]["makerAmount"] = str(int(D("10") * D("0.505") * pm.UNIT))
    body["order"]["signature"] = poly.signer.sign_digest(poly._domain(m).digest(body["order"]))
    status, reply = await _post(sim, poly._creds, address, body)
    oid = poly._domain(m).order_id(body["order"])
    assert (status, reply) == (400, {"error": pm.err_tick(oid, D("0.505"), D("0.01"))})
    # a market (FAK) BUY paying $3.1563: more than 2 decimals of dollars
    _, body = poly.build_order(req("e1b", m.yes, price="0.50"))
    body["order"]["makerAmount"], body["order"]["takerAmount"] = "3156300", "6312600"
    body["order"]["signature"] = poly.signer.sign_digest(poly._domain(m).digest(body["order"]))
    status, reply = await _post(sim, poly._creds, address, body)
    assert (status, reply) == (400, {"error": pm.ERR_MARKET_BUY_AMOUNTS})
    # a tampered order: the recovered signer is someone else
    _, body = poly.build_order(req("e2", m.yes))
    body["order"]["takerAmount"] = "20000000"
    status, reply = await _post(sim, poly._creds, address, body)
    assert (status, reply) == (401, {"error": "invalid signature"})
    # a bad HMAC
    creds = (poly._creds[0], "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=", poly._creds[2])
    _, body = poly.build_order(req("e3", m.yes))
    status, reply = await _post(sim, creds, address, body)
    assert (status, reply) == (401, {"error": "Unauthorized/Invalid api key"})
    # an unknown market
    async with aiohttp.ClientSession() as s:
        async with s.get(sim.url + "/book", params={"token_id": "42"}) as r:
            assert (r.status, await r.json()) == (404, {"error": pm.ERR_NO_BOOK})
        async with s.get(sim.url + "/markets/0x" + "ab" * 32) as r:
            assert (r.status, await r.json()) == (404, {"error": "market not found"})
    # too many orders in one batch
    status, reply = await _post(sim, poly._creds, address, [body] * 16, path="/orders")
    assert (status, reply) == (400, {"error": pm.err_batch(16)})


async def test_fok_fak_post_only_and_balance_errors_are_typed(poly, sim):
    m = poly.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", 6)])
    with pytest.raises(OrderRejected, match="FOK orders are fully filled or killed"):
        await poly.place_order(req("fok", m.yes, price="0.45", size="10", tif=TimeInForce.FOK))
    pm_book(sim, m.yes, asks=[])
    pm_book(sim, m.no, bids=[])
    with pytest.raises(OrderRejected, match="no orders found to match with FAK order"):
        await poly.place_order(req("fak", m.yes, price="0.45", size="10"))
    pm_book(sim, m.yes, asks=[("0.40", 6)])
    _, _body = poly.build_order(req("po", m.yes, price="0.45", size="10", tif=TimeInForce.GTC),
                               post_only=True)
    with pytest.raises(OrderRejected, match="order crosses book"):
        await poly.place_order(req("po", m.yes, price="0.45", size="10", tif=TimeInForce.GTC))
    with pytest.raises(InsufficientBalance, match="not enough balance"):
        await poly.place_order(req("big", m.yes, price="0.90", size="5000",
                                   tif=TimeInForce.GTC))
    with pytest.raises(InsufficientBalance):  # selling shares we do not hold
        await poly.place_order(req("short", m.no, Side.SELL, price="0.40", size="10"))
    assert (await poly.get_order("fok")).status is OrderStatus.REJECTED


async def test_batch_place_of_twenty_orders_and_cancel_all(poly, sim):
    m = poly.markets()[0]
    requests = [req(f"b{i}", m.yes, price=f"0.{30 + i}", size="5", tif=TimeInForce.GTC)
                for i in range(19)] + [req("bad", m.yes, price="0.301")]
    results = await poly.place_orders(requests)
    assert len(results) == 20
    assert all(r.status is OrderStatus.OPEN for r in results[:19])
    assert isinstance(results[19], OrderRejected)
    cancelled = await poly.cancel_all()
    assert len(cancelled) == 19
    for i in (0, 18):
        assert (await poly.get_order(f"b{i}")).status is OrderStatus.CANCELLED


async def test_trades_query_is_cursor_paginated(poly, sim):
    m = poly.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", 100)])
    for i in range(7):  # sim page size is 3 here: three pages
        await poly.place_order(req(f"p{i}", m.yes, price="0.40", size="5"))
    fills = await poly.fills()
    assert len(fills) == 7 and len({f.fill_id for f in fills}) == 7


async def test_heartbeat_is_a_dead_man_switch(make_sim):
    sim = await make_sim(clock=True, heartbeat_timeout_ms=150, step_ms=20)
    venue = poly_venue(sim, heartbeat_interval_ms=50)
    await venue.start()
    m = venue.markets()[0]
    await venue.place_order(req("hb", m.yes, price="0.30", size="5", tif=TimeInForce.GTC))
    await asyncio.sleep(0.3)
    assert (await venue.get_order("hb")).status is OrderStatus.OPEN  # heartbeats keep it
    await venue.stop_tasks()  # the connector dies: no more heartbeats
    await asyncio.sleep(0.4)
    venue._closing = False
    assert (await venue.get_order("hb")).status is OrderStatus.CANCELLED
    await venue.close()


async def test_delayed_placement_is_ambiguous_then_resolves_by_client_id(make_sim):
    sim = await make_sim(faults=SimFaultSpec(delayed_rate=D(1), delay_ms=50))
    venue = poly_venue(sim)
    await venue.start()
    m = venue.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", 50)])
    with pytest.raises(AmbiguousOutcome, match="delayed"):
        await venue.place_order(req("d1", m.yes, price="0.45", size="10"))
    assert (await venue.get_order("d1")).status is OrderStatus.OPEN
    await asyncio.sleep(0.1)
    ack = await venue.get_order("d1")
    assert ack.status is OrderStatus.FILLED and ack.filled == D(10)
    await venue.close()


async def test_timeout_after_accept_is_ambiguous_and_the_order_is_found(make_sim):
    sim = await make_sim(faults=SimFaultSpec(accepted_timeout_rate=D(1), hang_ms=2000))
    venue = poly_venue(sim, request_timeout_ms=150)
    await venue.start()
    m = venue.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", 50)])
    with pytest.raises(AmbiguousOutcome, match="no reply"):
        await venue.place_order(req("t1", m.yes, price="0.45", size="10"))
    ack = await venue.get_order("t1")
    assert ack.filled == D(10) and ack.fills[0].price == D("0.40")
    await venue.close()


async def test_5xx_and_rate_limits_are_typed(make_sim):
    sim = await make_sim(faults=SimFaultSpec(error_rate=D(1)))
    venue = poly_venue(sim)
    await venue.start()
    m = venue.markets()[0]
    with pytest.raises(AmbiguousOutcome, match="500"):
        await venue.place_order(req("x5", m.yes, price="0.45", size="10"))
    with pytest.raises(UnknownOrder):  # it never reached the book
        await venue.get_order("x5")
    await venue.close()
    sim = await make_sim(faults=SimFaultSpec(rate_limits={
        "orders": RateLimitSpec(requests=2, per_s=1.0, queue_ms=0)}))
    venue = poly_venue(sim)
    await venue.start()
    for i in range(2):
        await venue.place_order(req(f"q{i}", m.yes, price="0.30", size="5",
                                    tif=TimeInForce.GTC))
    with pytest.raises(RateLimited, match="429"):
        await venue.place_order(req("q2", m.yes, price="0.30", size="5", tif=TimeInForce.GTC))
    await venue.close()


async def test_throttling_queues_requests(make_sim):
    sim = await make_sim(faults=SimFaultSpec(rate_limits={
        "orders": RateLimitSpec(requests=1, per_s=0.05, queue_ms=1000)}))
    venue = poly_venue(sim)
    await venue.start()
    m = venue.markets()[0]
    loop = asyncio.get_running_loop()
    await venue.place_order(req("w0", m.yes, price="0.30", size="5", tif=TimeInForce.GTC))
    start = loop.time()
    await venue.place_order(req("w1", m.yes, price="0.30", size="5", tif=TimeInForce.GTC))
    assert loop.time() - start >= 0.04  # queued, not refused
    await venue.close()


async def test_failed_trade_returns_the_shares(make_sim):
    sim = await make_sim(faults=SimFaultSpec(trade_failed_rate=D(1), settle_ms=30))
    venue = poly_venue(sim)
    await venue.start()
    m = venue.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", 50)])
    ack = await venue.place_order(req("f1", m.yes, price="0.45", size="10"))
    assert ack.filled == D(10)
    await until(lambda: venue.failed_trades)
    assert venue.positions().get(m.yes, D(0)) == 0
    assert (await venue.venue_positions()).get(m.yes, D(0)) == 0
    await venue.close()


async def test_dropped_websockets_reconnect_and_resync(make_sim):
    sim = await make_sim(clock=True, step_ms=20, faults=SimFaultSpec(ws_drop_every_s=0.15))
    venue = poly_venue(sim)
    await venue.start()
    m = venue.markets()[0]
    pushed = []
    venue.subscribe_orders(pushed.append)
    await venue.place_order(req("ws1", m.yes, price="0.45", size="10", tif=TimeInForce.GTC))
    # two feeds, reconnected at least once each
    await until(lambda: venue.ws_connects >= 4 and len(venue.ws_reconnects) == 2, timeout=5)
    pm_book(sim, m.yes, asks=[("0.44", 10)])
    await until(lambda: venue.book(m.yes).bids == () or pushed)
    await until(lambda: (pushed and pushed[-1].filled == D(10)) or
                venue.records["ws1"].filled == D(10), timeout=3)
    await venue.close()


async def test_malformed_and_truncated_replies_are_ambiguous(poly, sim, monkeypatch):
    from aiohttp import web

    m = poly.markets()[0]

    async def garbage(request):
        return web.Response(text='{"success": true, "orderID": "0x', content_type="text/plain")

    async def not_a_reply(request):
        return web.json_response({"unexpected": 1})

    for handler in (garbage, not_a_reply):
        for route in sim.app.router.routes():
            if route.method == "POST" and route.resource.canonical == "/order":
                monkeypatch.setattr(route, "_handler", handler)
        with pytest.raises(AmbiguousOutcome, match="malformed"):
            await poly.place_order(req(f"mal-{handler.__name__}", m.yes))


async def test_connection_refused_is_unavailable(sim):
    venue = poly_venue(sim)
    await venue.start()
    venue.http.base_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(VenueUnavailable):
        await venue.place_order(req("u1", venue.markets()[0].yes))
    await venue.close()


async def test_paper_mode_refuses_a_real_endpoint(sim):
    venue = poly_venue(sim)
    venue.rest_url = "https://clob.polymarket.com"
    with pytest.raises(Pr3dictError, match="paper mode"):
        await venue.start()
    await venue.close()


async def test_auto_registered_second_wallet_trades_against_us(poly, sim):
    other = poly_venue(sim, vid="other", key=OTHER_KEY)
    await other.start()
    m = poly.markets()[0]
    pm_book(sim, m.yes, asks=[], bids=[])
    pm_book(sim, m.no, asks=[], bids=[])
    await poly.place_order(req("mk", m.yes, price="0.47", size="10", tif=TimeInForce.GTC))
    pushed = []
    poly.subscribe_orders(pushed.append)
    ack = await other.place_order(req("tk", m.no, price="0.55", size="10"))
    # their NO buy at <= 0.55 mints with our YES bid at 0.47: they pay 0.53
    assert ack.filled == D(10) and ack.fills[0].price == D("0.53")
    await until(lambda: pushed and pushed[-1].filled == D(10))
    await other.close()


def test_market_buy_amounts_are_the_official_builders_and_the_venues():
    """FOK/FAK BUYs: dollars to the cent, shares to 4 decimals, as py-clob-client-v2 builds
    a market BUY; 1501 sizes 5.00-20.00 at 0.63 (the limit rounding broke 1485 of them)."""
    from py_clob_client_v2.order_builder.builder import ROUNDING_CONFIG, OrderBuilder
    from py_clob_client_v2.order_builder.constants import BUY

    official = object.__new__(OrderBuilder)
    price = D("0.63")
    for cents in range(500, 2001):
        size = D(cents) / 100
        maker, taker = pm.market_buy_amounts(price, size)
        assert maker % 10_000 == 0 and taker % 100 == 0  # what the venue accepts
        # (+1e-9: the official builder floors floats, and 4.02 * 100 is 401.999...)
        dollars = float((size * price).quantize(D("0.01"), rounding="ROUND_DOWN")) + 1e-9
        _, o_maker, o_taker = official.get_market_order_amounts(BUY, dollars, 0.63,
                                                                ROUNDING_CONFIG["0.01"])
        assert (maker, taker) == (int(o_maker), int(o_taker))
        shares = D(taker) / pm.UNIT
        assert size - D("0.01") / price - D("0.0001") <= shares <= size
        assert price <= D(maker) / D(taker) < price + D("0.01")


async def test_fak_buy_of_uneven_dollars_fills_the_representable_size(poly, sim):
    m = poly.markets()[0]
    pm_book(sim, m.yes, asks=[("0.63", 50)])
    pm_book(sim, m.no, bids=[])
    ack = await poly.place_order(req("odd", m.yes, price="0.63", size="5.02"))
    assert ack.status is OrderStatus.FILLED and ack.filled == D("5.0158")
    assert sum(f.size * f.price for f in ack.fills) == D("5.0158") * D("0.63")
    _, body = poly.build_order(req("odd", m.yes, price="0.63", size="5.02"))
    assert (body["order"]["makerAmount"], body["order"]["takerAmount"]) == ("3160000", "5015800")


async def test_sim_narrows_the_tick_near_the_extremes_and_the_connector_follows(poly, sim):
    m = poly.markets()[0]
    pm_book(sim, m.no, bids=[], asks=[])
    pm_book(sim, m.yes, bids=[("0.97", 10)], asks=[("0.98", 10)])
    await until(lambda: poly.market_of(m.yes).tick_size == D("0.001"))
    ack = await poly.place_order(req("fine", m.yes, price="0.975", size="10",
                                     tif=TimeInForce.GTC))
    assert ack.status is OrderStatus.OPEN
    await poly.cancel_order("fine")
    pm_book(sim, m.yes, bids=[("0.50", 10)], asks=[("0.52", 10)])
    await until(lambda: poly.market_of(m.yes).tick_size == D("0.01"))
