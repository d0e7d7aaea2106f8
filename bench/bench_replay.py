"""Replay benchmark: recorded messages per second through the connectors' parsing, the
detectors and the local fill simulator, one core; and what recording costs.

A synthetic recording of 50 markets on both venues is written first (Polymarket
``price_change`` messages carrying the book's best bid and ask as the venue's do, and Kalshi
``orderbook_delta`` messages, one level change each, fair prices walking independently so
cross-venue windows open now and then). Writing it measures the recorder's work per
received message: the record envelope, its JSON and zstd, in CPU time and compressed bytes.
Then the recording is replayed:

- ``feed``: replay venues alone (read, decompress, parse into books);
- ``feed+detect+fill``: plus the ``cross_venue`` and ``binary_complement`` detectors on
  every cycle's changed books and a FAK order per leg of every opportunity, filled
  against the replayed books (no engine: the path the issue's target is about);
- ``engine``: ``pr3dict run`` machinery (gates, strategy, execution, statistics) for
  reference, on a shorter recording (orders meet the books after the venue types' default
  latency), on the replayed-time event loop ``pr3dict run`` uses.

    python bench/bench_replay.py [--messages 200000] [--markets 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from pr3dict_core.config import load_pipeline
from pr3dict_core.model import Market, OrderRequest, TimeInForce
from pr3dict_core.pipeline import Engine
from pr3dict_core.plugins import collect_components, make_plugin_manager
from pr3dict_replay.decode import markets_record
from pr3dict_replay.format import RecordingWriter

D = Decimal
TARGET = 100_000


def _markets(n: int) -> tuple[list[Market], list[Market]]:
    poly = [Market("poly", f"0x{i:064x}", f"{10**20 + 2 * i}", f"{10**20 + 2 * i + 1}",
                   f"market {i}", D("0.01"), D("5"), D("0.01")) for i in range(n)]
    kalshi = [Market("kalshi", f"MKT-{i}", f"MKT-{i}:yes", f"MKT-{i}:no", f"market {i}",
                     D("0.01"), D("1"), D("1")) for i in range(n)]
    return poly, kalshi


def write_recording(path: Path, messages: int, n_markets: int, seed: int = 7) -> dict:
    """A synthetic recording; returns the recorder's cost."""
    rng = random.Random(seed)
    poly, kalshi = _markets(n_markets)
    t = [1_700_000_000_000_000_000]

    def clock() -> int:
        return t[0]

    writer = RecordingWriter(path, {"pipeline": "bench", "venues": {"poly": "polymarket",
                                                                    "kalshi": "kalshi"}},
                             clock=clock)
    writer.write(markets_record("poly", "polymarket", t[0], poly,
                                {i: D("0.02") for m in poly for i in (m.yes, m.no)}, D(1), {}))
    writer.write(markets_record("kalshi", "kalshi", t[0], kalshi, {}, D(1), {}))
    fair_p = [rng.randint(20, 80) for _ in range(n_markets)]  # cents
    fair_k = list(fair_p)

    # Polymarket books as the recording leaves them (cents -> size): a price_change carries
    # the venue's best bid and ask after it, as the real feed does.
    levels: dict[str, tuple[dict[int, int], dict[int, int]]] = {}

    def poly_book(i: int) -> list[dict]:
        f = fair_p[i]
        out = []
        for token, c in ((poly[i].yes, f), (poly[i].no, 100 - f)):
            levels[token] = ({c - k: 100 for k in (3, 2, 1)}, {c + k: 100 for k in (3, 2, 1)})
            out.append({"event_type": "book", "asset_id": token, "market": poly[i].market_id,
                        "bids": [{"price": f"0.{c - k:02d}", "size": "100"} for k in (3, 2, 1)],
                        "asks": [{"price": f"0.{c + k:02d}", "size": "100"} for k in (3, 2, 1)]})
        return out

    def kalshi_snap(i: int) -> dict:
        f = fair_k[i]
        return {"type": "orderbook_snapshot", "sid": 1, "msg": {
            "market_ticker": kalshi[i].market_id,
            "yes_dollars_fp": [[f"0.{f - k:02d}00", "100.00"] for k in (3, 2, 1)],
            "no_dollars_fp": [[f"0.{100 - f - k:02d}00", "100.00"] for k in (3, 2, 1)]}}

    for i in range(n_markets):
        writer.write({"k": "ws", "t": t[0], "v": "poly", "raw": json.dumps(poly_book(i))})
        writer.write({"k": "ws", "t": t[0], "v": "kalshi", "raw": json.dumps(kalshi_snap(i))})
    seq = 0
    records = []
    for _ in range(messages):
        t[0] += 100_000  # 10,000 messages a second of recorded time
        i = rng.randrange(n_markets)
        if rng.random() < 0.5:
            if rng.random() < 0.02:  # the fair price moves: a fresh book
                fair_p[i] = min(max(fair_p[i] + rng.choice((-1, 1)), 10), 90)
                raw = json.dumps(poly_book(i))
            else:
                f = fair_p[i]
                yes = rng.random() < 0.5
                c = f if yes else 100 - f
                side = rng.choice(("BUY", "SELL"))
                price = c - rng.randint(1, 3) if side == "BUY" else c + rng.randint(1, 3)
                token = poly[i].yes if yes else poly[i].no
                size = rng.randint(20, 200)
                bids, asks = levels[token]
                (bids if side == "BUY" else asks)[price] = size
                raw = json.dumps({"event_type": "price_change", "market": poly[i].market_id,
                                  "price_changes": [{
                                      "asset_id": token, "price": f"0.{price:02d}",
                                      "side": side, "size": str(size), "hash": "",
                                      "best_bid": f"0.{max(bids):02d}",
                                      "best_ask": f"0.{min(asks):02d}"}],
                                  "timestamp": str(t[0] // 1_000_000)})
            records.append((t[0], "poly", raw))
        else:
            seq += 1
            if rng.random() < 0.02:  # Kalshi mostly follows Polymarket: windows are rare
                step = (fair_p[i] > fair_k[i]) - (fair_p[i] < fair_k[i])
                if not step or rng.random() < 0.1:
                    step = rng.choice((-1, 1))
                fair_k[i] = min(max(fair_k[i] + step, 10), 90)
                raw = json.dumps(kalshi_snap(i))
            else:
                side = rng.choice(("yes", "no"))
                f = fair_k[i] if side == "yes" else 100 - fair_k[i]
                raw = json.dumps({"type": "orderbook_delta", "sid": 1, "seq": seq, "msg": {
                    "market_ticker": kalshi[i].market_id,
                    "price_dollars": f"0.{f - rng.randint(1, 3):02d}00",
                    "delta_fp": f"{rng.choice((-10, 10, 20))}.00", "side": side}})
            records.append((t[0], "kalshi", raw))
    cpu0 = time.process_time()
    before = writer.compressed_bytes
    for t_ns, venue, raw in records:  # what the recorder does per received message
        writer.write({"k": "ws", "t": t_ns, "v": venue, "raw": raw})
    writer.close()
    cpu = time.process_time() - cpu0
    raw_bytes = sum(len(raw) for _, _, raw in records)
    return {"cpu_us": cpu / len(records) * 1e6,
            "bytes": (writer.compressed_bytes - before) / len(records),
            "raw_bytes": raw_bytes / len(records)}


def write_pipeline(tmp: Path, recording: Path, n_markets: int, batch_ms: float = 1.0) -> Path:
    poly, kalshi = _markets(n_markets)
    mapping = tmp / "mapping.toml"
    mapping.write_text("".join(
        f'[[pairs]]\nid = "p{i}"\nmarkets = {{ poly = "{p.market_id}", kalshi = '
        f'"{k.market_id}" }}\nequivalent = true\norientation = "same"\n'
        f'evidence = "bench"\n\n' for i, (p, k) in enumerate(zip(poly, kalshi, strict=True))))
    path = tmp / "bench.toml"
    path.write_text(f"""
[pipeline]
name = "bench-replay"

[journal]
url = ""
[venues.poly]
type = "replay"
recording = "{recording}"
batch_ms = {batch_ms}
[venues.kalshi]
type = "replay"
recording = "{recording}"
batch_ms = {batch_ms}
[detectors.cross]
type = "cross_venue"
venues = ["poly", "kalshi"]
mapping = "{mapping}"
min_edge = "0.001"
max_size = "10"
[detectors.poly]
type = "binary_complement"
venues = ["poly"]
max_size = "10"
[detectors.kalshi]
type = "binary_complement"
venues = ["kalshi"]
max_size = "10"
[execution]
strategy = "market"
deadline_ms = 1000
""")
    return path


def _engine(pipeline: Path) -> Engine:
    pm = make_plugin_manager()
    registry = collect_components(pm)
    return Engine.from_config(load_pipeline(pipeline, registry), registry, pm,
                              tracer_provider=TracerProvider(), run_id="bench")


async def replay(pipeline: Path, *, detect: bool) -> tuple[int, float, int, int]:
    """(records applied, seconds, opportunities, orders) driving venues and detectors."""
    engine = _engine(pipeline)
    venues = list(engine.venues.values())
    await engine.start()
    player = venues[0].player
    opps = orders = 0
    start = time.process_time()
    while not all(v.exhausted() for v in venues):
        changed = [b for v in venues for b in await v.poll_books()]
        if not detect or not changed:
            continue
        for detector in engine.detectors:
            for opp in detector.detect(changed):
                opps += 1
                for leg in opp.legs:
                    orders += 1
                    venue = engine.venues[leg.venue]
                    venue.fills.submit(OrderRequest(f"o{orders}", leg.venue, leg.instrument,
                                                    leg.side, leg.price, leg.size,
                                                    TimeInForce.FAK))
    elapsed = time.process_time() - start
    await engine.close()
    return player.applied, elapsed, opps, orders


async def run_engine(engine: Engine) -> tuple[int, float, object]:
    venues = list(engine.venues.values())
    await engine.start()
    stop = asyncio.Event()
    start = time.process_time()
    await engine.run(stop=stop, on_cycle=lambda e, c: stop.set() if all(
        v.exhausted() for v in venues) else None)
    elapsed = time.process_time() - start
    await engine.close()
    return venues[0].player.applied, elapsed, engine.statistics()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--markets", type=int, default=50)
    ap.add_argument("--engine-messages", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rec = tmp / "bench.jsonl.zst"
        cost = write_recording(rec, args.messages, args.markets)
        print(f"recording: {cost['cpu_us']:.1f} us CPU per message (envelope, JSON, zstd), "
              f"{cost['bytes']:.1f} bytes per message compressed "
              f"(raw message {cost['raw_bytes']:.0f} bytes)")
        for batch_ms in (1.0, 10.0):
            pipeline = write_pipeline(tmp, rec, args.markets, batch_ms)
            print(f"cycles of batch_ms = {batch_ms:g} ms of recorded time:")
            for label, detect in (("feed", False), ("feed+detect+fill", True)):
                n, secs, opps, orders = asyncio.run(replay(pipeline, detect=detect))
                rate = n / secs
                extra = f", {opps} opportunities, {orders} orders filled" if detect else ""
                print(f"  replay {label:<17} {n} messages in {secs:.2f} CPU-s = "
                      f"{rate:,.0f}/s{extra}")
                if detect:
                    print(f"    target >= {TARGET:,}/s: {'met' if rate >= TARGET else 'NOT met'}")
        small = tmp / "small.jsonl.zst"
        write_recording(small, args.engine_messages, args.markets)
        engine = _engine(write_pipeline(tmp, small, args.markets))
        with asyncio.Runner(loop_factory=engine.loop_factory()) as runner:  # as `pr3dict run`
            n, secs, stats = runner.run(run_engine(engine))
        print(f"replay engine            {n} messages in {secs:.2f} CPU-s = {n / secs:,.0f}/s "
              f"({stats.opportunities} opportunities, {stats.committed} committed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
