"""The plugin manager factory: hookspecs, entry points, built-ins, blocking. No globals."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any, TextIO

import pluggy

from . import hookspecs
from .components import KINDS, ComponentRegistry, Registrar

ENTRY_POINT_GROUP = "pr3dict"

# Built-ins register through the entry-point group like any plugin; this list makes a
# source checkout (no installed metadata) work too. Name -> module.
BUILTIN_PLUGINS: dict[str, str] = {
    "paper": "pr3dict_paper.plugin",
    "detectors": "pr3dict_detectors",
    "strategies": "pr3dict_strategies",
    "gates": "pr3dict_gates",
    "sinks": "pr3dict_sinks",
    "polygon": "pr3dict_polygon.plugin",
    "report": "pr3dict_report",
    "polymarket": "pr3dict_polymarket.plugin",
    "kalshi": "pr3dict_kalshi.plugin",
    "sim": "pr3dict_sim.plugin",
    "replay": "pr3dict_replay.plugin",
    "core": "pr3dict_core.defaults",
}
# The core defaults (secret resolution) cannot be blocked.
ESSENTIAL_PLUGINS = frozenset({"core"})

_REGISTRATION_HOOKS = {
    "venues": "pr3dict_register_venues",
    "detectors": "pr3dict_register_detectors",
    "strategies": "pr3dict_register_execution_strategies",
    "gates": "pr3dict_register_risk_gates",
    "sinks": "pr3dict_register_metrics_sinks",
    "rpc": "pr3dict_register_rpc_providers",
    "settlers": "pr3dict_register_settlers",
}
assert set(_REGISTRATION_HOOKS) == set(KINDS)


class UsageError(Exception):
    pass


def make_plugin_manager(
    *,
    block: Iterable[str] = (),
    load: Iterable[str] = (),
    autoload: bool | None = None,
    builtins: bool = True,
) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    Order: hookspecs; blocked names (``-p no:NAME`` and ``PR3DICT_DISABLED_PLUGINS``);
    entry points of group ``pr3dict`` (unless ``PR3DICT_DISABLE_PLUGIN_AUTOLOAD``); built-ins
    not already loaded; extra modules named with ``-p MODULE``.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    env_blocked = [n for n in os.environ.get("PR3DICT_DISABLED_PLUGINS", "").split(",") if n]
    for name in [*block, *env_blocked]:
        if name in ESSENTIAL_PLUGINS:
            raise UsageError(f"plugin {name!r} is essential and cannot be blocked")
        pm.set_blocked(name)
    if autoload is None:
        autoload = not os.environ.get("PR3DICT_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if builtins:
        for name, module in BUILTIN_PLUGINS.items():
            if pm.is_blocked(name) or pm.has_plugin(name):
                continue
            pm.register(importlib.import_module(module), name=name)
    for module in load:
        if pm.has_plugin(module) or pm.is_blocked(module):
            continue
        plugin = importlib.import_module(module)
        if not pm.is_registered(plugin):  # already loaded (a built-in, an entry point)
            pm.register(plugin, name=module)
    pm.check_pending()
    if os.environ.get("PR3DICT_TRACE_PLUGINS"):
        trace_hook_calls(pm, sys.stderr)
    return pm


# Hooks whose result is a secret: the trace shows the reference asked for, never the value.
SECRET_HOOKS = frozenset({"pr3dict_resolve_secret"})


def trace_hook_calls(pm: pluggy.PluginManager, stream: TextIO) -> None:
    """Print every hook call and its result (``PR3DICT_TRACE_PLUGINS=1``). Arguments are
    printed as they are (secrets appear only as references, never resolved); the result of
    a secret-resolving hook is withheld."""

    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        plugins = ", ".join(impl.plugin_name for impl in impls)
        print(f"pr3dict: hook {hook_name}({args}) [{plugins}]", file=stream)

    def after(outcome: Any, hook_name: str, impls: Sequence[Any],
              kwargs: Mapping[str, Any]) -> None:
        if outcome.exception is not None:
            result = f"raised {type(outcome.exception).__name__}"
        elif hook_name in SECRET_HOOKS:
            result = "<secret withheld>" if outcome.get_result() is not None else "None"
        else:
            result = _short(outcome.get_result())
        print(f"pr3dict: hook {hook_name} -> {result}", file=stream)

    pm.add_hookcall_monitoring(before, after)


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def collect_components(pm: pluggy.PluginManager) -> ComponentRegistry:
    """Ask every plugin to register its component classes; duplicates name both plugins."""
    registry = ComponentRegistry()
    for kind, hook_name in _REGISTRATION_HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        # Call impls one by one so each registration knows which plugin it came from.
        for impl in reversed(hook.get_hookimpls()):
            kwargs = {"registry": Registrar(registry, kind, impl.plugin_name)}
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
    return registry


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Plugin name -> (distribution, version); built-ins from a source tree report pr3dict."""
    out: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name:
            out[name] = (dist.metadata["name"], dist.version)
    try:
        own = ("pr3dict", metadata.version("pr3dict"))
    except metadata.PackageNotFoundError:
        own = ("pr3dict", "source")
    for name in BUILTIN_PLUGINS:
        if pm.has_plugin(name):
            out.setdefault(name, own)
    return out
