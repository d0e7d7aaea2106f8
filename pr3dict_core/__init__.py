"""pr3dict: declarative, plugin-based execution of prediction-market arbitrage."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("pr3dict")
"""Marker for hook implementations: ``@hookimpl def pr3dict_register_detectors(registry): ...``"""

__all__ = ["hookimpl"]
