"""Registers the ``replay`` venue and the ``record`` and ``test`` commands."""

from pr3dict_core import hookimpl

from .venue import ReplayVenue


@hookimpl
def pr3dict_register_venues(registry):  # type: ignore[no-untyped-def]
    registry.add(ReplayVenue)


@hookimpl
def pr3dict_add_commands(subparsers):  # type: ignore[no-untyped-def]
    from .record import add_command

    add_command(subparsers)
