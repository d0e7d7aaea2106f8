"""``pr3dict sim``: the paper matching engine behind an aiohttp server that speaks the
Polymarket CLOB and Kalshi Trade API v2 subsets in ``shared/research/venues.md``."""

from __future__ import annotations

from typing import Any

__all__ = ["SimServer"]


def __getattr__(name: str) -> Any:  # the server (aiohttp) is imported when used, not listed
    if name == "SimServer":
        from .server import SimServer

        return SimServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
