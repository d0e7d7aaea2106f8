"""Gas manager: fee arithmetic, urgency, the cap (nothing is sent above it), estimates in
POL, bounded history and trend; and the gas-tracker metrics sink."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest

from pr3dict_polygon.batch import BatchConfig, BatchTxManager, TxOp, TxStatus
from pr3dict_polygon.devchain import dev_account
from pr3dict_polygon.gas import (
    GWEI,
    FeeSample,
    GasCapExceeded,
    GasConfig,
    GasManager,
    GasTrackerSink,
    parse_fee_history,
)

D = Decimal


def manager(**config) -> GasManager:
    async def no_rpc(method, params):  # pragma: no cover - pure tests never call it
        raise AssertionError(method)

    return GasManager(no_rpc, GasConfig(**config))


def sample(base_gwei: str, reward_gwei: str = "0", block: int = 1) -> FeeSample:
    return FeeSample(0.0, block, int(D(base_gwei) * GWEI), int(D(reward_gwei) * GWEI))


def test_fees_from_history_with_urgency_multipliers():
    gas = manager(min_priority_fee_gwei=D("25"))
    s = sample("100", reward_gwei="40")
    normal = gas.fees_from(s, "normal")
    assert normal.max_priority_fee == 50 * GWEI  # 40 x 1.25
    assert normal.max_fee == 200 * GWEI + 50 * GWEI  # base x 2 headroom + tip
    tips = [gas.fees_from(s, u).max_priority_fee for u in ("low", "normal", "high", "urgent")]
    assert tips == sorted(tips) and len(set(tips)) == 4
    # The floor applies before the multiplier: an empty chain still pays the network minimum.
    assert gas.fees_from(sample("1"), "low").max_priority_fee == 25 * GWEI
    with pytest.raises(ValueError, match="unknown urgency"):
        gas.fees_from(s, "asap")


def test_cap_refuses_when_inclusion_needs_more_and_clamps_headroom_otherwise():
    gas = manager(cap_gwei=D("500"), min_priority_fee_gwei=D("30"))
    with pytest.raises(GasCapExceeded, match="gas cap 500 gwei exceeded"):
        gas.fees_from(sample("480"), "normal")  # 480 + 37.5 > 500
    fees = gas.fees_from(sample("300"), "normal")  # 300 x 2 + 37.5 > 500 but 337.5 fits
    assert fees.capped and fees.max_fee == 500 * GWEI
    assert fees.max_fee >= fees.base_fee + fees.max_priority_fee
    with pytest.raises(GasCapExceeded):
        gas.check_cap(500 * GWEI + 1)
    gas.check_cap(500 * GWEI)
    assert gas.refusals == 2


def test_default_cap_is_500_gwei():
    assert GasConfig().cap_gwei == D("500")
    assert manager().cap_wei == 500 * GWEI


def test_urgency_table_must_name_every_level():
    with pytest.raises(ValueError, match="missing: urgent"):
        GasConfig(urgency={"low": D(1), "normal": D(1), "high": D(2)})
    with pytest.raises(ValueError, match="> 0"):
        GasConfig(urgency={"low": D(0), "normal": D(1), "high": D(2), "urgent": D(3)})


def test_parse_fee_history_ignores_empty_blocks():
    raw = {"oldestBlock": "0xa", "baseFeePerGas": ["0x1", "0x2", "0x3", "0x4"],
           "gasUsedRatio": [0.5, 0.0, 0.9], "reward": [["0x64"], ["0x0"], ["0xc8"]]}
    s = parse_fee_history(raw)
    assert (s.block, s.base_fee, s.reward) == (12, 4, 150)


def test_history_is_bounded_and_trend_follows_base_fee():
    gas = manager(history_size=8)
    for i in range(20):
        gas.history.append(sample(str(10 + i), block=i))
    assert len(gas.history) == 8
    trend = gas.trend()
    assert trend.direction == "rising" and trend.change_pct > 0
    assert trend.first_gwei == D(22) and trend.last_gwei == D(29)
    gas.history.clear()
    for i in range(6):
        gas.history.append(sample("30", block=i))
    assert gas.trend().direction == "flat"
    gas.history.clear()
    assert gas.trend().direction == "unknown"


def test_spend_is_exact_pol_and_labels_are_bounded():
    gas = manager(spend_labels=2)
    cost = gas.record_spend("t1", "merge", 100_000, 33 * GWEI)
    assert cost == D("0.0033")
    gas.record_spend("t2", "merge", 50_000, 30 * GWEI)
    gas.record_spend("t3", "split", 1, 1)
    assert gas.spent_pol == D("0.0033") + D("0.0015") + D("1E-18")
    assert list(gas.by_label) == ["t2", "t3"]
    assert gas.by_action["merge"]["transactions"] == 2


async def test_fees_and_estimates_from_a_node(anvil, make_pool):
    node = anvil()
    pool = await make_pool([node.url])
    fees = await pool.gas.fees("high")
    assert fees.base_fee > 0 and fees.max_fee >= fees.base_fee + fees.max_priority_fee
    estimate = await pool.gas.estimate_cost(100_000, "normal")
    assert isinstance(estimate.max_pol, Decimal)
    assert 0 < estimate.expected_pol <= estimate.max_pol
    assert estimate.max_pol == Decimal(100_000 * estimate.fees.max_fee).scaleb(-18)
    await pool.gas.fees("low")  # within refresh_ms: no second eth_feeHistory
    assert len(pool.gas.history) == 1


async def test_nothing_is_sent_above_the_gas_cap(anvil, make_pool):
    node = anvil()
    # Inclusion needs base fee (~1 gwei) + the 25 gwei minimum tip: above a 20 gwei cap.
    pool = await make_pool([node.url], gas=GasConfig(cap_gwei=D("20")))
    account = dev_account(2)
    batch = BatchTxManager(pool, account, BatchConfig(max_age_ms=0))
    await batch.start()
    try:
        result = await batch.execute(TxOp(to=dev_account(3).address, value=1, action="transfer"))
    finally:
        await batch.close()
    assert result.status is TxStatus.FAILED
    assert "gas cap 20 gwei exceeded" in result.reason and result.tx_hash is None
    assert node.rpc("eth_getTransactionCount", [account.address, "latest"]) == "0x0"
    assert node.rpc("txpool_status")["pending"] == "0x0"
    assert node.rpc("eth_blockNumber") == "0x0"
    assert pool.gas.refusals == 1


async def test_gas_tracker_sink_reports_trend_spend_and_rpc_health(chain, tmp_path):
    pool = chain.pool
    await pool.gas.sample(fresh=True)
    ctx = SimpleNamespace(lookup=lambda kind, id: pool, path=lambda p: tmp_path / "gas.json")
    sink = GasTrackerSink.from_config("gas", GasTrackerSink.Config(rpc="polygon"), ctx)
    pool.gas.record_spend("trade-1", "merge", 90_000, 30 * GWEI)
    sink.record(SimpleNamespace(trade_id="trade-1", state="committed", hedged_size=D("10")))
    await sink.close({})
    report = json.loads((tmp_path / "gas.json").read_text())
    assert report["gas"]["cap_gwei"] == "500"
    assert report["gas"]["trend"]["direction"] in {"rising", "falling", "flat", "unknown"}
    assert D(report["gas"]["spent_pol"]) >= D("0.0027")
    assert report["trades"][0] == {"trade_id": "trade-1", "state": "committed",
                                   "hedged_size": "10", "gas_pol": "0.0027",
                                   "base_fee_gwei": report["trades"][0]["base_fee_gwei"]}
    endpoints = report["rpc"]["endpoints"]
    assert len(endpoints) == 3 and all(0 <= e["health"] <= 1 for e in endpoints)
    assert report["rpc"]["samples"][0]["endpoints"][0]["server.address"] == "127.0.0.1"
