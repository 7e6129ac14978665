import pytest


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Metrics are pure Python/NumPy: skip the Keras session reset of tests/conftest.py (~0.2 s a test)."""
    yield
