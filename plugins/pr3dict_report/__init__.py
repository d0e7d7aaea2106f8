"""The ``pr3dict report`` command: a run's metrics as tables and a self-contained HTML page.

Cheap to import (the command line imports it to list its command): the report module is
imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pr3dict_core import hookimpl

__all__ = ["Report", "find_metrics"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def pr3dict_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="tables and an HTML report of a run's metrics",
        description="Read a run's trade records (a jsonl sink's file) and print tables; "
                    "write a self-contained HTML report with plots.")
    p.add_argument("run", help="run id (or a unique prefix, or 'latest'), run directory, or "
                               "metrics .jsonl file")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where run directories are (default: ./runs)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--html", type=Path, metavar="PATH",
                     help="where to write the HTML report (default: report.html next to the "
                          "metrics file)")
    out.add_argument("--no-html", action="store_true", help="terminal tables only")
    p.add_argument("--recent", type=int, default=10, help="recent trades to list (default 10)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, ctx: Any) -> int:
    from .report import run_command

    return run_command(args, ctx)
