"""tfm: a TensorFlow / Keras 3 NLP model zoo.

Importing tfm selects Keras' TensorFlow backend (when KERAS_BACKEND is unset) because
tf.data, tf-text, tf.distribute and SavedModel export are TensorFlow. Subpackages are
imported on first attribute access so `import tfm` stays cheap.
"""

import importlib
import os
import sys

__version__ = "0.1.0"


def _select_tensorflow_backend():
    if "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
        if backend != "tensorflow":
            raise ImportError(
                f"tfm needs Keras' 'tensorflow' backend, but Keras was already imported with the "
                f"'{backend}' backend. Set KERAS_BACKEND=tensorflow before importing keras, "
                f"or import tfm first."
            )
        return
    requested = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if requested != "tensorflow":
        raise ImportError(
            f"tfm needs Keras' 'tensorflow' backend, but KERAS_BACKEND={requested!r}. "
            f"Unset it or set KERAS_BACKEND=tensorflow."
        )


_select_tensorflow_backend()
# TensorFlow C++ start-up chatter (CUDA probes, oneDNN notices) hides real output; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_SUBPACKAGES = ("layers", "models", "tasks", "data", "training", "export", "convert", "metrics", "peft", "retrieval",
                "compression", "kernels")


def __getattr__(name):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"tfm.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'tfm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
