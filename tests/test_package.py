import os
import subprocess
import sys

ENV = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**ENV, **env}, timeout=120)


def test_import_selects_tensorflow_backend():
    result = _run("import tfm, keras; print(keras.backend.backend())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tensorflow"


def test_import_refuses_another_backend():
    # A Keras already imported with the JAX backend (stood in by a module that reports it).
    fake_keras = (
        "import sys, types; k = types.ModuleType('keras'); "
        "k.backend = types.SimpleNamespace(backend=lambda: 'jax'); sys.modules['keras'] = k; import tfm"
    )
    result = _run(fake_keras)
    assert result.returncode == 1
    assert "Keras was already imported with the 'jax' backend" in result.stderr
    result = _run("import tfm", KERAS_BACKEND="numpy")
    assert "KERAS_BACKEND='numpy'" in result.stderr
