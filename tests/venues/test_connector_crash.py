"""Crash safety on the real connectors: `pr3dict run` against `pr3dict sim` in another
process, SIGKILLed at random points, restarted, recovered.

The simulator outlives every engine process, like a real venue: it remembers every order
the killed engines sent. It injects the faults a real venue has (latency, `delayed`
replies, replies lost after the order was applied, 5xx, trades that fail on chain after
they matched). After the last restart: every order the venue saw is in the journal, nothing
of ours rests, the journal's positions equal the venue's, and every market is hedged or flat.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from support import journal_orders
from venue_fixtures import REPO, sim_process, stop_process

from pr3dict_core.config import SecretRef
from pr3dict_core.journal import Journal
from pr3dict_kalshi.venue import KalshiVenue
from pr3dict_polymarket import protocol as pm
from pr3dict_polymarket.venue import PolymarketVenue

PR3DICT = Path(sys.executable).parent / "pr3dict"
KEYS = REPO / "pipelines" / "keys"
KALSHI_KEY_ID = "00000000-0000-4000-8000-00000000517e"

SCENARIO_FAULTS = """
[sim.faults]
latency_ms = {{ "*" = {latency} }}
delayed_rate = "{delayed}"
delay_ms = 40
error_rate = "0.03"
accepted_timeout_rate = "0.03"
hang_ms = 1500
trade_failed_rate = "{failed}"
settle_ms = 30
"""

POLY_TABLE = """
[venues.poly]
type = "polymarket"
rest_url = "{url}"
ws_url = "{ws}/ws"
private_key = {{ file = "{keys}/TEST-ONLY-sim-polymarket.key" }}
poll_wait_ms = 30
heartbeat_interval_ms = 0
"""
KALSHI_TABLE = """
[venues.kalshi]
type = "kalshi"
rest_url = "{url}/trade-api/v2"
ws_url = "{ws}/trade-api/ws/v2"
key_id = "{key_id}"
private_key = {{ file = "{keys}/TEST-ONLY-sim-kalshi.pem" }}
poll_wait_ms = 30
read_per_s = 400
write_per_s = 200
"""
DETECTORS = {
    "polymarket": """
[detectors.c]
type = "binary_complement"
venues = ["poly"]
max_size = "10"
""",
    # Kalshi has one YES book per market (its NO asks are 1 - YES bids): a complement
    # never crosses there, so Kalshi is traded cross-venue against Polymarket.
    "cross": f"""
[detectors.x]
type = "cross_venue"
venues = ["poly", "kalshi"]
mapping = "{REPO / 'pipelines/mappings/sim-poly-kalshi.toml'}"
max_size = "10"
""",
}

PIPELINE = """
[pipeline]
name = "crash-{venue}"
kill_switch_file = "stop"
{venue_table}
{detectors}

[journal]
url = "sqlite:///journal.sqlite"
[gates.capital]
type = "capital"
bankroll = "100000"

