from __future__ import annotations

from pathlib import Path

import pytest
from support import DEMO_SCENARIO


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """Write a pipeline file into tmp_path; ``{demo}`` expands to the demo scenario path."""

    def write(text: str, name: str = "pipeline.toml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{demo}", str(DEMO_SCENARIO)))
        return path

    return write
