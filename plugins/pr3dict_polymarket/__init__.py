"""Polymarket CLOB connector (``polymarket`` venue): EIP-712 orders, L1/L2 auth, aiohttp."""
