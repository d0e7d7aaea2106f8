"""`pr3dict test`: the example pipelines' [[tests]] pass; a changed expectation fails with
expected vs got; a malformed table is a config error (also for `validate`)."""

from __future__ import annotations

from replay_helpers import REPO

EXAMPLES = [REPO / "pipelines" / "cross-venue-replay.toml",
            REPO / "pipelines" / "complement-paper.toml"]


def test_the_example_tests_pass(run_pr3dict):
    outcome = run_pr3dict("test", *map(str, EXAMPLES))
    assert outcome.code == 0, outcome.out + outcome.err
    assert "cross-venue-replay.toml::cross-venue windows in the recording are taken PASSED" \
        in outcome.out
    assert "3 passed" in outcome.out


def test_a_changed_expectation_fails_with_expected_and_got(run_pr3dict, tmp_path):
    text = EXAMPLES[0].read_text().replace("committed = 50,", "committed = 51,")
    text = text.replace('recording = "recordings/', f'recording = "{REPO}/pipelines/recordings/')
    text = text.replace('mapping = "mappings/', f'mapping = "{REPO}/pipelines/mappings/')
    changed = tmp_path / "changed.toml"
    changed.write_text(text)
    outcome = run_pr3dict("test", str(changed))
    assert outcome.code == 1, outcome.out + outcome.err
    assert "changed.toml::cross-venue windows in the recording are taken FAILED" in outcome.out
    assert "    trades.committed: expected 51, got 50" in outcome.out
    assert "1 failed" in outcome.out


def test_a_malformed_test_table_is_a_config_error(run_pr3dict, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLES[1].read_text().replace(
        'scenario = "scenarios/demo.toml"', f'scenario = "{REPO}/pipelines/scenarios/demo.toml"'
    ).replace("opportunities = 0", 'opportunities = "many"').replace(
        'rejected_by = []', 'rejected_by = ["nope"]').replace(
        'venue = "sim", instrument = "fed-cut-dec:no", asks = [["0.50"',
        'venue = "simm", instrument = "fed-cut-dec:no", asks = [["0.50"'))
    for command in ("test", "validate"):
        outcome = run_pr3dict(command, str(bad))
        assert outcome.code == 78, outcome.out + outcome.err
        assert "tests[0].expect.rejected_by: no gate 'nope'" in outcome.err
        assert "tests[1].expect.opportunities" in outcome.err
        assert "tests[0].books[1].venue: 'simm' is not a paper venue" in outcome.err


def test_bad_replay_venue_tables_are_config_errors(run_pr3dict, tmp_path):
    text = EXAMPLES[0].read_text().split("[[tests]]")[0].replace(
        'mapping = "mappings/', f'mapping = "{REPO}/pipelines/mappings/')
    text = text.replace('recording = "recordings/sim-cross.jsonl.zst"\nlatency_ms = 5\n\n'
                        '[venues.kalshi]', 'recording = "nope.jsonl.zst"\nlatency_ms = 5\n\n'
                        '[venues.kalshi]', 1)
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("latency_ms = 5", 'latency_ms = 5\nspeed = "fast"', 1))
    outcome = run_pr3dict("validate", str(bad))
    assert outcome.code == 78
    assert f"{bad}: venues.poly.speed: must be \"max\" or a positive number (got 'fast')" \
        in outcome.err
    bad.write_text(text)
    outcome = run_pr3dict("validate", str(bad))
    assert outcome.code == 78
    assert f"{tmp_path / 'nope.jsonl.zst'}: no such recording file" in outcome.err


def test_a_connector_pipeline_is_tested_on_a_recording_without_its_secrets(run_pr3dict,
                                                                            tmp_path,
                                                                            monkeypatch):
    monkeypatch.delenv("PR3DICT_NEVER_SET", raising=False)
    text = (REPO / "pipelines" / "cross-venue-sim.toml").read_text()
    for folder in ("scenarios", "mappings"):
        text = text.replace(f'"{folder}/', f'"{REPO}/pipelines/{folder}/')
    text = text.replace('{ file = "keys/TEST-ONLY-sim-polymarket.key" }',
                        '{ env = "PR3DICT_NEVER_SET" }').replace(
        '{ file = "keys/TEST-ONLY-sim-kalshi.pem" }', '{ env = "PR3DICT_NEVER_SET" }')
    path = tmp_path / "connectors.toml"
    path.write_text(text + f"""
[[tests]]
name = "the connectors' pipeline on the committed recording"
recording = "{REPO}/pipelines/recordings/sim-cross.jsonl.zst"
[tests.expect]
min_opportunities = 1
kinds = ["cross_venue"]
""")
    outcome = run_pr3dict("test", str(path))
    assert outcome.code == 0, outcome.out + outcome.err
    assert "1 passed" in outcome.out
