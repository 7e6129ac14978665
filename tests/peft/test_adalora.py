"""AdaLoRA's update layer and rank allocator against hand arithmetic and a NumPy re-implementation of Hugging Face
PEFT's `RankAllocator` / `AdaLoraModel.update_and_allocate` (HF stores `lora_A (r, in)`, `lora_E (r, 1)`,
`lora_B (out, r)`; tfm stores their transposes `(in, r)`, `(r,)`, `(r, out)`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfm.peft.adalora import AdaLoraUpdate, RankAllocator
from tfm.peft.config import PeftConfig

# rank 6 -> target 2 over 4 updates: init_bgt = 24, target_bgt = 8; budgeting between steps 10 and 110 - 20 = 90.
SCHEDULE = dict(rank=6, target_rank=2, tinit=10, tfinal=20, total_step=110, delta_t=5)
B1 = B2 = 0.85


def _is_state(variable):
    """The contract tfm.peft relies on to tell AdaLoRA's bookkeeping from trainable weights (its `_is_state`)."""
    return variable.path.split("/")[-1].startswith(("ema_", "rank_pattern", "budget"))


def _allocator(n=4, input_dim=8, output_dim=5, **overrides):
    config = PeftConfig(method="adalora", **{**SCHEDULE, **overrides})
    updates = []
    for i in range(n):
        update = AdaLoraUpdate(input_dim, output_dim, config.rank, 8.0, name=f"adalora_{i}")
        update.build()
        updates.append((f"layer_{i // 2}/{'query' if i % 2 == 0 else 'value'}", update))
    return RankAllocator(updates, config, dtype="float32", name="rank_allocator"), updates


def _randomize(allocator, updates, seed=0):
    """Random weights, λ all non-zero, positive EMAs; returns grads {id: tensor} and the numpy state."""
    rng = np.random.default_rng(seed)
    grads, state = {}, []
    for (_, update), ema in zip(updates, allocator._states):
        entry = {}
        for part in "aeb":
            weight = getattr(update, f"lora_{part}")
            value = rng.normal(size=weight.shape).astype("float32")
            value[value == 0] = 1.0
            weight.assign(value)
            grad = rng.normal(size=weight.shape).astype("float32")
            grads[id(weight)] = tf.constant(grad)
            ipt, unc = rng.uniform(0.1, 1, weight.shape), rng.uniform(0.1, 1, weight.shape)
            ema[f"ipt_{part}"].assign(ipt.astype("float32"))
            ema[f"unc_{part}"].assign(unc.astype("float32"))
            entry[part] = (value, grad, ema[f"ipt_{part}"].numpy(), ema[f"unc_{part}"].numpy())
        state.append(entry)
    return grads, state


def _reference_mask(state, budget, init_bgt=24):
    """NumPy HF: EMAs updated, triplet scores s_E + (mean_in s_A + mean_out s_B), prune score <= k-th smallest."""
    scores, emas = [], []
    for entry in state:
        s = {}
        for part, (w, g, ipt_old, unc_old) in entry.items():
            ipt = np.abs(w * g)
            ema_ipt = np.float32(B1) * ipt_old + np.float32(1 - B1) * ipt
            ema_unc = np.float32(B2) * unc_old + np.float32(1 - B2) * np.abs(ipt - ema_ipt)
            s[part] = ema_ipt * ema_unc
            emas.append((ema_ipt, ema_unc))
        scores.append(s["e"] + (s["a"].mean(axis=0) + s["b"].mean(axis=1)))
    threshold = np.sort(np.concatenate(scores))[init_bgt - budget - 1]
    return [score > threshold for score in scores], emas


def test_update_is_identity_at_step_0_then_matches_hf_formula():
    update = AdaLoraUpdate(8, 5, rank=6, alpha=8.0)
    update.build()
    x = np.random.default_rng(1).normal(size=(3, 8)).astype("float32")
    assert np.all(keras.ops.convert_to_numpy(update(x)) == 0.0)  # HF: lora_E starts at zero
    assert np.std(update.lora_a.numpy()) == pytest.approx(0.02, rel=0.3)  # normal(0, 0.02) as HF
    update.lora_e.assign(np.arange(1, 7, dtype="float32"))
    a_hf, e_hf, b_hf = update.lora_a.numpy().T, update.lora_e.numpy()[:, None], update.lora_b.numpy().T
    delta_hf = (b_hf @ (a_hf * e_hf)).T * 8.0 / (6 + 1e-5)  # HF get_delta_weight, as an (in, out) kernel
    np.testing.assert_allclose(keras.ops.convert_to_numpy(update.delta_kernel()), delta_hf, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(update(x)), x @ delta_hf, rtol=1e-4, atol=1e-7)
    assert update.trainable_count() == 6 * (8 + 5 + 1) == sum(int(np.prod(v.shape)) for v in update.weights)


