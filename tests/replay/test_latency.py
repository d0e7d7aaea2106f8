"""Order latency of simulated venues: per venue, defaulting to the venue type's, and the
same meaning in replay (recorded time) and shadow (real time): a taker order meets the
books of the moment it arrives."""

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
