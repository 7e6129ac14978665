"""Activations by name, so configs stay plain strings.

BERT (Devlin et al.) uses the exact erf GELU; GPT-2 uses the tanh approximation. KerasHub uses the
tanh form for both, so the converter sets `activation="gelu_approximate"` on BERT models it ports.
"""

import keras

ACTIVATIONS = {
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_approximate": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
    "tanh": keras.activations.tanh,
}


def get_activation(name):
    """Returns the activation function called `name`.

    Args:
        name: str, one of `gelu` (exact), `gelu_approximate` (tanh form), `relu`, `tanh`.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]
