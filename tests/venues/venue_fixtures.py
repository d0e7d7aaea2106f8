"""Helpers for the venue tests: scenarios, keys, a simulator and connectors wired to it."""

from __future__ import annotations

import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_account import Account

from pr3dict_core.config import SecretRef
from pr3dict_core.model import Side
from pr3dict_kalshi.venue import KalshiVenue
from pr3dict_paper.scenario import (
    MarketSpec,
    ProcessSpec,
    ScenarioSpec,
    SimAccountSpec,
    SimFaultSpec,
    SimSpec,
)
from pr3dict_polymarket.venue import PolymarketVenue
from pr3dict_sim import SimServer

D = Decimal
REPO = Path(__file__).resolve().parents[2]
POLY_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
POLY_ADDRESS = Account.from_key(POLY_KEY).address
OTHER_KEY = "0x" + "6c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f36231a"
KALSHI_KEY_ID = "11111111-2222-4333-8444-555555555555"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KALSHI_PEM = _RSA.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
KALSHI_PUB = _RSA.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo
                                            ).decode()


def scenario(tmp_path: Path, *, faults: SimFaultSpec | None = None, markets=("m1", "m2"),
             min_size: str = "5", fee_rate: str = "0.02", balance: str = "1000",
             **sim_options) -> ScenarioSpec:
    """Static books (no moves, no windows) and one test account on both venues."""
    pub = tmp_path / "kalshi.pub.pem"
    pub.write_text(KALSHI_PUB)
    return ScenarioSpec(
        seed=3, tick_size=D("0.01"), min_size=D(min_size), size_step=D("0.01"),
        fee_rate=D(fee_rate),
        process=ProcessSpec(move_probability=D(0), arb_probability=D(0), spread_ticks=1,
                            depth_levels=2, level_size=D(50)),
        markets=tuple(MarketSpec(id=m, title=m.upper(), fair=D("0.5")) for m in markets),
        sim=SimSpec(accounts=(SimAccountSpec(name="t", balance=D(balance),
                                             polymarket_address=POLY_ADDRESS,
                                             kalshi_key_id=KALSHI_KEY_ID,
                                             kalshi_public_key=str(pub)),),
                    faults=faults or SimFaultSpec(), **sim_options))


def poly_venue(sim: SimServer, *, vid: str = "poly", key: str = POLY_KEY, mode: str = "paper",
               **options) -> PolymarketVenue:
    options.setdefault("heartbeat_interval_ms", 0)
    options.setdefault("poll_wait_ms", 0)
    options.setdefault("request_timeout_ms", 1000)
    options.setdefault("max_requests_per_s", 5000.0)
    config = PolymarketVenue.Config(rest_url=sim.polymarket_url, ws_url=sim.polymarket_ws,
                                    private_key=SecretRef(env="UNUSED"), **options)
    return PolymarketVenue(vid, config, private_key=key, mode=mode)


def kalshi_venue(sim: SimServer, *, vid: str = "kalshi", mode: str = "paper",
                 **options) -> KalshiVenue:
    options.setdefault("poll_wait_ms", 0)
    options.setdefault("request_timeout_ms", 1000)
    options.setdefault("read_per_s", 5000.0)
    options.setdefault("write_per_s", 5000.0)
    config = KalshiVenue.Config(rest_url=sim.kalshi_url, ws_url=sim.kalshi_ws,
                                key_id=KALSHI_KEY_ID, private_key=SecretRef(env="UNUSED"),
                                **options)
    return KalshiVenue(vid, config, key_id=KALSHI_KEY_ID, private_key=KALSHI_PEM, mode=mode)


def pm_book(sim: SimServer, token: str, *, bids=(), asks=()) -> None:
    """Replace the simulated Polymarket market maker's quotes on one token."""
    pm = sim.polymarket
    for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
        pm._matches.clear()
        pm.engine.set_liquidity("mm", token, side, [(D(p), D(s)) for p, s in levels])
        for trade in pm._record_matches():
            pm._push_trade(trade)
    pm.publish_books()


def k_book(sim: SimServer, ticker: str, *, bids=(), asks=()) -> None:
    """Replace the simulated Kalshi market maker's quotes (YES book: bids and asks)."""
    k = sim.kalshi
    for side, levels in ((Side.SELL, asks), (Side.BUY, bids)):
        k._matches.clear()
        k.engine.set_liquidity("mm", ticker, side, [(D(p), D(s)) for p, s in levels])
        k._record_matches()
    k.publish_books()


def sim_process(scenario_file: Path) -> tuple[subprocess.Popen[str], str]:
    """`pr3dict sim` in its own process; returns it and its URL once it listens."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "pr3dict"), "sim",
                             str(scenario_file), "--port", "0", "--duration", "900"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # readiness: the listening line
    assert first.startswith("pr3dict sim: listening on "), first + proc.stderr.read()
    return proc, first.split()[-1]


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
