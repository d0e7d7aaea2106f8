"""Shared pieces of the HTTP venue connectors and the exchange simulator (not a plugin).

Rate limiting, loopback checks, secret paths, local order books fed by snapshots and
deltas, per-order fill accounting, and the mapping of transport failures to the typed
venue errors in ``pr3dict_core.components``.
"""
