"""AdaLoRA (Zhang et al. 2023): SVD-shaped low-rank updates whose ranks are pruned to a budget during training.

Each adapted projection gets `scale * dropout(x) @ (P^T diag(λ) Q)^T`-style factors as Hugging Face PEFT's
`SVDLinear`: `lora_a` = Q^T `(in, r)`, `lora_e` = λ `(r,)`, `lora_b` = P^T `(r, out)` (HF's `lora_A (r, in)`,
`lora_E (r, 1)`, `lora_B (out, r)`, transposed to tfm's `(in, out)` kernel convention). A `RankAllocator` keeps
the smoothed sensitivity of every weight (HF's `RankAllocator.update_ipt`), and on a cubic budget schedule zeroes
the singular values of the least important triplets (`mask_to_budget`); an orthogonality penalty keeps P and Q
near-orthonormal so that λ behaves like singular values.

Everything that runs in the training step is branch-free (`tf.where` on the step), so it compiles under XLA and
gives the same numbers eagerly.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfm.layers.dropout import HashDropout


@keras.saving.register_keras_serializable(package="tfm")
class AdaLoraUpdate(keras.layers.Layer):
    """`scale * dropout(x) @ (lora_a * lora_e) @ lora_b`, of shape `(..., output_dim)`.

    Args:
        input_dim: int, width of the projection's input.
        output_dim: int, width of the adapted output slice.
        rank: int, the initial rank r (HF's `init_r`).
        alpha: float, HF's `lora_alpha`; the scale is `alpha / (rank + 1e-5)` as HF's `scaling / (ranknum + 1e-5)`,
            with `ranknum` the initial rank (it stays fixed while ranks are pruned).
        dropout: float, dropout on the input of the low-rank branch.

    Example:
    >>> update = AdaLoraUpdate(8, 4, rank=2, alpha=8.0)
    >>> update.build()
    >>> float(keras.ops.max(keras.ops.abs(update(keras.ops.ones((1, 8))))))  # λ = 0: no change at step 0
    0.0
    """

    def __init__(self, input_dim, output_dim, rank, alpha, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim, self.rank = input_dim, output_dim, rank
        self.alpha, self.dropout = alpha, dropout
        self.scale = alpha / (rank + 1e-5)

    def build(self, input_shape=None):
        normal = keras.initializers.RandomNormal(0.0, 0.02)  # HF's reset_lora_parameters
        self.lora_a = self.add_weight(name="lora_a", shape=(self.input_dim, self.rank), initializer=normal)
        self.lora_e = self.add_weight(name="lora_e", shape=(self.rank,), initializer="zeros")
        self.lora_b = self.add_weight(name="lora_b", shape=(self.rank, self.output_dim), initializer=normal)
        self.input_dropout = HashDropout(self.dropout, dtype=self.dtype_policy, name="lora_dropout")
        self.built = True

    def call(self, x, training=None):
        x = self.input_dropout(x, training=training)
        return ops.matmul(ops.matmul(x, self.lora_a * self.lora_e), self.lora_b) * ops.cast(self.scale, x.dtype)

    def delta_kernel(self):
        """The update as a `(input_dim, output_dim)` kernel: what `merge` adds to the frozen one."""
        return ops.matmul(self.lora_a * self.lora_e, self.lora_b) * self.scale

    def trainable_count(self):
        return self.rank * (self.input_dim + self.output_dim + 1)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout}


_PARTS = ("a", "e", "b")


def _state_key(label):
    """`layer_0/query` -> `layer_0_query`: Keras variable names may not hold '/'."""
    return label.replace("/", "_")


class RankAllocator(keras.layers.Layer):
    """AdaLoRA's importance EMAs, budget schedule, rank masks and orthogonality penalty over a set of updates.

    Follows HF PEFT's `RankAllocator` and `AdaLoraModel.update_and_allocate` / `forward`. Its variables never
    train (their names start with `ema_`, `rank_pattern` or `budget`, which `tfm.peft.apply` relies on):
    `ema_ipt_<label>_{a,e,b}` and `ema_unc_<label>_{a,e,b}` (the weights' shapes), `rank_pattern_<label>`
    `(rank,)` float 1 = kept / 0 = pruned, and `budget` (float32 scalar, the current total rank budget).
    The updates themselves are held untracked: they belong to their projections, not to the allocator.

    Differences from HF, all where HF has no defined behaviour: a budget that masks nothing (`k = 0`, which
    `torch.kthvalue` rejects) masks nothing; a variable missing from the gradients keeps its EMAs (HF needs every
    `.grad`); `set_rank_pattern` zeroes the pruned λ, as HF's load drops the pruned triplets.

    Args:
        updates: list of `(label, AdaLoraUpdate)`, label like "layer_0/query" (the keys of `rank_pattern()`).
        config: a `PeftConfig` with method "adalora"; `total_step` must be set.
    """

    def __init__(self, updates, config, **kwargs):
        super().__init__(**kwargs)
        if config.total_step is None:
            raise ValueError("peft.total_step is None: AdaLoRA's budget schedule needs the number of training steps "
                             "(set peft.total_step, or let the trainer fill it from trainer.steps)")
        if config.tinit >= config.total_step - config.tfinal:
            raise ValueError(f"peft.tinit ({config.tinit}) must be < peft.total_step ({config.total_step}) - "
                             f"peft.tfinal ({config.tfinal}): the schedule leaves no budgeting phase")
        labels = [label for label, _ in updates]
        if len(set(labels)) != len(labels) or not labels:
            raise ValueError(f"RankAllocator needs unique labels for a non-empty list of updates, got {labels}")
        object.__setattr__(self, "_adalora_updates", tuple(updates))  # untracked (see the class docstring)
        self.labels = labels
        self.total_step, self.tinit, self.tfinal = int(config.total_step), int(config.tinit), int(config.tfinal)
        self.delta_t, self.beta1, self.beta2 = int(config.delta_t), float(config.beta1), float(config.beta2)
        self.orth_reg_weight = float(config.orth_reg_weight)
        self.init_bgt = sum(update.rank for _, update in updates)  # HF: the sum of lora_A's rows
        self.target_bgt = int(config.target_rank) * len(updates)
        self._states = []
        for label, update in updates:
            key, state = _state_key(label), {}
            for part in _PARTS:
                shape = tuple(getattr(update, f"lora_{part}").shape)
                for kind in ("ipt", "unc"):
                    state[f"{kind}_{part}"] = self.add_weight(name=f"ema_{kind}_{key}_{part}", shape=shape,
                                                              initializer="zeros", trainable=False, dtype="float32")
            state["pattern"] = self.add_weight(name=f"rank_pattern_{key}", shape=(update.rank,), initializer="ones",
                                               trainable=False, dtype="float32")
            self._states.append(state)
            for variable in state.values():  # attributes, so tf.train.Checkpoint (the Trainer's) saves them
                setattr(self, variable.name, variable)
        self.budget = self.add_weight(name="budget", shape=(), trainable=False, dtype="float32",
                                      initializer=keras.initializers.Constant(float(self.init_bgt)))
        self.built = True

    # ------------------------------------------------------------------------------------------------ schedule
    def budget_schedule(self, step):
        """`(budget, mask_now)` at `step`: HF's cubic schedule from `init_bgt` down to `target_bgt`.

        Python ints give Python `(int, bool)` exactly as HF; tensors give `(int64, bool)` tensors, computed in
        float64 the same way (HF's `int()` truncation is a floor here: the value is >= 0).
        """
        final = self.total_step - self.tfinal
        span = final - self.tinit
        if isinstance(step, (int, np.integer)):
            if step <= self.tinit:
                return self.init_bgt, False
            if step > final:
                return self.target_bgt, True
            mul = 1 - (step - self.tinit) / span
            return int((self.init_bgt - self.target_bgt) * (mul**3) + self.target_bgt), step % self.delta_t == 0
        step = tf.cast(step, tf.int64)
        mul = 1.0 - tf.cast(step - self.tinit, tf.float64) / tf.constant(span, tf.float64)
        middle = tf.cast(tf.floor((self.init_bgt - self.target_bgt) * tf.pow(mul, 3.0) + self.target_bgt), tf.int64)
        warmup, ending = step <= self.tinit, step > final
        budget = tf.where(warmup, tf.constant(self.init_bgt, tf.int64),
                          tf.where(ending, tf.constant(self.target_bgt, tf.int64), middle))
        mask_now = tf.logical_and(tf.logical_not(warmup),
                                  tf.logical_or(ending, tf.equal(tf.math.floormod(step, self.delta_t), 0)))
        return budget, mask_now

    # ------------------------------------------------------------------------------------- after each step
    def update(self, step, grads_by_id):
        """HF's `update_and_allocate` after the optimizer update of step `step` (HF's `global_step`).

        With `final = total_step - tfinal`:
        * `step < final`: the EMAs take this step's `|w * g|` (w the updated weight); on a mask step
          (`budget_schedule`) the triplets scoring `<=` the `(init_bgt - budget)`-th smallest score get λ = 0
          and `rank_pattern` records what is kept;
        * `step == final`: no EMA update; a forced mask at `target_bgt`, then the EMAs reset to zero;
        * `step > final`: the stored `rank_pattern` is re-applied to λ.

        Args:
            step: int or scalar integer tensor (int64 in the training step).
            grads_by_id: dict `id(variable) -> gradient`; a variable missing from it keeps its EMAs.
        """
        known = [id(getattr(update, f"lora_{part}")) for _, update in self._adalora_updates for part in _PARTS]
        if not any(key in grads_by_id for key in known):
            raise ValueError(f"{self.name}.update got gradients for none of its {len(known)} AdaLoRA weights: pass "
                             "{id(variable): gradient} for the model's trainable variables")
        step = tf.cast(step, tf.int64)
        final = self.total_step - self.tfinal
        budget, mask_now = self.budget_schedule(step)
        learning, at_final, after = step < final, tf.equal(step, final), step > final
        masking = tf.logical_or(tf.logical_and(learning, mask_now), at_final)

        emas, scores = [], []
        for (_, update), state in zip(self._adalora_updates, self._states):
            new = {}
            for part in _PARTS:
                weight = getattr(update, f"lora_{part}")
                ipt_var, unc_var = state[f"ipt_{part}"], state[f"unc_{part}"]
                ema_ipt, ema_unc = ops.convert_to_tensor(ipt_var), ops.convert_to_tensor(unc_var)
                grad = grads_by_id.get(id(weight))
                if grad is not None:
                    ipt = tf.abs(tf.cast(ops.convert_to_tensor(weight), tf.float32) *
                                 tf.cast(tf.convert_to_tensor(grad), tf.float32))
                    next_ipt = self.beta1 * ema_ipt + (1 - self.beta1) * ipt  # sensitivity smoothing
                    next_unc = self.beta2 * ema_unc + (1 - self.beta2) * tf.abs(ipt - next_ipt)  # uncertainty
                    ema_ipt, ema_unc = tf.where(learning, next_ipt, ema_ipt), tf.where(learning, next_unc, ema_unc)
                new[part] = ema_ipt * ema_unc  # HF's _element_score
                emas.append((ipt_var, ema_ipt))
                emas.append((unc_var, ema_unc))
            # HF: lora_E's score + (lora_A's mean over `in` + lora_B's mean over `out`), in HF's summation order.
            scores.append(new["e"] + (ops.mean(new["a"], axis=0) + ops.mean(new["b"], axis=1)))

        everything = tf.sort(tf.concat(scores, axis=0))
        k = tf.constant(self.init_bgt, tf.int64) - budget  # HF's kthvalue(k): the k-th smallest, 1-based
        index = tf.clip_by_value(k - 1, 0, self.init_bgt - 1)
        threshold = tf.where(k > 0, tf.gather(everything, index), tf.constant(-np.inf, tf.float32))

        for (_, update), state, score in zip(self._adalora_updates, self._states, scores):
            old = ops.convert_to_tensor(state["pattern"])
            keep = score > threshold
            prune = tf.logical_or(tf.logical_and(masking, tf.logical_not(keep)),
                                  tf.logical_and(after, tf.equal(old, 0.0)))
            lam = ops.convert_to_tensor(update.lora_e)
            update.lora_e.assign(tf.where(prune, tf.zeros_like(lam), lam))
            state["pattern"].assign(tf.where(masking, tf.cast(keep, tf.float32), old))
        for variable, value in emas:
            variable.assign(tf.where(at_final, tf.zeros_like(value), value))  # HF's reset_ipt after the final mask
        self.budget.assign(tf.cast(budget, tf.float32))

    # ----------------------------------------------------------------------------------------------- the loss
    def regularization(self):
        """`orth_reg_weight * mean(||A A^T - I||_F, ||B^T B - I||_F)` over every HF `lora_A (r, in)` and
        `lora_B (out, r)`: with tfm's transposed storage, `a^T a` and `b b^T` (both `(r, r)`)."""
        if self.orth_reg_weight == 0.0:
            return tf.constant(0.0, tf.float32)
        total = []
        for _, update in self._adalora_updates:
            a = tf.cast(ops.convert_to_tensor(update.lora_a), tf.float32)
            b = tf.cast(ops.convert_to_tensor(update.lora_b), tf.float32)
            eye = tf.eye(update.rank, dtype=tf.float32)
            for cov in (tf.matmul(a, a, transpose_a=True), tf.matmul(b, b, transpose_b=True)):
                total.append(_frobenius(cov - eye))
        return self.orth_reg_weight * tf.add_n(total) / len(total)

    # ---------------------------------------------------------------------------------------------- reporting
    def summaries(self):
        """`{"budget": ..., "rank/<label>": kept ranks}`, float32 scalar tensors to log."""
        out = {"budget": tf.identity(ops.convert_to_tensor(self.budget))}
        for label, state in zip(self.labels, self._states):
            out[f"rank/{label}"] = tf.reduce_sum(ops.convert_to_tensor(state["pattern"]))
        return out

    def rank_pattern(self):
        """`{label: [bool] * rank}`, True where the triplet is kept (HF's `rank_pattern`, by tfm label)."""
        return {label: [bool(x) for x in np.asarray(ops.convert_to_numpy(state["pattern"])) > 0.5]
                for label, state in zip(self.labels, self._states)}

    def set_rank_pattern(self, pattern, mask_weights=True):
        """Loads a `rank_pattern()` dict (e.g. saved with the adapter). Call it after loading the weights:
        `mask_weights` zeroes the pruned λ, as HF drops the pruned triplets when it loads an adapter."""
        missing, unexpected = sorted(set(self.labels) - set(pattern)), sorted(set(pattern) - set(self.labels))
        if missing or unexpected:
            raise ValueError(f"rank_pattern labels do not match the AdaLoRA updates: missing {missing}, "
                             f"unexpected {unexpected}")
        for (label, update), state in zip(self._adalora_updates, self._states):
            kept = np.asarray(pattern[label], dtype=bool).reshape(-1)
            if kept.shape != (update.rank,):
                raise ValueError(f"rank_pattern[{label!r}] has {kept.size} entries, expected rank {update.rank}")
            state["pattern"].assign(kept.astype("float32"))
            if mask_weights:
                lam = ops.convert_to_numpy(update.lora_e)
                update.lora_e.assign(np.where(kept, lam, 0.0).astype(lam.dtype))


def _frobenius(m):
    """`||m||_F` with a zero (not NaN) gradient at m = 0, as torch's norm backward."""
    squares = tf.reduce_sum(tf.square(m))
    positive = squares > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, squares, tf.ones_like(squares))), tf.zeros_like(squares))