def test_budget_schedule_hand_values():
    allocator, _ = _allocator()
    assert (allocator.init_bgt, allocator.target_bgt) == (24, 8)
    # span = 110 - 20 - 10 = 80; budget = int(16 * mul^3 + 8), mul = 1 - (step - 10) / 80
    expected = {
        0: (24, False), 10: (24, False),  # warm-up: step <= tinit
        11: (23, False),  # mul = 0.9875, mul^3 = 0.962966796875, 16 * that = 15.4074..., + 8 -> 23; 11 % 5 != 0
        20: (18, True),  # mul = 0.875, mul^3 = 0.669921875, * 16 = 10.71875, + 8 = 18.71875 -> 18
        30: (14, True),  # mul = 0.75, mul^3 = 0.421875, * 16 = 6.75, + 8 -> 14
        60: (8, True),  # mul = 0.375, mul^3 = 0.052734375, * 16 = 0.84375, + 8 -> 8
        62: (8, False),  # 62 % 5 != 0
        90: (8, True),  # T - tfinal: mul = 0 -> target
        91: (8, True), 110: (8, True),  # final phase: target budget, always masked
    }
    for step, want in expected.items():
        assert allocator.budget_schedule(step) == want, step
        budget, mask = allocator.budget_schedule(tf.constant(step, tf.int64))
        assert (int(budget), bool(mask)) == want, step


def test_mask_step_keeps_exactly_the_budget():
    allocator, updates = _allocator()
    grads, state = _randomize(allocator, updates)
    allocator.update(tf.constant(30, tf.int64), grads)  # a mask step with budget 14 (see the schedule test)
    keep, emas = _reference_mask(state, budget=14)
    assert sum(int(np.count_nonzero(u.lora_e.numpy())) for _, u in updates) == 14
    assert float(allocator.budget.numpy()) == 14.0
    for (label, update), kept in zip(updates, keep):
        np.testing.assert_array_equal(update.lora_e.numpy() != 0, kept)
        assert allocator.rank_pattern()[label] == list(kept)
        assert float(allocator.summaries()[f"rank/{label}"]) == kept.sum()
    got = [v.numpy() for s in allocator._states for part in "aeb" for v in (s[f"ipt_{part}"], s[f"unc_{part}"])]
    np.testing.assert_allclose(np.concatenate([g.ravel() for g in got]),
                               np.concatenate([x.ravel() for pair in emas for x in pair]), rtol=1e-6)


def test_ema_recurrences_over_three_steps():
    allocator, updates = _allocator(n=2)
    update, state = updates[0][1], allocator._states[0]
    update.lora_e.assign(np.full(6, 2.0, "float32"))
    rng = np.random.default_rng(2)
    a = update.lora_a.numpy()
    ipt_ref, unc_ref = np.zeros_like(a), np.zeros_like(a)
    for step, g_e in zip((1, 2, 3), (0.5, 0.5, -1.0)):  # warm-up steps: EMAs move, nothing is masked
        g_a = rng.normal(size=a.shape).astype("float32")
        grads = {id(update.lora_a): tf.constant(g_a), id(update.lora_e): tf.fill([6], g_e)}
        allocator.update(step, grads)  # lora_b and the second update: no gradient, their EMAs stay 0
        ipt = np.abs(a * g_a)
        ipt_ref = np.float32(B1) * ipt_ref + np.float32(1 - B1) * ipt
        unc_ref = np.float32(B2) * unc_ref + np.float32(1 - B2) * np.abs(ipt - ipt_ref)
        np.testing.assert_allclose(state["ipt_a"].numpy(), ipt_ref, rtol=1e-6)
        np.testing.assert_allclose(state["unc_a"].numpy(), unc_ref, rtol=1e-6)
    # λ = 2 with g = 0.5, 0.5, -1: ipt = 1, 1, 2.
    # step 1: ema = 0.15 * 1 = 0.15; unc = 0.15 * |1 - 0.15| = 0.1275
    # step 2: ema = 0.85 * 0.15 + 0.15 = 0.2775; unc = 0.85 * 0.1275 + 0.15 * |1 - 0.2775| = 0.21675
    # step 3: ema = 0.85 * 0.2775 + 0.15 * 2 = 0.535875;
    #         unc = 0.85 * 0.21675 + 0.15 * |2 - 0.535875| = 0.40385625
    np.testing.assert_allclose(state["ipt_e"].numpy(), np.full(6, 0.535875), rtol=1e-6)
    np.testing.assert_allclose(state["unc_e"].numpy(), np.full(6, 0.40385625), rtol=1e-6)
    assert not state["ipt_b"].numpy().any() and not allocator._states[1]["unc_a"].numpy().any()
    assert np.all(update.lora_e.numpy() == 2.0) and float(allocator.budget.numpy()) == 12.0  # 2 x rank 6


