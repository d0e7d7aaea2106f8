"""Replay and shadow venues end to end: order latency per venue (defaulting to the venue
type's, the same meaning in recorded and real time: a taker order meets the books of the
moment it arrives), and resting orders filled from recorded trades."""

from __future__ import annotations

from decimal import Decimal as D

from replay_helpers import REPO

from pr3dict_core.config import SecretRef
from pr3dict_core.model import OrderRequest, Side, TimeInForce
from pr3dict_kalshi.venue import KalshiVenue
from pr3dict_polymarket.venue import PolymarketVenue
from pr3dict_replay.venue import DEFAULT_LATENCY_MS, Player, ReplayVenue, ShadowVenue

RECORDING = REPO / "pipelines/recordings/sim-cross.jsonl.zst"


def test_replay_latency_defaults_to_the_venue_type_and_is_set_per_venue():
    player = Player(RECORDING, speed=None, batch_ns=1_000_000)
    poly = ReplayVenue("poly", player, source="poly")
    kalshi = ReplayVenue("kalshi", player, source="kalshi", latency_ms=3)
    assert poly.latency_ns == DEFAULT_LATENCY_MS["polymarket"] * 1_000_000
    assert kalshi.latency_ns == 3_000_000


def test_shadow_latency_comes_from_the_venue_table_else_the_type_default():
    key = SecretRef(env="UNUSED")
    set_ = ShadowVenue("poly", "polymarket",
                       PolymarketVenue.Config(private_key=key, latency_ms=15), base_dir=None)
    unset = ShadowVenue("kalshi", "kalshi",
                        KalshiVenue.Config(key_id="k", private_key=key), base_dir=None)
    assert set_.latency_s == 0.015
    assert unset.latency_s == DEFAULT_LATENCY_MS["kalshi"] / 1000


async def test_a_taker_order_meets_the_books_recorded_latency_after_its_cycle():
    player = Player(RECORDING, speed=None, batch_ns=1_000_000)
    poly = ReplayVenue("poly", player, source="poly", latency_ms=40)
    await poly.poll_books()
    decided = player.cycle_ns
    market = poly.markets()[0]
    await poly.place_order(OrderRequest("o1", "poly", market.yes, Side.BUY, D("0.01"),
                                        D(market.min_size), TimeInForce.FAK))
    arrival = decided + 40_000_000
    # Every record received up to the arrival was applied before the order met the books,
    # and none after it.
    nxt = player._peek()
    assert player.now_ns == arrival and (nxt is None or nxt["t"] > arrival)


async def test_a_resting_order_of_a_replay_fills_from_recorded_trades(tmp_path):
    import json

    from pr3dict_core.model import Market, OrderStatus
    from pr3dict_replay.decode import markets_record
    from pr3dict_replay.format import RecordingWriter

    market = Market("poly", "c", "1", "2", tick_size=D("0.01"), min_size=D("1"),
                    size_step=D("0.01"))
    path = tmp_path / "trades.jsonl.zst"
    t0 = 1_700_000_000_000_000_000
    writer = RecordingWriter(path, {"venues": {"poly": "polymarket"}}, clock=lambda: t0)
    writer.write(markets_record("poly", "polymarket", t0, [market], {}, D(1), {}))

    def ws(ms, event):
        writer.write({"k": "ws", "t": t0 + ms * 1_000_000, "v": "poly", "raw": json.dumps(event)})

    ws(0, {"event_type": "book", "asset_id": "1", "market": "c",
           "bids": [{"price": "0.40", "size": "30"}], "asks": [{"price": "0.45", "size": "9"}]})
    for ms in (100, 200, 300):  # sellers hit the 0.40 bids: 30 ahead of us, then us
        ws(ms, {"event_type": "last_trade_price", "asset_id": "1", "market": "c",
                "price": "0.40", "side": "SELL", "size": "15", "fee_rate_bps": "0"})
    writer.close()

    player = Player(path, speed=None, batch_ns=1_000_000)
    poly = ReplayVenue("poly", player, source="poly", latency_ms=10)
    acks = []
    poly.subscribe_orders(acks.append)
    await poly.poll_books()
    ack = await poly.place_order(OrderRequest("r", "poly", "1", Side.BUY, D("0.40"), D("10"),
                                              TimeInForce.GTC))
    assert ack.status is OrderStatus.OPEN and ack.fills == ()
    while not poly.exhausted():
        await poly.poll_books()
    # 15 + 15 traded at 0.40 went to the 30 ahead; the third 15 filled all 10 of ours.
    assert [(a.status, a.filled) for a in acks] == [(OrderStatus.FILLED, D("10"))]
    assert (await poly.get_order("r")).status is OrderStatus.FILLED
