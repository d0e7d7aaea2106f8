"""Bad input never crashes the pool: garbage replies, stale heads and timeouts lower an
endpoint's health and the call fails over to a good endpoint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.providers.async_base import AsyncJSONBaseProvider

from pr3dict_polygon.rpc import JsonRpcError, RpcPool

MODES = ["garbage", "html502", "no_result", "bad_quantity", "truncated", "hang", "stale",
         "rate_limited", "error_object", "not_object"]


@pytest.mark.parametrize("mode", MODES)
async def test_misbehaving_endpoint_loses_health_and_fails_over(mode, fake_rpc, anvil,
                                                                make_pool):
    node = anvil()
    if mode == "stale":
        node.rpc("anvil_mine", ["0x32"])  # the real head is 50; the fake stays at 1
    head = int(node.rpc("eth_blockNumber"), 16)
    fake = await fake_rpc(mode, head=1)
    # Short enough that a hung endpoint costs little, long enough that a loaded machine
    # never times out the healthy node (the assertion below is that it never fails).
    timeout = 400 if mode == "hang" else 2000
    pool = await make_pool([fake.url, node.url], request_timeout_ms=timeout, head_check_ms=0)
    bad, good = pool.endpoints
    for _ in range(12):
        assert int(await pool.request("eth_blockNumber"), 16) == head
    assert bad.failures >= 1, bad
    assert bad.health(250) < good.health(250)
    assert bad.health(250) < pool.config.min_health or bad.stale or bad.dead
    assert good.failures == 0 and good.health(250) > 0.9
    assert fake.calls.get("eth_blockNumber", 0) >= 1  # it really was asked


async def test_stale_endpoint_rejoins_when_it_catches_up(fake_rpc, anvil, make_pool):
    node = anvil()
    node.rpc("anvil_mine", ["0x32"])
    fake = await fake_rpc("stale", head=1)
    pool = await make_pool([fake.url, node.url], head_check_ms=50)
    bad = pool.endpoints[0]
    for _ in range(3):
        await pool.request("eth_blockNumber")
    assert bad.stale
    fake.head = 0x33
    for _ in range(100):
        if not bad.stale:
            break
        await asyncio.sleep(0.02)
    assert not bad.stale


class _StubProvider:
    """Stands in for web3's provider: returns a canned reply, or decodes canned bytes."""

    def __init__(self, reply: Any = None, raw: bytes | None = None):
        self.reply, self.raw = reply, raw

    async def make_request(self, method: str, params: Any) -> Any:
        if self.raw is not None:
            return AsyncJSONBaseProvider.decode_rpc_response(self.raw)
        return self.reply

    async def disconnect(self) -> None:
        pass


def _stub_pool(bad: _StubProvider) -> RpcPool:
    pool = RpcPool.for_urls("p", ["http://127.0.0.1:1", "http://127.0.0.1:2"], head_check_ms=0)
    pool.endpoints[0].provider = bad  # type: ignore[assignment]
    pool.endpoints[1].provider = _StubProvider({"jsonrpc": "2.0", "id": 1,  # type: ignore[assignment]
                                                "result": "0x10"})
    pool._started = True
    return pool


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)
REPLIES = JSON | st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": st.integers()},
    optional={"result": JSON | st.text(alphabet="0x123abcz", max_size=6), "error": JSON})


async def _ask(pool: RpcPool) -> Any:
    try:
        for _ in range(3):  # the first call goes to the bad endpoint (round-robin)
            result = await pool.request("eth_blockNumber")
            assert isinstance(result, str) and int(result, 16) >= 0
    except JsonRpcError as exc:  # a well-formed error object is the caller's answer
        assert isinstance(exc.code, int)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=REPLIES)
def test_any_reply_object_fails_over_or_is_a_clean_error(reply):
    asyncio.run(_ask(_stub_pool(_StubProvider(reply))))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64) | REPLIES.map(lambda r: json.dumps(r).encode()[:-1]))
def test_any_reply_bytes_fail_over_or_are_a_clean_error(raw):
    asyncio.run(_ask(_stub_pool(_StubProvider(raw=raw))))
