"""Knowledge distillation: each loss term against numpy on known values, the student initialized from teacher
layers, the teacher cache against the live teacher, a student that learns its teacher, the `distill:` section."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfm
from tests.peft.helpers import BATCH
from tests.training.test_trainer import _events
from tfm.compression.distillation import Distillation, Distiller, TeacherCache, student_from_teacher

TINY = {"vocabulary_size": 20, "num_heads": 2, "hidden_dim": 8, "intermediate_dim": 16, "dropout": 0.0,
        "max_sequence_length": 16}


def _classifier(num_layers, seed, std=0.5, **overrides):
    keras.utils.set_random_seed(seed)
    task = tfm.tasks.TextClassifier(tfm.models.BertBackbone(**{**TINY, "num_layers": num_layers, **overrides}),
                                    num_classes=3, dropout=0.0, pooling="mean")
    rng = np.random.default_rng(seed)
    for w in task.weights:  # spread weights: varied, confident predictions
        if "layer_norm" not in w.path:
            w.assign(rng.normal(0.0, std, w.shape).astype("float32"))
    return task


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_logits_loss_equals_numpy():
    """student_loss_weight * CE + (1 - student_loss_weight) * T^2 KL, weighted per example, as numpy computes it."""
    student = _classifier(1, seed=0)
    teacher_logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.0, 1.0]], "float32")
    labels, weights = np.array([0, 2, 1], "int32"), np.array([1.0, 0.5, 0.0], "float32")
    y = {"labels": labels, "teacher_logits": teacher_logits}
    total, weight_sum, logits = Distillation(None, temperature=3.0, student_loss_weight=0.25).loss_sums(
        student, BATCH, y, weights, training=False)
    s = np.asarray(student(BATCH), "float64")
    np.testing.assert_allclose(logits, s, rtol=1e-6)
    ce = -_log_softmax(s)[np.arange(3), labels]
    log_t, log_s = _log_softmax(teacher_logits / 3.0), _log_softmax(s / 3.0)
    kl = 9.0 * (np.exp(log_t) * (log_t - log_s)).sum(-1)
    assert float(weight_sum) == 1.5
    np.testing.assert_allclose(float(total), (0.25 * ce * weights).sum() + (0.75 * kl * weights).sum(), rtol=1e-5)
    # A student equal to its teacher has no distillation loss: only the label term is left.
    same = Distillation(None, temperature=3.0, student_loss_weight=0.25).loss_sums(
        student, BATCH, {"labels": labels, "teacher_logits": s.astype("float32")}, weights, training=False)[0]
    np.testing.assert_allclose(float(same), 0.25 * (ce * weights).sum(), rtol=1e-5)


def _numpy_hidden_states(task, x):
    backbone = task.backbone
    layers = keras.Model(backbone.inputs, [block.output for block in backbone.transformer_layers])
    return [np.asarray(h, "float64") for h in layers(x)]


def _numpy_attention(block, h, padding_mask):
    """Softmax(q k^T / sqrt(d)) of `block` on its input `h`, from its QKV kernel (B, heads, T, T)."""
    kernel, bias = (np.asarray(w, "float64") for w in block.self_attention.qkv_dense.get_weights()[:2])
    q, k, _ = np.split(h @ kernel + bias, 3, axis=-1)
    heads, b, t = block.num_heads, h.shape[0], h.shape[1]
    q, k = (a.reshape(b, t, heads, -1).transpose(0, 2, 1, 3) for a in (q, k))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + (1.0 - padding_mask[:, None, None, :]) * -1e9
    return np.exp(_log_softmax(scores))


def test_hidden_state_and_attention_losses_equal_numpy():
    teacher, student = _classifier(4, seed=1), _classifier(2, seed=2)
    mask = BATCH["padding_mask"].astype("float64")
    t_h, s_h = _numpy_hidden_states(teacher, BATCH), _numpy_hidden_states(student, BATCH)
    pairs = [[0, 1], [1, 3]]
    mse = sum(((((s_h[i] - t_h[j]) ** 2).mean(-1)) * mask).sum() / mask.sum() for i, j in pairs)
    t_a = _numpy_attention(teacher.backbone.transformer_layers[-1], t_h[-2], mask)
    s_a = _numpy_attention(student.backbone.transformer_layers[-1], s_h[-2], mask)
    kl = ((t_a * (np.log(t_a + 1e-9) - np.log(s_a + 1e-9))).sum(-1) * mask[:, None, :]).sum() / (mask.sum() * 2)
    assert mse > 0.1 and kl > 0.01  # different models: both terms matter
    labels = np.array([0, 2, 1], "int32")

    def extra(**weights):
        # student_loss_weight 0: total = soft-target sum + (hidden / attention terms) x weight sum (3 examples).
        d = Distillation(teacher, student_loss_weight=0.0, hidden_state_layers=pairs, **weights)
        total = float(d.loss_sums(student, BATCH, labels, training=False)[0])
        soft = float(Distillation(teacher, student_loss_weight=0.0).loss_sums(student, BATCH, labels, training=False)[0])
        return (total - soft) / 3.0

    np.testing.assert_allclose(extra(hidden_state_weight=2.0), 2.0 * mse, rtol=1e-4)
    np.testing.assert_allclose(extra(attention_weight=0.5), 0.5 * kl, rtol=1e-4)
    for block in student.backbone.transformer_layers:  # the recording hooks are off again
        assert block.taps is None and block.self_attention.taps is None


def test_student_from_teacher_keeps_the_chosen_layers():
    teacher = _classifier(4, seed=3)
    student = student_from_teacher(teacher, [1, 3])
    t_blocks, s_blocks = teacher.backbone.transformer_layers, student.backbone.transformer_layers
    for s, t in ((0, 1), (1, 3)):
        for a, b in zip(s_blocks[s].get_weights(), t_blocks[t].get_weights()):
            np.testing.assert_array_equal(a, b)
    for name in ("token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm"):
        for a, b in zip(student.backbone.get_layer(name).get_weights(), teacher.backbone.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(student.get_layer("logits").get_weights()[0], teacher.get_layer("logits").get_weights()[0])
    block = 4 * 8 * 8 + 4 * 8 + 2 * 8 * 16 + 16 + 8 + 4 * 8  # QKV + output, feed-forward, two layer norms
    assert teacher.count_params() - student.count_params() == 2 * block
    # All the layers: the same model.
    np.testing.assert_allclose(student_from_teacher(teacher, [0, 1, 2, 3])(BATCH), teacher(BATCH), atol=1e-6)
    with pytest.raises(ValueError, match=r"layers must be increasing teacher layer numbers in \[0, 4\)"):
        student_from_teacher(teacher, [2, 4])


def test_teacher_cache_gives_the_teachers_logits_in_shuffled_cut_batches():
    teacher = _classifier(2, seed=4)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 12, 40)
    ids = np.where(np.arange(16)[None, :] < lengths[:, None], rng.integers(4, 20, (40, 16)), 0).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": (ids > 0).astype("int32")}
    labels = rng.integers(0, 3, 40).astype("int32")
    padded = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    cache = TeacherCache.build(teacher, padded)
    cut = tf.data.Dataset.from_tensor_slices((x, labels)).shuffle(40, seed=1).batch(8).map(
        lambda x, y: ({k: v[:, :12] for k, v in x.items()}, y))  # other batches, other padding
    seen = 0
    for bx, by in cut.map(cache.attach):
        np.testing.assert_allclose(by["teacher_logits"], teacher(bx), atol=1e-5)
        seen += len(by["labels"])
    assert seen == 40


def test_distiller_fit_teaches_a_smaller_student_its_teachers_predictions():
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 20, (64, 10)).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    keras.utils.set_random_seed(5)
    teacher = tfm.tasks.TextClassifier(tfm.models.BertBackbone(**{**TINY, "num_layers": 2}), 3, dropout=0.0)
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2))
    teacher.fit(x, ids[:, 0] % 3, batch_size=16, epochs=15, verbose=0)  # a toy rule: the class of the first token
    wanted = np.argmax(teacher(x), -1)
    keras.utils.set_random_seed(6)
    student = tfm.tasks.TextClassifier(tfm.models.BertBackbone(**{**TINY, "num_layers": 1, "hidden_dim": 16,
                                                                  "intermediate_dim": 32}), 3, dropout=0.0)
    labels = rng.integers(0, 3, 64).astype("int32")  # unrelated labels with weight 0: the teacher is all it learns
    distiller = Distiller(teacher, student, temperature=1.0, student_loss_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.Adam(6e-3))

    def agreement():
        return float(np.mean(np.argmax(student(x), -1) == wanted))

    before = agreement()
    history = distiller.fit(x, labels, batch_size=16, epochs=30, verbose=0).history["loss"]
    # Measured (2-core Intel Xeon, three seeds): the teacher learns the rule (accuracy 1.0, classes 13-26 of 64
    # each); the student's agreement 0.22-0.39 -> 1.0, KL 0.87-0.95 -> 0.00001-0.0004.
    assert min(np.bincount(wanted, minlength=3)) >= 8  # a teacher with varied predictions
    assert agreement() >= 0.9 and before <= 0.6, (before, agreement())
    assert history[-1] < 0.1 * history[0]
    assert [v.path for v in distiller.trainable_weights] == [v.path for v in student.trainable_weights]


@pytest.mark.slow
def test_distill_section_trains_a_cached_student_from_teacher_layers(tmp_path, capsys):
    """`tfm train` with a `distill:` section (the cache's logits equal the live teacher's: tested above)."""
    from tests.training.test_finetune import _config, _sst2_slice
    from tfm.cli import main
    from tfm.training.config import ExperimentConfig, from_dict, to_dict
    from tfm.training.experiment import load_run, run_experiment

    train, dev = _sst2_slice(tmp_path, 200, 40)
    teacher = _config(tmp_path / "teacher", "text_classifier", [train], [dev], data={"format": "tsv"},
                      model={"num_layers": 2}, trainer={"steps": 4, "eval_every": 4, "checkpoint_every": 4})
    run_experiment(teacher, verbose=False)
    raw = to_dict(_config(tmp_path / "student", "text_classifier", [train], [dev], data={"format": "tsv"},
                          trainer={"steps": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2}))
    raw["distill"] = {"teacher": teacher.output_dir, "student_layers": [1], "teacher_cache": True, "temperature": 2.0}
    cfg = from_dict(ExperimentConfig, raw)
    run_experiment(cfg, verbose=False)
    run, teacher_run = load_run(cfg.output_dir), load_run(teacher.output_dir)
    assert run.task.backbone.num_layers == 1 and teacher_run.task.backbone.num_layers == 2
    assert run.tokenizer.vocabulary_size == teacher_run.tokenizer.vocabulary_size  # the teacher's tokenizer
    assert json.loads((tmp_path / "student" / "run" / "metrics.json").read_text())["step"] == 2
    assert len(_events(f"{cfg.output_dir}/train")["loss"]) == 2
    capsys.readouterr()
    assert main(["evaluate", cfg.output_dir, "--data", str(dev)]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_principal_embeddings_keep_the_geometry_of_the_teachers():
    from tfm.compression.distillation import principal_embeddings

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(50, 6)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1, 0.01])
    full, narrow = principal_embeddings(embeddings, 6), principal_embeddings(embeddings, 2)
    distances = lambda e: np.linalg.norm(e[:, None] - e[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(distances(full), distances(embeddings), atol=1e-4)  # all directions: a rotation
    np.testing.assert_allclose(narrow, full[:, :2], atol=1e-5)
    variances = full.var(0)
    assert list(np.argsort(-variances)) == list(range(6))  # directions by decreasing variance
    # The two kept directions hold the variance of the two largest axes (25 + 9 of 34.26).
    assert narrow.var(0).sum() / variances.sum() > 0.9
    with pytest.raises(ValueError, match="cannot take the principal directions"):
        principal_embeddings(embeddings, 7)


@pytest.mark.parametrize("section,task,message", [
    ({"teacher": "runs/t", "teacher_cache": True, "hidden_state_weight": 1.0}, "text_classifier",
     "distill.teacher_cache caches the teacher's logits only"),
    ({"teacher": "runs/t", "teacher_cache": True}, "masked_lm", "distill.teacher_cache needs the same inputs"),
    ({"teacher": "runs/t"}, "span_qa", "distill needs a task scored on class logits: task.name must be one of"),
    ({"teacher": "runs/t", "student_layers": [2, 1]}, "text_classifier", "distill.student_layers must be increasing"),
    ({"teacher": "runs/t", "student_loss_weight": 1.5}, "text_classifier", "distill.student_loss_weight must be in"),
    ({"teacher": "runs/t", "student_layers": [0], "student_embeddings": "teacher_pca"}, "text_classifier",
     "distill.student_embeddings applies to a fresh student"),
    ({"temperature": 2.0}, "text_classifier", "distill.teacher must name the teacher's run dir"),
])
def test_distill_section_errors_name_the_key(section, task, message):
    from tfm.training.config import ConfigError, ExperimentConfig, from_dict

    with pytest.raises(ConfigError) as info:
        from_dict(ExperimentConfig, {"task": {"name": task}, "distill": section})
    assert message in str(info.value)


def test_masked_augmentation_masks_real_tokens_of_the_chosen_rows_only():
    from tfm.compression.distillation import masked_augmentation

    ids = np.array([[2, 7, 9, 11, 3, 0, 0]] * 400, "int32")  # [CLS]=2 ... [SEP]=3, padding 0
    x = {"token_ids": ids, "padding_mask": (ids > 0).astype("int32")}
    labels = np.zeros(400, "int32")
    out = masked_augmentation(4, [0, 2, 3, 4], 1.0, 1.0, seed=1)(x, labels)
    np.testing.assert_array_equal(out[0]["token_ids"][0], [2, 4, 4, 4, 3, 0, 0])  # specials and padding stay
    assert out[1] is labels
    np.testing.assert_array_equal(masked_augmentation(4, [0, 2, 3, 4], 0.0, 1.0, seed=1)(x, labels)[0]["token_ids"], ids)
    half = np.asarray(masked_augmentation(4, [0, 2, 3, 4], 0.5, 0.5, seed=1)(x, labels)[0]["token_ids"])
    changed_rows = (half != ids).any(1).mean()
    masked_tokens = (half[:, 1:4] == 4).mean()
    # 400 rows: half are chosen, and a chosen row keeps all 3 tokens with probability 1/8 (binomial sd ~0.025).
    assert 0.5 * 7 / 8 - 0.1 < changed_rows < 0.5 * 7 / 8 + 0.1
    assert 0.25 - 0.08 < masked_tokens < 0.25 + 0.08
