"""``pr3dict init``: a starter project from packaged data that validates and runs as written."""

from __future__ import annotations

import json
import re

from support import REPO

from pr3dict_init import starter_files

EXPECTED = {"README.md", "paper.toml", "shadow.toml", "scenarios/demo.toml",
            "scenarios/sim.toml", "keys/README.md", "keys/TEST-ONLY-sim-polymarket.key",
            "keys/TEST-ONLY-sim-kalshi.pub.pem"}


def test_init_writes_a_project_that_validates_runs_and_reports(run_pr3dict, tmp_path):
    outcome = run_pr3dict("init", "proj").assert_success()
    project = tmp_path / "proj"
    assert {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()} == EXPECTED
    assert "pr3dict run paper.toml" in outcome.out
    run_pr3dict("validate", "--no-environment", "paper.toml", "shadow.toml",
                cwd=project).assert_success()
    run = run_pr3dict("run", "paper.toml", "--cycles", "60", "--run-id", "first",
                      cwd=project).assert_success()
    committed = int(re.search(r"trades committed\s+(\d+)", run.out).group(1))
    assert committed > 0
    records = [json.loads(line) for line in
               (project / "runs" / "first" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("trade", {}).get("state") == "committed" for r in records) == committed
    report = run_pr3dict("report", "latest", "--no-html", cwd=project).assert_success()
    assert "run first" in report.out


def test_init_refuses_to_overwrite_unless_forced(run_pr3dict, tmp_path):
    run_pr3dict("init").assert_success()
    edited = tmp_path / "paper.toml"
    edited.write_text("# mine\n")
    refused = run_pr3dict("init").assert_failed(1)
    assert "paper.toml exists" in refused.err and "nothing was written" in refused.err
    assert edited.read_text() == "# mine\n"
    run_pr3dict("init", "--force").assert_success()
    assert edited.read_text().startswith("# Binary-complement arbitrage")


def test_shadow_pipeline_is_marked_as_waiting_for_shadow_mode():
    shadow = starter_files()["shadow.toml"].read_text()
    assert "FOR LATER" in shadow and 'mode = "paper"' in shadow
    assert shadow.count("# SHADOW:") >= 3


def test_starter_demo_scenario_is_the_repository_one():
    """One scenario, shipped twice: the checkout's examples and the starter stay identical."""
    shipped = starter_files()["scenarios/demo.toml"].read_bytes()
    assert shipped == (REPO / "pipelines" / "scenarios" / "demo.toml").read_bytes()
