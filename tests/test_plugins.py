"""Plugins: built-ins come through the entry-point group, can be blocked, are listed."""

from __future__ import annotations

from typing import ClassVar

import pytest
from attrs import frozen
from support import MINIMAL

from pr3dict_core import hookimpl
from pr3dict_core.components import DuplicateComponent
from pr3dict_core.plugins import (
    UsageError,
    collect_components,
    make_plugin_manager,
    plugin_distributions,
)


def test_builtins_load_through_entry_points():
    pm = make_plugin_manager(builtins=False)  # entry points only
    assert {"paper", "detectors", "strategies", "gates", "sinks"} <= set(pm.plugin_names())
    assert plugin_distributions(pm)["paper"][0] == "pr3dict"


def test_indexed_plugins_are_named_not_imported_until_a_type_is_used():
    pm = make_plugin_manager()
    assert "paper" in pm.deferred and pm.get_plugin("paper") is None
    registry = collect_components(pm)
    reg = registry.get("venues", "paper")
    assert reg is not None and reg.plugin == "paper" and not reg.loaded
    assert reg.cls.type == "paper"  # asking for the class imports the plugin
    assert pm.get_plugin("paper") is not None and "paper" not in pm.deferred
    assert collect_components(pm).get("venues", "paper").cls is reg.cls


class _Promises:
    """A plugin whose index names a venue type its hook does not register."""

    @hookimpl
    def pr3dict_register_venues(self, registry):
        pass


def test_an_index_entry_the_plugin_does_not_register_is_an_error(monkeypatch):
    import sys
    import types

    from pr3dict_core.plugins import DeferredPlugin, PluginIndexError

    module = types.ModuleType("promises_plugin")
    module.pr3dict_register_venues = _Promises.pr3dict_register_venues.__get__(_Promises())
    monkeypatch.setitem(sys.modules, "promises_plugin", module)
    pm = make_plugin_manager()
    spec = DeferredPlugin("promises", "promises_plugin", (("venues", "promised"),))
    pm.deferred["promises"] = pm.indexed["promises"] = spec
    reg = collect_components(pm).get("venues", "promised")
    with pytest.raises(PluginIndexError, match="registers no venue of type 'promised'"):
        _ = reg.cls


def test_a_malformed_index_name_is_refused():
    from pr3dict_core.plugins import PluginIndexError, _check_index

    _check_index({"m": [("venues", "x"), ("commands", "y")]})
    with pytest.raises(PluginIndexError, match=r"must be <kind>\.<type>"):
        _check_index({"m": [("vennues", "x")]})


PAPER_ONLY = (
    "import sys; from pr3dict_core.cli import main; "
    "rc = main(['validate', sys.argv[1]]); "
    "print(rc, *sorted(m for m in sys.modules if m in sys.argv[2:]))")


def test_a_paper_pipeline_imports_only_the_plugins_it_uses():
    """Named in the entry points, imported on use: validating (and building) a paper pipeline
    never imports web3, eth_account, the venue connectors or the simulator."""
    import subprocess
    import sys

    from support import REPO

    # Plugins that add commands are imported to list them, but not what the commands use.
    unused = ["web3", "eth_account", "pr3dict_polygon", "pr3dict_polymarket.venue",
              "pr3dict_polymarket.signing", "pr3dict_kalshi", "pr3dict_kalshi.venue",
              "pr3dict_sim.server", "pr3dict_report.report", "pr3dict_replay.venue", "aiohttp"]
    done = subprocess.run([sys.executable, "-c", PAPER_ONLY,
                           str(REPO / "pipelines/complement-paper.toml"), *unused],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1].split() == ["0"], done.stdout + done.stderr


def test_block_plugin_removes_its_components():
    registry = collect_components(make_plugin_manager(block=["paper"]))
    assert registry.get("venues", "paper") is None
    assert registry.get("detectors", "binary_complement") is not None


def test_essential_plugin_cannot_be_blocked():
    with pytest.raises(UsageError, match="essential"):
        make_plugin_manager(block=["core"])


class _Dup:
    type: ClassVar[str] = "paper"

    @frozen
    class Config:
        pass


class DuplicatePlugin:
    @hookimpl
    def pr3dict_register_venues(self, registry):
        registry.add(_Dup)


def test_hook_pr3dict_register_venues_duplicate_names_both_plugins(pr3dict_pm, register_plugin):
    register_plugin(DuplicatePlugin(), name="copycat")
    with pytest.raises(DuplicateComponent) as info:
        collect_components(pr3dict_pm)
    assert "'paper'" in str(info.value)
    assert "plugin 'paper'" in str(info.value) and "plugin 'copycat'" in str(info.value)


def test_plugins_command_lists_components(run_pr3dict):
    out = run_pr3dict("plugins").assert_success().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "venue:paper" in rows["paper"] and "pr3dict" in rows["paper"]
    assert "detector:binary_complement" in rows["detectors"]
    assert "risk gate:capital" in rows["gates"] and "risk gate:max_position" in rows["gates"]
    assert "metrics sink:jsonl" in rows["sinks"] and "metrics sink:memory" in rows["sinks"]
    assert "execution strategy:market" in rows["strategies"]


def test_dash_p_no_blocks_from_the_command_line(write_pipeline, run_pr3dict):
    path = write_pipeline(MINIMAL)
    outcome = run_pr3dict("-p", "no:paper", "validate", "--no-environment", str(path))
    outcome.assert_failed(78)
    assert "venues.sim.type: unknown venue type 'paper'" in outcome.err


def test_env_var_blocks(monkeypatch):
    monkeypatch.setenv("PR3DICT_DISABLED_PLUGINS", "gates,sinks")
    pm = make_plugin_manager()
    assert pm.is_blocked("gates") and pm.is_blocked("sinks")


def test_web3_is_imported_only_by_pipelines_that_use_the_polygon_layer():
    """Every plugin is loaded, but web3 and eth_account (about a second of imports) only
    come in when a pipeline builds an RPC pool or a settler."""
    import subprocess
    import sys

    from support import REPO

    code = ("import sys; from pr3dict_core.cli import main; "
            "rc = main(['validate', '--no-environment', sys.argv[1]]); "
            "print(rc, 'web3' in sys.modules, 'eth_account' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code,
                           str(REPO / "pipelines/complement-paper.toml")],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-3:] == ["0", "False", "False"], done.stdout + done.stderr
