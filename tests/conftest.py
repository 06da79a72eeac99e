"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest
import torch

# The command line's --threads auto follows OMP_NUM_THREADS when it is set: pin it to torch's
# count at start, so a test never depends on how busy the machine is (see test_threads.py).
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))

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


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Every test starts with the thread count the suite started with (a command line run in
    the test process may set it)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
