"""Kalshi Trade API v2 connector (``kalshi`` venue): RSA-PSS auth, V2 orders, aiohttp."""
