from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real VPR sets beside the repository (../shared/data); skip where absent."""
    if not (SHARED_DATA / "corridor").is_dir() or not (SHARED_DATA / "nordland64").is_dir():
        pytest.skip(f"real VPR data not found at {SHARED_DATA}")
    return SHARED_DATA
