"""The ``pr3dict`` console entry point. It installs signal handlers before anything slow is
imported (web3, the venues, OpenTelemetry take about a second): a SIGUSR1 (the kill switch)
sent while pr3dict starts is remembered and honoured once the engine runs, instead of killing
the process with the signal's default action."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

pending: list[int] = []  # signals received before the engine could handle them


def _remember(signum: int, frame: object) -> None:
    pending.append(signum)


def main() -> NoReturn:
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _remember)
    from .cli import run

    run()


if __name__ == "__main__":  # pragma: no cover - python -m pr3dict_core.launch
    sys.exit(main())
