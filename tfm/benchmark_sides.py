"""The timed contenders of `tfm bench`: tfm's Trainer step and `fit`, KerasHub's `fit`, both libraries'
greedy `generate`. Each is a `Side` whose `run(n)` performs `n` steps (or generate calls) and returns seconds."""

import dataclasses
import tempfile
import time
import warnings

import numpy as np

GENERATE_SAMPLER = "greedy"


def _output_shape(model, x):
    import keras

    spec = model.compute_output_spec({k: keras.KerasTensor(v.shape, v.dtype) for k, v in x.items()})
    return list(spec.shape)


@dataclasses.dataclass
class Side:
    """A timed contender: `run(n)` performs `n` steps (or generate calls) and returns the seconds taken.

    `tokens_per_step` is counted from what the side itself reports (the Trainer's token count, the
    generated-token mask), so equal values on both sides mean equal work.
    """

    name: str
    run: object
    tokens_per_step: float = 0.0
    output_shape: list = None


def _adamw():
    import keras

    from tfm.training.optimizer import NO_WEIGHT_DECAY

    optimizer = keras.optimizers.AdamW(5e-5, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


def fit_side(name, model, batch, jit_compile=True):
    """`model.fit(jit_compile=...)` on a repeated batch, timed from the first step's start to the last's end."""
    import keras
    import tensorflow as tf

    class StepTimer(keras.callbacks.Callback):
        """Leaves fit's per-call set-up (iterator, callbacks) out, so short rounds are not dominated by it."""

        last = 0

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch == self.last:
                keras.ops.convert_to_numpy(logs["loss"])  # wait for the step (dispatch may be asynchronous)
                self.end = time.perf_counter()

    model.compile(optimizer=_adamw(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()], jit_compile=jit_compile)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    timer = StepTimer()

    def run(steps):
        timer.last = steps - 1
        with warnings.catch_warnings():  # MLM trains no pooler: Keras warns about its missing gradients
            warnings.filterwarnings("ignore", message="Gradients do not exist")
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        return timer.end - timer.start

    return Side(name, run, float(batch[0]["padding_mask"].sum()), _output_shape(model, batch[0]))


def trainer_side(name, model, batch, case, mixed_precision="float32", jit_compile=True):
    """`tfm.training.Trainer` steps (the `tfm train` path) on a repeated batch; returns `(side, cleanup)`."""
    import shutil

    import tensorflow as tf

    from tfm.training.config import TrainerConfig
    from tfm.training.trainer import Trainer

    config = TrainerConfig(steps=10**9, batch_size=case.batch_size, learning_rate=5e-5, strategy="default",
                           mixed_precision=mixed_precision, jit_compile=jit_compile)
    run_dir = tempfile.mkdtemp(prefix="tfm_bench_")
    data = tf.data.Dataset.from_tensors(batch).repeat()
    trainer = Trainer(config, run_dir, lambda: model, lambda batch_size, context: data, verbose=False)
    side = Side(name, None, output_shape=_output_shape(model, batch[0]))

    def run(steps):
        start = time.perf_counter()
        for _ in range(steps):
            _, _, tokens = trainer.train_step()
        side.tokens_per_step = float(tokens)  # the Trainer's own count; converting also waits for the step
        return time.perf_counter() - start

    side.run = run
    return side, lambda: shutil.rmtree(run_dir, ignore_errors=True)


def generate_sides(ours, theirs, prompt, new_tokens):
    """Greedy `generate` of both: tfm's `CausalLM.generate` (one compiled prefill + while_loop) and KerasHub's
    `GPT2CausalLM.generate` on the prompt right-padded to its final length (no preprocessor)."""
    theirs.compile(sampler=GENERATE_SAMPLER)  # jit_compile defaults to True
    padded = {"token_ids": np.pad(prompt, [[0, 0], [0, new_tokens]]),
              "padding_mask": np.pad(np.ones_like(prompt), [[0, 0], [0, new_tokens]])}
    calls = {"tfm": lambda: ours.generate(prompt, max_new_tokens=new_tokens, sampler=GENERATE_SAMPLER, seed=0),
             "keras_hub": lambda: theirs.generate(padded, stop_token_ids=None)}
    sides = []
    for name, call in calls.items():
        side = Side(name, None)

        def run(n, side=side, call=call):
            start = time.perf_counter()
            for _ in range(n):
                out = call()  # numpy arrays on both sides: the call has finished
            elapsed = time.perf_counter() - start
            side.tokens_per_step = float(np.sum(out["padding_mask"]) - prompt.size)  # generated tokens
            side.output_shape = list(np.shape(out["token_ids"]))
            return elapsed

        side.run = run
        sides.append(side)
    return sides
