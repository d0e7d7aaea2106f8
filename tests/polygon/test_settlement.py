"""CTF merge settlement on anvil: a merge credits collateral and burns the positions,
redeem after resolution, paper minting, and settlement while a node dies."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_utils import keccak
from polygon_helpers import TRADER_FUNDS, committed_trade

from pr3dict_core.config import OptionError, SecretRef
from pr3dict_polygon.batch import BatchConfig, TxOp
from pr3dict_polygon.settlement import (
    CtfMergeSettler,
    MarketCondition,
    SettlementError,
    artifacts,
    shares_to_units,
    units_to_shares,
)

FAST = BatchConfig(max_age_ms=5, poll_ms=20)


def settler_for(chain, *, mint: bool = True, mode: str = "paper", **options) -> CtfMergeSettler:
    config = CtfMergeSettler.Config(
        rpc="polygon", private_key=SecretRef(env="PR3DICT_TEST_KEY"),
        conditional_tokens=chain.contracts.ctf, collateral=chain.contracts.collateral,
        markets=(MarketCondition(yes="m:yes", no="m:no",
                                 condition_id=chain.contracts.condition_id),),
        mint_positions=mint, batch=options.pop("batch", FAST), **options)
    return CtfMergeSettler("merge", config, chain.pool, chain.trader, mode=mode)


def test_share_unit_conversion_is_exact():
    assert shares_to_units(Decimal("10")) == 10_000_000
    assert shares_to_units(Decimal("0.1234567")) == 123_456  # below a unit: rounded down
    assert units_to_shares(123_456) == Decimal("0.123456")
    assert shares_to_units(Decimal("1E+3")) == 1_000_000_000


async def test_merge_credits_collateral_and_burns_the_positions(chain):
    settler = settler_for(chain)
    await settler.start()
    try:
        before = await settler.collateral_balance()
        assert before == TRADER_FUNDS
        assert await settler.positions(chain.contracts.condition_id) == (0, 0)
        await settler.settle(committed_trade("t1", size="12.5"))
        result = settler.results["t1"]
    finally:
        await settler.close()
    assert result.amount_units == 12_500_000 and result.shares == Decimal("12.5")
    assert result.split is not None and result.split.ok and result.merge.ok
    # The split took 12.5 collateral and minted 12.5 YES + 12.5 NO; the merge burnt them all
    # and paid the 12.5 collateral back.
    assert await settler.positions(chain.contracts.condition_id) == (0, 0)
    assert await settler.collateral_balance() == before
    ctf = chain.pool.web3.eth.contract(address=chain.contracts.ctf,
                                       abi=artifacts()["MiniConditionalTokens"]["abi"])
    merges = await ctf.events.PositionsMerge.get_logs(from_block=0)
    assert [(e.args.stakeholder, e.args.amount) for e in merges] == [
        (chain.trader.address, 12_500_000)]
    assert chain.pool.gas.by_label["t1"] == result.split.cost_pol + result.merge.cost_pol


async def test_live_mode_merges_positions_the_venue_delivered(chain):
    """Without minting, the settler merges what the account already holds."""
    settler = settler_for(chain, mint=False, mode="live")
    await settler.start()
    try:
        # The "venue" delivers 30 YES + 30 NO (here: the trader splits them itself).
        data = settler.collateral.encode_abi("approve", args=[settler.ctf.address, 30_000_000])
        (await settler.batch.execute(TxOp(to=settler.collateral.address, data=data))) \
            .raise_for_status()
        split = settler._op("splitPosition",
                            bytes.fromhex(chain.contracts.condition_id[2:]), 30_000_000, "")
        (await settler.batch.execute(split)).raise_for_status()
        assert await settler.positions(chain.contracts.condition_id) == (30_000_000,) * 2
        held = await settler.collateral_balance()
        await settler.settle(committed_trade("t2", size="20"))
        assert await settler.positions(chain.contracts.condition_id) == (10_000_000,) * 2
        assert await settler.collateral_balance() == held + 20_000_000
        assert settler.results["t2"].split is None
        # Asked to merge more than held: merges what is there, and says so.
        await settler.settle(committed_trade("t3", size="25"))
        assert settler.results["t3"].amount_units == 10_000_000
        assert await settler.positions(chain.contracts.condition_id) == (0, 0)
        with pytest.raises(SettlementError, match="no YES\\+NO sets"):
            await settler.settle(committed_trade("t4", size="1"))
    finally:
        await settler.close()


async def test_redeem_after_resolution(chain):
    settler = settler_for(chain)
    await settler.start()
    try:
        cid = bytes.fromhex(chain.contracts.condition_id[2:])
        (await settler.batch.execute(settler._op("splitPosition", cid, 8_000_000, ""))) \
            .raise_for_status()
        with pytest.raises(SettlementError, match="not resolved"):
            await settler.redeem(chain.contracts.condition_id)
        before = await settler.collateral_balance()
        # The oracle (the deployer) resolves: YES wins.
        data = settler.ctf.encode_abi("reportPayouts", args=[
            bytes.fromhex(chain.contracts.question_id[2:]), [1, 0]])
        oracle = await _oracle_batch(chain)
        try:
            (await oracle.execute(TxOp(to=chain.contracts.ctf, data=data))).raise_for_status()
        finally:
            await oracle.close()
        assert await settler.is_resolved(chain.contracts.condition_id)
        result = await settler.redeem(chain.contracts.condition_id)
        assert result.ok, result.reason
        assert await settler.collateral_balance() == before + 8_000_000  # 8 YES x 1, 8 NO x 0
        assert await settler.positions(chain.contracts.condition_id) == (0, 0)
    finally:
        await settler.close()


async def _oracle_batch(chain):
    from pr3dict_polygon.batch import BatchTxManager

    batch = BatchTxManager(chain.pool, chain.deployer, FAST)
    await batch.start()
    return batch


async def test_trades_that_are_not_mapped_binary_complements_are_left_alone(chain):
    settler = settler_for(chain)
    await settler.start()
    try:
        await settler.settle(committed_trade("x1", yes="other:yes", no="other:no"))
        await settler.settle(committed_trade("x2", size="5", filled=("5", "0")))  # unhedged
        assert settler.plan(committed_trade("x3", yes="m:yes", no="other:no")) is None
    finally:
        await settler.close()
    assert "x1" not in settler.results and "x2" not in settler.results
    assert chain.pool.gas.by_label.get("x1") is None


async def test_concurrent_settlements_share_batches(chain):
    settler = settler_for(chain, batch=BatchConfig(max_age_ms=50, max_size=8, poll_ms=20))
    await settler.start()
    try:
        await asyncio.gather(*(settler.settle(committed_trade(f"c{i}", size="1"))
                               for i in range(6)))
    finally:
        await settler.close()
    merges = [settler.results[f"c{i}"].merge for i in range(6)]
    assert all(m.ok for m in merges)
    assert len({m.block for m in merges}) <= 6 and len({m.nonce for m in merges}) == 6
    assert await settler.collateral_balance() == TRADER_FUNDS


async def test_settlement_survives_a_node_dying(chain):
    settler = settler_for(chain)
    await settler.start()
    try:
        await settler.settle(committed_trade("k1", size="3"))
        chain.nodes[0].kill()
        for i in range(3):
            await settler.settle(committed_trade(f"k{i + 2}", size="3"))
    finally:
        await settler.close()
    assert all(settler.results[f"k{i}"].merge.ok for i in range(1, 5))
    assert chain.pool.endpoints[0].dead
    assert await settler.collateral_balance() == TRADER_FUNDS


async def test_a_failed_merge_raises_with_its_reason(chain):
    settler = settler_for(chain, mint=False)
    await settler.start()
    try:
        settler.positions = _fake_positions  # claims holdings the chain does not have
        with pytest.raises(SettlementError, match="insufficient position balance"):
            await settler.settle(committed_trade("f1", size="2"))
    finally:
        await settler.close()
    assert settler.failures and "f1" in settler.failures[0]


async def _fake_positions(condition_id):
    return (10**9, 10**9)


async def test_minting_is_refused_in_live_mode(chain):
    with pytest.raises(SettlementError, match="refused in live mode"):
        settler_for(chain, mint=True, mode="live")


async def test_start_checks_contracts_and_conditions(chain):
    bad = settler_for(chain)
    object.__setattr__(bad.config, "markets", (MarketCondition(
        yes="m:yes", no="m:no", condition_id="0x" + keccak(text="nope").hex()),))
    with pytest.raises(SettlementError, match="not prepared"):
        await bad.start()
    await bad.close()


async def test_from_config_resolves_the_key_and_the_pool(chain, monkeypatch):
    key = "0x" + chain.trader.key.hex().removeprefix("0x")
    config = CtfMergeSettler.Config(
        rpc="polygon", private_key=SecretRef(env="PR3DICT_TEST_KEY"),
        conditional_tokens=chain.contracts.ctf, collateral=chain.contracts.collateral)
    ctx = SimpleNamespace(lookup=lambda kind, id: {("rpc", "polygon"): chain.pool}[(kind, id)],
                          resolve_secret=lambda ref: key, mode="paper",
                          base_dir=Path("."), tracer=None)
    settler = CtfMergeSettler.from_config("merge", config, ctx)
    assert settler.account.address == chain.trader.address and settler.pool is chain.pool
    ctx.resolve_secret = lambda ref: "not a key"
    with pytest.raises(OptionError, match="not a valid hex private key") as info:
        CtfMergeSettler.from_config("merge", config, ctx)
    assert info.value.key == "private_key"
    assert "not a key" not in str(info.value)
