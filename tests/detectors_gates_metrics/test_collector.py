"""The metrics collector: rates with explicit denominators, groups, recent trades, export,
and records read back from a jsonl sink's file."""

from __future__ import annotations

import csv
import json
from decimal import Decimal as D

import attrs
from dgm_helpers import asks, make_trade, paper
from support import engine_for

from pr3dict_core.metrics import TradeRecord
from pr3dict_core.model import TradeState
from pr3dict_sinks.collector import MetricsCollector, read_jsonl, record_from_json

WIN = (("a", "m:yes", "buy", 10, "0.45", 10), ("b", "m:no", "buy", 10, "0.50", 10))
LOSS = (("a", "m:yes", "buy", 10, "0.45", 10), ("b", "m:no", "buy", 10, "0.50", 0),
        ("a", "m:yes", "sell", 10, "0.40", 10, "unwind"))
HALF = (("a", "m:yes", "buy", 10, "0.45", 10), ("b", "m:no", "buy", 10, "0.50", 4))


def rec(legs, state=TradeState.COMMITTED, **changes) -> TradeRecord:
    trade = make_trade(legs, state=state)
    if state is TradeState.REJECTED:
        trade.legs, trade.unwind_legs = [], []
        trade.gate, trade.reject_reason = changes.pop("gate", "cap"), "no money"
    return attrs.evolve(TradeRecord.from_trade(trade), **changes)


def sample() -> MetricsCollector:
    c = MetricsCollector()
    c.record(rec(WIN, decision_to_final_ms=2.0, entry_final_ms=1.0, deadline_ms=30.0,
                 within_deadline=True))
    c.record(rec(WIN, strategy="limit", decision_to_final_ms=4.0, entry_final_ms=40.0,
                 deadline_ms=30.0, within_deadline=False))
    c.record(rec(LOSS, TradeState.ROLLED_BACK, decision_to_final_ms=9.0))
    c.record(rec(HALF, TradeState.UNRESOLVED, unresolved_ms=120.0))
    c.record(rec(WIN, TradeState.REJECTED))
    c.record(rec(WIN, TradeState.REJECTED, gate="heat"))
    return c


def test_rates_have_explicit_denominators():
    s = sample().get_summary()
    assert (s["trades"], s["executed"], s["rejected"]) == (6, 4, 2)
    assert s["success_rate"] == 2 / 4  # committed / executed; rejections never dilute
    assert s["failed_arbitrage_rate"] == 2 / 4  # rolled back + unresolved
    assert s["rollback_rate"] == 1 / 4
    assert s["leg_fill_rate"] == 6 / 8  # entry legs FILLED / entry legs
    assert s["arbitrage_fill_rate"] == 2 / 4
    assert s["share_fill_rate"] == 64 / 80  # filled / ordered shares over entry legs
    assert s["within_deadline_rate"] == 1 / 2  # of trades whose deadline is known
    assert s["decision_to_final_ms"]["p50"] is not None
    assert s["unresolved_ms"] == {"total": 120.0, "trades": 1, "max": 120.0}
    assert s["rejections_by_gate"] == {"cap": 1, "heat": 1}
    assert s["realised_pnl"] == D("0.5") * 2 + D("-0.5") + make_trade(
        HALF, state=TradeState.UNRESOLVED).realised_pnl
    assert s["rollback_cost"] == D("0.5")  # bought at 0.45, sold at 0.40


def test_per_strategy_kind_and_leg_performance():
    c = sample()
    by = c.strategy_performance()
    assert set(by) == {"market", "limit"}
    assert by["limit"]["executed"] == 1 and by["limit"]["success_rate"] == 1
    assert by["market"]["executed"] == 3
    legs = c.venue_performance()
    assert legs["a"]["legs"] == 4 and legs["a"]["fill_rate"] == 1
    assert legs["b"]["legs"] == 4 and legs["b"]["fill_rate"] == 2 / 4
    assert c.leg_performance("venue", purpose="unwind")["a"]["legs"] == 1
    assert set(c.performance(lambda r: r.state)) == {"committed", "rolled_back", "unresolved",
                                                     "rejected"}


def test_a_later_record_of_a_trade_replaces_the_earlier_and_recent_is_newest_last():
    c = MetricsCollector(max_records=3)
    first = rec(HALF, TradeState.UNRESOLVED)
    c.record(first)
    c.record(rec(WIN))
    c.record(attrs.evolve(first, state="rolled_back"))
    assert len(c) == 2 and c.get_summary()["unresolved"] == 0
    assert [r.trade_id for r in c.recent_trades(5)] == [c.records[0].trade_id, first.trade_id]
    for _ in range(3):
        c.record(rec(WIN))
    assert len(c) == 3 and c.dropped == 2


def test_export_and_read_back(tmp_path):
    c = sample()
    summary = json.loads(c.export(tmp_path / "m.json").read_text())
    assert summary["summary"]["success_rate"] == 0.5 and "market" in summary["by_strategy"]
    c.export(tmp_path / "m.jsonl")
    records, closing = read_jsonl(tmp_path / "m.jsonl")
    assert records == c.records and closing is None
    with c.export(tmp_path / "m.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["state"] == "committed" and rows[0]["venues"] == "a b"


async def test_records_from_a_run_round_trip_through_json():
    venue = paper()
    engine = engine_for(venue)
    await engine.start()
    asks(venue, "m:yes", ("0.45", 10))
    asks(venue, "m:no", ("0.50", 10))
    (opp,) = await engine.scan()
    await engine.execute_opportunity(opp)
    await engine.close()
    (record,) = engine.sinks[0].records
    assert record.recorded_at > 0 and record.entry_final_ms is not None
    assert record.legs[0].target_price == D("0.45")
    again = record_from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    collector = engine.sinks[0].collector  # the memory sink keeps one
    assert collector.get_summary()["committed"] == 1
    assert collector.get_summary()["opportunities"] == 1  # from the engine's summary at close


def test_a_torn_last_line_is_skipped(tmp_path):
    c = sample()
    path = c.export(tmp_path / "m.jsonl")
    with path.open("a") as f:
        f.write('{"summary": {"committed": 2}}\n{"trade": {"trade_id": "x", "sta')
    records, closing = read_jsonl(path)
    assert len(records) == 6 and closing == {"committed": 2}
