"""The metrics collector: every question about execution quality, answered from trade records.

Definitions (see ``docs/metrics.md``; they follow ``research/perf_reliability.md`` §4):

- An **attempt** is a trade that passed preflight (``executed``); gate rejections are
  counted apart and never dilute a rate.
- **success rate** = committed / executed. **failed-arbitrage rate** = (rolled back +
  unresolved) / executed: an UNRESOLVED trade is its own bucket, never a success.
- **fill rate** is given three ways: per leg (entry legs FILLED / entry legs), per arbitrage
  (trades whose every entry leg FILLED / executed) and per share (filled / ordered shares);
  a partially filled leg counts once.
- **execution time**: decision -> all entry legs on the wire, and decision -> trade final.
- **within-deadline rate**: executed trades whose entry legs were all final within the
  execution deadline, over those whose deadline is known.
- **slippage** against the detected price: USDC over entry legs, ticks per filled leg, and
  as a fraction of the expected edge.
- **leg skew**: spread of the entry legs' final times. **time unresolved**: total time legs
  spent UNRESOLVED. **rollback cost**: what unwinds lost. **gas**: what settlers spent.

A record replaces an earlier one of the same trade (an unresolved trade that later resolved).
"""

from __future__ import annotations

import csv
import json
import statistics
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from pr3dict_core.metrics import LegRecord, TradeRecord, percentile
from pr3dict_core.model import USDC_UNIT, ZERO

COMMITTED, ROLLED_BACK, UNRESOLVED, REJECTED = "committed", "rolled_back", "unresolved", \
    "rejected"


def _rate(num: int | float, den: int | float) -> float | None:
    return num / den if den else None


def _dist(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "count": len(values),
    }


def _entry(record: TradeRecord) -> list[LegRecord]:
    return [leg for leg in record.legs if leg.purpose == "entry"]


def trade_stats(records: Sequence[TradeRecord]) -> dict[str, Any]:
    """Every rate and distribution over ``records`` (one per trade)."""
    executed = [r for r in records if r.state != REJECTED]
    count = {s: 0 for s in (COMMITTED, ROLLED_BACK, UNRESOLVED, REJECTED)}
    for r in records:
        count[r.state] = count.get(r.state, 0) + 1
    entry = [leg for r in executed for leg in _entry(r)]
    filled_legs = [leg for leg in entry if leg.state == "filled"]
    all_filled = sum(1 for r in executed if _entry(r) and all(
        leg.state == "filled" for leg in _entry(r)))
    ordered = sum((leg.size for leg in entry), ZERO)
    filled = sum((leg.filled for leg in entry), ZERO)
    known = [r for r in executed if r.within_deadline is not None]
    expected = sum((r.expected_edge for r in executed), ZERO)
    slippage = sum((r.slippage for r in executed), ZERO)
    ticks = [float(leg.slippage_ticks) for leg in entry if leg.filled > 0]
    unresolved_ms = [r.unresolved_ms for r in executed if r.unresolved_ms > 0]
    rolled = [r for r in executed if r.state == ROLLED_BACK]
    rejections: dict[str, int] = {}
    for r in records:
        if r.state == REJECTED:
            key = r.gate or "?"
            rejections[key] = rejections.get(key, 0) + 1
    realised = sum((r.realised_pnl for r in executed), ZERO)
    return {
        "trades": len(records),
        "executed": len(executed),
        "committed": count[COMMITTED],
        "rolled_back": count[ROLLED_BACK],
        "unresolved": count[UNRESOLVED],
        "rejected": count[REJECTED],
        "success_rate": _rate(count[COMMITTED], len(executed)),
        "failed_arbitrage_rate": _rate(count[ROLLED_BACK] + count[UNRESOLVED], len(executed)),
        "rollback_rate": _rate(count[ROLLED_BACK], len(executed)),
        "leg_fill_rate": _rate(len(filled_legs), len(entry)),
        "arbitrage_fill_rate": _rate(all_filled, len(executed)),
        "share_fill_rate": float(filled / ordered) if ordered else None,
        "within_deadline_rate": _rate(sum(1 for r in known if r.within_deadline), len(known)),
        "decision_to_wire_ms": _dist([r.decision_to_wire_ms for r in executed
                                      if r.decision_to_wire_ms is not None]),
        "decision_to_final_ms": _dist([r.decision_to_final_ms for r in executed
                                       if r.decision_to_final_ms is not None]),
        "entry_final_ms": _dist([r.entry_final_ms for r in executed
                                 if r.entry_final_ms is not None]),
        "leg_skew_ms": _dist([r.leg_skew_ms for r in executed if r.leg_skew_ms is not None]),
        "unresolved_ms": {"total": sum(unresolved_ms), "trades": len(unresolved_ms),
                          "max": max(unresolved_ms) if unresolved_ms else None},
        "slippage_usdc": slippage,
        "slippage_ticks_mean": statistics.fmean(ticks) if ticks else None,
        "slippage_vs_expected": float(slippage / expected) if expected else None,
        "expected_edge": expected,
        "realised_pnl": realised,
        "capture_rate": float(realised / expected) if expected else None,
        "rollback_cost": sum((r.rollback_cost for r in rolled), ZERO),
        "rollback_cost_mean": (sum((r.rollback_cost for r in rolled), ZERO) / len(rolled)
                               ).quantize(USDC_UNIT) if rolled else None,
        "gas_spent": sum((r.gas_spent for r in executed), ZERO),
        "rejections_by_gate": dict(sorted(rejections.items())),
    }


