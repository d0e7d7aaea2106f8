"""The plugin manager factory: hookspecs, entry points, built-ins, blocking. No globals.

Plugins listed in the ``pr3dict.components`` entry-point index are known by name until one of
their components (or commands) is needed: reading entry points imports nothing, so a paper
pipeline never pays for web3 or the venue connectors it does not use (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any, TextIO

import attrs
import pluggy

from . import hookspecs
from .components import KINDS, ComponentRegistry, Registrar
from .model import Pr3dictError

ENTRY_POINT_GROUP = "pr3dict"
# ``"<kind>.<type>" = "<plugin module>"``: what a plugin provides, read without importing it.
# Kinds are the component kinds (``venues``, ...) and ``commands`` (``pr3dict`` subcommands).
INDEX_GROUP = "pr3dict.components"
COMMANDS = "commands"

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


class PluginIndexError(Pr3dictError):
    """A plugin's ``pr3dict.components`` entry points promise what its hooks do not register."""


@attrs.frozen
class DeferredPlugin:
    """A plugin known from the entry-point index only: imported on first need."""

    name: str
    module: str
    provides: tuple[tuple[str, str], ...]  # (kind, type name), kind may be "commands"
    dist: tuple[str, str] | None = None  # (distribution, version)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus plugins listed in the index that are not imported yet.

    ``indexed`` holds every plugin whose components come from the index (imported or not):
    ``collect_components`` never calls their registration hooks up front.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.deferred: dict[str, DeferredPlugin] = {}
        self.indexed: dict[str, DeferredPlugin] = {}
        self.dists: dict[str, tuple[str, str]] = {}

    def load_deferred(self, name: str) -> object:
        """Import and register the indexed plugin ``name`` (once)."""
        spec = self.deferred.pop(name, None)
        if spec is None:
            return self.get_plugin(name)
        try:
            plugin = importlib.import_module(spec.module)
        except ImportError as exc:  # named in the index, but broken: say which plugin
            raise PluginIndexError(f"plugin {name!r} ({spec.module}) cannot be imported: "
                                   f"{exc}") from exc
        if not self.is_registered(plugin):
            self.register(plugin, name=name)
            self.check_pending()
        return plugin

    def load_providing(self, kind: str) -> None:
        """Import every deferred plugin that provides something of ``kind`` (``commands``
        before the command line is built)."""
        for spec in list(self.deferred.values()):
            if any(k == kind for k, _ in spec.provides):
                self.load_deferred(spec.name)

    def plugin_names(self) -> list[str]:
        """Every plugin, imported or deferred."""
        names = {n for n in (self.get_name(p) for p in self.get_plugins()) if n}
        return sorted(names | set(self.deferred))


def read_index() -> dict[str, list[tuple[str, str]]]:
    """Plugin module -> [(kind, type name)] from the installed ``pr3dict.components`` entry
    points (importlib.metadata only: nothing is imported)."""
    index: dict[str, list[tuple[str, str]]] = {}
    for ep in metadata.entry_points(group=INDEX_GROUP):
        kind, _, name = ep.name.partition(".")
        index.setdefault(ep.value.strip(), []).append((kind, name))
    return index


def _check_index(index: Mapping[str, list[tuple[str, str]]]) -> None:
    for module, provides in index.items():
        for kind, name in provides:
            if (kind not in KINDS and kind != COMMANDS) or not name:
                raise PluginIndexError(
                    f"entry point {kind}.{name} = {module!r} in group {INDEX_GROUP!r}: the "
                    f"name must be <kind>.<type> with kind one of "
                    f"{', '.join([*KINDS, COMMANDS])}")


