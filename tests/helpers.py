"""Shared test helpers in the spirit of KerasHub's run_layer_test / run_backbone_test / run_task_test, and the
tiny sizes and real-data slices several test files share."""

import copy
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tests.data_paths import shared_data

# The tiny backbones the task tests build on (hidden 8, vocabulary 30); a test that needs another size overrides
# keys (`{**TINY_BERT, "hidden_dim": 32}`).
TINY_BERT = {"vocabulary_size": 30, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "intermediate_dim": 16,
             "max_sequence_length": 12}
TINY_GPT = {**TINY_BERT, "num_layers": 2}


def shared_sentences(dataset, split="train", count=None):
    """Text column of the first `count` rows of `../shared/data/DATASET/SPLIT.tsv` (`label<TAB>text` files: `sst2`,
    `chnsenticorp`); skips the test where the shared data is absent.

    Args:
        dataset: str, folder under the shared data (`"sst2"`).
        split: str, `"train"` or `"dev"`.
        count: int, rows to read after the header (all when None).
    """
    rows = shared_data(dataset, f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [row.split("\t", 1)[1] for row in rows[:count]]


def _first_output(outputs):
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    return outputs


def _to_numpy(outputs):
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), outputs)


def _symbolic(data):
    return keras.tree.map_structure(
        lambda a: keras.KerasTensor((None,) + tuple(np.shape(a))[1:], dtype=str(np.asarray(a).dtype)), data
    )


def _shapes(outputs, drop_batch=False):
    """Shapes as plain tuples (a dict of them for dict outputs); tuples are not tree structures here."""
    def shape(t):
        return tuple(t.shape)[1:] if drop_batch else tuple(t.shape)

    if isinstance(outputs, dict):
        return {k: shape(v) for k, v in outputs.items()}
    return shape(outputs)


def _drop_batch(expected):
    if isinstance(expected, dict):
        return {k: tuple(v)[1:] for k, v in expected.items()}
    return tuple(expected)[1:]


MIXED_POLICIES = (("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16"))


def _named_outputs(outputs):
    """`[(key, tensor)]`: dict keys, tuple/list indices, or `[(0, tensor)]` for a single tensor."""
    if isinstance(outputs, dict):
        return list(outputs.items())
    if isinstance(outputs, (tuple, list)):
        return list(enumerate(outputs))
    return [(0, outputs)]


def assert_output_dtypes(outputs, compute_dtype, float32_outputs=()):
    """Every output is exactly `compute_dtype`, except those named in `float32_outputs`, which are float32.

    Args:
        outputs: a tensor, or a dict/tuple/list of tensors (one level).
        compute_dtype: str, the policy's compute dtype (e.g. `"float16"`).
        float32_outputs: keys or indices of the outputs the contract keeps in float32.
    """
    named = _named_outputs(outputs)
    unknown = set(float32_outputs) - {key for key, _ in named}
    assert not unknown, f"float32_outputs {sorted(unknown, key=str)} are not outputs of the model"
    got = {key: keras.backend.standardize_dtype(t.dtype) for key, t in named}
    expected = {key: "float32" if key in float32_outputs else compute_dtype for key, _ in named}
    assert got == expected, f"output dtypes {got} != {expected} under a {compute_dtype} compute policy"


def assert_float32_variables(layer):
    """Mixed precision keeps every variable in float32."""
    wrong = {w.path: w.dtype for w in layer.weights if w.dtype != "float32"}
    assert not wrong, f"variables not in float32: {wrong}"


