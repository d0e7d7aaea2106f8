"""Registers the ``replay`` venue, the ``record`` and ``test`` commands, and the
``[[tests]]`` check of ``pr3dict validate``.

Cheap to import (the command line imports it to list its commands): the venue, the recorder
and the test runner are imported when used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pr3dict_core import hookimpl


@hookimpl
def pr3dict_register_venues(registry):  # type: ignore[no-untyped-def]
    from .venue import ReplayVenue

    registry.add(ReplayVenue)


@hookimpl
def pr3dict_add_commands(subparsers):  # type: ignore[no-untyped-def]
    _add_record(subparsers)
    _add_test(subparsers)


@hookimpl
def pr3dict_check_pipeline(config):  # type: ignore[no-untyped-def]
    if isinstance(config.tests, list | tuple) and not config.tests:
        return []  # nothing to check: the test runner is not imported
    from .testcmd import check_tests

    return check_tests(config)[1]


def _lazy(module: str, name: str) -> Any:
    """A command handler that imports ``module`` (of this package) when the command runs."""

    def handler(args: Any, ctx: Any) -> int:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(args, ctx)  # type: ignore[no-any-return]

    return handler


def _add_record(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "record", help="record the public market data of a pipeline's venues (no credentials)")
    p.add_argument("pipeline", type=Path, help="the pipeline whose venues to record")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after SECONDS (default: until interrupted)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="the first part (default recordings/PIPELINE-UTC.jsonl.zst)")
    p.add_argument("--snapshot-s", type=float, default=60.0,
                   help="full REST snapshots every SECONDS (default 60)")
    p.add_argument("--poll-ms", type=float, default=500.0,
                   help="Kalshi order books are polled this often (default 500)")
    p.add_argument("--rotate-mb", type=float, help="start a new part after this many MB")
    p.add_argument("--rotate-s", type=float, help="start a new part after this many seconds")
    p.add_argument("--no-kalshi-ws", action="store_true",
                   help="poll Kalshi's public REST order books instead of reading the venue's "
                        "key to sign its websocket handshake")
    p.set_defaults(handler=_lazy("record", "run_record"))



def _add_test(subparsers: Any) -> None:
    p = subparsers.add_parser("test", help="run the [[tests]] of pipeline files")
    p.add_argument("pipelines", nargs="+", type=Path,
                   help="pipeline files whose [[tests]] tables to run")
    p.set_defaults(handler=_lazy("testcmd", "run_tests"))
