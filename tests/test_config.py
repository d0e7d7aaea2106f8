"""Pipeline files are strict: every problem is reported at once, with its TOML path."""

from __future__ import annotations

from decimal import Decimal

import pytest
from support import MINIMAL

from pr3dict_core.config import ConfigError, load_pipeline
from pr3dict_core.plugins import collect_components


@pytest.fixture
def registry(pr3dict_pm):
    return collect_components(pr3dict_pm)


def problems(path, registry) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, registry)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_minimal_pipeline_builds_typed_options(write_pipeline, registry):
    config = load_pipeline(write_pipeline(MINIMAL), registry)
    detector = config.section("detectors")["c"]
    assert detector.type == "binary_complement"
    assert detector.options.min_edge == Decimal("0.005")
    assert isinstance(detector.options.min_edge, Decimal)
    assert config.execution.strategy == "market"
    assert config.strategy_options.max_slippage_ticks == 2


def test_every_error_reported_at_once_with_paths(write_pipeline, registry):
    path = write_pipeline("""
[pipeline]
name = 3
mode = "yolo"

[venues.sim]
type = "paper"
scenario = "x.toml"
latency_ms = "fast"
colour = "red"

[detectors.c]
type = "binary_complemnt"
venues = ["sim"]

[detectors.d]
type = "binary_complement"
venues = ["nope"]
min_edge = 0.01

[gates.cap]
type = "capital"
bankroll = "-5"

[execution]
strategy = "market"
max_slippage_ticks = true
deadline_ms = 0

[telemetery]
exporter = "otlp"
""")
    found = problems(path, registry)
    text = "\n".join(found)
    assert "pipeline.name: expected a string, got an integer (3)" in text
    assert "pipeline.mode:" in text and "yolo" in text
    assert "venues.sim.latency_ms: expected a number" in text
    assert "venues.sim.colour: unknown key" in text
    assert "detectors.c.type: unknown detector type 'binary_complemnt'; did you mean: " \
           "binary_complement" in text
    assert "detectors.d.min_edge: expected a decimal string, got a float (0.01); write it as " \
           "a string" in text
    assert "gates.cap.bankroll: must be > 0 (got -5)" in text
    assert "execution.max_slippage_ticks: expected an integer, got a boolean" in text
    assert "execution.deadline_ms: must be > 0 (got 0)" in text
    assert "telemetery: unknown section (did you mean 'telemetry'?)" in text
    # References are checked only once the component itself is valid; d's min_edge is not.
    assert len(found) >= 10


def test_reference_to_missing_venue(write_pipeline, registry):
    path = write_pipeline(MINIMAL.replace('venues = ["sim"]', 'venues = ["sim", "simm"]'))
    assert problems(path, registry) == [
        "detectors.c.venues[1]: no venue with id 'simm' (did you mean 'sim'?)"]


def test_unknown_key_suggests_the_close_one(write_pipeline, registry):
    path = write_pipeline(MINIMAL + 'min_edgee = "0.01"\n')
    assert problems(path, registry) == ["detectors.c.min_edgee: unknown key "
                                        "(did you mean 'min_edge'?)"]


def test_missing_sections_and_required_keys(write_pipeline, registry):
    path = write_pipeline('[pipeline]\nmode = "paper"\n')
    found = problems(path, registry)
    assert "pipeline.name: required key is missing" in found
    assert any(p.startswith("venues: required section is missing") for p in found)
    assert any(p.startswith("detectors: required section is missing") for p in found)


def test_toml_syntax_error_names_line(write_pipeline, registry):
    path = write_pipeline("[pipeline\nname = 'x'\n")
    (found,) = problems(path, registry)
    assert "invalid TOML" in found and "line 1" in found


def test_unknown_strategy(write_pipeline, registry):
    path = write_pipeline(MINIMAL + '[execution]\nstrategy = "markt"\n')
    assert problems(path, registry) == [
        "execution.strategy: unknown execution strategy 'markt'; did you mean: market"]


def test_strategy_options_are_strict(write_pipeline, registry):
    path = write_pipeline(MINIMAL + '[execution]\nstrategy = "market"\nfallback_after_ms = 5\n')
    assert problems(path, registry) == ["execution.fallback_after_ms: unknown key"]


def test_cli_exit_78_before_anything_runs(write_pipeline, run_pr3dict, tmp_path):
    path = write_pipeline(MINIMAL.replace('type = "paper"', 'type = "papr"'))
    outcome = run_pr3dict("run", str(path)).assert_failed(78)
    assert f"{path}: venues.sim.type: unknown venue type 'papr'; did you mean: paper" \
        in outcome.err
    assert "nothing was run" in outcome.err
    assert outcome.spans == ()
    assert not (tmp_path / "runs").exists()