def assert_allclose_structure(actual, expected, atol=1e-5, rtol=1e-5):
    keras.tree.assert_same_structure(actual, expected)
    for a, e in zip(keras.tree.flatten(_to_numpy(actual)), keras.tree.flatten(_to_numpy(expected))):
        np.testing.assert_allclose(a, e, atol=atol, rtol=rtol)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    call_kwargs=None,
    expected_trainable_params=None,
    float32_outputs=(),
):
    """Checks a layer: eager and symbolic shapes, dtypes, exact weight counts, config round trip,
    and mixed precision (bfloat16 and float16 compute, float32 variables).

    Args:
        float32_outputs: output keys or indices the layer's contract keeps in float32 under a mixed policy;
            every other output must be exactly in the compute dtype.
    """
    call_kwargs = call_kwargs or {}
    layer = layer_cls(**init_kwargs)
    outputs = layer(input_data, **call_kwargs)
    assert _shapes(outputs) == expected_output_shape
    assert_output_dtypes(outputs, "float32")
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if expected_trainable_params is not None:
        assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected_trainable_params
    # Every sublayer weight has a stable, explicit path (these are checkpoint keys).
    assert all(w.path.startswith(layer.name + "/") for w in layer.weights)

    config = layer.get_config()
    restored = layer_cls.from_config(config)
    assert restored.get_config() == config

    symbolic_out = layer_cls(**init_kwargs)(_symbolic(input_data), **call_kwargs)
    assert _shapes(symbolic_out, drop_batch=True) == _drop_batch(expected_output_shape)

    for policy, compute in MIXED_POLICIES:
        mixed = layer_cls(**init_kwargs, dtype=policy)
        assert_output_dtypes(mixed(input_data, **call_kwargs), compute, float32_outputs)
        assert_float32_variables(mixed)
    return layer


