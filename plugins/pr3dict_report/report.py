"""``pr3dict report RUN``: a run's metrics as terminal tables and a self-contained HTML page.

The report reads the trade records a ``jsonl`` sink wrote (``runs/<run id>/metrics.jsonl``
by default) and answers, through :class:`pr3dict_sinks.collector.MetricsCollector`, every
question of ``docs/metrics.md``. The HTML page carries its charts as inline SVG and its
style inline: no script, no server, no network.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any, TextIO

from pr3dict_core.metrics import TradeRecord
from pr3dict_core.model import Pr3dictError
from pr3dict_sinks.collector import REJECTED, MetricsCollector, read_jsonl

from . import svg

EX_OK, EX_FAILED = 0, 1


class ReportError(Pr3dictError):
    pass


# --------------------------------------------------------------------------- finding a run


ROLLBACK_HEADERS = ("cause", "trades", "PnL (USDC)", "rollback cost (USDC)", "last error")


def _has_trades(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            head = itertools.islice(f, 50)
            return any('"trade"' in line or '"summary"' in line for line in head)
    except OSError:
        return False


def find_metrics(run: str, runs_dir: Path) -> Path:
    """The metrics file of ``run``: a jsonl file, a run directory, a run id (or a unique
    prefix of one) under ``runs_dir``, or ``latest``."""
    candidates: list[Path] = []
    given = Path(run)
    if given.is_file():
        return given
    if given.is_dir():
        candidates.append(given)
    elif run == "latest":
        dirs = sorted((d for d in runs_dir.glob("*") if d.is_dir()),
                      key=lambda d: d.stat().st_mtime)
        candidates.extend(reversed(dirs))
    else:
        exact = runs_dir / run
        if exact.is_dir():
            candidates.append(exact)
        else:
            matches = sorted(d for d in runs_dir.glob(f"{run}*") if d.is_dir())
            if len(matches) > 1:
                raise ReportError(f"run id {run!r} is ambiguous in {runs_dir}: "
                                  f"{', '.join(m.name for m in matches[:5])}")
            candidates.extend(matches)
    for folder in candidates:
        preferred = folder / "metrics.jsonl"
        if preferred.is_file():
            return preferred
        found = [p for p in sorted(folder.glob("*.jsonl")) if _has_trades(p)]
        if found:
            return found[0]
    where = runs_dir / run if not given.is_absolute() else given
    raise ReportError(f"no metrics for run {run!r} (looked for a jsonl sink's file at {where}; "
                      "a pipeline needs a `jsonl` sink for `pr3dict report`)")


# --------------------------------------------------------------------------- formatting


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def ms(value: float | None) -> str:
    """Milliseconds, in the charts' number format (three significant digits)."""
    return "-" if value is None else f"{svg.fmt_num(value)} ms"


def money(value: Decimal | float | None) -> str:
    """USDC to 4 decimals (a tick on a 25-share leg is 0.25), thousands separated."""
    return "-" if value is None else f"{Decimal(str(value)):,.4f}"


def rate(value: float | None) -> str:
    """A rate as a percentage number, for a place that shows the % as its unit."""
    return "-" if value is None else f"{value * 100:.1f}"


def count(value: int) -> str:
    return f"{value:,}"


def clock(unix: float) -> str:
    """A record's time as UTC clock time (with milliseconds: trades come fast)."""
    if not unix:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(unix)) + f"{unix % 1:.3f}"[1:]


