"""Where the shared real data lives. It is never copied into the repository.

`TFM_SHARED_DATA=/some/dir` points the tests elsewhere; `TFM_SHARED_DATA=/nonexistent` simulates a user's
fresh clone (every real-data test skips, the rest must still run).
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("TFM_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared_data(*parts):
    """Path under ../shared/data; skips the test (with the reason) when absent, as on a user's fresh clone."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (present in CI and on developer machines)")
    return path
