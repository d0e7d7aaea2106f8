"""The Python API of the original design: per-call strategy and markets, the best
opportunities first, expected profit given by the caller, the execution rate, and
`Engine.from_file` tracing as the file says."""

from __future__ import annotations

import json
from decimal import Decimal as D

from support import REPO, arb_books, engine_for, scripted_venue, set_book

from pr3dict_core.model import LegSpec, Side, TimeInForce, TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_strategies.market import MarketStrategy


class Recording(MarketStrategy):
    """The market strategy, remembering which legs it worked."""

    type = "recording"

    def __init__(self) -> None:
        super().__init__(MarketStrategy.Config())
        self.legs: list[str] = []

    async def execute_leg(self, leg, ctx):
        self.legs.append(leg.instrument)
        await super().execute_leg(leg, ctx)


async def test_scan_and_execute_takes_markets_a_strategy_and_a_limit():
    venue = scripted_venue(markets=("a", "b", "c"))
    engine = engine_for(venue)
    await engine.start()
    for m in ("a", "b", "c"):
        arb_books(venue, m)
    set_book(venue, "b:no", bids=[("0.48", 100)], asks=[("0.40", 10)])  # the best edge
    strategy = Recording()
    trades = await engine.scan_and_execute(["a", "b"], strategy=strategy, max_opportunities=1)
    await engine.close()
    (trade,) = trades
    assert {leg.instrument for leg in trade.legs} == {"b:yes", "b:no"}  # best of a and b
    assert trade.strategy == "recording" and sorted(strategy.legs) == ["b:no", "b:yes"]
    summary = engine.statistics()
    assert summary.opportunities == 3 and summary.execution_rate == 1 / 3
    assert summary.to_json()["execution_rate"] == 1 / 3


async def test_execute_trade_with_a_named_strategy_and_the_callers_expected_profit():
    venue = scripted_venue()
    engine = engine_for(venue)
    await engine.start()
    arb_books(venue)
    legs = [LegSpec("v", "m:yes", Side.BUY, "0.45", 10),
            LegSpec("v", "m:no", Side.BUY, "0.50", 10)]
    trade = await engine.execute_trade(legs, strategy="limit", expected_profit=D("0.30"))
    await engine.close()
    assert trade.state is TradeState.COMMITTED and trade.strategy == "limit"
    assert trade.opportunity.expected_profit == D("0.30")
    assert {o.request.time_in_force for leg in trade.legs for o in leg.orders.values()} == \
        {TimeInForce.GTC}  # the limit strategy rested the orders


async def test_from_file_traces_as_the_file_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text((REPO / "pipelines/complement-paper.toml").read_text().replace(
        'scenario = "scenarios/', f'scenario = "{REPO}/pipelines/scenarios/'))
    engine = Engine.from_file(pipeline)
    await engine.run(cycles=30)
    await engine.close()
    spans = tmp_path / "runs" / engine.run_id / "spans.jsonl"
    names = {s["name"] for line in spans.read_text().splitlines()
             for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"]
             for s in ss["spans"]}
    assert "handle opportunity" in names and "submit order" in names
