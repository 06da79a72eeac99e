"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout: verified real data sets (see its README.md).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The shared real-data folder; skipped when absent, but a failure in CI (CI=true), which must
    run the real-data tests."""
    if not (SHARED_DATA / "mnist").is_dir():
        message = f"real data not found at {SHARED_DATA} (expected mnist/ there)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the real-data tests", pytrace=False)
        pytest.skip(message)
    return SHARED_DATA
