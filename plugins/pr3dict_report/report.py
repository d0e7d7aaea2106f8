"""``pr3dict report RUN``: a run's metrics as terminal tables and a self-contained HTML page.

The report reads the trade records a ``jsonl`` sink wrote (``runs/<run id>/metrics.jsonl``
by default) and answers, through :class:`pr3dict_sinks.collector.MetricsCollector`, every
question of ``docs/metrics.md``. The HTML page carries its charts as inline SVG and its
style inline: no script, no server, no network.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any, TextIO

from pr3dict_core.metrics import TradeRecord
from pr3dict_core.model import Pr3dictError
from pr3dict_sinks.collector import REJECTED, MetricsCollector, jsonable, read_jsonl

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
    return "-" if value is None else f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def money(value: Decimal | float | None) -> str:
    return "-" if value is None else f"{Decimal(str(value)):.4f}"


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

    def text(self, recent: int = 10) -> str:
        c = self.collector
        s = c.get_summary()
        closed = "" if self.run_summary is not None else "  (run did not close: partial)"
        out = [f"pr3dict report: run {self.run_id}  ({self.source}, {s['trades']} trade "
               f"records){closed}", ""]
        opportunities = s.get("opportunities")
        kv = [
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
        ]
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

    def _rollback_rows(self) -> list[list[str]]:
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
                         records[-1].error[:70]])
        return rows

    def _last_reason(self, gate: str) -> str:
        for r in reversed(self.collector.records):
            if r.state == REJECTED and (r.gate or "?") == gate:
                return r.reject_reason[:70]
        return ""

    # ------------------------------------------------------------------ HTML

    def charts(self) -> list[tuple[str, str]]:
        c = self.collector
        executed = [r for r in c.records if r.state != REJECTED]
        pnl = c.pnl_series()
        t0 = pnl[0][0] if pnl else 0.0
        timed = bool(pnl) and pnl[-1][0] > 0
        expected, running = [], Decimal(0)
        for i, r in enumerate(sorted(executed, key=lambda r: r.recorded_at)):
            running += r.expected_edge
            expected.append((r.recorded_at - t0 if timed else i + 1, float(running)))
        realised = [((t - t0) if timed else i + 1, float(v)) for i, (t, v) in enumerate(pnl)]
        out = [("PnL over time", svg.line_chart(
            [("realised PnL", realised), ("expected edge", expected)],
            title="Cumulative PnL (USDC)", x_label="seconds since first trade" if timed
            else "trade", y_label="USDC"))]
        out.append(("Decision to wire and to final", svg.histogram(
            [("decision -> wire", [r.decision_to_wire_ms for r in executed
                                   if r.decision_to_wire_ms is not None]),
             ("decision -> final", [r.decision_to_final_ms for r in executed
                                    if r.decision_to_final_ms is not None])],
            title="Trade latency (ms, log scale)", x_label="ms")))
        by_venue: dict[str, list[float]] = {}
        for r in executed:
            for leg in r.legs:
                if leg.purpose == "entry" and leg.latency_ms is not None:
                    by_venue.setdefault(leg.venue, []).append(leg.latency_ms)
        out.append(("Leg latency by venue", svg.histogram(
            sorted(by_venue.items()), title="Entry leg submitted -> final (ms, log scale)",
            x_label="ms")))
        skew = [r.leg_skew_ms for r in executed if r.leg_skew_ms]
        out.append(("Leg skew", svg.histogram([("leg skew", skew)],
                                              title="Leg skew (ms, log scale)", x_label="ms")))
        fills = [(f"strategy {k}", v["leg_fill_rate"], f"{v['executed']} trades")
                 for k, v in c.strategy_performance().items()]
        fills += [(f"kind {k}", v["leg_fill_rate"], f"{v['executed']} trades")
                  for k, v in c.arbitrage_performance().items()]
        fills += [(f"venue {k}", v["fill_rate"], f"{v['legs']} legs")
                  for k, v in c.venue_performance().items()]
        out.append(("Fill rates", svg.bars(fills, title="Entry-leg fill rate by strategy, "
                                                        "arbitrage kind and venue")))
        success = [(k, v["success_rate"], f"{v['committed']}/{v['executed']} committed")
                   for k, v in c.arbitrage_performance().items()]
        out.append(("Success by kind", svg.bars(success, title="Success rate by arbitrage "
                                                               "kind")))
        return out

    def html(self, recent: int = 50) -> str:
        c = self.collector
        s = c.get_summary()
        cards = [("committed", str(s["committed"])), ("rolled back", str(s["rolled_back"])),
                 ("unresolved", str(s["unresolved"])), ("rejected", str(s["rejected"])),
                 ("success rate", pct(s["success_rate"])),
                 ("leg fill rate", pct(s["leg_fill_rate"])),
                 ("within deadline", pct(s["within_deadline_rate"])),
                 ("realised PnL", money(s["realised_pnl"])),
                 ("rollback cost", money(s["rollback_cost"])),
                 ("final p99", ms(s["decision_to_final_ms"]["p99"]))]
        body = [f"<h1>pr3dict run {escape(self.run_id)}</h1>",
                f"<p class='muted'>{escape(str(self.source))} &middot; {s['trades']} trade "
                f"records &middot; generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
                f"{'' if self.run_summary is not None else ' &middot; run did not close'}</p>",
                "<div class='cards'>" + "".join(
                    f"<div class='card'><div class='v'>{escape(v)}</div>"
                    f"<div class='k'>{escape(k)}</div></div>" for k, v in cards) + "</div>"]
        for title, chart in self.charts():
            body.append(f"<section><h2>{escape(title)}</h2>{chart}</section>")
        body.append("<section><h2>Summary</h2>" + _html_kv(s) + "</section>")
        for title, groups in (("By arbitrage kind", c.arbitrage_performance()),
                              ("By execution strategy", c.strategy_performance()),
                              ("By detector", c.performance("detector"))):
            body.append(f"<section><h2>{escape(title)}</h2>" +
                        _html_table(GROUP_HEADERS, _group_rows(groups)) + "</section>")
        body.append("<section><h2>By market (realised / expected = capture)</h2>" +
                    _html_table(MARKET_HEADERS, self._market_rows()) + "</section>")
        rollbacks = self._rollback_rows()
        if rollbacks:
            body.append("<section><h2>Why trades rolled back</h2>" +
                        _html_table(ROLLBACK_HEADERS, rollbacks) + "</section>")
        body.append("<section><h2>Legs by venue and purpose</h2>" + _html_table(
            ("venue / purpose", "legs", "fill rate", "share fill", "latency p50",
             "latency p99", "slip ticks", "slippage (USDC)", "fees (USDC)", "unresolved"),
            [[f"{v} / {purpose}", str(x["legs"]), pct(x["fill_rate"]),
              pct(x["share_fill_rate"]), ms(x["latency_ms"]["p50"]),
              ms(x["latency_ms"]["p99"]), num(x["slippage_ticks_mean"]),
              money(x["slippage_usdc"]), money(x["fees"]), str(x["unresolved"])]
             for purpose in ("entry", "unwind", "complete")
             for v, x in c.leg_performance("venue", purpose).items()]) + "</section>")
        last = c.recent_trades(recent)
        body.append(f"<section><h2>Recent trades (last {len(last)})</h2>" + _html_table(
            ("trade", "kind", "detector", "state", "size", "edge", "PnL", "wire", "final",
             "legs", "note"),
            [[r.trade_id, r.kind, r.detector, r.state, str(r.size), money(r.expected_edge),
              money(r.realised_pnl), ms(r.decision_to_wire_ms), ms(r.decision_to_final_ms),
              " ".join(f"{leg.venue}:{leg.instrument}:{leg.side}:{leg.state}"
                       for leg in r.legs), r.error or r.reject_reason]
             for r in reversed(last)]) + "</section>")
        return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>pr3dict run {escape(self.run_id)}</title><style>{CSS}</style>"
                "</head><body>" + "\n".join(body) + "</body></html>\n")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;
max-width:1100px;color:#111827;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.muted{color:#6b7280;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;min-width:96px}
.card .v{font-size:18px;font-weight:600}.card .k{color:#6b7280;font-size:12px}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
td.l{text-align:left;font-family:ui-monospace,monospace;font-size:11px}
th{background:#f9fafb}
svg{max-width:100%;height:auto;border:1px solid #f3f4f6;border-radius:4px}
"""


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f"<td{' class=l' if len(str(c)) > 40 else ''}>{escape(str(c))}</td>" for c in row)
        + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_kv(summary: Mapping[str, Any]) -> str:
    rows = []
    for key, value in jsonable(summary).items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in value.items()) or "-"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        rows.append([key.replace("_", " "), "-" if value is None else str(value)])
    return _html_table(("metric", "value"), rows)


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
