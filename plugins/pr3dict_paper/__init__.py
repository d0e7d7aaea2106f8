"""The ``paper`` venue: an embedded exchange simulator built on an in-process matching engine."""
