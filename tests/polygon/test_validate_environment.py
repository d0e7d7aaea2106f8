"""`pr3dict validate` checks a settler's chain as `run` would, without sending anything."""

from __future__ import annotations

import json

from pr3dict_polygon.devchain import REPO, dev_account

PIPELINE = """
[pipeline]
name = "validate-polygon"

[venues.sim]
type = "paper"
scenario = "{scenario}"

[detectors.complement]
type = "binary_complement"
venues = ["sim"]

[rpc.polygon]
type = "polygon_pool"
endpoints = {endpoints}

[settlers.merge]
type = "ctf_merge"
rpc = "polygon"
private_key = {{ env = "PR3DICT_TEST_SETTLER_KEY" }}
conditional_tokens = "0x{ctf}"
collateral = "0x{collateral}"

[sinks.gas]
type = "gas_tracker"
rpc = "polygon"
"""


def test_validate_checks_the_settlers_contracts_on_chain(anvil, run_pr3dict, tmp_path,
                                                         monkeypatch):
    node = anvil()
    path = tmp_path / "pipeline.toml"
    path.write_text(PIPELINE.format(scenario=REPO / "pipelines" / "scenarios" / "demo.toml",
                                    endpoints=json.dumps([node.url]), ctf="1" * 40,
                                    collateral="2" * 40))
    monkeypatch.setenv("PR3DICT_TEST_SETTLER_KEY", dev_account(1).key.hex())
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    run_pr3dict("validate", "--no-environment", str(path)).assert_success()
    outcome = run_pr3dict("validate", str(path)).assert_failed(78)
    assert "environment: settlers.merge: SettlementError: settlers.merge.conditional_tokens: " \
           "no contract at 0x1111111111111111111111111111111111111111" in outcome.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no sink file, no journal
    monkeypatch.setenv("PR3DICT_TEST_SETTLER_KEY", "0x1234")
    outcome = run_pr3dict("validate", "--no-environment", str(path)).assert_failed(78)
    assert "settlers.merge.private_key: not a valid hex private key" in outcome.err
