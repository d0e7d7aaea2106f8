"""Venue connectors over loopback: place and cancel round trips, and signing cost.

The simulator runs in a separate process (``pr3dict sim``) so client and server do not share
one event loop; each connector places a resting GTC order far from the market and cancels it,
one at a time. Signing is timed in process: one Polymarket V2 order (EIP-712 digest + secp256k1
through coincurve) and one Kalshi request signature (RSA-2048 PSS).

    python bench/bench_venues.py [--orders N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "tests" / "venues"))

from pr3dict_core.model import OrderRequest, Side, TimeInForce  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fmt(samples: list[float]) -> str:
    return f"{pct(samples, 0.5) * 1e3:7.3f} / {pct(samples, 0.99) * 1e3:7.3f} ms"


def signing(n: int) -> dict[str, str]:
    from venue_fixtures import KALSHI_PEM, POLY_KEY

    from pr3dict_kalshi import protocol as kp
    from pr3dict_polymarket.signing import EXCHANGES, OrderDomain, Signer

    try:
        import coincurve  # noqa: F401
        backend = "coincurve"
    except ImportError:
        backend = "pure Python"
    signer = Signer(POLY_KEY)
    domain = OrderDomain(137, EXCHANGES[(137, 2, False)], 2)
    order = {"salt": 1, "maker": signer.address, "signer": signer.address,
             "tokenId": str(2**250), "makerAmount": "5000000", "takerAmount": "10000000",
             "side": "BUY", "signatureType": 0, "timestamp": "1700000000000",
             "metadata": "0x" + "00" * 32, "builder": "0x" + "00" * 32}
    samples = []
    for i in range(n):
        order["salt"] = i + 1
        t = time.perf_counter()
        signer.sign_digest(domain.digest(order))
        samples.append(time.perf_counter() - t)
    key = kp.load_private_key(KALSHI_PEM)
    ksamples = []
    for _ in range(n):
        t = time.perf_counter()
        kp.sign(key, "1700000000000", "POST", "/trade-api/v2/portfolio/events/orders")
        ksamples.append(time.perf_counter() - t)
    return {f"polymarket order sign ({backend})": fmt(samples),
            "kalshi request sign (RSA-PSS)": fmt(ksamples)}


async def round_trips(url: str, n: int) -> dict[str, str]:
    from venue_fixtures import KALSHI_KEY_ID, KALSHI_PEM

    from pr3dict_core.config import SecretRef
    from pr3dict_kalshi.venue import KalshiVenue
    from pr3dict_polymarket.venue import PolymarketVenue

    key = (REPO / "pipelines/keys/TEST-ONLY-sim-polymarket.key").read_text()
    ws = url.replace("http", "ws")
    poly = PolymarketVenue("poly", PolymarketVenue.Config(
        rest_url=url, ws_url=ws + "/ws", private_key=SecretRef(env="X"),
        heartbeat_interval_ms=0, max_requests_per_s=1e6), private_key=key)
    kalshi_key = (REPO / "pipelines/keys/TEST-ONLY-sim-kalshi.pem").read_text()
    kalshi = KalshiVenue("kalshi", KalshiVenue.Config(
        rest_url=url + "/trade-api/v2", ws_url=ws + "/trade-api/ws/v2",
        key_id="00000000-0000-4000-8000-00000000517e", private_key=SecretRef(env="X"),
        read_per_s=1e6, write_per_s=1e6), key_id="00000000-0000-4000-8000-00000000517e",
        private_key=kalshi_key)
    _ = (KALSHI_KEY_ID, KALSHI_PEM)
    out = {}
    for name, venue in (("polymarket", poly), ("kalshi", kalshi)):
        await venue.start()
        m = venue.markets()[0]
        price, size = Decimal("0.05"), Decimal("5")
        place, cancel = [], []
        for i in range(n + 20):
            request = OrderRequest(f"bench-{i}", venue.id, m.yes, Side.BUY, price, size,
                                   TimeInForce.GTC)
            t0 = time.perf_counter()
            await venue.place_order(request)
            t1 = time.perf_counter()
            await venue.cancel_order(request.client_order_id)
            t2 = time.perf_counter()
            if i >= 20:  # warm-up
                place.append(t1 - t0)
                cancel.append(t2 - t1)
        out[f"{name} place (p50 / p99)"] = fmt(place)
        out[f"{name} cancel (p50 / p99)"] = fmt(cancel)
        out[f"{name} place+cancel mean"] = f"{statistics.mean(place + cancel) * 2e3:7.3f} ms"
        await venue.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=500)
    args = parser.parse_args()
    scenario = REPO / "pipelines/scenarios/sim.toml"
    with tempfile.TemporaryDirectory():
        proc = subprocess.Popen([str(Path(sys.executable).parent / "pr3dict"), "sim",
                                 str(scenario), "--port", "0"], stdout=subprocess.PIPE,
                                text=True)
        try:
            url = proc.stdout.readline().split()[-1]  # type: ignore[union-attr]
            rows = asyncio.run(round_trips(url, args.orders))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    rows.update(signing(2000))
    width = max(map(len, rows))
    print(f"venue connectors over loopback ({args.orders} orders each, sim in another process)")
    print("-" * (width + 22))
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