def leg_stats(legs: Sequence[LegRecord]) -> dict[str, Any]:
    latencies = [leg.latency_ms for leg in legs if leg.latency_ms is not None]
    ticks = [float(leg.slippage_ticks) for leg in legs if leg.filled > 0]
    ordered = sum((leg.size for leg in legs), ZERO)
    filled = sum((leg.filled for leg in legs), ZERO)
    return {
        "legs": len(legs),
        "filled": sum(1 for leg in legs if leg.state == "filled"),
        "fill_rate": _rate(sum(1 for leg in legs if leg.state == "filled"), len(legs)),
        "share_fill_rate": float(filled / ordered) if ordered else None,
        "rejected": sum(1 for leg in legs if leg.state == "rejected"),
        "unresolved": sum(1 for leg in legs if leg.unresolved_ms > 0 or
                          leg.state == "unresolved"),
        "latency_ms": _dist(latencies),
        "slippage_ticks_mean": statistics.fmean(ticks) if ticks else None,
        "slippage_usdc": sum((leg.slippage for leg in legs), ZERO),
        "fees": sum((leg.fees for leg in legs), ZERO),
        "attempts_mean": statistics.fmean([leg.attempts for leg in legs]) if legs else None,
    }


class MetricsCollector:
    """Collects trade records and answers the design's questions about them.

    ``record`` is cheap (a dict insert). Summaries are computed on demand over the retained
    records: the last ``max_records`` trades (default 100,000), so memory stays flat.
    """

    def __init__(self, max_records: int = 100_000):
        self.max_records = max_records
        self._records: OrderedDict[str, TradeRecord] = OrderedDict()
        self.dropped = 0  # records evicted past max_records
        self.run_summary: Mapping[str, Any] | None = None  # the engine's, at close

    def record(self, record: TradeRecord) -> None:
        records = self._records
        if record.trade_id in records:
            del records[record.trade_id]  # the newer view of the same trade wins, at the end
        records[record.trade_id] = record
        if len(records) > self.max_records:
            records.popitem(last=False)
            self.dropped += 1

    def extend(self, records: Iterable[TradeRecord]) -> MetricsCollector:
        for r in records:
            self.record(r)
        return self

    @property
    def records(self) -> list[TradeRecord]:
        return list(self._records.values())

    def get(self, trade_id: str) -> TradeRecord | None:
        """The latest record of a trade, if retained."""
        return self._records.get(trade_id)

    def __len__(self) -> int:
        return len(self._records)

    # ------------------------------------------------------------------ questions

    def get_summary(self) -> dict[str, Any]:
        """Every rate and distribution over all retained trades."""
        out = trade_stats(self.records)
        if self.run_summary is not None and "opportunities" in self.run_summary:
            out["opportunities"] = self.run_summary["opportunities"]
        return out

    def performance(self, by: str | Callable[[TradeRecord], str] = "strategy"
                    ) -> dict[str, dict[str, Any]]:
        """The summary per group: ``by`` is a record field (``strategy``: the execution
        strategy; ``detector``; ``kind``: the arbitrage kind) or a function of a record."""
        key = (lambda r: str(getattr(r, by))) if isinstance(by, str) else by
        groups: dict[str, list[TradeRecord]] = {}
        for r in self.records:
            groups.setdefault(key(r), []).append(r)
        return {name: trade_stats(rs) for name, rs in sorted(groups.items())}

    def strategy_performance(self) -> dict[str, dict[str, Any]]:
        """Per execution strategy (``market``, ``limit``, ``hybrid``, ...)."""
        return self.performance("strategy")

    def arbitrage_performance(self) -> dict[str, dict[str, Any]]:
        """Per arbitrage kind (``binary_complement``, ``cross_venue``, ``multi_outcome``)."""
        return self.performance("kind")

    def leg_performance(self, by: str = "venue", purpose: str | None = "entry"
                        ) -> dict[str, dict[str, Any]]:
        """Per-leg performance grouped by a leg field (``venue``, ``purpose``, ``index``)
        over executed trades; ``purpose`` keeps only entry (default) or unwind legs."""
        groups: dict[str, list[LegRecord]] = {}
        for r in self.records:
            if r.state == REJECTED:
                continue
            for leg in r.legs:
                if purpose is None or leg.purpose == purpose:
                    groups.setdefault(str(getattr(leg, by)), []).append(leg)
        return {name: leg_stats(legs) for name, legs in sorted(groups.items())}

    def venue_performance(self) -> dict[str, dict[str, Any]]:
        return self.leg_performance("venue")

    def recent_trades(self, n: int = 20, state: str | None = None) -> list[TradeRecord]:
        """The last ``n`` trades recorded (optionally only those in ``state``), newest last."""
        out: list[TradeRecord] = []
        for r in reversed(self._records.values()):
            if state is None or r.state == state:
                out.append(r)
                if len(out) >= n:
                    break
        return out[::-1]

    def pnl_series(self) -> list[tuple[float, Decimal]]:
        """(recorded_at, cumulative realised PnL) after each executed trade."""
        total = ZERO
        out = []
        for r in sorted(self.records, key=lambda r: r.recorded_at):
            if r.state == REJECTED:
                continue
            total += r.realised_pnl
            out.append((r.recorded_at, total))
        return out

    # ------------------------------------------------------------------ export

    def to_json(self) -> dict[str, Any]:
        return jsonable({
            "summary": self.get_summary(),
            "by_strategy": self.strategy_performance(),
            "by_kind": self.arbitrage_performance(),
            "by_detector": self.performance("detector"),
            "by_venue": self.venue_performance(),
        })

    def export(self, path: str | Path, format: str | None = None) -> Path:
        """Write to ``path``: ``json`` (summary and groups), ``jsonl`` (one ``{"trade": ...}``
        per line, what the ``jsonl`` sink writes) or ``csv`` (one row per trade). The format
        defaults to the file's suffix."""
        path = Path(path)
        fmt = (format or path.suffix.lstrip(".") or "json").lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        elif fmt == "jsonl":
            with path.open("w", encoding="utf-8") as f:
                for r in self.records:
                    f.write(json.dumps({"trade": r.to_json()}, separators=(",", ":")) + "\n")
        elif fmt == "csv":
            names = [a.name for a in attrs.fields(TradeRecord) if a.name != "legs"]
            with path.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow([*names, "legs", "venues"])
                for r in self.records:
                    row = r.to_json()
                    writer.writerow([*("" if row[n] is None else row[n] for n in names),
                                     len(r.legs), " ".join(dict.fromkeys(
                                         leg.venue for leg in r.legs))])
        else:
            raise ValueError(f"unknown export format {fmt!r}: json, jsonl or csv")
        return path


