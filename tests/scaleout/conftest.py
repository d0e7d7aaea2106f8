"""A real PostgreSQL server on loopback (``pgserver.py``) for the session; each test gets a
database of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgserver import Postgres, open_root


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    root = tmp_path_factory.mktemp("pg")
    open_root(root)
    server = Postgres(root / "cluster")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database; its password in PR3DICT_TEST_PG_PASSWORD (for secret refs)."""
    monkeypatch.setenv("PR3DICT_TEST_PG_PASSWORD", postgres.password)
    return postgres.url(postgres.create_database())
