"""Registers the ``polymarket`` venue."""

from pr3dict_core import hookimpl

from .venue import PolymarketVenue


@hookimpl
def pr3dict_register_venues(registry):  # type: ignore[no-untyped-def]
    registry.add(PolymarketVenue)
