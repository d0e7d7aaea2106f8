"""Registers the ``paper`` venue."""

from pr3dict_core import hookimpl

from .venue import PaperVenue


@hookimpl
def pr3dict_register_venues(registry):  # type: ignore[no-untyped-def]
    registry.add(PaperVenue)