def make_plugin_manager(
    *,
    block: Iterable[str] = (),
    load: Iterable[str] = (),
    autoload: bool | None = None,
    builtins: bool = True,
) -> PluginManager:
    """Build a fresh plugin manager.

    Order: hookspecs; blocked names (``-p no:NAME`` and ``PR3DICT_DISABLED_PLUGINS``);
    entry points of group ``pr3dict`` (unless ``PR3DICT_DISABLE_PLUGIN_AUTOLOAD``); built-ins
    not already loaded; extra modules named with ``-p MODULE``. A plugin whose module is in
    the ``pr3dict.components`` index is deferred (named, not imported); the others, and
    ``-p`` modules, are imported now.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    env_blocked = [n for n in os.environ.get("PR3DICT_DISABLED_PLUGINS", "").split(",") if n]
    for name in [*block, *env_blocked]:
        if name in ESSENTIAL_PLUGINS:
            raise UsageError(f"plugin {name!r} is essential and cannot be blocked")
        pm.set_blocked(name)
    index = read_index()
    _check_index(index)
    if autoload is None:
        autoload = not os.environ.get("PR3DICT_DISABLE_PLUGIN_AUTOLOAD")

    def add(name: str, module: str, dist: tuple[str, str] | None) -> None:
        if pm.is_blocked(name) or pm.has_plugin(name) or name in pm.deferred:
            return
        if dist is not None:
            pm.dists[name] = dist
        if module in index:
            spec = DeferredPlugin(name, module, tuple(index[module]), dist)
            pm.deferred[name] = pm.indexed[name] = spec
        else:
            pm.register(importlib.import_module(module), name=name)

    if autoload:
        for dist in metadata.distributions():
            for ep in dist.entry_points:
                if ep.group == ENTRY_POINT_GROUP:
                    if ep.attr:  # ``module:object``: the object is the plugin, never deferred
                        if not (pm.is_blocked(ep.name) or pm.has_plugin(ep.name)):
                            pm.register(ep.load(), name=ep.name)
                            pm.dists[ep.name] = (dist.metadata["name"], dist.version)
                        continue
                    add(ep.name, ep.value.strip(), (dist.metadata["name"], dist.version))
    if builtins:
        for name, module in BUILTIN_PLUGINS.items():
            add(name, module, None)
    for module in load:
        if pm.has_plugin(module) or pm.is_blocked(module):
            continue
        for spec in list(pm.deferred.values()):
            if spec.module == module:  # ``-p`` names a deferred plugin's module: import it
                pm.load_deferred(spec.name)
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
    """Ask every plugin to register its component classes; duplicates name both plugins.

    Components of indexed plugins are entered from the index without importing them; the
    plugin is imported when a component's class is first asked for.
    """
    registry = ComponentRegistry()
    indexed: Mapping[str, DeferredPlugin] = getattr(pm, "indexed", {})
    _register(pm, registry, lambda plugin: plugin not in indexed)
    for spec in indexed.values():
        if pm.is_blocked(spec.name):
            continue
        for kind, name in spec.provides:
            if kind in KINDS:
                registry.add_deferred(kind, name, spec.name, _loader(pm, spec.name, kind, name))
    return registry


def _register(pm: pluggy.PluginManager, registry: ComponentRegistry, which: Any,
              kinds: Iterable[str] = KINDS) -> None:
    for kind in kinds:
        hook = getattr(pm.hook, _REGISTRATION_HOOKS[kind])
        # Call impls one by one so each registration knows which plugin it came from.
        for impl in reversed(hook.get_hookimpls()):
            if not which(impl.plugin_name):
                continue
            kwargs = {"registry": Registrar(registry, kind, impl.plugin_name)}
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})


def _loader(pm: pluggy.PluginManager, plugin: str, kind: str, name: str) -> Any:
    def load() -> type:
        pm.load_deferred(plugin)  # type: ignore[attr-defined]
        own = ComponentRegistry()
        _register(pm, own, lambda p: p == plugin, [kind])  # only this kind's hook
        reg = own.get(kind, name)
        if reg is None:
            raise PluginIndexError(
                f"plugin {plugin!r} lists {kind}.{name} in its {INDEX_GROUP!r} entry points "
                f"but registers no {KINDS[kind]} of type {name!r}")
        return reg.cls  # type: ignore[no-any-return]

    return load


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Plugin name -> (distribution, version); built-ins from a source tree report pr3dict."""
    out: dict[str, tuple[str, str]] = dict(getattr(pm, "dists", {}))
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name:
            out[name] = (dist.metadata["name"], dist.version)
    try:
        own = ("pr3dict", metadata.version("pr3dict"))
    except metadata.PackageNotFoundError:
        own = ("pr3dict", "source")
    names = pm.plugin_names() if isinstance(pm, PluginManager) else [
        pm.get_name(p) for p in pm.get_plugins()]
    for name in BUILTIN_PLUGINS:
        if name in names:
            out.setdefault(name, own)
    return out