def test_validate_reports_problems_of_every_file(write_pipeline, run_pr3dict):
    good = write_pipeline(MINIMAL, "good.toml")
    bad1 = write_pipeline(MINIMAL + "bogus = 1\n", "bad1.toml")
    bad2 = write_pipeline(MINIMAL.replace("name = \"t\"", "name = 1"), "bad2.toml")
    outcome = run_pr3dict("validate", "--no-environment", str(good), str(bad1), str(bad2))
    outcome.assert_failed(78)
    assert f"{bad1}: detectors.c.bogus: unknown key" in outcome.err
    assert f"{bad2}: pipeline.name: expected a string" in outcome.err
    assert run_pr3dict("validate", str(good)).assert_success().out.startswith("ok: ")


def test_bad_scenario_file_is_a_config_error(write_pipeline, run_pr3dict, tmp_path):
    scenario = tmp_path / "bad-scenario.toml"
    scenario.write_text('seed = "x"\n[[markets]]\nid = "m"\nfair = "1.5"\n')
    path = write_pipeline(MINIMAL.replace("{demo}", str(scenario)))
    outcome = run_pr3dict("run", str(path)).assert_failed(78)
    assert f"{scenario}: seed: expected an integer" in outcome.err
    assert f"{scenario}: markets[0].fair: must be in [0, 1]" in outcome.err


# A live pipeline the loader accepts: a real (not simulated) venue and the live gates.
LIVE = """
[pipeline]
name = "t"
mode = "live"

[venues.pm]
type = "polymarket"
rest_url = "http://127.0.0.1:9"
ws_url = "ws://127.0.0.1:9"
private_key = { env = "PR3DICT_TEST_NO_SUCH_KEY" }

[detectors.c]
type = "binary_complement"
venues = ["pm"]

[gates.capital]
type = "capital"
bankroll = "100"

[gates.position]
type = "max_position"
max_position = "10"
"""


def test_live_mode_needs_flag_and_pipeline(write_pipeline, run_pr3dict):
    live = write_pipeline(LIVE)
    outcome = run_pr3dict("run", str(live)).assert_failed(78)
    assert "live trading also needs `pr3dict run --live`" in outcome.err
    paper = write_pipeline(MINIMAL, "paper.toml")
    outcome = run_pr3dict("run", str(paper), "--live").assert_failed(78)
    assert "--live given but the pipeline says mode = \"paper\"" in outcome.err


def test_secrets_are_never_inline(registry):
    from pr3dict_core.config import SecretRef, structure

    value, errors = structure("hunter2", SecretRef, "venues.x.key")
    assert value is None
    assert errors == [("venues.x.key", 'secrets are never inline: use { env = "NAME" } or '
                                       '{ file = "path" }')]
    ref, errors = structure({"env": "POLY_KEY"}, SecretRef, "k")
    assert errors == [] and ref.env == "POLY_KEY"
    assert "hunter2" not in repr(SecretRef(file="/secret/path"))


def test_references_set_the_build_order_and_a_cycle_is_refused(write_pipeline, pr3dict_pm,
                                                               register_plugin):
    import attrs as _attrs

    from pr3dict_core import hookimpl
    from pr3dict_core.config import ref
    from pr3dict_core.plugins import collect_components

    class Watcher:
        """A gate that watches another gate (a test double)."""

        type = "test_watcher"

        @_attrs.frozen(kw_only=True)
        class Config:
            watches: str = ref("gates")

        @classmethod
        def from_config(cls, id, config, ctx):
            return (id, ctx.lookup("gates", config.watches))

    class Plugin:
        @hookimpl
        def pr3dict_register_risk_gates(self, registry):
            registry.add(Watcher)

    register_plugin(Plugin(), name="watcher")
    registry = collect_components(pr3dict_pm)
    text = MINIMAL + """
[gates.a]
type = "test_watcher"
watches = "b"

[gates.b]
type = "capital"
bankroll = "10"
"""
    config = load_pipeline(write_pipeline(text), registry)
    order = list(config.build_order)
    assert order.index(("gates", "b")) < order.index(("gates", "a"))
    assert order[0] == ("venues", "sim")
    cyclic = text.replace('type = "capital"\nbankroll = "10"',
                          'type = "test_watcher"\nwatches = "a"')
    found = problems(write_pipeline(cyclic, "cycle.toml"), registry)
    assert found == ["gates.a: reference cycle between gates.a, gates.b"]
    itself = text.replace('watches = "b"', 'watches = "a"')
    assert problems(write_pipeline(itself, "self.toml"), registry) == [
        "gates.a.watches: a component cannot refer to itself"]


def test_graph_draws_every_declared_reference(write_pipeline, run_pr3dict):
    path = write_pipeline(MINIMAL.replace('venues = ["sim"]', 'venues = ["sim"]\n'
                                          'capital_gate = "cap"') + """
[gates.cap]
type = "capital"
bankroll = "10"

[gates.conn]
type = "connectivity"
venues = ["sim"]
""")
    dot = run_pr3dict("graph", str(path)).assert_success().out
    assert '"detectors.c" -> "gates.cap" [label="capital_gate", style=dashed];' in dot
    assert '"gates.conn" -> "venues.sim" [label="venues", style=dashed];' in dot
