"""Fixtures for the Polygon layer: real anvil nodes (killed by PID), pools, a deployed chain.

anvil missing is an *error*, never a skip: run `npm ci` at the repository root.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from pr3dict_core.model import Fill, Leg, LegSpec, LegState, Opportunity, Side, Trade, TradeState
from pr3dict_polygon.devchain import AnvilNode, anvil_binary, deploy_test_chain, dev_account
from pr3dict_polygon.rpc import RpcPool

TRADER_FUNDS = 1_000 * 10**6  # 1,000 collateral (6 decimals)


@pytest.fixture(scope="session")
def anvil_path():
    return anvil_binary()  # FileNotFoundError here fails every test that needs a node


@pytest.fixture
def anvil(anvil_path) -> Iterator[Callable[..., AnvilNode]]:
    """``anvil(chain_id=137, **kw)`` starts a node; every node is killed at teardown."""
    nodes: list[AnvilNode] = []

    def start(chain_id: int = 137, **kw: Any) -> AnvilNode:
        node = AnvilNode(chain_id, **kw)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.kill()


@pytest.fixture
def tracer(tracer_provider):
    return tracer_provider.get_tracer("pr3dict.tests.polygon")


@pytest.fixture
async def make_pool(tracer) -> AsyncIterator[Callable[..., Any]]:
    """``await make_pool(urls, start=True, **config)``; closed at teardown."""
    pools: list[RpcPool] = []

    async def make(urls: list[str], *, start: bool = True, **options: Any) -> RpcPool:
        pool = RpcPool("polygon", RpcPool.Config(**options), urls, tracer=tracer)
        pools.append(pool)
        if start:
            await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
async def chain(anvil, make_pool) -> SimpleNamespace:
    """Three nodes on chain 137 in lockstep (transactions are broadcast), test contracts
    deployed, one binary condition prepared, the trader funded with collateral."""
    nodes = [anvil() for _ in range(3)]
    pool = await make_pool([n.url for n in nodes], reprobe_ms=100, head_check_ms=0)
    deployer, trader = dev_account(0), dev_account(1)
    contracts = await deploy_test_chain(pool, deployer, mint_to={trader.address: TRADER_FUNDS})
    return SimpleNamespace(nodes=nodes, pool=pool, deployer=deployer, trader=trader,
                           contracts=contracts)


def committed_trade(trade_id: str, yes: str = "m:yes", no: str = "m:no",
                    size: str = "10", filled: tuple[str, str] | None = None) -> Trade:
    """A COMMITTED binary-complement trade: bought ``size`` YES and ``size`` NO shares."""
    size_d = Decimal(size)
    specs = (LegSpec("sim", yes, Side.BUY, "0.45", size_d),
             LegSpec("sim", no, Side.BUY, "0.50", size_d))
    opp = Opportunity(id=f"o-{trade_id}", detector="c", kind="binary_complement", legs=specs,
                      size=size_d, edge_per_share="0.05", cost=size_d * Decimal("0.95"))
    trade = Trade(id=trade_id, opportunity=opp, state=TradeState.COMMITTED)
    for i, spec in enumerate(specs):
        leg = Leg(trade_id, i, spec.venue, spec.instrument, spec.side, size_d, spec.price,
                  spec.price, state=LegState.FILLED)
        got = Decimal(filled[i]) if filled else size_d
        leg.add_fills([Fill(f"{trade_id}-f{i}", f"{trade_id}-{i}-1", spec.price, got)])
        trade.legs.append(leg)
    return trade


class FakeRpc:
    """A loopback JSON-RPC server that answers chain id correctly and misbehaves otherwise.

    ``mode`` picks the misbehaviour for every other method; ``calls`` counts requests per
    method. Modes: ok, garbage, html502, no_result, bad_quantity, truncated, hang, stale,
    rate_limited, error_object, not_object.
    """

    def __init__(self, mode: str = "ok", chain_id: int = 137, head: int = 1):
        self.mode, self.chain_id, self.head = mode, chain_id, head
        self.calls: dict[str, int] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def start(self) -> FakeRpc:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        method, rid = body["method"], body["id"]
        self.calls[method] = self.calls.get(method, 0) + 1

        def reply(result: Any) -> web.Response:
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

        if method == "eth_chainId":
            return reply(hex(self.chain_id))
        mode = self.mode
        if mode == "ok":
            return reply(hex(self.head) if method == "eth_blockNumber" else "0x0")
        if mode == "stale":
            return reply(hex(self.head))
        if mode == "garbage":
            return web.Response(body=b"\x00\xffnot json at all", content_type="application/json")
        if mode == "html502":
            return web.Response(status=502, text="<html>Bad Gateway</html>",
                                content_type="text/html")
        if mode == "no_result":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "foo": 1})
        if mode == "bad_quantity":
            return reply("zz")
        if mode == "truncated":
            return web.Response(text=json.dumps({"jsonrpc": "2.0", "id": rid})[:-5],
                                content_type="application/json")
        if mode == "hang":
            await self._release.wait()
            return reply("0x0")
        if mode == "rate_limited":
            return web.json_response({"jsonrpc": "2.0", "id": rid,
                                      "error": {"code": -32005, "message": "limit exceeded"}})
        if mode == "error_object":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": "oops"})
        if mode == "not_object":
            return web.json_response([1, 2, 3])
        raise AssertionError(f"unknown mode {mode}")


@pytest.fixture
async def fake_rpc() -> AsyncIterator[Callable[..., Any]]:
    servers: list[FakeRpc] = []

    async def make(mode: str = "ok", **kw: Any) -> FakeRpc:
        server = await FakeRpc(mode, **kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()
