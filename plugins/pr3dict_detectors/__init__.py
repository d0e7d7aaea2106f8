"""Built-in detectors."""

from pr3dict_core import hookimpl

from .complement import BinaryComplement


@hookimpl
def pr3dict_register_detectors(registry):  # type: ignore[no-untyped-def]
    registry.add(BinaryComplement)
