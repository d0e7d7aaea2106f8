"""The paper pipeline with on-chain settlement: the demo scenario's committed complement
trades are merged on a three-node anvil chain (one node dies mid-run), built from a pipeline
file through the plugin manager like any run."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from polygon_helpers import TRADER_FUNDS

import pr3dict_polygon.plugin
from pr3dict_core import telemetry as tm
from pr3dict_core.model import TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_core.plugins import make_plugin_manager
from pr3dict_polygon.devchain import REPO, deploy_test_chain, dev_account
from pr3dict_polygon.rpc import RpcPool

DEMO_MARKETS = ["fed-cut-dec", "btc-150k-2026", "eth-etf-flows", "oscars-best-picture",
                "nfl-superbowl-kc", "uk-election-2029", "cpi-above-3", "spacex-mars-2026"]

PIPELINE = """
[pipeline]
name = "complement-paper-polygon"
mode = "paper"

[venues.sim]
type = "paper"
scenario = "{scenario}"

[detectors.complement]
type = "binary_complement"
venues = ["sim"]
min_edge = "0.005"
max_size = "25"

[gates.capital]
type = "capital"
bankroll = "1000"

[execution]
strategy = "market"
deadline_ms = 30

[rpc.polygon]
type = "polygon_pool"
endpoints = {endpoints}
chain_id = 137
request_timeout_ms = 1000
reprobe_ms = 200

[rpc.polygon.gas]
cap_gwei = "500"
min_priority_fee_gwei = "25"

[settlers.merge]
type = "ctf_merge"
rpc = "polygon"
private_key = {{ env = "PR3DICT_TEST_SETTLER_KEY" }}
conditional_tokens = "{ctf}"
collateral = "{collateral}"
mint_positions = true            # paper: split collateral first, standing in for the venue
markets = [
{markets}
]

[settlers.merge.batch]
max_age_ms = 5
poll_ms = 20

[sinks.gas]
type = "gas_tracker"
rpc = "polygon"
path = "runs/{{run_id}}/gas.json"
"""


async def test_paper_pipeline_settles_on_anvil(anvil, tmp_path, monkeypatch, tracer_provider,
                                               span_exporter):
    nodes = [anvil() for _ in range(3)]
    urls = [n.url for n in nodes]
    trader = dev_account(1)
    setup = RpcPool.for_urls("setup", urls)
    await setup.start()
    try:
        chain = await deploy_test_chain(setup, dev_account(0), questions=DEMO_MARKETS,
                                        mint_to={trader.address: TRADER_FUNDS})
    finally:
        await setup.close()
    markets = ",\n".join(
        f'  {{ yes = "{m}:yes", no = "{m}:no", condition_id = "{chain.conditions[m]}" }}'
        for m in DEMO_MARKETS)
    path = tmp_path / "pipeline.toml"
    path.write_text(PIPELINE.format(
        scenario=REPO / "pipelines" / "scenarios" / "demo.toml", endpoints=json.dumps(urls),
        ctf=chain.ctf, collateral=chain.collateral, markets=markets))
    monkeypatch.setenv("PR3DICT_TEST_SETTLER_KEY", trader.key.hex())
    monkeypatch.chdir(tmp_path)

    pm = make_plugin_manager()
    if not pm.is_registered(pr3dict_polygon.plugin):  # until the entry point is installed
        pm.register(pr3dict_polygon.plugin, name="polygon")
    engine = Engine.from_file(path, pm=pm, tracer_provider=tracer_provider, run_id="polygon")
    settler = engine.settlers[0]

    async def kill_mid_run() -> None:  # while other settlements may be in flight
        while len(settler.results) < 40:
            await asyncio.sleep(0.001)
        nodes[0].kill()

    killer = asyncio.create_task(kill_mid_run())
    try:
        summary = await engine.run(cycles=200)
    finally:
        await engine.close()
        await asyncio.wait_for(killer, 1)

    committed = [t for t in engine.trades if t.state is TradeState.COMMITTED]
    assert summary.committed == len(committed) > 0
    hedged = [t for t in committed if t.hedged_size > 0]
    assert set(settler.results) == {t.id for t in hedged}, settler.failures
    assert not settler.failures
    for trade in hedged:
        result = settler.results[trade.id]
        assert result.merge.ok and result.split is not None and result.split.ok
        assert result.shares == trade.hedged_size
    assert not nodes[0].alive and any(t.id for t in hedged)

    # On chain (read from a surviving node): every minted set was merged back.
    check = RpcPool.for_urls("check", urls[1:])
    await check.start()
    try:
        settler.pool = check
        settler.ctf = check.web3.eth.contract(address=settler.ctf.address, abi=settler.ctf.abi)
        settler.collateral = check.web3.eth.contract(address=settler.collateral.address,
                                                     abi=settler.collateral.abi)
        for m in DEMO_MARKETS:
            assert await settler.positions(chain.conditions[m]) == (0, 0)
        assert await settler.collateral_balance() == TRADER_FUNDS
    finally:
        await check.close()

    report = json.loads((tmp_path / "runs" / "polygon" / "gas.json").read_text())
    assert Decimal(report["gas"]["spent_pol"]) > 0
    assert report["gas"]["by_action"]["merge"]["transactions"] == len(hedged)
    rows = {r["trade_id"]: r for r in report["trades"]}
    assert all(Decimal(rows[t.id]["gas_pol"]) > 0 for t in hedged)
    assert [e["dead"] for e in report["rpc"]["endpoints"]] == [True, False, False]

    spans = span_exporter.get_finished_spans()
    settles = [s for s in spans if s.name == tm.SPAN_SETTLE]
    assert len(settles) == len(committed)
    assert all(s.status.is_ok for s in settles)
    # The batch manager sends from its own tasks, yet the RPC spans of a settlement are
    # children of that trade's "settle trade" span.
    by_id = {s.context.span_id: s for s in spans}
    for name in ("eth_sendRawTransaction", "eth_estimateGas", "eth_getTransactionReceipt"):
        calls = [s for s in spans if s.name == name]
        assert len(calls) >= 2 * len(hedged), name
        parents = [by_id[s.parent.span_id].name if s.parent else None for s in calls]
        assert parents.count(tm.SPAN_SETTLE) >= 2 * len(hedged), name  # split + merge
        # The rest is the collateral approval made once at start, outside any trade.
        assert set(parents) <= {tm.SPAN_SETTLE, None}, (name, set(parents))
        assert parents.count(None) <= 3, name