def test_final_mask_resets_emas_then_pattern_is_reapplied():
    allocator, updates = _allocator()
    grads, state = _randomize(allocator, updates)
    allocator.update(90, grads)  # step == T - tfinal: no EMA update, forced mask at the target budget 8
    pruned = sum(int(np.count_nonzero(u.lora_e.numpy() == 0)) for _, u in updates)
    assert pruned == 24 - 8
    scores = [e["e"][2] * e["e"][3] + ((e["a"][2] * e["a"][3]).mean(0) + (e["b"][2] * e["b"][3]).mean(1))
              for e in state]  # the EMAs before this step: HF does not update them at T - tfinal
    threshold = np.sort(np.concatenate(scores))[24 - 8 - 1]
    for (label, update), score in zip(updates, scores):
        assert allocator.rank_pattern()[label] == list(score > threshold)
    assert all(not v.numpy().any() for v in allocator.weights if v.path.split("/")[-1].startswith("ema_"))
    pattern = allocator.rank_pattern()
    for _, update in updates:
        update.lora_e.assign(np.full(6, 3.0, "float32"))  # the optimizer revives pruned λ...
    allocator.update(91, grads)  # ...and step > T - tfinal masks them again; EMAs stay reset
    for label, update in updates:
        np.testing.assert_array_equal(update.lora_e.numpy(), np.where(pattern[label], 3.0, 0.0))
    assert all(not v.numpy().any() for v in allocator.weights if v.path.split("/")[-1].startswith("ema_"))
    assert allocator.rank_pattern() == pattern and float(allocator.budget.numpy()) == 8.0


def test_orthogonality_penalty():
    allocator, updates = _allocator(n=1, input_dim=8, output_dim=7, orth_reg_weight=0.5)
    update = updates[0][1]
    rng = np.random.default_rng(3)
    q_in = np.linalg.qr(rng.normal(size=(8, 6)))[0].astype("float32")  # orthonormal columns: q^T q = I
    q_out = np.linalg.qr(rng.normal(size=(7, 6)))[0].astype("float32")
    update.lora_a.assign(q_in)  # HF lora_A = q_in^T: A A^T = I
    update.lora_b.assign(q_out.T)  # HF lora_B = q_out: B^T B = I
    with tf.GradientTape() as tape:
        penalty = allocator.regularization()
    assert float(penalty) == pytest.approx(0.0, abs=1e-5)
    assert all(np.all(np.isfinite(g)) for g in tape.gradient(penalty, [update.lora_a, update.lora_b]))
    update.lora_a.assign(2 * q_in)  # A A^T - I = 3 I: ||.||_F = 3 sqrt(6); B's term 0; mean over 2 matrices
    assert float(allocator.regularization()) == pytest.approx(0.5 * 3 * np.sqrt(6) / 2, rel=1e-5)  # 1.83712


def test_rank_pattern_round_trip_and_state_names():
    allocator, updates = _allocator()
    grads, _ = _randomize(allocator, updates)
    allocator.update(20, grads)
    saved = allocator.rank_pattern()
    assert sum(map(sum, saved.values())) == 18
    other, other_updates = _allocator()
    _randomize(other, other_updates, seed=5)
    other.set_rank_pattern(saved)
    assert other.rank_pattern() == saved
    for label, update in other_updates:
        np.testing.assert_array_equal(update.lora_e.numpy() != 0, saved[label])  # pruned λ zeroed on load
    with pytest.raises(ValueError, match=r"missing \['layer_1/value'\]"):
        other.set_rank_pattern({k: v for k, v in saved.items() if k != "layer_1/value"})
    with pytest.raises(ValueError, match="has 5 entries, expected rank 6"):
        other.set_rank_pattern({**saved, "layer_0/query": [True] * 5})
    # tfm.peft's _is_state must see every allocator variable as state; the updates' weights are not its own.
    assert len(allocator.weights) == 4 * 7 + 1 and all(_is_state(v) for v in allocator.weights)
    assert allocator.trainable_weights == [] and not any(_is_state(v) for _, u in updates for v in u.weights)


def test_update_under_xla_matches_eager():
    allocator, updates = _allocator()
    grads, _ = _randomize(allocator, updates)
    start = [v.numpy() for v in allocator.weights + [w for _, u in updates for w in u.weights]]
    everything = allocator.weights + [w for _, u in updates for w in u.weights]

    def run(update_fn):
        for v, value in zip(everything, start):
            v.assign(value)
        for step in (29, 30, 45, 90, 91):
            update_fn(tf.constant(step, tf.int64))
        return [v.numpy() for v in everything]

    eager = run(lambda step: allocator.update(step, grads))
    compiled = tf.function(lambda step: allocator.update(step, grads), jit_compile=True)
    xla = run(compiled)
    for v, a, b in zip(everything, eager, xla):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-12, err_msg=v.path)
    assert float(allocator.budget.numpy()) == 8.0 and sum(map(sum, allocator.rank_pattern().values())) == 8


def test_configuration_errors():
    with pytest.raises(ValueError, match="peft.total_step is None"):
        _allocator(total_step=None)
    with pytest.raises(ValueError, match=r"peft.tinit \(90\) must be < peft.total_step \(110\)"):
        _allocator(tinit=90)
    allocator, _ = _allocator()
    with pytest.raises(ValueError, match="gradients for none of its 12 AdaLoRA weights"):
        allocator.update(5, {})
