"""RPC pool benchmark against local anvil nodes.

1. Call overhead: ``eth_blockNumber`` through a bare web3 ``AsyncHTTPProvider`` and through
   the pool, interleaved in the same run; the ratio is pool / bare (keep-alive) at p50.
2. Failover: a pool of two nodes under a steady call loop; one node is SIGKILLed (dead) or
   SIGSTOPped (hung), and we report how long until it is taken out, how many calls were
   slowed and by how much. No call may fail.

    python bench/bench_rpc.py [--calls N] [--rounds N] [--repeat N]

Needs anvil: ``npm ci`` at the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from common import NullExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
)
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider

from pr3dict_polygon.devchain import AnvilNode
from pr3dict_polygon.rpc import RpcPool


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


# --------------------------------------------------------------------------- overhead


async def overhead(calls: int, rounds: int) -> list[tuple[str, float, float, float]]:
    nodes = [AnvilNode() for _ in range(3)]
    url = nodes[0].url
    try:
        bare_default = AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None))
        keepalive_provider = AsyncHTTPProvider(url, exception_retry_configuration=None)
        await keepalive_provider.cache_async_session(aiohttp.ClientSession())
        bare = AsyncWeb3(keepalive_provider)
        one = RpcPool.for_urls("one", [url], head_check_ms=0)
        three = RpcPool.for_urls("three", [n.url for n in nodes], head_check_ms=0)
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NullExporter()))
        traced = RpcPool.for_urls("traced", [n.url for n in nodes], head_check_ms=0,
                                  tracer=provider.get_tracer("bench"))
        for pool in (one, three, traced):
            await pool.start()

        async def bare_raw() -> object:
            return await keepalive_provider.make_request("eth_blockNumber", [])  # type: ignore[arg-type]

        variants: dict[str, Callable[[], Awaitable[object]]] = {
            "bare web3, default session (no keep-alive)": lambda: bare_default.eth.block_number,
            "bare web3, keep-alive session": lambda: bare.eth.block_number,
            "pool web3, 1 endpoint": lambda: one.web3.eth.block_number,
            "pool web3, 3 endpoints": lambda: three.web3.eth.block_number,
            "pool web3, 3 endpoints, SDK tracing": lambda: traced.web3.eth.block_number,
            "bare provider.make_request": bare_raw,
            "pool.request, 3 endpoints": lambda: three.request("eth_blockNumber"),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for fn in variants.values():  # warm-up
            await timed(fn, 50)
        gc.collect()
        for _ in range(rounds):  # interleaved so drift hits every variant alike
            for name, fn in variants.items():
                samples[name] += await timed(fn, calls // rounds)
        for pool in (one, three, traced):
            await pool.close()
        provider.shutdown()
        await bare_default.provider.disconnect()
        await keepalive_provider.disconnect()
    finally:
        for node in nodes:
            node.kill()
    base = statistics.median(samples["bare web3, keep-alive session"])
    raw_base = statistics.median(samples["bare provider.make_request"])
    rows = []
    for name, values in samples.items():
        ref = raw_base if "make_request" in name or name.startswith("pool.request") else base
        rows.append((name, pct(values, 50), pct(values, 99), pct(values, 50) / ref))
    return rows


class _StubProvider:
    """Answers at once, in process: what is left is the pool's own Python cost."""

    async def make_request(self, method: str, params: object) -> dict[str, object]:
        return {"jsonrpc": "2.0", "id": 1, "result": "0x10"}

    async def disconnect(self) -> None:
        pass


