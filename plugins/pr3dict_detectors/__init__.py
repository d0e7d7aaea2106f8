"""Built-in detectors: ``binary_complement``, ``cross_venue`` and ``multi_outcome``."""

from pr3dict_core import hookimpl

from .complement import BinaryComplement
from .cross_venue import CrossVenue
from .multi_outcome import MultiOutcome


@hookimpl
def pr3dict_register_detectors(registry):  # type: ignore[no-untyped-def]
    registry.add(BinaryComplement, CrossVenue, MultiOutcome)
