"""Fixtures for the Polygon layer: real anvil nodes (killed by PID), pools, a deployed chain.

anvil missing is an *error*, never a skip: run `npm ci` at the repository root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from polygon_helpers import TRADER_FUNDS, FakeRpc

from pr3dict_polygon.devchain import AnvilNode, anvil_binary, deploy_test_chain, dev_account
from pr3dict_polygon.rpc import RpcPool


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
        pool = RpcPool.for_urls("polygon", urls, tracer=tracer, **options)
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
