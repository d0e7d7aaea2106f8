"""The ``pr3dict report`` command: a run's metrics as tables and a self-contained HTML page."""

from pr3dict_core import hookimpl

from .report import Report, add_command, find_metrics

__all__ = ["Report", "find_metrics"]


@hookimpl
def pr3dict_add_commands(subparsers):  # type: ignore[no-untyped-def]
    add_command(subparsers)