def num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *,
          left: Sequence[int] = (0,)) -> list[str]:
    """Fixed-width text table: columns in ``left`` left-aligned, the others right-aligned."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(headers), rule, *(line(r) for r in rows)]


def _group_rows(groups: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    return [[name, str(s["executed"]), str(s["committed"]), pct(s["success_rate"]),
             pct(s["leg_fill_rate"]), pct(s["failed_arbitrage_rate"]),
             ms(s["decision_to_final_ms"]["p50"]), ms(s["decision_to_final_ms"]["p99"]),
             money(s["realised_pnl"]), str(s["rejected"])]
            for name, s in groups.items()]


MARKET_HEADERS = ("markets", "executed", "committed", "PnL (USDC)", "expected (USDC)",
                  "capture", "rejected")
GROUP_HEADERS = ("", "executed", "committed", "success", "leg fill", "failed arb",
                 "final p50", "final p99", "PnL (USDC)", "rejected")


# --------------------------------------------------------------------------- the report


class Report:
    def __init__(self, source: Path, records: Sequence[TradeRecord],
                 summary: Mapping[str, Any] | None):
        self.source = source
        self.collector = MetricsCollector(max_records=max(len(records), 1)).extend(records)
        self.collector.run_summary = summary
        self.run_summary = summary
        self.run_id = source.parent.name

    @classmethod
    def load(cls, path: Path) -> Report:
        records, summary = read_jsonl(path)
        return cls(path, records, summary)

    # ------------------------------------------------------------------ terminal

    def summary_rows(self) -> list[tuple[str, str]]:
        """The summary as (what, value with its unit): the terminal's and the page's."""
        s = self.collector.get_summary()
        opportunities = s.get("opportunities")
        return [
            ("opportunities", "-" if opportunities is None else str(opportunities)),
            ("rejected by gates", str(s["rejected"])),
            ("executed (after preflight)", str(s["executed"])),
            ("committed / rolled back / unresolved",
             f"{s['committed']} / {s['rolled_back']} / {s['unresolved']}"),
            ("success rate", pct(s["success_rate"])),
            ("failed-arbitrage rate", pct(s["failed_arbitrage_rate"])),
            ("fill rate: legs / arbitrages / shares",
             f"{pct(s['leg_fill_rate'])} / {pct(s['arbitrage_fill_rate'])} / "
             f"{pct(s['share_fill_rate'])}"),
            ("within-deadline rate", pct(s["within_deadline_rate"])),
            ("decision -> wire mean / p50 / p99",
             " / ".join(ms(s["decision_to_wire_ms"][k]) for k in ("mean", "p50", "p99"))),
            ("decision -> final mean / p50 / p99",
             " / ".join(ms(s["decision_to_final_ms"][k]) for k in ("mean", "p50", "p99"))),
            ("leg skew p50 / p99",
             f"{ms(s['leg_skew_ms']['p50'])} / {ms(s['leg_skew_ms']['p99'])}"),
            ("time unresolved (trades, total)",
             f"{s['unresolved_ms']['trades']}, {ms(s['unresolved_ms']['total'])}"),
            ("realised PnL / expected edge (USDC)",
             f"{money(s['realised_pnl'])} / {money(s['expected_edge'])} "
             f"({pct(s['capture_rate'])} captured)"),
            ("slippage (USDC, mean ticks/leg, of edge)",
             f"{money(s['slippage_usdc'])}, {num(s['slippage_ticks_mean'])}, "
             f"{pct(s['slippage_vs_expected'])}"),
            ("rollback cost (USDC)", money(s["rollback_cost"])),
            ("gas spent (POL)", money(s["gas_spent"])),
            ("max drawdown (USDC)", money(self.drawdown()[0])),
        ]

    def text(self, recent: int = 10) -> str:
        c = self.collector
        s = c.get_summary()
        closed = "" if self.run_summary is not None else "  (run did not close: partial)"
        out = [f"pr3dict report: run {self.run_id}  ({self.source}, {s['trades']} trade "
               f"records){closed}", ""]
        kv = self.summary_rows()
        width = max(len(k) for k, _ in kv)
        out += ["Summary", *(f"  {k:<{width}}  {v}" for k, v in kv), ""]
        for title, groups in (("By arbitrage kind", c.arbitrage_performance()),
                              ("By execution strategy", c.strategy_performance())):
            out += [title, *("  " + line for line in table(GROUP_HEADERS,
                                                            _group_rows(groups))), ""]
        out += ["By market (realised / expected = capture)", *("  " + line for line in table(
            MARKET_HEADERS, self._market_rows(), left=(0,))), ""]
        venues = c.venue_performance()
        out += ["Entry legs by venue", *("  " + line for line in table(
            ("venue", "legs", "fill rate", "share fill", "latency p50", "latency p99",
             "slip ticks", "fees (USDC)", "unresolved"),
            [[v, str(x["legs"]), pct(x["fill_rate"]), pct(x["share_fill_rate"]),
              ms(x["latency_ms"]["p50"]), ms(x["latency_ms"]["p99"]),
              num(x["slippage_ticks_mean"]), money(x["fees"]), str(x["unresolved"])]
             for v, x in venues.items()])), ""]
        rollbacks = self._rollback_rows()
        if rollbacks:
            out += ["Why trades rolled back", *("  " + line for line in table(
                ROLLBACK_HEADERS, rollbacks, left=(0, 4))), ""]
        if s["rejections_by_gate"]:
            out += ["Rejections by gate", *("  " + line for line in table(
                ("gate", "trades", "last reason"),
                [[g, str(n), self._last_reason(g)] for g, n in
                 s["rejections_by_gate"].items()], left=(0, 2))), ""]
        last = c.recent_trades(recent)
        if last:
            out += [f"Recent trades (last {len(last)})", *("  " + line for line in table(
                ("trade", "kind", "state", "size", "edge", "PnL", "final"),
                [[r.trade_id, r.kind, r.state, str(r.size), money(r.expected_edge),
                  money(r.realised_pnl), ms(r.decision_to_final_ms)] for r in last],
                left=(0, 1, 2))), ""]
        return "\n".join(out)

    def _market_rows(self) -> list[list[str]]:
        """Per market (the opportunity's markets, joined): PnL against expected edge."""
        groups = self.collector.performance(lambda r: " + ".join(r.markets) or "-")
        return [[name, str(s["executed"]), str(s["committed"]), money(s["realised_pnl"]),
                 money(s["expected_edge"]), pct(s["capture_rate"]), str(s["rejected"])]
                for name, s in sorted(groups.items(), key=lambda kv: -kv[1]["realised_pnl"])]

    def _rollback_rows(self, width: int | None = 70) -> list[list[str]]:
        """Trades that rolled back or are unresolved, by cause: the error's kind (what
        precedes its first colon) and, for short entry legs, how they ended."""
        causes: dict[str, list[TradeRecord]] = {}
        for r in self.collector.records:
            if r.state not in ("rolled_back", "unresolved"):
                continue
            kind = (r.error.split(":", 1)[0] or "no error recorded") if r.error else \
                "no error recorded"
            ended = sorted({leg.state for leg in r.legs
                            if leg.purpose == "entry" and leg.state != "filled"})
            cause = f"{r.state}: {kind}" + (f" ({', '.join(ended)})" if ended else "")
            causes.setdefault(cause, []).append(r)
        rows = []
        for cause, records in sorted(causes.items(), key=lambda kv: -len(kv[1])):
            pnl = sum((r.realised_pnl for r in records), Decimal(0))
            cost = sum((r.rollback_cost for r in records), Decimal(0))
            rows.append([cause, str(len(records)), money(pnl), money(cost),
                         records[-1].error[:width]])
        return rows

    def _last_reason(self, gate: str) -> str:
        for r in reversed(self.collector.records):
            if r.state == REJECTED and (r.gate or "?") == gate:
                return r.reject_reason[:70]
        return ""

    # ------------------------------------------------------------------ trader's tables

    def drawdown(self) -> tuple[Decimal, list[list[str]]]:
        """The deepest fall of cumulative realised PnL below its running peak (USDC, as a
        positive number), and the five deepest drawdowns: from the peak, to the trough, until
        PnL was back at the peak (or not yet)."""
        series = self.collector.pnl_series()
        episodes: list[tuple[Decimal, float, float, float | None, int]] = []
        peak, peak_at = Decimal(0), series[0][0] if series else 0.0
        trough, trough_at, trades = Decimal(0), 0.0, 0
        for at, value in series:
            if value >= peak:
                if trough < peak:
                    episodes.append((peak - trough, peak_at, trough_at, at, trades))
                peak, peak_at, trough, trough_at, trades = value, at, value, at, 0
                continue
            trades += 1
            if value < trough:
                trough, trough_at = value, at
        if trough < peak:
            episodes.append((peak - trough, peak_at, trough_at, None, trades))
        episodes.sort(key=lambda e: -e[0])
        rows = [[money(depth), clock(start), clock(low), "not yet" if back is None
                 else clock(back), count(n)] for depth, start, low, back, n in episodes[:5]]
        return (episodes[0][0] if episodes else Decimal(0)), rows

    def slowest_legs(self, n: int = 10) -> list[list[str]]:
        """The legs that took longest from submitted to final, slowest first."""
        legs = [(leg.latency_ms, r, leg) for r in self.collector.records if r.state != REJECTED
                for leg in r.legs if leg.latency_ms is not None]
        legs.sort(key=lambda item: -item[0])
        return [[ms(latency), r.trade_id, leg.venue, leg.instrument, leg.side, leg.purpose,
                 leg.state, f"{leg.filled.normalize():f}/{leg.size.normalize():f}",
                 str(leg.attempts), clock(r.recorded_at)] for latency, r, leg in legs[:n]]

    # ------------------------------------------------------------------ HTML

    def charts(self) -> list[tuple[str, str]]:
        c = self.collector
        executed = [r for r in c.records if r.state != REJECTED]
        pnl = c.pnl_series()
        timed = bool(pnl) and pnl[0][0] > 0
        x_label = "time the trade finished (UTC)" if timed else "trade number"
        expected, running = [], Decimal(0)
        for i, r in enumerate(sorted(executed, key=lambda r: r.recorded_at)):
            running += r.expected_edge
            expected.append((r.recorded_at if timed else i + 1, float(running)))
        realised = [(t if timed else i + 1, float(v)) for i, (t, v) in enumerate(pnl)]
        peak, below = Decimal(0), []
        for i, (t, v) in enumerate(pnl):
            peak = max(peak, v)
            below.append((t if timed else i + 1, float(v - peak)))
        out = [("PnL over time", svg.line_chart(
            [("realised PnL", realised), ("expected edge (as detected)", expected)],
            title="Cumulative PnL of executed trades", x_label=x_label,
            y_label="USDC", x_time=timed)),
            ("Drawdown", svg.line_chart(
                [("realised PnL below its running peak", below)],
                title="Drawdown of cumulative realised PnL", x_label=x_label,
                y_label="USDC", x_time=timed, plot_height=140))]
        out.append(("Trade latency", svg.histogram(
            [("decision -> wire", [r.decision_to_wire_ms for r in executed
                                   if r.decision_to_wire_ms is not None]),
             ("decision -> final", [r.decision_to_final_ms for r in executed
                                    if r.decision_to_final_ms is not None])],
            title="Trade latency: gates approved -> last entry leg sent, and -> trade final",
            x_label="milliseconds (log scale)", y_label="trades", unit="ms")))
        by_venue: dict[str, list[float]] = {}
        for r in executed:
            for leg in r.legs:
                if leg.purpose == "entry" and leg.latency_ms is not None:
                    by_venue.setdefault(leg.venue, []).append(leg.latency_ms)
        out.append(("Leg latency by venue", svg.histogram(
            [(f"venue {v}", xs) for v, xs in sorted(by_venue.items())],
            title="Entry leg latency: submitted -> final",
            x_label="milliseconds (log scale)", y_label="entry legs", unit="ms")))
        skew = [r.leg_skew_ms for r in executed if r.leg_skew_ms]
        out.append(("Leg skew", svg.histogram(
            [("leg skew", skew)], title="Leg skew: spread of a trade's entry legs' final times",
            x_label="milliseconds (log scale)", y_label="trades", unit="ms")))
        fills = [(k, v["leg_fill_rate"], f"{count(v['executed'])} trades", "by strategy")
                 for k, v in c.strategy_performance().items()]
        fills += [(k, v["leg_fill_rate"], f"{count(v['executed'])} trades", "by arbitrage kind")
                  for k, v in c.arbitrage_performance().items()]
        fills += [(k, v["fill_rate"], f"{count(v['legs'])} entry legs", "by venue")
                  for k, v in c.venue_performance().items()]
        out.append(("Fill rates", svg.bars(
            fills, title="Entry-leg fill rate by strategy, arbitrage kind and venue",
            x_label="entry legs filled / entry legs sent", y_label="group")))
        success = [(k, v["success_rate"],
                    f"{count(v['committed'])}/{count(v['executed'])} trades committed",
                    "success rate")
                   for k, v in c.arbitrage_performance().items()]
        out.append(("Success by kind", svg.bars(
            success, title="Success rate by arbitrage kind",
            x_label="trades committed / trades executed", y_label="kind")))
        return out

    def cards(self) -> list[tuple[str, str, str]]:
        """(what, value, unit) for the cards at the top of the page."""
        s = self.collector.get_summary()
        final = s["decision_to_final_ms"]["p99"]
        return [("committed", count(s["committed"]), "trades"),
                ("rolled back", count(s["rolled_back"]), "trades"),
                ("unresolved", count(s["unresolved"]), "trades"),
                ("rejected by gates", count(s["rejected"]), "trades"),
                ("success rate (of executed trades)", rate(s["success_rate"]), "%"),
                ("fill rate (of entry legs)", rate(s["leg_fill_rate"]), "%"),
                ("within deadline (of executed)", rate(s["within_deadline_rate"]), "%"),
                ("realised PnL", money(s["realised_pnl"]), "USDC"),
                ("max drawdown", money(self.drawdown()[0]), "USDC"),
                ("rollback cost", money(s["rollback_cost"]), "USDC"),
                ("decision -> final p99", "-" if final is None else svg.fmt_num(final), "ms")]

    def html(self, recent: int = 50) -> str:
        c = self.collector
        s = c.get_summary()
        generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        body = [f"<h1>pr3dict run {escape(self.run_id)}</h1>",
                f"<p class='muted'>{escape(str(self.source))} &middot; {count(s['trades'])} "
                f"trade records &middot; generated {generated}"
                f"{'' if self.run_summary is not None else ' &middot; run did not close'}</p>",
                "<div class='cards'>" + "".join(
                    f"<div class='card'><div class='v'>{escape(v)} <span class='u'>"
                    f"{escape(u)}</span></div><div class='k'>{escape(k)}</div></div>"
                    for k, v, u in self.cards()) + "</div>"]
        for title, chart in self.charts():
            body.append(f"<section class='chart'><h2>{escape(title)}</h2>{chart}</section>")
        body.append("<section><h2>Summary</h2>" + _html_table(
            ("metric", "value"), self.summary_rows()) + "</section>")
        body.append("<section><h2>PnL by market (realised / expected = capture)</h2>" +
                    _html_table(MARKET_HEADERS, self._market_rows()) + "</section>")
        body.append("<section><h2>Drawdowns (deepest first)</h2>" + _html_table(
            ("depth (USDC)", "from peak at", "trough at", "back at peak", "trades below peak"),
            self.drawdown()[1]) + "</section>")
        rollbacks = self._rollback_rows(width=None)
        if rollbacks:
            body.append("<section><h2>Why trades rolled back</h2>" +
                        _html_table(ROLLBACK_HEADERS, rollbacks) + "</section>")
        if s["rejections_by_gate"]:
            body.append("<section><h2>Rejections by gate</h2>" + _html_table(
                ("gate", "trades", "last reason"),
                [[g, count(n), self._last_reason(g)]
                 for g, n in s["rejections_by_gate"].items()]) + "</section>")
        body.append("<section><h2>Slowest legs</h2>" + _html_table(
            ("submitted -> final", "trade", "venue", "instrument", "side", "purpose", "state",
             "filled / size (shares)", "attempts", "trade finished (UTC)"),
            self.slowest_legs()) + "</section>")
        for title, groups in (("By arbitrage kind", c.arbitrage_performance()),
                              ("By execution strategy", c.strategy_performance()),
                              ("By detector", c.performance("detector"))):
            body.append(f"<section><h2>{escape(title)}</h2>" +
                        _html_table(GROUP_HEADERS, _group_rows(groups)) + "</section>")
        body.append("<section><h2>Legs by venue and purpose</h2>" + _html_table(
            ("venue / purpose", "legs", "fill rate", "share fill", "latency p50",
             "latency p99", "slip ticks", "slippage (USDC)", "fees (USDC)", "unresolved"),
            [[f"{v} / {purpose}", count(x["legs"]), pct(x["fill_rate"]),
              pct(x["share_fill_rate"]), ms(x["latency_ms"]["p50"]),
              ms(x["latency_ms"]["p99"]), num(x["slippage_ticks_mean"]),
              money(x["slippage_usdc"]), money(x["fees"]), count(x["unresolved"])]
             for purpose in ("entry", "unwind", "complete")
             for v, x in c.leg_performance("venue", purpose).items()]) + "</section>")
        last = c.recent_trades(recent)[::-1]
        body.append(f"<section><h2>Recent trades (last {len(last)}, newest first)</h2>" +
                    _html_table(
            ("finished (UTC)", "trade", "state", "markets", "size (shares)", "edge (USDC)",
             "PnL (USDC)", "to final", "legs (side outcome state)"),
            [[clock(r.recorded_at), r.trade_id, r.state, " + ".join(r.markets) or "-",
              f"{r.size.normalize():f}", money(r.expected_edge), money(r.realised_pnl),
              ms(r.decision_to_final_ms),
              ", ".join(f"{leg.side} {leg.instrument.rsplit(':', 1)[-1]} {leg.state}"
                        + ("" if leg.purpose == "entry" else f" ({leg.purpose})")
                        for leg in r.legs)] for r in last],
            notes=[r.error or r.reject_reason for r in last]) + "</section>")
        return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width,initial-scale=1'>"
                f"<title>pr3dict run {escape(self.run_id)}</title><style>{CSS}</style>"
                "</head><body>" + "\n".join(body) + "</body></html>\n")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;
