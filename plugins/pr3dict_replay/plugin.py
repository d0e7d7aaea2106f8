"""Registers the ``replay`` venue and the ``record`` and ``test`` commands."""

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


from .testcmd import pr3dict_check_pipeline  # noqa: E402,F401  (validate checks [[tests]])
