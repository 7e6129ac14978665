"""Every docstring example in every `tfm` module runs and prints what it shows (one doctest pass over the package)."""

import doctest
import functools
import importlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfm
from tests.conftest import TEST_SEED

MODULES = sorted(info.name for info in pkgutil.walk_packages(tfm.__path__, "tfm."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
GLOBALS = {"tfm": tfm, "keras": keras, "np": np, "tf": tf}

# Exactly the counts the per-file runners this file replaced asserted (tests/tasks/test_*.py): an example
# dropped from these docstrings fails here.
EXPECTED_EXAMPLES = {
    "tfm.convert.hugging_face": 5,
    "tfm.tasks.text_embedder": 5,
    "tfm.tasks.multiple_choice": 2,
    "tfm.tasks.span_qa": 4,
    "tfm.tasks.tagging": 4,
    "tfm.tasks.text_classifier": 2,
    "tfm.tasks.token_classifier": 4,
}
# At least this many: the floors the replaced runners of the decoder and metrics modules asserted.
MINIMUM_EXAMPLES = {
    "tfm.metrics.classification": 1,
    "tfm.metrics.sequence_labeling": 1,
    "tfm.metrics.squad": 1,
    "tfm.tasks.entity_chunks": 2,
    "tfm.tasks.samplers": 2,
    "tfm.tasks.span_search": 2,
}
# Measured: 100 examples in 34 modules (about 10 s of examples on a 2-core AMD EPYC). The floor leaves room to
# trim a few; a discovery that finds nothing fails.
MINIMUM_TOTAL = 90


def _extra_globals(name):
    if name == "tfm.training.config_core":  # its examples use the schema classes defined in tfm.training.config
        from tfm.training import config

        return {**vars(config), **GLOBALS}
    return GLOBALS


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Overrides tests/conftest.py's: most modules have no examples, and clearing the Keras session after
    each of them would cost about 0.25 s (20 s in all); `_run` clears it after the modules that build models."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@functools.cache
def _run(name):
    """`doctest.TestResults` of one module (cached: the total below reuses the per-module runs)."""
    module = importlib.import_module(name)
    keras.utils.set_random_seed(TEST_SEED)
    result = doctest.testmod(module, extraglobs=_extra_globals(name), optionflags=FLAGS, report=False)
    if result.attempted:
        keras.backend.clear_session()
    return result


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = _run(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the captured stdout)"
    if name in EXPECTED_EXAMPLES:
        assert result.attempted == EXPECTED_EXAMPLES[name]
    assert result.attempted >= MINIMUM_EXAMPLES.get(name, 0)


def test_examples_were_found():
    assert set(EXPECTED_EXAMPLES) | set(MINIMUM_EXAMPLES) <= set(MODULES)
    counts = {name: _run(name).attempted for name in MODULES}
    assert sum(counts.values()) >= MINIMUM_TOTAL, counts
