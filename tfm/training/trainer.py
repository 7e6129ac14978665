"""The custom distributed training loop used by `tfm train` (model.fit stays available for tasks).

Why not `model.fit`: Keras 3.15's fit fails under MultiWorkerMirroredStrategy (keras#20585), and a
custom loop with a lazily built optimizer fails under any strategy (keras#23085), so the optimizer is
built inside the scope before the first step.

One step: each replica runs `accumulation` micro-batches through an XLA-compiled forward/backward that
returns gradient *sums*; the replicas all-reduce gradients, loss sums and weight (token) counts, divide
by the global weight (an exact token-weighted mean over the global batch), then AdamW applies them.
"""

import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfm.training.optimizer import create_optimizer
from tfm.training.strategy import create_strategy, is_chief

_SUM = tf.distribute.ReduceOp.SUM


def _tokens_in(x):
    if isinstance(x, dict) and "padding_mask" in x:
        return tf.reduce_sum(tf.cast(x["padding_mask"], tf.float32))
    ids = x["token_ids"] if isinstance(x, dict) else x
    return tf.cast(tf.size(ids), tf.float32)


def _unpack(batch):
    if isinstance(batch, (tuple, list)):
        return (tuple(batch) + (None, None))[:3]
    return batch, None, None


class Trainer:
    """Trains a task under a tf.distribute strategy with checkpoints and TensorBoard summaries.

    Args:
        config: `tfm.training.config.TrainerConfig`.
        output_dir: str, the run dir (checkpoints in `checkpoints/`, events in `train/` and `eval/`).
        model_fn: callable returning the task model; called inside the strategy scope.
        train_dataset_fn: callable `(per_replica_batch_size, input_context) -> tf.data.Dataset` of
            `(x, y, sample_weight)` batches, infinite (repeated), sharded by the input context.
        eval_dataset_fn: optional callable of the same form returning a finite dataset.
        strategy: a `tf.distribute.Strategy`; default from `config.strategy`.
        flops_per_token: optional float, training FLOPs per token (for MFU).
        sample_fn: optional callable `(model) -> list[str]` of generated samples logged at evaluation.
        report_fn: optional callable `(model) -> dict[str, float]` of whole-example scores (e.g. entity
            F1) added to the eval metrics at each evaluation, on the chief only.
        hparams: optional dict logged once to the TensorBoard hparams plugin.
        verbose: bool, print a progress bar on the chief.

    Example:
    >>> trainer = Trainer(cfg.trainer, "runs/x", lambda: MaskedLM(backbone), train_fn)   # doctest: +SKIP
    >>> trainer.train()                                                                   # doctest: +SKIP
    """

    def __init__(self, config, output_dir, model_fn, train_dataset_fn, eval_dataset_fn=None, strategy=None,
                 flops_per_token=None, sample_fn=None, report_fn=None, hparams=None, verbose=True):
        self.config = config
        self.output_dir = output_dir
        self.strategy = strategy or create_strategy(config.strategy)
        self.is_chief = is_chief(self.strategy)
        self.flops_per_token = flops_per_token
        self.sample_fn = sample_fn
        self.report_fn = report_fn
        self.verbose = verbose and self.is_chief
        replicas = self.strategy.num_replicas_in_sync
        micro = config.batch_size // config.grad_accum_steps
        if micro * config.grad_accum_steps != config.batch_size or micro % replicas:
            raise ValueError(
                f"trainer.batch_size={config.batch_size} must split into trainer.grad_accum_steps="
                f"{config.grad_accum_steps} micro-batches that divide evenly over {replicas} replicas."
            )
        self.per_replica_batch = micro // replicas
        keras.config.set_dtype_policy(config.mixed_precision)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = model_fn()
            self.optimizer = create_optimizer(config, pre_reduced=True)
            # Built here, inside the scope, before the first step (keras#23085).
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._setup_checkpoints()
        # Where the data stream stands: the pipeline is deterministic (seeded shuffle and masking), so
        # on resume it skips the batches already consumed. (Distributed iterators are not checkpointable.)
        per_pipeline = self.strategy.num_replicas_in_sync // max(self._input_pipelines(), 1)
        consumed = int(self.step.numpy()) * config.grad_accum_steps * per_pipeline
        self._train_data = self.strategy.distribute_datasets_from_function(
            lambda ctx: train_dataset_fn(self.per_replica_batch, ctx).skip(consumed)
        )
        self._eval_dataset_fn = eval_dataset_fn
        self._iterator = iter(self._train_data)
        self._compiled = {}
        self._train_step = tf.function(self._distributed_train_step)
        self._writers = {}
        if self.is_chief and hparams:
            from tensorboard.plugins.hparams import api as hparams_api

            with self._writer("train").as_default():
                hparams_api.hparams({k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))})

    # ----------------------------------------------------------------------------------------- state
    def _setup_checkpoints(self):
        directory = os.path.join(self.output_dir, "checkpoints")
        if not self.is_chief:
            # MultiWorkerMirroredStrategy: every worker must save; only the chief's copy is kept.
            directory = os.path.join(directory, f".worker_{self.strategy.cluster_resolver.task_id}")
        # Dropout seed-generator states are variables but not weights, so tf.train.Checkpoint does not
        # reach them through the model; without them a resumed run would draw different dropout masks.
        weights = {id(w) for w in self.model.weights}
        rng_states = [v.value for v in self.model.variables if id(v) not in weights]
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step, rng=rng_states)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=self.config.keep_checkpoints)
        self.restored_from = self.manager.restore_or_initialize()
        self._checkpoint_dir = directory

    def _input_pipelines(self):
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
            return len(resolver.cluster_spec().as_dict().get("worker", [])) + len(
                resolver.cluster_spec().as_dict().get("chief", []))
        return 1

    def save_checkpoint(self):
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        if not self.is_chief:
            shutil.rmtree(self._checkpoint_dir, ignore_errors=True)
        return path

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.output_dir, name))
        return self._writers[name]

    # ----------------------------------------------------------------------------------------- steps
    def _forward_backward(self, x, y, sample_weight):
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss_sum, weight_sum = self.model.loss_sums(y, y_pred, sample_weight)
            scaled = self.optimizer.scale_loss(loss_sum) if hasattr(self.optimizer, "scale_loss") else loss_sum
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # Unused weights (e.g. BERT's pooler under MLM) get zero gradients so replicas can all-reduce.
        # Embedding gradients arrive as IndexedSlices: densify so micro-batches add and replicas all-reduce.
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        return loss_sum, weight_sum, grads, _tokens_in(x)

    @tf.autograph.experimental.do_not_convert
    def _replica_fn(self, fn):
        """`fn` XLA-compiled once per replica device: a compiled function captures the variables of the
        replica that traced it, so MirroredStrategy replicas cannot share one."""
        try:
            devices = tf.distribute.get_replica_context().devices
        except (AttributeError, IndexError):  # one replica per worker (multi-worker): nothing to tell apart
            devices = ()
        key = f"{fn.__name__}@{devices}"
        if key not in self._compiled:
            self._compiled[key] = tf.function(fn, jit_compile=self.config.jit_compile)
        return self._compiled[key]

    def _accumulate(self, batches, forward_backward):
        loss_sum = weight_sum = tokens = 0.0
        grads = None
        for batch in batches:
            b_loss, b_weight, b_grads, b_tokens = forward_backward(*_unpack(batch))
            loss_sum, weight_sum, tokens = loss_sum + b_loss, weight_sum + b_weight, tokens + b_tokens
            grads = b_grads if grads is None else [g + h for g, h in zip(grads, b_grads)]
        return loss_sum, weight_sum, grads, tokens

    def _apply(self, loss_sum, weight_sum, grads, tokens):
        weight_sum = tf.maximum(weight_sum, 1e-12)
        grads = [g / weight_sum for g in grads]
        scale = getattr(self.optimizer, "dynamic_scale", None)
        grad_norm = tf.linalg.global_norm(grads) / (tf.cast(scale, tf.float32) if scale is not None else 1.0)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss_sum / weight_sum, grad_norm, tokens

    def _single_replica_step(self, batches):
        """The whole step as one XLA program. With one replica there is nothing to all-reduce, and compiled
        AdamW (several passes over every weight, op by op otherwise) fuses into a few loops."""
        return self._apply(*self._accumulate(batches, self._forward_backward))

    def _replica_step(self, batches):
        if self.strategy.num_replicas_in_sync == 1:
            return self._replica_fn(self._single_replica_step)(batches)
        loss_sum, weight_sum, grads, tokens = self._accumulate(batches, self._replica_fn(self._forward_backward))
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(_SUM, grads)
        loss_sum, weight_sum, tokens = ctx.all_reduce(_SUM, [loss_sum, weight_sum, tokens])
        return self._apply(loss_sum, weight_sum, grads, tokens)

    def _distributed_train_step(self, iterator):
        batches = [next(iterator) for _ in range(self.config.grad_accum_steps)]
        results = self.strategy.run(self._replica_step, args=(batches,))
        self.step.assign_add(1)
        # Every replica holds the same all-reduced values: take the first.
        return [self.strategy.experimental_local_results(r)[0] for r in results]

    def _forward_eval(self, x, y, sample_weight):
        return self.model.metric_sums(y, self.model(x, training=False), sample_weight)

    def train_step(self):
        """One optimizer step on the next batch(es); returns `(loss, grad_norm, tokens)` tensors."""
        return self._train_step(self._iterator)

    def learning_rate(self):
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(optimizer.learning_rate.numpy()) if hasattr(optimizer.learning_rate, "numpy") else float(
            optimizer._get_current_learning_rate())

    # ----------------------------------------------------------------------------------------- loops
    def evaluate(self, max_steps=None):
        """Runs the eval dataset once (or `max_steps` batches); returns the task's metrics dict."""
        if self._eval_dataset_fn is None:
            return {}
        data = self.strategy.distribute_datasets_from_function(lambda ctx: self._eval_dataset_fn(self.per_replica_batch, ctx))

        @tf.function
        def step(batch):
            sums = self.strategy.run(lambda *b: self._replica_fn(self._forward_eval)(*b), args=_unpack(batch))
            return {k: self.strategy.reduce(_SUM, v, axis=None) for k, v in sums.items()}

        totals = {}
        for i, batch in enumerate(data):
            if max_steps is not None and i >= max_steps:
                break
            for key, value in step(batch).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        return self.model.metrics_from_sums(totals) if totals else {}

    def train(self):
        """Trains until `config.steps`, resuming from the last checkpoint; returns final eval metrics."""
        c = self.config
        progress = keras.utils.Progbar(c.steps, stateful_metrics=["loss", "tokens/s"]) if self.verbose else None
        window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0.0, time.perf_counter()
        metrics = {}
        finished_before = int(self.step.numpy()) >= c.steps
        while int(self.step.numpy()) < c.steps:
            loss, grad_norm, tokens = self.train_step()
            step = int(self.step.numpy())
            window_loss, window_steps, window_tokens = window_loss + float(loss), window_steps + 1, window_tokens + float(tokens)
            if not np.isfinite(float(loss)):
                raise FloatingPointError(f"Loss became {float(loss)} at step {step}; last checkpoint: {self.manager.latest_checkpoint}")
            if step % c.log_every == 0 or step == c.steps:
                elapsed = time.perf_counter() - window_start
                scalars = {
                    "loss": window_loss / window_steps,
                    "learning_rate": self.learning_rate(),
                    "grad_norm": float(grad_norm),
                    "tokens_per_sec": window_tokens / elapsed,
                }
                if self.flops_per_token and c.peak_flops:
                    scalars["mfu"] = scalars["tokens_per_sec"] * self.flops_per_token / c.peak_flops
                self._log("train", scalars, step)
                if progress is not None:
                    progress.update(step, [("loss", scalars["loss"]), ("tokens/s", scalars["tokens_per_sec"])])
                window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0.0, time.perf_counter()
            if step % c.eval_every == 0 or step == c.steps:
                metrics = self._eval_metrics(step)
                self._log("eval", metrics, step)
                if self.sample_fn is not None and self.is_chief:
                    with self._writer("eval").as_default():
                        tf.summary.text("samples", tf.constant(self.sample_fn(self.model)), step=step)
            if step % c.checkpoint_every == 0 or step == c.steps:
                self.save_checkpoint()
        if finished_before:
            # Restored an already finished run: evaluate it again rather than report nothing (and overwrite
            # metrics.json with nothing). TensorBoard already holds this step's eval, so it is not logged.
            metrics = self._eval_metrics(int(self.step.numpy()))
        if self.is_chief:
            for writer in self._writers.values():
                writer.flush()
            with open(os.path.join(self.output_dir, "metrics.json"), "w") as f:
                json.dump({"step": int(self.step.numpy()), **metrics}, f, indent=2)
        return metrics

    def _eval_metrics(self, step):
        """Eval metrics plus the task report (chief only), printed when verbose."""
        metrics = self.evaluate(self.config.eval_steps)
        if self.report_fn is not None and self.is_chief:
            metrics.update(self.report_fn(self.model))
        if self.verbose and metrics:
            print(f"\neval at step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    def _log(self, name, scalars, step):
        if not self.is_chief or not scalars:
            return
        with self._writer(name).as_default():
            for key, value in scalars.items():
                tf.summary.scalar(key, value, step=step)
