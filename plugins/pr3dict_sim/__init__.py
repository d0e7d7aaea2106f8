"""``pr3dict sim``: the paper matching engine behind an aiohttp server that speaks the
Polymarket CLOB and Kalshi Trade API v2 subsets in ``shared/research/venues.md``."""

from .server import SimServer

__all__ = ["SimServer"]
