"""Batch transaction manager: flush by size or age, nonces under concurrency, receipts, and
every failure (revert, drop, refusal) reported with its reason."""

from __future__ import annotations

import asyncio
import time

from eth_utils import to_checksum_address

from pr3dict_polygon.batch import BatchConfig, BatchTxManager, TxOp, TxStatus, decode_revert_data
from pr3dict_polygon.devchain import dev_account
from pr3dict_polygon.settlement import PARTITION, TOP_LEVEL, artifacts


def transfer(to_index: int = 5, value: int = 1, label: str = "") -> TxOp:
    return TxOp(to=dev_account(to_index).address, value=value, action="transfer", label=label)


async def started(pool, account_index: int = 2, **config) -> BatchTxManager:
    batch = BatchTxManager(pool, dev_account(account_index), BatchConfig(**config))
    await batch.start()
    return batch


async def test_concurrent_submitters_get_consecutive_nonces_and_all_confirm(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    batch = await started(pool, max_size=8, max_age_ms=20, poll_ms=20)
    try:
        async def submitter(k: int) -> list:
            out = []
            for i in range(5):
                out.append(await batch.execute(transfer(label=f"s{k}-{i}")))
                await asyncio.sleep(0)
            return out

        results = [r for rs in await asyncio.gather(*(submitter(k) for k in range(8)))
                   for r in rs]
    finally:
        await batch.close()
    assert all(r.status is TxStatus.CONFIRMED for r in results), [r.reason for r in results]
    assert sorted(r.nonce for r in results) == list(range(40))
    assert len({r.tx_hash for r in results}) == 40
    count = node.rpc("eth_getTransactionCount", [batch.address, "latest"])
    assert int(count, 16) == 40
    assert pool.gas.transactions == 40 and pool.gas.spent_pol > 0
    assert all(r.cost_pol > 0 and r.gas_used == 21_000 for r in results)


async def test_flush_by_size(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    batch = await started(pool, max_size=4, max_age_ms=60_000, poll_ms=20)
    try:
        started_at = time.monotonic()
        futures = [batch.submit(transfer()) for _ in range(4)]
        results = await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert time.monotonic() - started_at < 5
        assert [r.status for r in results] == [TxStatus.CONFIRMED] * 4
        lone = batch.submit(transfer())
        await asyncio.sleep(0.2)
        assert not lone.done(), "one op is below max_size and younger than max_age"
    finally:
        await batch.close()  # close flushes what is queued
    assert lone.result().status is TxStatus.CONFIRMED


async def test_flush_by_age(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    batch = await started(pool, max_size=100, max_age_ms=80, poll_ms=20)
    try:
        t0 = time.monotonic()
        result = await batch.execute(transfer())
        waited = time.monotonic() - t0
    finally:
        await batch.close()
    assert result.ok
    assert 0.07 <= waited < 1.0


async def test_reverted_transaction_surfaces_its_reason(chain):
    """Merging positions the account does not hold: sent with a fixed gas limit (no
    estimate), mined, reverted; the reason comes from replaying the call."""
    ctf = chain.pool.web3.eth.contract(address=chain.contracts.ctf,
                                       abi=artifacts()["MiniConditionalTokens"]["abi"])
    data = ctf.encode_abi("mergePositions", args=[
        chain.contracts.collateral, TOP_LEVEL, bytes.fromhex(chain.contracts.condition_id[2:]),
        PARTITION, 5_000_000])
    batch = await started(chain.pool, 1, max_age_ms=0, poll_ms=20)
    try:
        mined = await batch.execute(TxOp(to=chain.contracts.ctf, data=data, gas=300_000,
                                         action="merge", label="t-revert"))
        estimated = await batch.execute(TxOp(to=chain.contracts.ctf, data=data, action="merge"))
    finally:
        await batch.close()
    assert mined.status is TxStatus.REVERTED
    assert mined.reason == "reverted: CT: insufficient position balance"
    assert mined.tx_hash and mined.block and mined.gas_used and mined.cost_pol > 0
    receipt = chain.nodes[0].rpc("eth_getTransactionReceipt", [mined.tx_hash])
    assert receipt["status"] == "0x0"
    assert chain.pool.gas.by_label["t-revert"] == mined.cost_pol  # reverts cost gas too
    # Without a fixed gas limit the revert is found by estimation: nothing is sent.
    assert estimated.status is TxStatus.FAILED and estimated.tx_hash is None
    assert "CT: insufficient position balance" in estimated.reason


async def test_dropped_transaction_is_reported_and_the_nonce_reused(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    node.rpc("evm_setAutomine", [False])
    batch = await started(pool, max_age_ms=0, poll_ms=20, receipt_timeout_ms=300)
    try:
        future = batch.submit(transfer())
        while not batch.pending:
            await asyncio.sleep(0.005)
        node.rpc("anvil_dropAllTransactions")
        result = await asyncio.wait_for(future, 5)
        assert result.status is TxStatus.DROPPED
        assert "dropped from the mempool" in result.reason and result.nonce == 0
        node.rpc("evm_setAutomine", [True])
        again = await batch.execute(transfer())
    finally:
        await batch.close()
    assert again.ok and again.nonce == 0  # the dropped nonce was given back


async def test_pending_transaction_times_out_with_a_reason(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    node.rpc("evm_setAutomine", [False])
    batch = await started(pool, max_age_ms=0, poll_ms=20, receipt_timeout_ms=150)
    try:
        result = await batch.execute(transfer())
    finally:
        await batch.close()
    assert result.status is TxStatus.TIMEOUT and "still pending" in result.reason


async def test_refused_send_is_failed_with_the_nodes_reason(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    poor = dev_account(12)
    node.rpc("anvil_setBalance", [poor.address, "0x0"])
    batch = BatchTxManager(pool, poor, BatchConfig(max_age_ms=0))
    await batch.start()
    try:
        result = await batch.execute(TxOp(to=poor.address, value=1, gas=21_000))
        ok_after = None
        node.rpc("anvil_setBalance", [poor.address, hex(10**18)])
        ok_after = await batch.execute(TxOp(to=to_checksum_address(poor.address), value=1,
                                            gas=21_000))
    finally:
        await batch.close()
    assert result.status is TxStatus.FAILED and "refused by the node" in result.reason
    assert "insufficient funds" in result.reason.lower()
    assert ok_after is not None and ok_after.ok and ok_after.nonce == 0


async def test_closed_manager_refuses_new_work(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    batch = await started(pool)
    await batch.close()
    result = await batch.submit(transfer())
    assert result.status is TxStatus.FAILED and "closed" in result.reason


def test_decode_revert_data():
    error = bytes.fromhex("08c379a0") + (
        (32).to_bytes(32, "big") + (2).to_bytes(32, "big") + b"no".ljust(32, b"\0"))
    assert decode_revert_data(error) == "no"
    panic = bytes.fromhex("4e487b71") + (0x11).to_bytes(32, "big")
    assert decode_revert_data(panic) == "panic 0x11 (arithmetic overflow or underflow)"
    assert decode_revert_data(bytes.fromhex("deadbeef")) == "custom error 0xdeadbeef"
    assert decode_revert_data(bytes.fromhex("08c379a0ff")) is None
    assert decode_revert_data(b"") is None
