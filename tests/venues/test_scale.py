"""The connectors start against `pr3dict sim` (its own process) with 10,000 markets.

Default request timeout (2 s) and connection pool: the 10,000 per-market requests at start
queue for a connection before their timeout starts, books come in batches (Polymarket
``POST /books``, 500 tokens; Kalshi ``GET /markets/orderbooks``, 100 tickers), and the
simulator answers while it moves 10,000 markets. Only the client-side rate limit is raised,
so the test takes seconds: at the default 200 requests/s the Polymarket start takes about a
minute (``bench/bench_memory.py`` measures it at the real defaults).
"""

from __future__ import annotations

import pytest
from venue_fixtures import (
    KALSHI_KEY_ID,
    KALSHI_PEM,
    KALSHI_PUB,
    POLY_ADDRESS,
    POLY_KEY,
    sim_process,
    stop_process,
)

from pr3dict_core.config import SecretRef
from pr3dict_kalshi.venue import KalshiVenue
from pr3dict_polymarket.venue import PolymarketVenue

MARKETS = 10_000


@pytest.fixture(scope="module")
def big_sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    (folder / "kalshi.pub.pem").write_text(KALSHI_PUB)
    # Books keep moving (5% of markets a step): the simulator answers between its steps.
    lines = ['seed = 3', "[process]", 'move_probability = "0.05"', 'arb_probability = "0.01"',
             "[sim]", "[[sim.accounts]]", 'name = "t"',
             f'polymarket_address = "{POLY_ADDRESS}"', f'kalshi_key_id = "{KALSHI_KEY_ID}"',
             'kalshi_public_key = "kalshi.pub.pem"']
    for i in range(MARKETS):
        lines += ["[[markets]]", f'id = "m{i}"', f'fair = "0.{20 + (i * 7) % 60:02d}"']
    (folder / "big.toml").write_text("\n".join(lines) + "\n")
    proc, url = sim_process(folder / "big.toml")
    yield url
    stop_process(proc)


async def test_polymarket_starts_with_10000_markets(big_sim):
    config = PolymarketVenue.Config(rest_url=big_sim, ws_url=big_sim.replace("http", "ws") + "/ws",
                                    private_key=SecretRef(env="UNUSED"), max_markets=MARKETS,
                                    max_requests_per_s=5000.0)
    assert config.request_timeout_ms == 2000  # the default
    venue = PolymarketVenue("poly", config, private_key=POLY_KEY)
    try:
        await venue.start()
        markets = venue.markets()
        assert len(markets) == MARKETS
        assert all(venue.book(m.yes) is not None and venue.book(m.yes).asks for m in markets)
        assert venue.fee(markets[-1].yes, markets[-1].tick_size * 50, markets[-1].min_size) >= 0
    finally:
        await venue.close()


async def test_kalshi_starts_with_10000_markets(big_sim):
    config = KalshiVenue.Config(rest_url=big_sim + "/trade-api/v2",
                                ws_url=big_sim.replace("http", "ws") + "/trade-api/ws/v2",
                                key_id=KALSHI_KEY_ID, private_key=SecretRef(env="UNUSED"),
                                max_markets=MARKETS, read_per_s=5000.0)
    assert config.request_timeout_ms == 2000
    venue = KalshiVenue("kalshi", config, key_id=KALSHI_KEY_ID, private_key=KALSHI_PEM)
    try:
        await venue.start()
        markets = venue.markets()
        assert len(markets) == MARKETS
        assert all(venue.book(m.yes) is not None and venue.book(m.yes).asks for m in markets)
    finally:
        await venue.close()
