"""RpcPool against real anvil nodes: round-robin, failover when a node dies, re-probing,
chain-id refusal, retries only for idempotent calls, and the span attributes."""

from __future__ import annotations

import asyncio
import time

import pytest

from pr3dict_polygon.devchain import dev_account, free_port
from pr3dict_polygon.rpc import (
    IDEMPOTENT_METHODS,
    JsonRpcError,
    RpcAmbiguous,
    RpcPool,
    RpcUnavailable,
    WrongChain,
)


async def test_round_robin_spreads_calls_over_healthy_endpoints(anvil, make_pool):
    nodes = [anvil() for _ in range(3)]
    pool = await make_pool([n.url for n in nodes], head_check_ms=0)
    before = [ep.requests for ep in pool.endpoints]
    for _ in range(30):
        await pool.request("eth_blockNumber")
    assert [ep.requests - b for ep, b in zip(pool.endpoints, before, strict=True)] == [10, 10, 10]
    for row in pool.snapshot():
        assert 0.0 <= row["health"] <= 1.0
        assert row["latency_ewma_ms"] is not None


async def test_killing_a_node_mid_run_fails_no_call(anvil, make_pool):
    nodes = [anvil() for _ in range(3)]
    pool = await make_pool([n.url for n in nodes], reprobe_ms=100)
    address = dev_account(0).address
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        for i in range(40):
            match (k + i) % 4:
                case 0:
                    assert int(await pool.request("eth_blockNumber"), 16) >= 0
                case 1:
                    assert int(await pool.request("eth_getBalance", [address, "latest"]), 16) > 0
                case 2:
                    assert await pool.web3.eth.chain_id == 137
                case 3:
                    block = await pool.web3.eth.get_block("latest")
                    assert block["number"] >= 0
            done += 1
            await asyncio.sleep(0)

    async def killer() -> None:
        while done < 60:
            await asyncio.sleep(0.001)
        nodes[1].kill()

    await asyncio.gather(*(worker(k) for k in range(8)), killer())  # any failure raises here
    assert done == 320
    assert not nodes[1].alive
    dead = pool.endpoints[1]
    assert dead.dead and dead.health(250) == 0.0
    assert "connection_refused" in dead.last_error
    assert all(ep.usable for i, ep in enumerate(pool.endpoints) if i != 1)


async def test_dead_endpoint_is_taken_out_and_reprobed(anvil, make_pool):
    a, b = anvil(), anvil()
    pool = await make_pool([a.url, b.url], reprobe_ms=50, reprobe_max_ms=100)
    port = b.port
    b.kill()
    for _ in range(4):
        await pool.request("eth_blockNumber")
    ep = pool.endpoints[1]
    assert ep.dead
    served = ep.requests
    for _ in range(6):  # taken out: calls no longer go there
        await pool.request("eth_blockNumber")
    assert ep.requests == served
    anvil(port=port)  # the same URL comes back
    deadline = time.monotonic() + 5
    while ep.dead and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not ep.dead, "the re-probe did not bring the endpoint back"
    served = ep.requests
    for _ in range(4):
        await pool.request("eth_blockNumber")
    assert ep.requests > served


async def test_endpoint_on_the_wrong_chain_is_refused(anvil, make_pool):
    good, wrong = anvil(137), anvil(31337)
    with pytest.raises(WrongChain) as info:
        await make_pool([good.url, wrong.url], chain_id=137)
    message = str(info.value)
    assert "chain id 31337, expected 137" in message
    assert f"127.0.0.1:{wrong.port}" in message
    assert "refusing to start" in message


async def test_no_endpoint_reachable_at_start(make_pool):
    with pytest.raises(RpcUnavailable, match="no endpoint answered at start"):
        await make_pool([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])


