"""Developer sessions: ``nox`` runs tests, lint, typing and pipelines."""

from __future__ import annotations

from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.sessions = ["tests", "lint", "typing", "pipelines"]

PIPELINES = sorted(str(p) for p in Path("pipelines").glob("*.toml"))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (needs `npm ci` for the anvil node)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", "pr3dict_core", "plugins", "tests", "bench", "noxfile.py")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy over the core."""
    session.install("-e", ".", "mypy")
    session.run("mypy", "pr3dict_core")


@nox.session
def pipelines(session: nox.Session) -> None:
    """Validate and run every pipeline in pipelines/."""
    session.install("-e", ".")
    session.run("pr3dict", "validate", *PIPELINES)
    for pipeline in PIPELINES:
        session.run("pr3dict", "run", pipeline, "--cycles", "100", "--quiet")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark and print its table."""
    session.install("-e", ".")
    session.run("python", "bench/run.py", *session.posargs)