max-width:1100px;color:#111827;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.muted{color:#6b7280;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px}
.card .v{font-size:18px;font-weight:600;font-variant-numeric:tabular-nums}
.card .u{font-size:12px;font-weight:400;color:#6b7280}
.card .k{color:#374151;font-size:12px}
table{border-collapse:collapse;font-size:12px;width:100%;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:right;vertical-align:top;
white-space:nowrap}
.l{text-align:left}
.w{white-space:normal;min-width:14em}.n{white-space:normal;min-width:13em}
th{background:#f9fafb}
tr.note td{color:#991b1b;border-top:0;padding-top:0}
.scroll{overflow-x:auto}
svg{display:block;width:100%;height:auto;border:1px solid #f3f4f6;border-radius:4px}
"""


_NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(?:/[\d.]+)?(?: ?(?:ms|%|USDC))?|-")
# Columns of sentences: they wrap (the first ones get room to), the others never do.
WRAP = ("note", "last error", "last reason", "cause")
WRAP_NARROW = ("legs (side outcome state)",)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[str]],
                notes: Sequence[str] = ()) -> str:
    """Numbers right-aligned, words left-aligned; sentence columns wrap, others do not.
    ``notes[i]``, if not empty, is shown under row i across the table."""
    rows = [[str(c) for c in row] for row in rows]

    def css(i: int) -> str:
        if headers[i] in WRAP:
            return "l w"
        if headers[i] in WRAP_NARROW:
            return "l n"
        if headers[i] == "value":  # the summary's values: numbers with their units
            return ""
        column = [row[i] for row in rows if i < len(row)]
        return "" if column and all(_NUMBER.fullmatch(c) for c in column) else "l"

    classes = [css(i) for i in range(len(headers))]
    head = "".join(f"<th class='{c}'>{escape(h)}</th>" for h, c in zip(headers, classes,
                                                                        strict=True))
    body = "".join("<tr>" + "".join(f"<td class='{c}'>{escape(v)}</td>"
                                    for v, c in zip(row, classes, strict=True)) + "</tr>"
                   + (f"<tr class='note'><td class='l w' colspan='{len(headers)}'>"
                      f"{escape(notes[i])}</td></tr>" if i < len(notes) and notes[i] else "")
                   for i, row in enumerate(rows))
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}"
            "</tbody></table></div>")


# --------------------------------------------------------------------------- command


def run_command(args: argparse.Namespace, ctx: Any) -> int:
    stdout: TextIO = ctx.stdout
    stderr: TextIO = ctx.stderr
    try:
        path = find_metrics(args.run, args.runs_dir)
        report = Report.load(path)
    except (ReportError, OSError) as exc:
        print(f"pr3dict: {exc}", file=stderr)
        return EX_FAILED
    print(report.text(recent=args.recent), file=stdout)
    if not args.no_html:
        target = args.html or path.parent / "report.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(report.html(), encoding="utf-8")
        print(f"HTML report: {target}", file=stdout)
    return EX_OK