async def test_json_rpc_error_is_the_callers_not_the_endpoints(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    ep = pool.endpoints[0]
    before, health = ep.requests, ep.health(250)
    with pytest.raises(JsonRpcError) as info:
        await pool.request("eth_getBalance", ["not-an-address", "latest"])
    assert info.value.code != 0
    assert ep.requests == before + 1, "a JSON-RPC error must not be retried"
    assert ep.health(250) >= health and not ep.dead


async def test_idempotent_calls_retry_with_backoff_then_give_up(fake_rpc, make_pool):
    hung = await fake_rpc("hang")
    pool = await make_pool([hung.url], request_timeout_ms=40, max_retries=3,
                           dead_after_failures=100, head_check_ms=0)
    before = hung.calls.get("eth_getBalance", 0)
    started = time.perf_counter()
    with pytest.raises(RpcUnavailable, match="after 4 attempt"):
        await pool.request("eth_getBalance", ["0x" + "11" * 20, "latest"])
    elapsed = time.perf_counter() - started
    assert hung.calls["eth_getBalance"] - before == 4  # 1 try + 3 retries
    # 4 timeouts of 40 ms + 3 backoffs of at least 50 ms each, and at most 100+200+400 ms.
    assert 0.3 <= elapsed < 0.16 + 0.7 + 0.5


async def test_non_idempotent_call_is_never_resent(fake_rpc, anvil, make_pool):
    assert "eth_sendRawTransaction" not in IDEMPOTENT_METHODS
    hung = await fake_rpc("hang")
    node = anvil()
    pool = await make_pool([hung.url, node.url], request_timeout_ms=500,
                           broadcast_transactions=False, head_check_ms=0)
    pool._rr = 0  # the hung endpoint first
    pool.endpoints[0].success_ewma = pool.endpoints[1].success_ewma = 1.0
    with pytest.raises(RpcAmbiguous, match="not re-sent"):
        await pool.request("eth_sendRawTransaction", ["0x02"])
    assert hung.calls["eth_sendRawTransaction"] == 1
    assert node.rpc("txpool_status")["pending"] == "0x0"


async def test_refused_connection_is_failed_over_even_for_sends(anvil, make_pool):
    """Nothing was sent to a dead node, so a send may go to the next endpoint."""
    a, b = anvil(), anvil()
    pool = await make_pool([a.url, b.url], broadcast_transactions=False)
    a.kill()
    with pytest.raises(JsonRpcError):  # b answers (the payload is not a valid transaction)
        await pool.request("eth_sendRawTransaction", ["0x02"])


def test_backoff_is_jittered_between_50_and_500_ms():
    pool = RpcPool.for_urls("p", ["http://127.0.0.1:1"])
    for round_no, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (7, 0.5)]:
        delays = [pool._backoff_s(round_no) for _ in range(200)]
        assert min(delays) >= 0.05 and max(delays) <= ceiling
        assert len(set(delays)) > 100  # jittered


async def test_spans_carry_rpc_attributes(anvil, make_pool, span_exporter):
    a, b = anvil(), anvil()
    pool = await make_pool([a.url, b.url], head_check_ms=0)
    span_exporter.clear()
    a.kill()
    for _ in range(3):
        await pool.request("eth_blockNumber")
    spans = [s for s in span_exporter.get_finished_spans() if s.name == "eth_blockNumber"]
    assert len(spans) == 3
    attrs = dict(spans[0].attributes)
    assert attrs["rpc.system.name"] == "jsonrpc"
    assert attrs["rpc.method"] == "eth_blockNumber"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == b.port
    assert 0 < attrs["pr3dict.rpc.endpoint.health"] <= 1
    failed = [e for s in spans for e in s.events if e.name == "rpc.attempt.failed"]
    assert failed and failed[0].attributes["error.type"] == "connection_refused"
    assert failed[0].attributes["server.port"] == a.port

    b.kill()
    span_exporter.clear()
    with pytest.raises(RpcUnavailable):
        await pool.request("eth_blockNumber")
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name == "eth_blockNumber"]
    assert span.attributes["error.type"] == "connection_refused"
    assert not span.status.is_ok


async def test_web3_facade_routes_through_the_pool(anvil, make_pool):
    nodes = [anvil(), anvil()]
    pool = await make_pool([n.url for n in nodes])
    assert await pool.web3.eth.chain_id == 137
    assert await pool.web3.is_connected()
    balance = await pool.web3.eth.get_balance(dev_account(0).address)
    assert balance == 10_000 * 10**18
