"""The connectors' parsers on recorded-shape venue messages (tests/venues/fixtures/)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from pr3dict_core.components import OrderRejected
from pr3dict_core.model import OrderRequest, OrderStatus, Side, TimeInForce

D = Decimal
FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str, **ids: str):
    text = (FIXTURES / name).read_text()
    for key, value in ids.items():
        text = text.replace("{" + key + "}", value)
    return json.loads(text)


def levels(book) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    def text(x: Decimal) -> str:
        return format(x.normalize(), "f")

    return ([(text(lv.price), text(lv.size)) for lv in book.bids],
            [(text(lv.price), text(lv.size)) for lv in book.asks])


def crossed(book) -> bool:
    return bool(book.bids and book.asks and book.bids[0].price >= book.asks[0].price)


async def test_polymarket_rest_and_ws_books(poly):
    m = poly.markets()[0]
    shapes = load("polymarket_book.json", yes=m.yes, no=m.no, cid=m.market_id)
    poly._apply_book(shapes["rest"])
    assert levels(poly.book(m.yes)) == (
        [("0.48", "10"), ("0.47", "35.5"), ("0.46", "120")],
        [("0.52", "30"), ("0.53", "12.25"), ("0.55", "80")])
    poly._on_market(json.dumps(shapes["ws"]))
    assert levels(poly.book(m.no)) == ([("0.48", "12.25"), ("0.47", "30")],
                                       [("0.53", "35.5"), ("0.54", "10")])
    # the book snapshot's min_order_size is the rule the pre-send check applies from now on
    assert poly.market_of(m.no).min_size == D(10)
    with pytest.raises(OrderRejected, match="below the minimum 10"):
        poly.check(OrderRequest("small", "poly", m.no, Side.BUY, D("0.4"), D(6),
                                TimeInForce.GTC))


async def test_polymarket_crossing_price_change_burst_never_leaves_a_crossed_book(poly):
    m = poly.markets()[0]
    poly._apply_book(load("polymarket_book.json", yes=m.yes, no=m.no, cid=m.market_id)["rest"])
    first, second = load("polymarket_price_change_crossing.json", yes=m.yes, cid=m.market_id)
    poly._on_market(json.dumps(first))
    # the 0.52 and 0.53 asks were taken (their deltas never came): best_ask 0.55 drops them
    assert not crossed(poly.book(m.yes))
    assert levels(poly.book(m.yes))[1] == [("0.55", "80")]
    poly._on_market(json.dumps(second))
    assert levels(poly.book(m.yes)) == ([("0.53", "5"), ("0.48", "10"), ("0.47", "35.5")],
                                        [("0.54", "7"), ("0.55", "80")])


async def test_polymarket_tick_size_change_updates_the_pre_send_check(poly):
    m = poly.markets()[0]
    fine = OrderRequest("fine", "poly", m.yes, Side.BUY, D("0.975"), D(10), TimeInForce.GTC)
    with pytest.raises(OrderRejected, match=r"tick size 0\.01"):
        poly.check(fine)
    poly._on_market(json.dumps(load("polymarket_tick_size_change.json", yes=m.yes,
                                    cid=m.market_id)))
    assert poly.market_of(m.yes).tick_size == D("0.001")
    assert poly.check(fine).market_id == m.market_id


async def test_polymarket_user_trade_matched_mined_confirmed_counts_once(poly):
    m = poly.markets()[0]
    order_id, _ = poly.build_order(OrderRequest("u1", "poly", m.yes, Side.BUY, D("0.5"),
                                                D(10), TimeInForce.GTC))
    shapes = load("polymarket_user_trade.json", yes=m.yes, cid=m.market_id, order=order_id,
                  owner="me", trade="trade-1")
    pushed = []
    poly.subscribe_orders(pushed.append)
    poly._on_user(json.dumps(shapes["placement"]))
    assert poly.records["u1"].status is OrderStatus.OPEN
    before = poly.positions().get(m.yes, D(0))
    poly._on_user(json.dumps(shapes["trade"]))
    for later in shapes["later"]:
        poly._on_user(json.dumps(dict(shapes["trade"], **later)))
    poly._on_user(json.dumps(shapes["matched"]))
    rec = poly.records["u1"]
    assert rec.status is OrderStatus.FILLED and rec.filled == D(10) and len(rec.fills) == 1
    assert rec.fills[0].price == D("0.5")
    assert poly.positions()[m.yes] == before + 10
    assert pushed and pushed[-1].filled == D(10)


async def test_polymarket_user_trade_failed_returns_the_shares(poly):
    m = poly.markets()[0]
    order_id, _ = poly.build_order(OrderRequest("u2", "poly", m.yes, Side.BUY, D("0.5"),
                                                D(10), TimeInForce.GTC))
    shapes = load("polymarket_user_trade.json", yes=m.yes, cid=m.market_id, order=order_id,
                  owner="me", trade="trade-2")
    before = poly.positions().get(m.yes, D(0))
    poly._on_user(json.dumps(shapes["trade"]))
    assert poly.positions()[m.yes] == before + 10
    poly._on_user(json.dumps(dict(shapes["trade"], **shapes["failed"])))
    assert "trade-2" in poly.failed_trades
    assert poly.positions().get(m.yes, D(0)) == before


async def test_kalshi_snapshot_and_deltas(kalshi):
    ticker = "M1"
    m = kalshi.market_of(f"{ticker}:yes")
    kalshi._book_seq = 0  # a fresh subscription: the fixture's sequence starts at 1
    for msg in load("kalshi_ws.json", ticker=ticker):
        kalshi._on_message(json.dumps(msg))
    assert levels(kalshi.book(m.yes)) == (
        [("0.4", "100")], [("0.42", "4"), ("0.43", "10"), ("0.45", "60")])
    assert levels(kalshi.book(m.no)) == (
        [("0.58", "4"), ("0.57", "10"), ("0.55", "60")], [("0.6", "100")])


@pytest.fixture
async def canned(tmp_path):
    """A simulator whose ``POST /order`` answers the next queued recorded reply."""
    from aiohttp import web
    from venue_fixtures import poly_venue, scenario

    from pr3dict_sim import SimServer

    queue: list[dict] = []

    @web.middleware
    async def reply(request, handler):
        if request.method == "POST" and request.path == "/order" and queue:
            item = queue.pop(0)
            return web.json_response(item["body"], status=item["status"])
        return await handler(request)

    server = SimServer(scenario(tmp_path), base_dir=tmp_path, clock=False)
    server.app.middlewares.append(reply)
    await server.start()
    venue = poly_venue(server)
    await venue.start()
    yield venue, queue
    await venue.close()
    await server.stop()


@pytest.mark.parametrize("case, tif, outcome", [
    ("matched", TimeInForce.FAK, (OrderStatus.FILLED, D(10))),
    ("live", TimeInForce.GTC, (OrderStatus.OPEN, D(0))),
    ("delayed", TimeInForce.FAK, "AmbiguousOutcome"),
    ("balance", TimeInForce.FAK, "InsufficientBalance"),
    ("market_buy_amounts", TimeInForce.FAK, "OrderRejected"),
])
async def test_polymarket_order_replies_of_every_status(canned, case, tif, outcome):
    venue, queue = canned
    m = venue.markets()[0]
    request = OrderRequest(f"r-{case}", "poly", m.yes, Side.BUY, D("0.5"), D(10), tif)
    order_id, _ = venue.build_order(request)
    queue.append(load("polymarket_order_replies.json", order=order_id)[case])
    if isinstance(outcome, str):
        with pytest.raises(Exception) as info:
            await venue.place_order(request)
        assert type(info.value).__name__ == outcome
        return
    ack = await venue.place_order(request)
    assert (ack.status, ack.filled) == outcome
    if case == "matched":  # a FAK BUY of 10 at 0.5 filled for $5
        assert sum(f.size * f.price for f in ack.fills) == D(5)
