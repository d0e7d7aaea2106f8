"""Every pr3dict hook, documented.

Hooks are synchronous and do registration and lifecycle only: pluggy cannot await, and an
async implementation on a ``firstresult`` hook silently stops the call. The hot path is async
methods on the components these hooks register (see ``components.py``).

Plugins import the implementation marker as ``from pr3dict_core import hookimpl``.
Hook arguments are opt-in: an implementation may accept fewer arguments than the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .components import Registrar
    from .config import PipelineConfig, SecretRef
    from .metrics import RunSummary

PROJECT = "pr3dict"
hookspec = pluggy.HookspecMarker(PROJECT)

# --------------------------------------------------------------------------- registration


@hookspec
def pr3dict_register_venues(registry: Registrar) -> None:
    """Register venue connector classes with ``registry.add(VenueClass, ...)``.

    :param registry: adds classes satisfying :class:`pr3dict_core.components.Venue`; a type
        name registered twice is an error naming both plugins.
    """


@hookspec
def pr3dict_register_detectors(registry: Registrar) -> None:
    """Register detector classes (:class:`pr3dict_core.components.Detector`)."""


@hookspec
def pr3dict_register_execution_strategies(registry: Registrar) -> None:
    """Register execution strategy classes (:class:`pr3dict_core.components.ExecutionStrategy`)."""


@hookspec
def pr3dict_register_risk_gates(registry: Registrar) -> None:
    """Register risk gate classes (:class:`pr3dict_core.components.RiskGate`)."""


@hookspec
def pr3dict_register_metrics_sinks(registry: Registrar) -> None:
    """Register metrics sink classes (:class:`pr3dict_core.components.MetricsSink`)."""


@hookspec
def pr3dict_register_rpc_providers(registry: Registrar) -> None:
    """Register JSON-RPC provider classes (:class:`pr3dict_core.components.RpcProvider`)."""


@hookspec
def pr3dict_register_settlers(registry: Registrar) -> None:
    """Register settler classes (:class:`pr3dict_core.components.Settler`)."""


# --------------------------------------------------------------------------- command line


@hookspec
def pr3dict_add_commands(subparsers: Any) -> None:
    """Add ``pr3dict`` subcommands.

    :param subparsers: the ``argparse`` sub-parser action. Add a command with
        ``p = subparsers.add_parser("name", help="...")`` and give it a handler with
        ``p.set_defaults(handler=fn)``; ``fn(args, ctx)`` returns the exit code, where ``ctx``
        is a :class:`pr3dict_core.cli.CommandContext` (plugin manager, component registry,
        stdout, stderr, tracer provider).
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
    """Called once a pipeline is validated and its components are built, before any order."""


@hookspec
def pr3dict_run_finish(config: PipelineConfig, run_id: str, summary: RunSummary,
                       exit_code: int) -> None:
    """Called after the run stopped, resting orders are cancelled and sinks are closed."""


@hookspec
def pr3dict_trade_finished(trade: Any) -> None:
    """Called for every trade that reached a final state (committed, rolled back, rejected).

    Must be cheap and must not raise: it runs on the trading loop.
    """