async def pure_overhead(calls: int) -> tuple[float, float]:
    """(stub call, pool call over three stub endpoints) in microseconds, median of 5 runs."""
    pool = RpcPool.for_urls("stub", ["http://127.0.0.1:1", "http://127.0.0.1:2",
                                     "http://127.0.0.1:3"], head_check_ms=0)
    for ep in pool.endpoints:
        ep.provider = _StubProvider()  # type: ignore[assignment]
    pool._started = True
    stub = _StubProvider()
    bare, pooled = [], []
    for _ in range(5):
        bare.append(statistics.fmean(await timed(lambda: stub.make_request("x", []), calls)))
        pooled.append(statistics.fmean(await timed(lambda: pool.request("eth_blockNumber"),
                                                   calls)))
    return statistics.median(bare), statistics.median(pooled)


# --------------------------------------------------------------------------- failover


async def failover(how: str, repeat: int, timeout_ms: int) -> dict[str, float]:
    taken_out, slowed, worst, baseline = [], [], [], []
    for _ in range(repeat):
        nodes = [AnvilNode(), AnvilNode()]
        pool = RpcPool.for_urls("bench", [n.url for n in nodes], head_check_ms=0,
                                request_timeout_ms=timeout_ms, reprobe_ms=60_000)
        await pool.start()
        try:
            warm = await timed(lambda p=pool: p.request("eth_blockNumber"), 200)
            p50 = statistics.median(warm)
            baseline.append(p50)
            victim = pool.endpoints[0]
            if how == "kill":
                nodes[0].kill()
            else:
                nodes[0].pause()
            t0 = time.perf_counter()
            out_at = None
            lat: list[float] = []
            while len(lat) < 200 or out_at is None:
                s = time.perf_counter()
                await pool.request("eth_blockNumber")  # must never raise
                lat.append((time.perf_counter() - s) * 1e6)
                if out_at is None and victim.dead:
                    out_at = time.perf_counter() - t0
                if len(lat) > 5000:
                    raise RuntimeError("the victim was never taken out")
            taken_out.append(out_at * 1000)
            slow = [v for v in lat if v > 5 * p50 + 200]
            slowed.append(len(slow))
            worst.append(max(lat) / 1000)
        finally:
            if how == "stop":
                nodes[0].resume()
            await pool.close()
            for node in nodes:
                node.kill()
    return {"taken_out_ms": statistics.median(taken_out),
            "slowed_calls": statistics.median(slowed),
            "worst_call_ms": statistics.median(worst),
            "baseline_us": statistics.median(baseline)}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls per overhead variant")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="failover repetitions")
    args = parser.parse_args(argv)
    logging.getLogger("pr3dict.polygon").setLevel(logging.ERROR)  # "taken out" is expected here

    rows = await overhead(args.calls, args.rounds)
    print(f"\nRPC call overhead: eth_blockNumber on loopback anvil, {args.calls} calls each, "
          f"interleaved in {args.rounds} rounds")
    print(f"{'variant':<46} {'p50 us':>8} {'p99 us':>8} {'p50 ratio':>10}")
    for name, p50, p99, ratio in rows:
        print(f"{name:<46} {p50:>8.0f} {p99:>8.0f} {ratio:>9.2f}x")
    print("ratio: web3 variants vs bare web3 with keep-alive; raw variants vs bare "
          "provider.make_request")

    stub, pooled = await pure_overhead(5000)
    print(f"\nPool overhead without a network (in-process stub endpoints): "
          f"{pooled - stub:.1f} us per call (stub alone {stub:.1f} us)")

    kill = await failover("kill", args.repeat, 250)
    stop = await failover("stop", args.repeat, 250)
    print(f"\nFailover (2 endpoints, request_timeout_ms=250, dead_after_failures=3, median of "
          f"{args.repeat}); no call failed")
    print(f"{'event':<28} {'taken out after':>16} {'slowed calls':>13} {'worst call':>11} "
          f"{'normal call':>12}")
    for label, r in (("SIGKILL (connection refused)", kill), ("SIGSTOP (hung, timeouts)", stop)):
        print(f"{label:<28} {r['taken_out_ms']:>13.1f} ms {r['slowed_calls']:>13.0f} "
              f"{r['worst_call_ms']:>8.1f} ms {r['baseline_us']:>9.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