def amounts(record: TradeRecord | None) -> dict[tuple[str, ...], float]:
    """The additive quantities of a record, keyed for a metric and its labels. A sink that
    sees a trade again (an unresolved trade resolved; a settlement added gas) adds the
    difference of these, so sums never count one trade twice."""
    if record is None or record.state == REJECTED:
        return {}
    out: dict[tuple[str, ...], float] = {
        ("pnl", record.kind): float(record.realised_pnl),
        ("edge", record.kind): float(record.expected_edge),
        ("rollback",): float(record.rollback_cost),
        ("gas",): float(record.gas_spent),
        ("unresolved",): record.unresolved_ms,
    }
    for leg in record.legs:
        key = ("fees", leg.venue)
        out[key] = out.get(key, 0.0) + float(leg.fees)
        if leg.purpose == "entry":
            key = ("slippage", leg.venue)
            out[key] = out.get(key, 0.0) + float(leg.slippage)
    return out


def delta(new: TradeRecord, old: TradeRecord | None) -> dict[tuple[str, ...], float]:
    a, b = amounts(new), amounts(old)
    return {k: a.get(k, 0.0) - b.get(k, 0.0) for k in a.keys() | b.keys()
            if a.get(k, 0.0) != b.get(k, 0.0)}


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- reading back


def _converter(tp: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and args:
        inner = _converter(args[0])
        return lambda v: None if v is None else inner(v)
    if tp is Decimal:
        return lambda v: Decimal(str(v))
    if tp is float:
        return lambda v: None if v is None else float(v)
    if origin is tuple:
        return tuple
    return lambda v: v


def _reader(cls: type) -> Callable[[Mapping[str, Any]], Any]:
    hints = typing.get_type_hints(cls)
    fields = [(a.name, _converter(hints[a.name])) for a in attrs.fields(cls)
              if a.name != "legs"]

    def read(data: Mapping[str, Any]) -> Any:
        kwargs = {name: conv(data[name]) for name, conv in fields if name in data}
        return kwargs

    return read


_read_leg = _reader(LegRecord)
_read_trade = _reader(TradeRecord)


def record_from_json(data: Mapping[str, Any]) -> TradeRecord:
    """A TradeRecord back from its ``to_json`` form (fields a newer or older pr3dict wrote
    that this one does not know are ignored; missing optional ones take their defaults)."""
    legs = tuple(LegRecord(**_read_leg(leg)) for leg in data.get("legs", ()))
    return TradeRecord(**_read_trade(data), legs=legs)


def read_jsonl(path: str | Path) -> tuple[list[TradeRecord], dict[str, Any] | None]:
    """Trade records and the closing summary (None if the run did not close) of a jsonl
    metrics file; a torn last line (a crash mid-write) is skipped."""
    records: list[TradeRecord] = []
    summary = None
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "trade" in obj:
                records.append(record_from_json(obj["trade"]))
            elif "summary" in obj:
                summary = obj["summary"]
    return records, summary
