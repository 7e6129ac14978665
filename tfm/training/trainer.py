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
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfm.errors import InputError
from tfm.peft import core as peft_core
from tfm.training import precision
from tfm.training.checkpoints import CHECKPOINT_DIR, check_output_dir, checkpoint_readable, first_line
from tfm.training.optimizer import create_optimizer
from tfm.training.r_drop import check_task, r_drop_loss_sums
from tfm.training.strategy import create_strategy, is_chief
from tfm.training.weight_averaging import WeightAveraging

_SUM = tf.distribute.ReduceOp.SUM


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss or gradient; the message names the step and the last good checkpoint.

    Not an `InputError`: nothing in the input is named, the fix is a lower learning rate, clipping, or
    `trainer.skip_nonfinite_steps`. The `tfm` CLI still prints it as one line (exit status 2).
    """


def _tokens_in(x):
    if isinstance(x, dict) and "padding_mask" in x:
        return tf.reduce_sum(tf.cast(x["padding_mask"], tf.float32))
    ids = x["token_ids"] if isinstance(x, dict) else x
    return tf.cast(tf.size(ids), tf.float32)


def _unpack(batch):
    if isinstance(batch, (tuple, list)):
        return (tuple(batch) + (None, None))[:3]
    return batch, None, None


class Trainer(WeightAveraging):
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
        distillation_fn: optional callable `(model) -> tfm.compression.Distillation`, called inside the strategy
            scope: the step's loss is the distillation objective (a config's `distill:` section).

    Example:
    >>> trainer = Trainer(cfg.trainer, "runs/x", lambda: MaskedLM(backbone), train_fn)   # doctest: +SKIP
    >>> trainer.train()                                                                   # doctest: +SKIP
    """

    def __init__(self, config, output_dir, model_fn, train_dataset_fn, eval_dataset_fn=None, strategy=None,
                 flops_per_token=None, sample_fn=None, report_fn=None, hparams=None, verbose=True,
                 distillation_fn=None):
        check_output_dir(output_dir)  # before building anything
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
            raise InputError(
                f"trainer.batch_size={config.batch_size} must split into trainer.grad_accum_steps="
                f"{config.grad_accum_steps} micro-batches that divide evenly over {replicas} replicas."
            )
        self.per_replica_batch = micro // replicas
        self.mixed_precision, self.jit_compile, reason = precision.resolve(config.mixed_precision,
                                                                           config.jit_compile, self.strategy)
        if reason and self.verbose:
            print(f"{reason}; XLA {'on' if self.jit_compile else 'off'}")
        keras.config.set_dtype_policy(self.mixed_precision)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = model_fn()
            self.distillation = distillation_fn(self.model) if distillation_fn is not None else None
            if config.r_drop_alpha:
                if self.distillation is not None:
                    raise InputError("trainer.r_drop_alpha and a distill: section cannot be combined: the "
                                     "distillation objective replaces the label loss R-Drop doubles")
                try:
                    check_task(self.model)
                except ValueError as error:
                    raise InputError(f"trainer.r_drop_alpha={config.r_drop_alpha}: {error}") from None
            self.optimizer = create_optimizer(config, pre_reduced=True)
            # Built here, inside the scope, before the first step (keras#23085).
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            # Steps skipped for a non-finite loss (trainer.skip_nonfinite_steps), kept across resumes.
            self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
        self._peft = peft_core.active_adapter(self.model) is not None
        self._peft_step = self._peft and peft_core.allocator(self.model) is not None
        self.parameter_counts = peft_core.parameter_counts(self.model)
        if self.verbose and self._peft:  # as HF PEFT's print_trainable_parameters
            c = self.parameter_counts
            print(f"trainable params: {c['trainable']:,} || all params: {c['total']:,} || trainable%: "
                  f"{c['trainable_percent']:.4f}")
        self._setup_checkpoints()
        # Where the data stream stands: the pipeline is deterministic (seeded shuffle and masking), so
        # on resume it skips the batches already consumed. (Distributed iterators are not checkpointable.)
        pipelines = max(self._input_pipelines(), 1)
        per_pipeline = self.strategy.num_replicas_in_sync // pipelines
        consumed = int(self.step.numpy()) * config.grad_accum_steps * per_pipeline
        if self.restored_from and self.verbose:
            print(f"Resumed from {self.restored_from} at step {int(self.step.numpy())}: skipping {consumed} "
                  f"batches of {self.per_replica_batch} examples in each of {pipelines} input pipeline(s)")
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
                hparams = {**hparams, "trainable_params": self.parameter_counts["trainable"],
                           "total_params": self.parameter_counts["total"]}
                hparams_api.hparams({k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))})

    # ----------------------------------------------------------------------------------------- state
    def _setup_checkpoints(self):
        chief_directory = directory = os.path.join(self.output_dir, CHECKPOINT_DIR)
        if not self.is_chief:
            # MultiWorkerMirroredStrategy: every worker must save; only the chief's copy is kept.
            directory = os.path.join(directory, f".worker_{self.strategy.cluster_resolver.task_id}")
        # Dropout seed-generator states are variables but not weights, so tf.train.Checkpoint does not
        # reach them through the model; without them a resumed run would draw different dropout masks.
        weights = {id(w) for w in self.model.weights}
        rng_states = [v.value for v in self.model.variables if id(v) not in weights]
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              rng=rng_states, skipped_steps=self.skipped_steps)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=self.config.keep_checkpoints)
        self._checkpoint_dir = directory
        # Every worker resumes from the chief's checkpoints (its own copies are deleted after each save).
        kept = self.manager if self.is_chief else tf.train.CheckpointManager(
            self.checkpoint, chief_directory, max_to_keep=self.config.keep_checkpoints)
        self.restored_from = self._restore(kept.checkpoints)
        self.last_good_checkpoint = self.restored_from

    def _warn(self, message):
        if self.is_chief:
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _restore(self, checkpoints):
        """Restores the newest readable of `checkpoints` and returns its path (None: a fresh start).

        An unreadable one (truncated, overwritten, index deleted) is passed over with a warning and left on
        disk. One that reads but does not fit the model is the user's to sort out: an `InputError`.
        """
        unreadable = []
        for path in reversed(checkpoints):
            try:
                self.checkpoint.restore(path)  # eager: assigns now, or fails before assigning anything
            except Exception as error:  # noqa: BLE001  (classified right below)
                if checkpoint_readable(path):
                    raise InputError(f"checkpoint {path} does not fit the model built from the config "
                                     f"({first_line(error)}); was the config changed? Use a new output_dir "
                                     f"or the run's own config.yaml") from None
                unreadable.append(path)
                self._warn(f"checkpoint {path} is unreadable ({first_line(error)}); trying an older one")
                continue
            if unreadable:
                self._warn(f"resuming from {path} instead of the unreadable {', '.join(unreadable)}")
            return path
        if unreadable:
            self._warn(f"no readable checkpoint in {self._checkpoint_dir} (unreadable: {', '.join(unreadable)}); "
                       f"starting from scratch")
        return None

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
        self.last_good_checkpoint = path
        return path

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.output_dir, name))
        return self._writers[name]

    # ----------------------------------------------------------------------------------------- steps
    def _forward_backward(self, x, y, sample_weight):
        with tf.GradientTape() as tape:
            if self.distillation is not None:  # the student's objective against its teacher
                loss_sum, weight_sum, _ = self.distillation.loss_sums(self.model, x, y, sample_weight)
            elif self.config.r_drop_alpha:  # two dropout passes and their symmetric KL
                loss_sum, weight_sum, _ = r_drop_loss_sums(self.model, x, y, sample_weight, self.config.r_drop_alpha)
            else:
                y_pred = self.model(x, training=True)
                loss_sum, weight_sum = self.model.loss_sums(y, y_pred, sample_weight)
            # fp16: loss-scale the per-token mean, not the sum (whose 2**15-scaled gradients overflow fp16);
            # the sum's gradients are restored in float32 below.
            objective = loss_sum
            extra = peft_core.regularization_loss(self.model) if self._peft else None
            if extra is not None:  # a per-step mean term: weighted so the division by the global weight undoes it
                objective = objective + extra * tf.stop_gradient(weight_sum)
            per_token = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
            unit = tf.stop_gradient(tf.maximum(weight_sum, 1.0)) if per_token else 1.0
            scaled = self.optimizer.scale_loss(objective / unit) if per_token else objective
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # Unused weights (e.g. BERT's pooler under MLM) get zero gradients so replicas can all-reduce.
        # Embedding gradients arrive as IndexedSlices: densify so micro-batches add and replicas all-reduce.
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) * unit for g, v in zip(grads, variables)]
        return loss_sum, weight_sum, grads, _tokens_in(x)

    @tf.autograph.experimental.do_not_convert
    def _replica_fn(self, fn):
        """`fn` XLA-compiled once per replica device: a compiled function captures the variables of the
        replica that traced it, so MirroredStrategy replicas cannot share one."""
        if self.strategy.num_replicas_in_sync > 1 and getattr(self.model, "GATHERS_ACROSS_REPLICAS", False):
            # A loss that gathers across replicas (TextEmbedder's in-batch negatives) syncs the replicas inside
            # the forward pass (a merge_call), which neither an XLA program nor a nested tf.function can hold:
            # it runs in the step's own graph.
            return fn
        ctx = tf.distribute.get_replica_context()
        # The replica's id is a constant where replicas trace separately (MirroredStrategy); elsewhere (TPU) it
        # is a tensor and one function serves. (`ReplicaContext.devices` is deprecated.)
        replica = tf.get_static_value(ctx.replica_id_in_sync_group) if ctx is not None else None
        key = f"{fn.__name__}@{None if replica is None else int(replica)}"
        if key not in self._compiled:
            self._compiled[key] = tf.function(fn, jit_compile=self.jit_compile)
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
        loss = loss_sum / weight_sum
        scale = getattr(self.optimizer, "dynamic_scale", None)
        # One pass: the token-weighted mean and global-norm clipping (by the logged norm of the unscaled mean
        # gradient; the optimizer does not clip again) are one factor.
        unscale = tf.cast(scale, tf.float32) if scale is not None else 1.0
        grad_norm = tf.linalg.global_norm(grads) / weight_sum / unscale
        clip = self.config.clip_norm
        factor = (1.0 / weight_sum) * (clip / tf.maximum(grad_norm, clip) if clip is not None else 1.0)
        grads = [g * tf.cast(factor, g.dtype) for g in grads]
        if self.config.skip_nonfinite_steps and scale is None:
            # (A LossScaleOptimizer already skips steps whose float16 gradients overflow.)
            self._apply_if(tf.math.is_finite(loss) & tf.math.is_finite(grad_norm), grads)
        else:
            self.optimizer.apply(grads, self.model.trainable_variables)
        if self._peft_step and self.strategy.num_replicas_in_sync == 1:
            # AdaLoRA's importance scores and rank allocation, inside the compiled step, after the update.
            peft_core.after_step(self.model, grads, self.model.trainable_variables, self.optimizer.iterations)
        elif self._peft_step:
            return loss, grad_norm, tokens, grads  # applied once, in cross-replica context (mirrored variables)
        return loss, grad_norm, tokens

    def _finite(self, loss, grad_norm):
        """The step's verdict, from its outputs: the same test `_apply` makes in the graph."""
        scaled = hasattr(self.optimizer, "dynamic_scale")  # overflowing float16 gradients are routine there
        return bool(np.isfinite(loss)) and (scaled or bool(np.isfinite(grad_norm)))

    def _apply_if(self, finite, grads):
        """Applies `grads` when `finite`, else changes nothing (weights, slots, iteration count)."""
        variables = self.model.trainable_variables

        def apply(grads):
            self.optimizer.apply(grads, variables)
            return tf.constant(True)

        if not tf.distribute.has_strategy() or tf.__internal__.distribute.strategy_supports_no_merge_call():
            # Every replica holds the same all-reduced `finite`, so all take the same branch.
            tf.cond(finite, lambda: apply(grads), lambda: tf.constant(False))
            return

        def cross_replica(distribution, finite, grads):
            # The optimizer merge_calls, which a cond in replica context cannot hold (as LossScaleOptimizer).
            finite = distribution.experimental_local_results(finite)[0]

            def apply_everywhere():
                distribution.extended.call_for_each_replica(apply, args=(grads,))
                return tf.constant(True)

            tf.cond(finite, apply_everywhere, lambda: tf.constant(False))

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))

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
        results = [self.strategy.experimental_local_results(r)[0] for r in results[:3]] + list(results[3:])
        if len(results) == 4:
            grads = [self.strategy.experimental_local_results(g)[0] for g in results.pop()]
            peft_core.after_step(self.model, grads, self.model.trainable_variables, self.optimizer.iterations)
        return results

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
        data = self.strategy.distribute_datasets_from_function(
            lambda ctx: self._eval_dataset_fn(self.per_replica_batch, ctx))

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
        """Trains until `config.steps`, resuming from the last checkpoint; returns final eval metrics.

        Raises:
            NonFiniteLossError: a NaN/Inf step (see `trainer.skip_nonfinite_steps`); no checkpoint is saved
                at or after it, and the TensorBoard events up to it are flushed.
        """
        c = self.config
        finished_before = int(self.step.numpy()) >= c.steps
        if finished_before and self.verbose:
            print(f"Run already finished at step {int(self.step.numpy())} (trainer.steps={c.steps}): "
                  f"evaluating it again")
        try:
            metrics = self._train_loop()
        finally:
            if self.is_chief:  # what led up to a failure belongs in TensorBoard too
                for writer in self._writers.values():
                    writer.flush()
        if finished_before:
            # Restored an already finished run: evaluate it again rather than report nothing (and overwrite
            # metrics.json with nothing). TensorBoard already holds this step's eval, so it is not logged.
            metrics = self._eval_metrics(int(self.step.numpy()))
        if self.is_chief:
            with open(os.path.join(self.output_dir, "metrics.json"), "w") as f:
                json.dump({"step": int(self.step.numpy()), **metrics, "trainable_params": self.parameter_counts[
                    "trainable"], "total_params": self.parameter_counts["total"]}, f, indent=2)
        return metrics

    def _train_loop(self):
        c = self.config
        progress = None
        if self.verbose:
            progress = keras.utils.Progbar(c.steps, stateful_metrics=["loss", "tokens_per_second"])
        window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0.0, time.perf_counter()
        metrics, bad_in_a_row = {}, 0
        while int(self.step.numpy()) < c.steps:
            loss, grad_norm, tokens = self.train_step()
            step = int(self.step.numpy())
            loss, grad_norm = float(loss), float(grad_norm)
            window_tokens += float(tokens)
            if self._finite(loss, grad_norm):
                window_loss, window_steps, bad_in_a_row = window_loss + loss, window_steps + 1, 0
            else:
                bad_in_a_row += 1
                self._check_bad_step(step, loss, grad_norm, bad_in_a_row)
            if step % c.log_every == 0 or step == c.steps:
                scalars = {"learning_rate": self.learning_rate(), "grad_norm": grad_norm,
                           "tokens_per_second": window_tokens / (time.perf_counter() - window_start)}
                if window_steps:  # a window of skipped steps only has no loss
                    scalars["loss"] = window_loss / window_steps
                if c.skip_nonfinite_steps:
                    scalars["skipped_steps"] = int(self.skipped_steps.numpy())
                scalars.update({f"peft/{k}": float(v) for k, v in peft_core.step_summaries(self.model).items()})
                if self.flops_per_token and c.peak_flops:
                    scalars["mfu"] = scalars["tokens_per_second"] * self.flops_per_token / c.peak_flops
                self._log("train", scalars, step)
                if progress is not None:
                    progress.update(step, [("loss", scalars.get("loss", float("nan"))),
                                           ("tokens_per_second", scalars["tokens_per_second"])])
                window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0.0, time.perf_counter()
            if step == c.steps:
                self._finalize_weights()  # before the last checkpoint and the last eval: they hold the averages
            # Checkpoint before evaluating: a run killed (or failing) in its evaluation keeps the steps it trained,
            # and a resumed finished run evaluates again.
            if step % c.checkpoint_every == 0 or step == c.steps:
                self.save_checkpoint()
            if step % c.eval_every == 0 or step == c.steps:
                with self._averaged_weights():
                    metrics = self._eval_metrics(step)
                    self._log("eval", metrics, step)
                    if self.sample_fn is not None and self.is_chief:
                        with self._writer("eval").as_default():
                            tf.summary.text("samples", tf.constant(self.sample_fn(self.model)), step=step)
        return metrics

    def _check_bad_step(self, step, loss, grad_norm, bad_in_a_row):
        """Counts a skipped step, or raises `NonFiniteLossError` (unskipped, the bad update is in memory only)."""
        c = self.config
        last = self.last_good_checkpoint or "none saved yet"
        what = f"loss {loss}, gradient norm {grad_norm}"
        if not c.skip_nonfinite_steps:
            raise NonFiniteLossError(f"non-finite training step {step} ({what}); the last good checkpoint is {last}; "
                                     f"lower trainer.learning_rate or set trainer.skip_nonfinite_steps=true")
        self.skipped_steps.assign_add(1)
        if bad_in_a_row >= c.max_skipped_steps:
            raise NonFiniteLossError(f"{bad_in_a_row} non-finite training steps in a row, the last at step {step} "
                                     f"({what}; trainer.max_skipped_steps={c.max_skipped_steps}); the last good "
                                     f"checkpoint is {last}")

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
