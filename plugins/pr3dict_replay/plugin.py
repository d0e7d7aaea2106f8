"""Registers the ``replay`` venue, the ``record`` and ``test`` commands, and the
``[[tests]]`` check of ``pr3dict validate``."""

from pr3dict_core import hookimpl

from .venue import ReplayVenue


@hookimpl
def pr3dict_register_venues(registry):  # type: ignore[no-untyped-def]
    registry.add(ReplayVenue)


@hookimpl
def pr3dict_add_commands(subparsers):  # type: ignore[no-untyped-def]
    from . import record, testcmd

    record.add_command(subparsers)
    testcmd.add_command(subparsers)


@hookimpl
def pr3dict_check_pipeline(config):  # type: ignore[no-untyped-def]
    from .testcmd import check_tests

    return check_tests(config)[1]
