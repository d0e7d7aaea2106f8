"""A hostile venue: the simulator behind a middleware that answers placements, queries,
cancels, trades and books with malformed or lying replies (invalid JSON, 5xx, 429, dropped
connections, huge bodies, impossible amounts, another order's data, success with an error).

Lies told *after* the venue acted are the dangerous ones: the order is there, the reply
says otherwise. Through all of it the engine must not crash, must never book an impossible
fill, must never take an ambiguous order for a failed one (the journal ends equal to the
venue), and must not approve a new trade while a trade is unresolved.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sqlite3
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
from aiohttp import web
from venue_fixtures import REPO, poly_venue

from pr3dict_core.config import ExecutionSection, SecretRef
from pr3dict_core.journal import Journal
from pr3dict_core.pipeline import Engine
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_detectors.cross_venue import CrossVenue, load_mapping
from pr3dict_kalshi.venue import KalshiVenue
from pr3dict_sim import SimServer
from pr3dict_strategies.market import MarketStrategy

D = Decimal
KEYS = REPO / "pipelines" / "keys"

# Lies told before the venue sees the request (nothing happened) ...
BEFORE = ("http_500", "http_429", "reset")
# ... and after it acted (the order exists; the reply does not say so honestly).
AFTER = ("invalid_json", "truncated", "huge_body", "empty_object", "http_502_after")


def _walk(value: object, change: Callable[[str, object], object]) -> object:
    if isinstance(value, dict):
        return {k: change(k, _walk(v, change)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, change) for v in value]
    return value


def _amounts(replacement: object) -> Callable[[str, object], object]:
    keys = {"takingAmount", "makingAmount", "size_matched", "size", "matched_amount",
            "fill_count", "fill_count_fp", "remaining_count", "taker_fill_cost_dollars",
            "average_fill_price", "price", "yes_price_dollars"}
    return lambda k, v: replacement if k in keys and v not in (None, "", "0") else v


JSON_LIES: dict[str, Callable[[object], object]] = {
    "negative_amounts": lambda b: _walk(b, _amounts("-5")),
    "huge_amounts": lambda b: _walk(b, _amounts("1e400")),
    "boolean_amounts": lambda b: _walk(b, _amounts(True)),
    "garbage_amounts": lambda b: _walk(b, _amounts("lots")),
    "tenfold_amounts": lambda b: _walk(b, lambda k, v: str(Decimal(v) * 10) if k in (
        "takingAmount", "makingAmount", "size_matched", "fill_count", "fill_count_fp",
        "size", "matched_amount") and isinstance(v, str) and v.replace(".", "").isdigit()
        else v),
    "another_order": lambda b: _walk(b, lambda k, v: "0xdeadbeef" if k in (
        "orderID", "id", "order_id", "client_order_id") else v),
    "unknown_status": lambda b: _walk(b, lambda k, v: "EXPLODED" if k == "status" else v),
    "success_with_error": lambda b: {**b, "errorMsg": "internal error"}
    if isinstance(b, dict) and b.get("success") is True else b,
    "price_out_of_range": lambda b: _walk(b, lambda k, v: "7" if k == "price" else v),
}

ROUTES = ("POST /order", "POST /orders", "GET /data/order/{order_id}", "DELETE /order",
          "GET /data/trades", "POST /books", "GET /book",
          "POST /trade-api/v2/portfolio/events/orders",
          "POST /trade-api/v2/portfolio/events/orders/batched",
          "GET /trade-api/v2/portfolio/orders/{order_id}",
          "GET /trade-api/v2/portfolio/orders",
          "DELETE /trade-api/v2/portfolio/events/orders/{order_id}",
          "GET /trade-api/v2/markets/{ticker}/orderbook")


class Liar:
    """The middleware: on the routes above, with probability ``rate``, one lie."""

    def __init__(self, seed: int, rate: float):
        self.rng = random.Random(seed)
        self.rate = rate
        self.on = True
        self.told: collections.Counter[str] = collections.Counter()

    @property
    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def lie(request: web.Request, handler) -> web.StreamResponse:
            resource = request.match_info.route.resource
            route = f"{request.method} {resource.canonical if resource else request.path}"
            if not self.on or route not in ROUTES or self.rng.random() >= self.rate:
                return await handler(request)
            kind = self.rng.choice([*BEFORE, *AFTER, *JSON_LIES])
            self.told[kind] += 1
            if kind == "http_500":
                return web.json_response({"error": "internal"}, status=500)
            if kind == "http_429":
                return web.json_response({"error": "Too Many Requests"}, status=429)
            if kind == "reset":
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
            response = await handler(request)  # the venue acted
            if kind == "http_502_after":
                return web.Response(status=502, text="<html>bad gateway</html>")
            if kind == "invalid_json":
                return web.Response(text="{not json", content_type="application/json")
            if kind == "truncated":
                text = getattr(response, "text", "") or ""
                return web.Response(text=text[: len(text) // 2],
                                    content_type="application/json")
            if kind == "huge_body":
                return web.Response(body=b" " * (9 * 1024 * 1024) + b"{}",
                                    content_type="application/json")
            if kind == "empty_object":
                return web.json_response({}, status=response.status)
            try:
                body = json.loads(response.text)  # type: ignore[attr-defined]
            except (AttributeError, TypeError, ValueError):
                return response
            return web.json_response(JSON_LIES[kind](body), status=response.status)

        return lie


async def until(cond, timeout=30.0):
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def check_journal(path) -> dict[tuple[str, str], Decimal]:
    """No impossible fill was booked; no trade was approved while another was unresolved."""
    db = sqlite3.connect(path)
    try:
        for cid, size in db.execute("SELECT client_order_id, size FROM orders"):
            fills = [(Decimal(p), Decimal(s)) for p, s in db.execute(
                "SELECT price, size FROM fills WHERE client_order_id = ?", (cid,))]
            assert all(Decimal(0) <= p <= 1 for p, _ in fills), (cid, fills)
            assert Decimal(0) <= sum((s for _, s in fills), Decimal(0)) <= Decimal(size)
        rows = db.execute("SELECT trade_id, from_state, to_state, at FROM transitions "
                          "WHERE idx IS NULL ORDER BY seq").fetchall()
    finally:
        db.close()
    unresolved: dict[str, float] = {}
    windows = []
    for trade, old, new, at in rows:
        if new == "unresolved":
            unresolved[trade] = at
        elif old == "unresolved":
            windows.append((unresolved.pop(trade), at))
    windows += [(start, float("inf")) for start in unresolved.values()]
    for trade, _, new, at in rows:
        if new == "approved":
            assert not any(start < at < end for start, end in windows), trade
    journal = Journal(path)
    try:
        return journal.positions()
    finally:
        journal.close()


def kalshi(server: SimServer) -> KalshiVenue:
    key_id = "00000000-0000-4000-8000-00000000517e"
    return KalshiVenue("kalshi", KalshiVenue.Config(
        rest_url=server.kalshi_url, ws_url=server.kalshi_ws, key_id=key_id,
        private_key=SecretRef(env="UNUSED"), request_timeout_ms=500, poll_wait_ms=20,
        read_per_s=2000, write_per_s=2000), key_id=key_id,
        private_key=(KEYS / "TEST-ONLY-sim-kalshi.pem").read_text(), mode="paper")


@pytest.mark.parametrize("which", ["polymarket", "cross"])
async def test_a_lying_venue_never_crashes_the_engine_or_fools_the_journal(tmp_path, which):
    scenario = tmp_path / "sim.toml"  # the sim pipelines' markets, with more windows
    scenario.write_text((REPO / "pipelines/scenarios/sim.toml").read_text().replace(
        '"../keys/', f'"{KEYS}/').replace('arb_probability = "0.08"', 'arb_probability = "0.3"'))
    server = SimServer.from_file(scenario, clock=True)
    liar = Liar(seed=7 if which == "polymarket" else 8, rate=0.25)
    server.app.middlewares.append(liar.middleware)
    await server.start()
    key = (KEYS / "TEST-ONLY-sim-polymarket.key").read_text().split()[-1]
    venues = {"poly": poly_venue(server, vid="poly", key=key, request_timeout_ms=500,
                                 poll_wait_ms=20)}
    detectors = [BinaryComplement("c", BinaryComplement.Config(venues=("poly",),
                                                               max_size=D(10)))]
    if which == "cross":  # Kalshi is traded against Polymarket (one YES book per market)
        venues["kalshi"] = kalshi(server)
        mapping = REPO / "pipelines/mappings/sim-poly-kalshi.toml"
        config = CrossVenue.Config(venues=("poly", "kalshi"), mapping=str(mapping),
                                   max_size=D(10))
        detectors = [CrossVenue("x", config, load_mapping(mapping, ("poly", "kalshi"), {}),
                                built={})]
    engine = Engine(
        venues=venues, detectors=detectors, strategy=MarketStrategy(MarketStrategy.Config()),
        execution=ExecutionSection(deadline_ms=300, order_timeout_ms=500,
                                   reconcile_timeout_ms=1500, rollback="complete_or_unwind",
                                   max_unwind_loss=D(1)))
    engine.journal = Journal(tmp_path / "j.sqlite", engine.run_id)
    liar.on = False  # start honestly (markets and credentials), then lie
    await engine.start()
    liar.on = True
    try:
        summary = await engine.run(duration=8.0, interval=0.01)
    finally:
        liar.on = False  # the venue tells the truth again: everything must reconcile
    await until(lambda: not engine._unresolved and not engine._exposed
                and not engine._breaking, timeout=60)
    held = {vid: await venue.venue_positions() for vid, venue in venues.items()}
    await engine.close()
    await server.stop()
    print(which, dict(liar.told), summary.committed, summary.rolled_back, summary.unresolved)
    assert sum(liar.told.values()) > 50, liar.told
    assert summary.committed + summary.rolled_back > 5  # it traded through the lies
    booked: dict[str, dict[str, Decimal]] = {}
    for (vid, inst), qty in check_journal(tmp_path / "j.sqlite").items():
        if qty:
            booked.setdefault(vid, {})[inst] = qty
    for vid, positions in held.items():
        mine = booked.get(vid, {})
        if vid == "kalshi":  # Kalshi nets YES against NO in one signed position
            net: dict[str, Decimal] = {}
            for inst, qty in mine.items():
                ticker, side = inst.rsplit(":", 1)
                net[ticker] = net.get(ticker, D(0)) + (qty if side == "yes" else -qty)
            mine = {f"{t}:yes" if q > 0 else f"{t}:no": abs(q) for t, q in net.items() if q}
        assert mine == {k: v for k, v in positions.items() if v}, vid  # journal = venue
