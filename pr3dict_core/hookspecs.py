"""Every pr3dict hook, documented.

Hooks are synchronous and do registration and lifecycle only: pluggy cannot await, and an
async implementation on a ``firstresult`` hook silently stops the call. The hot path is async
methods on the components these hooks register (see ``components.py``).

Plugins import the implementation marker as ``from pr3dict_core import hookimpl``.
Hook arguments are opt-in: an implementation may accept fewer arguments than the spec.

These docstrings are the hook reference's single source: each one appears verbatim (with
````x```` written ```x```) at the top of its section of docs/hooks.md, and
tests/test_hooks.py fails when the two differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .components import Registrar
    from .config import PipelineConfig, SecretRef
    from .metrics import RunSummary
    from .model import Trade

PROJECT = "pr3dict"
hookspec = pluggy.HookspecMarker(PROJECT)

# --------------------------------------------------------------------------- registration


@hookspec
def pr3dict_register_venues(registry: Registrar) -> None:
    """Register venue connector classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.Venue`` and has a ``type`` name and an
    attrs ``Config``; a type name registered twice is an error naming both plugins.
    """


@hookspec
def pr3dict_register_detectors(registry: Registrar) -> None:
    """Register detector classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.Detector`` and has a ``type`` name and an
    attrs ``Config``; a type name registered twice is an error naming both plugins.
    """


@hookspec
def pr3dict_register_execution_strategies(registry: Registrar) -> None:
    """Register execution strategy classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.ExecutionStrategy`` and has a ``type``
    name and an attrs ``Config``; a type name registered twice is an error naming both
    plugins.
    """


@hookspec
def pr3dict_register_risk_gates(registry: Registrar) -> None:
    """Register risk gate classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.RiskGate`` and has a ``type`` name and an
    attrs ``Config``; a type name registered twice is an error naming both plugins.
    """


@hookspec
def pr3dict_register_metrics_sinks(registry: Registrar) -> None:
    """Register metrics sink classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.MetricsSink`` and has a ``type`` name and an
    attrs ``Config``; a type name registered twice is an error naming both plugins.
    """


@hookspec
def pr3dict_register_rpc_providers(registry: Registrar) -> None:
    """Register JSON-RPC provider classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.RpcProvider`` and has a ``type`` name and an
    attrs ``Config``; a type name registered twice is an error naming both plugins.
    """


@hookspec
def pr3dict_register_settlers(registry: Registrar) -> None:
    """Register settler classes with ``registry.add(Class, ...)``.

    Each class satisfies ``pr3dict_core.components.Settler`` and has a ``type`` name and an
    attrs ``Config``; a type name registered twice is an error naming both plugins.
    """


# --------------------------------------------------------------------------- command line


@hookspec
def pr3dict_add_commands(subparsers: Any) -> None:
    """Add ``pr3dict`` subcommands.

    ``subparsers`` is the ``argparse`` sub-parser action. Add a command with
    ``p = subparsers.add_parser("name", help="...")`` and give it a handler with
    ``p.set_defaults(handler=fn)``; ``fn(args, ctx)`` returns the exit code, where ``ctx`` is
    a ``pr3dict_core.cli.CommandContext`` (plugin manager, component registry, stdout,
    stderr, tracer provider).
    """


# --------------------------------------------------------------------------- configuration


@hookspec(firstresult=True)
def pr3dict_resolve_secret(ref: SecretRef) -> str | None:
    """Return the secret ``ref`` points to, or None to let the next plugin try.

    firstresult: the first non-None answer wins. The built-in implementation (``trylast``)
    reads ``{ env = "NAME" }`` from the environment and ``{ file = "path" }`` from disk.
    Secrets never go to logs, spans or metrics.
    """


@hookspec
def pr3dict_check_pipeline(config: PipelineConfig) -> list[Any] | None:
    """Check parts of a loaded pipeline a plugin owns (``[[tests]]``): return
    ``ConfigProblem``s (each with its exact TOML path); ``pr3dict validate`` reports them
    with the core's and exits 78."""


# --------------------------------------------------------------------------- lifecycle


@hookspec
def pr3dict_run_start(config: PipelineConfig, run_id: str) -> None:
    """Called once per run, at the end of ``Engine.start()``.

    By then RPC providers, venues and settlers are started, detectors are bound and
    unfinished trades were recovered from the journal; no new entry has been made. Only an
    engine built with a plugin manager and a config calls it (``pr3dict run``,
    ``Engine.from_file``, ``Engine.from_config``); ``pr3dict validate`` never does.
    """


@hookspec
def pr3dict_run_finish(config: PipelineConfig, run_id: str, summary: RunSummary,
                       exit_code: int) -> None:
    """Called by ``pr3dict run`` once the run is over.

    By then trades in flight and settlements finished; settlers, sinks, venues, RPC
    providers and the journal are closed, telemetry is flushed and the summary is printed.
    ``exit_code`` is the command's exit code: 0, 1 when the run failed or left trades
    unresolved, 78 for a configuration problem found once connected, 130 when interrupted.
    Not called when the pipeline failed to load or build, nor by the Python API.
    """


@hookspec
def pr3dict_trade_finished(trade: Trade) -> None:
    """Called for every trade the engine handled, once it is final or unresolved.

    Final means committed, rolled back, or rejected (by a gate, or by the engine while
    halted). A trade is reported again when it is resolved later and when a settler adds the
    gas it cost. Trades recovered from the journal are reported during ``Engine.start()``,
    before ``pr3dict_run_start``. It runs on the trading loop, after the metrics sinks got
    the trade's record: it must be cheap and must not raise.
    """
