"""``pr3dict report RUN``: terminal tables and a self-contained HTML report with plots."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from dgm_helpers import PIPELINES

from pr3dict_report.svg import bars, histogram, line_chart, nice_ticks


def test_report_of_a_cross_venue_run(run_pr3dict, tmp_path):
    run_pr3dict("run", str(PIPELINES / "cross-venue-paper.toml"), "--cycles", "80",
                "--run-id", "xv-1").assert_success()
    outcome = run_pr3dict("report", "xv-1").assert_success()
    out = outcome.out
    for heading in ("Summary", "By arbitrage kind", "By execution strategy",
                    "Entry legs by venue", "Recent trades"):
        assert heading in out
    assert re.search(r"success rate\s+\d+\.\d%", out)
    assert re.search(r"^\s+cross_venue\s+\d+\s+\d+", out, re.M)
    assert re.search(r"^\s+kalshi\s+\d+", out, re.M) and re.search(r"^\s+poly\s+\d+", out, re.M)
    html_path = tmp_path / "runs" / "xv-1" / "report.html"
    assert "HTML report: runs/xv-1/report.html" in out and html_path.exists()
    html = html_path.read_text()
    # readable without any server: no script, no external resource
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"(src|href)=['\"]?https?:", html)
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) >= 5
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    for title in ("Cumulative PnL", "Trade latency", "Entry leg latency: submitted -&gt; final",
                  "fill rate by strategy, arbitrage kind and venue"):
        assert title in html
    assert "<polyline" in html and "<rect" in html


def test_report_finds_runs_by_prefix_latest_dir_or_file(run_pr3dict, tmp_path):
    run_pr3dict("run", str(PIPELINES / "multi-outcome-paper.toml"), "--cycles", "40",
                "--run-id", "mo-abc").assert_success()
    for ref in ("mo-a", "latest", str(tmp_path / "runs" / "mo-abc"),
                str(tmp_path / "runs" / "mo-abc" / "metrics.jsonl")):
        outcome = run_pr3dict("report", ref, "--no-html").assert_success()
        assert "run mo-abc" in outcome.out and "multi_outcome" in outcome.out
    custom = tmp_path / "elsewhere" / "r.html"
    run_pr3dict("report", "mo-abc", "--html", str(custom)).assert_success()
    assert custom.read_text().startswith("<!doctype html>")


def test_report_of_a_missing_run_fails_cleanly(run_pr3dict):
    outcome = run_pr3dict("report", "no-such-run")
    assert outcome.code == 1
    assert "no metrics for run 'no-such-run'" in outcome.err and "jsonl" in outcome.err


def test_charts_handle_empty_and_single_points():
    for chart in (line_chart([("x", [])], title="t", x_label="x", y_label="y"),
                  histogram([("h", [])], title="t", x_label="ms"),
                  bars([], title="t"),
                  line_chart([("x", [(0, 1.0)])], title="t", x_label="x", y_label="y"),
                  histogram([("h", [5.0, 5.0])], title="t", x_label="ms")):
        ET.fromstring(chart)
    assert nice_ticks(0, 9.5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 3, 4, integer=True) == [0, 1, 2, 3]


def test_report_says_why_trades_rolled_back(run_pr3dict, tmp_path):
    """The complement demo rolls back some trades: the report groups them by cause."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text((PIPELINES / "complement-paper.toml").read_text().replace(
        'scenario = "scenarios/', f'scenario = "{PIPELINES}/scenarios/'))
    run_pr3dict("run", str(pipeline), "--cycles", "400", "--run-id", "rb-1").assert_success()
    out = run_pr3dict("report", "rb-1").assert_success().out
    assert "Why trades rolled back" in out
    section = out.split("Why trades rolled back", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"rolled_back: entry legs not filled \(\w+.*\)\s+\d+", section), section
    html = (tmp_path / "runs" / "rb-1" / "report.html").read_text()
    assert "<h2>Why trades rolled back</h2>" in html