[execution]
strategy = "market"
deadline_ms = 300
order_timeout_ms = 600
reconcile_timeout_ms = 2000
max_unwind_loss = "1"
rollback = "complete_or_unwind"
"""


def start_sim(tmp_path: Path, venue: str) -> tuple[subprocess.Popen[str], str]:
    text = (REPO / "pipelines/scenarios/sim.toml").read_text().replace(
        '"../keys/', f'"{KEYS}/')
    text = text.replace("arb_probability = \"0.08\"", "arb_probability = \"0.25\"")
    failed = delayed = "0.05"
    scenario = tmp_path / "scenario.toml"
    latency = 2 if venue == "polymarket" else 10
    scenario.write_text(text + SCENARIO_FAULTS.format(failed=failed, delayed=delayed,
                                                      latency=latency))
    return sim_process(scenario)


Truth = tuple[dict[str, Decimal], set[str], int, dict[str, tuple[str, str]]]


async def polymarket_truth(url: str) -> Truth:
    """(positions, ids of our orders the venue matched, how many of ours rest, markets)."""
    venue = PolymarketVenue("truth", PolymarketVenue.Config(
        rest_url=url, ws_url=url.replace("http", "ws") + "/ws",
        private_key=SecretRef(file="unused"), websocket=False, heartbeat_interval_ms=0),
        private_key=(KEYS / "TEST-ONLY-sim-polymarket.key").read_text(), mode="paper")
    await venue.start()
    try:
        positions = await venue.venue_positions()
        resting = 0
        cursor = pm.INITIAL_CURSOR
        while cursor != pm.END_CURSOR:
            page = await venue._get_json("/data/orders", {"next_cursor": cursor}, auth=True)
            resting += len(page.get("data", []))
            cursor = page.get("next_cursor") or pm.END_CURSOR
        ordered = set()
        cursor = pm.INITIAL_CURSOR
        while cursor != pm.END_CURSOR:
            page = await venue._get_json("/data/trades", {"next_cursor": cursor}, auth=True)
            for t in page.get("data", []):
                if t.get("trader_side") == "TAKER":
                    ordered.add(str(t["taker_order_id"]))
            cursor = page.get("next_cursor") or pm.END_CURSOR
        return positions, ordered, resting, {m.market_id: (m.yes, m.no)
                                             for m in venue.markets()}
    finally:
        await venue.close()


async def kalshi_truth(url: str) -> Truth:
    venue = KalshiVenue("truth", KalshiVenue.Config(
        rest_url=url + "/trade-api/v2", ws_url=url.replace("http", "ws") + "/trade-api/ws/v2",
        key_id=KALSHI_KEY_ID, private_key=SecretRef(file="unused"), websocket=False,
        read_per_s=400, write_per_s=200),
        key_id=KALSHI_KEY_ID, private_key=(KEYS / "TEST-ONLY-sim-kalshi.pem").read_text(),
        mode="paper")
    await venue.start()
    try:
        positions = await venue.venue_positions()
        body = await venue._get("/portfolio/orders", {"status": "resting", "limit": "1000"})
        resting = len(body.get("orders", []))
        ordered = {str(f.client_order_id) for f in await venue.fills()}
        return positions, ordered, resting, {m.market_id: (m.yes, m.no)
                                             for m in venue.markets()}
    finally:
        await venue.close()


def explain(journal_path: Path, tokens: tuple[str, str]) -> None:
    """On failure: every trade that touched the market, as the journal has it."""
    journal = Journal(journal_path)
    try:
        for row in journal.trades(limit=100000):
            trade = journal.load_trade(row["id"])
            if any(leg.instrument in tokens for leg in trade.all_legs):
                legs = [(leg.venue, leg.instrument[-6:], leg.side.value, leg.purpose,
                         leg.state.value, str(leg.filled)) for leg in trade.all_legs]
                print(trade.id, trade.state.value, trade.error, legs, flush=True)
        print("halts", list(journal.query("SELECT * FROM halts")), flush=True)
    finally:
        journal.close()


def net_kalshi(booked: dict[str, Decimal]) -> dict[str, Decimal]:
    """Kalshi nets YES against NO: one signed position per market, as the venue reports."""
    net: dict[str, Decimal] = {}
    for inst, qty in booked.items():
        ticker, side = inst.rsplit(":", 1)
        net[ticker] = net.get(ticker, Decimal(0)) + (qty if side == "yes" else -qty)
    return {f"{t}:yes" if q > 0 else f"{t}:no": abs(q) for t, q in net.items() if q}


def held_sets(poly: Truth, kalshi: Truth | None) -> list[tuple[str, Decimal, Decimal]]:
    """Per market: YES and NO shares held across the venues (cross-venue sets pair a
    Polymarket token with the Kalshi market of the same event)."""
    pairs = tomllib.loads((REPO / "pipelines/mappings/sim-poly-kalshi.toml").read_text())
    ticker_of = {p["markets"]["poly"]: p["markets"]["kalshi"] for p in pairs["pairs"]}
    out = []
    for market_id, (yes, no) in poly[3].items():
        y, n = poly[0].get(yes, Decimal(0)), poly[0].get(no, Decimal(0))
        if kalshi is not None and market_id in ticker_of:
            k_yes, k_no = kalshi[3][ticker_of[market_id]]
            y += kalshi[0].get(k_yes, Decimal(0))
            n += kalshi[0].get(k_no, Decimal(0))
        out.append((market_id, y, n))
    return out


async def truths(url: str, cross: bool) -> tuple[Truth, Truth | None]:
    return await polymarket_truth(url), (await kalshi_truth(url) if cross else None)


@pytest.mark.parametrize("venue", ["polymarket", "cross"])
def test_sigkill_the_connector_run_then_recover(tmp_path, venue):
    sim, url = start_sim(tmp_path, venue)
    try:
        ws = url.replace("http", "ws")
        table = POLY_TABLE.format(url=url, ws=ws, keys=KEYS)
        if venue == "cross":
            table += KALSHI_TABLE.format(url=url, ws=ws, keys=KEYS, key_id=KALSHI_KEY_ID)
        (tmp_path / "p.toml").write_text(PIPELINE.format(venue=venue, venue_table=table,
                                                         detectors=DETECTORS[venue]))
        journal_path = tmp_path / "journal.sqlite"
        rng = random.Random(97 if venue == "polymarket" else 98)
        kills = interrupted = attempts = 0
        while attempts < 6 or (interrupted == 0 and attempts < 14):
            attempts += 1
            proc = subprocess.Popen([str(PR3DICT), "run", "p.toml", "--duration", "60",
                                     "--quiet"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            # Readiness: this run has sent orders (the journal's order count grew).
            before, deadline = journal_orders(journal_path), time.monotonic() + 60
            while time.monotonic() < deadline and journal_orders(journal_path) <= before \
                    and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.8))  # then a kill somewhere in the middle
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            kills += proc.returncode == -signal.SIGKILL
            journal = Journal(journal_path)
            interrupted += len(journal.open_trades())
            journal.close()
        assert kills == attempts  # every run was killed, none died on its own
        assert interrupted > 0, "no kill landed mid-trade: the test proved nothing"

        # Restart with the kill switch on: recovery (and the recheck of recent trades, whose
        # fills may have failed on chain after their process died) runs, no entry.
        (tmp_path / "stop").touch()
        done = subprocess.run([str(PR3DICT), "run", "p.toml", "--cycles", "1", "--quiet"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

        journal = Journal(journal_path)
        try:
            assert journal.open_trades() == []  # nothing left unknown
            booked: dict[str, dict[str, Decimal]] = {}
            for (vid, inst), qty in journal.positions().items():
                if qty:
                    booked.setdefault(vid, {})[inst] = qty
            ours = {r[0] for r in journal.query("SELECT venue_order_id FROM orders")} | \
                {r[0] for r in journal.query("SELECT client_order_id FROM orders")}
            # Journaled as halted: exposure being worked, or a trade reopened by a fill that
            # failed on chain while the last run was closing (taken up at the next start).
            exposed = [r[0] for r in journal.query(
                "SELECT subject FROM halts WHERE cause IN ('exposure', 'break') "
                "AND lifted_at IS NULL")]
        finally:
            journal.close()
        poly, kalshi = asyncio.run(truths(url, venue == "cross"))
        print(f"{venue}: {kills} kills, {interrupted} trades interrupted mid-trade")
        for name, truth in (("poly", poly), ("kalshi", kalshi)):
            if truth is None:
                continue
            positions, ordered, resting, _ = truth
            assert resting == 0, name  # nothing of ours rests
            assert ordered <= ours, name  # every order the venue matched is in the journal
            mine = booked.get(name, {})
            if name == "kalshi":
                mine = net_kalshi(mine)
            assert mine == {k: v for k, v in positions.items() if v}, name  # journal = venue
        if not exposed:  # every market hedged or flat, or journaled as halted
            for market, yes, no in held_sets(poly, kalshi):
                if yes != no:
                    explain(journal_path, poly[3][market])
                    print("poly", poly[0], poly[3][market], "kalshi", kalshi and kalshi[0])
                assert yes == no, (market, yes, no)
    finally:
        stop_process(sim)