def run_backbone_test(
    model_cls, init_kwargs, input_data, expected_output_shape, expected_num_params, float32_outputs=()
):
    """Checks a functional model: shapes, exact parameter count, config round trip, `.keras` save/load
    equality, mixed precision, variable sequence lengths, and predict on arrays == on a tf.data dataset.

    Args:
        float32_outputs: output keys (dict outputs) or indices that the model's contract keeps in float32
            under a mixed policy (e.g. logits feeding a loss); every other output must be in the compute dtype.
    """
    model = model_cls(**init_kwargs)
    outputs = model(input_data)
    assert _shapes(outputs) == expected_output_shape
    assert_output_dtypes(outputs, "float32")
    assert model.count_params() == expected_num_params
    assert len(model.non_trainable_weights) == 0

    config = model.get_config()
    assert model_cls.from_config(config).get_config() == config

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    assert type(restored) is model_cls
    assert_allclose_structure(restored(input_data), outputs, atol=0, rtol=0)

    # Shorter sequences run through the same weights.
    short = keras.tree.map_structure(lambda a: a[:, : a.shape[1] - 2] if a.ndim == 2 and a.shape[1] > 4 else a, input_data)
    short_out = model(short)
    assert _first_output(short_out).shape[1] == _first_output(outputs).shape[1] - 2

    batch = np.shape(keras.tree.flatten(input_data)[0])[0]
    predicted = model.predict(input_data, batch_size=batch, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(input_data).batch(2)
    assert_allclose_structure(model.predict(dataset, verbose=0), predicted, atol=1e-6, rtol=1e-6)

    for policy, compute in MIXED_POLICIES:
        mixed = model_cls(**init_kwargs, dtype=policy)
        assert_output_dtypes(mixed(input_data), compute, float32_outputs)
        assert_float32_variables(mixed)
        assert mixed.count_params() == expected_num_params
    return model



def _without_dropout(config):
    """A task config (and its backbone's) with every `dropout` at 0, so a training step is deterministic."""
    config = copy.deepcopy(config)
    for part in (config, config["backbone"]["config"]):
        if "dropout" in part:
            part["dropout"] = 0.0
    return config


def run_task_test(task_cls, init_kwargs, input_data, labels, expected_output_shape, expected_head_params=None,
                  sample_weight=None, fit_metrics=None, untrained_weights=()):
    """Checks a task: output shapes and float32 dtypes (eager and symbolic), exact head size, config round trip,
    `.keras` save/load equality, mixed precision (float32 outputs over a backbone computing in the mixed dtype),
    and one `fit` step of the `compile()` defaults reporting the task's own `loss_sums` ratio while moving every
    trainable weight the loss reaches.

    The fit step runs on a copy rebuilt from the config with every `dropout` at 0: the loss Keras reports for
    the first step is then the loss of the initial weights, which `loss_sums` gives exactly.

    Args:
        task_cls: the `tfm.tasks.Task` subclass.
        init_kwargs: dict of constructor arguments; `"backbone"` is a tiny built backbone.
        input_data: dict of arrays, one batch of the task's inputs.
        labels: that batch's labels, as `fit` and `loss_sums` take them.
        expected_output_shape: tuple, or a dict of tuples for dict outputs (eager shapes; symbolic ones have a
            `None` batch).
        expected_head_params: int, parameters the task adds to its backbone (exact), or None to skip the count.
        sample_weight: optional weights, as `fit` and `loss_sums` take them.
        fit_metrics: dict `{fit history key: metrics_from_sums key}` that the fit step must report equal too
            (default `{"accuracy": "accuracy"}`).
        untrained_weights: paths of the trainable weights the task's loss does not reach (BERT's pooler under a
            token-level head): exactly these stay unchanged by the fit step.

    Returns:
        The task built from `init_kwargs`.
    """
    fit_metrics = {"accuracy": "accuracy"} if fit_metrics is None else fit_metrics
    backbone = init_kwargs["backbone"]
    model = task_cls(**init_kwargs)
    outputs = model(input_data)
    assert _shapes(outputs) == expected_output_shape
    assert_output_dtypes(outputs, "float32")
    symbolic = model(_symbolic(input_data))
    assert _shapes(symbolic, drop_batch=True) == _drop_batch(expected_output_shape)
    assert_output_dtypes(symbolic, "float32")
    if expected_head_params is not None:
        head = model.count_params() - backbone.count_params()
        assert head == expected_head_params, f"the task adds {head} parameters to its backbone"

    config = model.get_config()
    assert task_cls.from_config(copy.deepcopy(config)).get_config() == config

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "task.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    assert type(restored) is task_cls and type(restored.backbone) is type(backbone)
    assert restored.get_config() == config
    assert_allclose_structure(restored(input_data), outputs, atol=0, rtol=0)

    # The backbone takes (-1, length) inputs: a (B, choices, T) batch is flattened as MultipleChoice does.
    backbone_inputs = {k: np.reshape(input_data[k], (-1, np.shape(input_data[k])[-1])) for k in backbone.input}
    previous = keras.config.dtype_policy()
    try:
        for policy, compute in MIXED_POLICIES:
            keras.config.set_dtype_policy(policy)
            mixed_backbone = type(backbone).from_config({**backbone.get_config(), "dtype": policy})
            mixed = task_cls(**{**init_kwargs, "backbone": mixed_backbone})
            mixed_outputs = mixed(input_data)
            assert_output_dtypes(mixed_outputs, compute, [key for key, _ in _named_outputs(mixed_outputs)])
            assert_output_dtypes(mixed.backbone(backbone_inputs), compute)
            assert_float32_variables(mixed)
            assert mixed.count_params() == model.count_params()
    finally:
        keras.config.set_dtype_policy(previous)

    trained = task_cls.from_config(_without_dropout(config))
    trained.compile()
    predicted = trained(input_data)
    loss, weight = trained.loss_sums(labels, predicted, sample_weight)
    expected_metrics = trained.metrics_from_sums(trained.metric_sums(labels, predicted, sample_weight))
    before = [np.array(w) for w in trained.trainable_weights]
    batch = len(keras.tree.flatten(input_data)[0])
    history = trained.fit(input_data, labels, sample_weight=sample_weight, batch_size=batch, epochs=1,
                          verbose=0).history
    np.testing.assert_allclose(history["loss"][0], float(loss) / float(weight), rtol=1e-5)
    for key, name in fit_metrics.items():
        # Losses carry the loss's float32 rounding; accuracies are ratios of small counts.
        rtol = 1e-5 if key.endswith("loss") else 1e-6
        np.testing.assert_allclose(history[key][0], expected_metrics[name], rtol=rtol, err_msg=key)
    unchanged = [w.path for w, b in zip(trained.trainable_weights, before) if np.all(np.array(w) == b)]
    assert unchanged == list(untrained_weights), f"unchanged by the fit step: {unchanged}"
    return model


def abstract_param_count(build):
    """Parameter count of the model `build()` returns, without allocating its weights (for multi-GB presets).

    Variables created in a `keras.StatelessScope(initialize_variables=False)` keep their shapes but defer
    their values; they are dropped from Keras' pending-initialisation list on exit, so nothing is allocated.

    Args:
        build: callable returning a built Keras model (or layer).
    """
    from keras.src.backend.common import global_state

    try:
        with keras.StatelessScope(initialize_variables=False):
            model = build()
            assert all(w._value is None for w in model.weights), "weights were allocated"
            return model.count_params()
    finally:
        global_state.set_global_attribute("uninitialized_variables", [])


def keras_hub_preset_params(family, preset):
    """The `params` KerasHub publishes in its preset metadata (shipped in the installed package).

    Args:
        family: str, KerasHub model folder (`"bert"`, `"gpt2"`).
        preset: str, KerasHub preset name (e.g. `"gpt2_base_en"`).
    """
    import importlib

    module = importlib.import_module(f"keras_hub.src.models.{family}.{family}_presets")
    return module.backbone_presets[preset]["metadata"]["params"]


def randomize_weights(model, seed=0):
    """Sets every weight (biases and LayerNorm too) to random values, so parity checks cover them all."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.2, size=w.shape).astype(w.dtype))


def start_process(args, log_path, **kwargs):
    """`subprocess.Popen(args)` with its output in the file `log_path`, not a pipe: a process nobody is reading
    yet (one started ahead, beside another) must not block on a full pipe."""
    import subprocess

    log = open(log_path, "w+")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kwargs)
    process.log = log
    return process


def wait_process(process, timeout):
    """Waits for a `start_process` process (killed at `timeout`) and asserts it succeeded, with its output's tail."""
    wait_processes([process], timeout)


def wait_processes(processes, timeout):
    """Waits for `start_process` processes that work together (one deadline; all killed at it, since one that hangs
    usually waits on another) and asserts each succeeded, with every one's output tail in the message."""
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    reports = []
    for process in processes:
        process.log.seek(0)
        output = process.log.read()
        process.log.close()
        reports.append(f"{process.args} exited {process.returncode}; its output ends:\n{output[-3000:]}")
    failed = timed_out or any(process.returncode != 0 for process in processes)
    assert not failed, (f"killed after {timeout} s\n" if timed_out else "") + "\n\n".join(reports)


def free_ports(count):
    """`count` distinct free localhost ports outside the kernel's ephemeral range. A port from that range (what
    binding port 0 returns) can be taken by any outgoing connection before the server that should listen on it
    starts, including a gRPC client's own retries to it, which can then connect to themselves."""
    import random
    import socket

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split()[:2])
    except (OSError, ValueError):
        low, high = 32768, 60999
    # Below the range where it leaves room (the usual Linux 32768-60999), else above it.
    start, stop = (10000, low) if low - 10000 >= 1000 else (high + 1, 65536)
    rng = random.Random()
    ports = []
    while len(ports) < count:
        port = rng.randrange(start, stop) if stop - start >= 1000 else 0  # no room: any port the kernel gives
        with socket.socket() as s:
            try:
                s.bind(("localhost", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


class StandaloneRunner:
    """tests/export/standalone_runner.py in a fresh process that imports only tensorflow + tensorflow_text,
    started at once so its start-up and its answers overlap the caller's exports; `submit` queues requests
    (`[{"dir", "signature", "inputs"}]`), `finish` returns `{"results", "forbidden_modules"}` for all of them."""

    def __init__(self, workdir):
        import sys
        from pathlib import Path

        self.queue = Path(workdir) / "standalone_queue"
        self.queue.mkdir(parents=True)
        self.batches = 0
        runner = Path(__file__).parent / "export" / "standalone_runner.py"
        self.process = start_process([sys.executable, str(runner), str(self.queue)], self.queue / "runner.log",
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})

    def submit(self, requests):
        import pickle

        partial = self.queue / f"partial_{self.batches}.pkl"
        with open(partial, "wb") as f:
            pickle.dump(requests, f)
        partial.rename(self.queue / f"requests_{self.batches}.pkl")  # whole files only: the runner polls
        self.batches += 1

    def stop(self):
        """Ends the process (a caller that failed before `finish`: the runner would wait for batches forever)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def finish(self, timeout=600):
        import pickle

        self.submit(None)
        wait_process(self.process, timeout)
        with open(self.queue / "results.pkl", "rb") as f:
            return pickle.load(f)


def run_standalone(requests, workdir, timeout=600):
    """Runs `requests` (`[{"dir", "signature", "inputs"}]`) in a fresh process that imports only tensorflow +
    tensorflow_text (`StandaloneRunner`); returns its `{"results", "forbidden_modules"}`."""
    runner = StandaloneRunner(workdir)
    runner.submit(requests)
    return runner.finish(timeout)
