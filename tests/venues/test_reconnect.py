"""Websocket reconnects: capped exponential backoff with jitter, logged, counted, rate
limited (a venue that accepts and drops at once must not be hammered)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import aiohttp
import pytest
from aiohttp import web

from pr3dict_venuekit.base import ConnectorBase


@pytest.fixture
async def dropping_server():
    """A websocket endpoint that accepts, sends one message and closes; records connects."""
    seen: list[float] = []

    async def handler(request):
        seen.append(time.monotonic())
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"hello": 1}')
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/ws", seen
    await runner.cleanup()


async def _run(url, base: ConnectorBase, seen, n: int) -> list[float]:
    messages: list[str] = []
    async with aiohttp.ClientSession() as session:
        async def connect():
            return await session.ws_connect(url)

        async def on_open(ws):
            messages.append("open")

        base.spawn(base.run_websocket(connect, on_open, messages.append, "market"), "ws")
        deadline = time.monotonic() + 10
        while len(seen) < n:
            assert time.monotonic() < deadline, f"only {len(seen)} connects"
            await asyncio.sleep(0.01)
        await base.stop_tasks()
    assert messages.count("open") >= n - 1  # resubscribed on every reconnect
    return [b - a for a, b in itertools.pairwise(seen)]


def _connector(rate_per_s: float = 1000.0) -> ConnectorBase:
    return ConnectorBase("v", rest_url="http://127.0.0.1:1", ws_url="", timeout_s=1,
                         rate_per_s=rate_per_s, poll_wait_s=0, websocket=True)


def test_reconnect_delay_is_capped_exponential_with_jitter():
    base = _connector()
    for failures in range(40):
        ceiling = min(base.WS_BACKOFF_CAP_S, base.WS_BACKOFF_BASE_S * 2 ** failures)
        delays = [base.reconnect_delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert base.reconnect_delay(1000) <= base.WS_BACKOFF_CAP_S


async def test_accept_then_close_backs_off_and_is_logged_and_counted(dropping_server, caplog):
    url, seen = dropping_server
    base = _connector()
    base.WS_BACKOFF_BASE_S = 0.01
    caplog.set_level(logging.WARNING, "pr3dict.venues")
    gaps = await _run(url, base, seen, 6)
    # each short-lived connection doubles the wait: at least half of 0.01 x 2^k
    for k, gap in enumerate(gaps, start=1):
        assert gap >= 0.005 * 2 ** k, gaps
    assert base.ws_reconnects["market"] >= 5 and base.ws_connects >= 6
    assert sum("market websocket reconnect" in r.message for r in caplog.records) >= 5


async def test_reconnects_take_rate_limiter_tokens(dropping_server):
    url, seen = dropping_server
    base = _connector(rate_per_s=20.0)  # burst 4: the first reconnects are free
    base.WS_BACKOFF_BASE_S = base.WS_BACKOFF_CAP_S = 0.0001
    gaps = await _run(url, base, seen, 10)
    assert sum(gaps) >= 4 / 20  # 9 reconnects, at most ~5 tokens in hand: the rest waited


async def test_reconnects_reach_the_run_summary_and_prometheus(make_sim):
    """A venue that drops its websockets: the counts are in the engine's summary (what every
    sink gets at close) and in the Prometheus exposition while the run goes."""
    from decimal import Decimal

    from venue_fixtures import poly_venue

    from pr3dict_core.config import ExecutionSection
    from pr3dict_core.pipeline import Engine
    from pr3dict_detectors.complement import BinaryComplement
    from pr3dict_paper.scenario import SimFaultSpec
    from pr3dict_sinks.prometheus import PrometheusSink
    from pr3dict_strategies.market import MarketStrategy

    sim = await make_sim(clock=True, step_ms=20, faults=SimFaultSpec(ws_drop_every_s=0.1))
    venue = poly_venue(sim, poll_wait_ms=20)
    sink = PrometheusSink("prom", serve=False)
    engine = Engine(venues={"poly": venue},
                    detectors=[BinaryComplement("c", BinaryComplement.Config(
                        venues=("poly",), min_edge=Decimal("0.5")))],  # never trades
                    strategy=MarketStrategy(MarketStrategy.Config()), sinks=[sink],
                    execution=ExecutionSection())
    await engine.start()
    stop = asyncio.Event()

    def on_cycle(engine, cycle):
        if sum(venue.ws_reconnects.values()) >= 2 and "pr3dict_venue_ws_reconnects_total{" \
                in sink.render():
            stop.set()

    await asyncio.wait_for(engine.run(stop=stop, interval=0.05, on_cycle=on_cycle), 30)
    summary = engine.statistics()
    await engine.close()
    assert sum(summary.venues["poly"]["ws_reconnects"].values()) >= 2
    assert summary.to_json()["venues"]["poly"]["ws_connects"] >= 3
    assert any(line.startswith("pr3dict_venue_ws_reconnects_total{") and 'venue="poly"' in line
               for line in sink.render().splitlines())
