"""Shared by the official-client drivers (run in .venv-conformance, not in pr3dict's venv).

Each driver calls one unmodified official client against ``pr3dict sim`` and prints one JSON
object: ``calls`` (name -> "ok" or the error text) and ``values`` (what the test checks).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any


class Run:
    def __init__(self) -> None:
        self.calls: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def call(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one client call; an exception is recorded against ``name``, not raised."""
        try:
            result = fn()
        except Exception as exc:  # the test reports which call failed and why
            self.calls[name] = f"{type(exc).__name__}: {exc}"[:600]
            return None
        self.calls[name] = "ok"
        return result

    def done(self) -> None:
        json.dump({"calls": self.calls, "values": self.values}, sys.stdout, default=str)
        sys.stdout.write("\n")


def main(body: Callable[[Run], None]) -> None:
    run = Run()
    try:
        body(run)
    except Exception:
        run.values["crash"] = traceback.format_exc()[-2000:]
    run.done()
