import numpy as np

from tests.helpers import TINY_BERT, TINY_GPT, run_task_test
from tfm.models import BertBackbone, GptBackbone
from tfm.tasks import CausalLM, MaskedLM


MASK_IDS = np.array([[4, 17, 29], [0, 0, 5]], "int32")
POOLER = ("pooled_dense/kernel", "pooled_dense/bias")


def _mlm_inputs():
    return {
        "token_ids": np.arange(20).reshape(2, 10).astype("int32") % 30,
        "segment_ids": np.zeros((2, 10), "int32"),
        "padding_mask": np.ones((2, 10), "int32"),
        "mask_positions": np.array([[0, 3, 9], [1, 1, 2]], "int32"),
    }


def test_masked_lm_task_structure_save_load_mixed_precision_and_fit():
    # Head adds dense 8x8+8, LayerNorm 16, output bias 30 on top of the backbone; embeddings stay tied.
    # The pooler is unused by the MLM loss.
    run_task_test(MaskedLM, {"backbone": BertBackbone(**TINY_BERT)}, _mlm_inputs(), MASK_IDS, (2, 3, 30),
                  expected_head_params=72 + 16 + 30, untrained_weights=POOLER)


def test_masked_lm_fit_loss_with_padded_predictions_counts_the_slots():
    """`compile()`'s default loss is Keras' per-replica sum over the batch's slots (what keeps a Mirrored fit
    equal to one device, tests/tasks/test_fit_mirrored.py); the Trainer's `loss_sums` ratio divides by the
    weights' sum. On a batch with 4 of 6 prediction slots used they differ by exactly 4/6."""
    model = MaskedLM(BertBackbone(**TINY_BERT, dropout=0.0))
    model.compile(jit_compile=False)  # the reduction, not XLA, is under test
    weights = np.array([[1, 1, 1], [1, 0, 0]], "float32")  # the second row predicts one token, then padding
    loss, weight = model.loss_sums(MASK_IDS, model(_mlm_inputs()), weights)
    history = model.fit(_mlm_inputs(), MASK_IDS, sample_weight=weights, batch_size=2, verbose=0).history
    assert float(weight) == 4.0
    np.testing.assert_allclose(history["loss"][0], float(loss) / 6.0, rtol=1e-5)


def test_causal_lm_task_structure_save_load_mixed_precision_and_fit():
    ids = np.arange(14).reshape(2, 7).astype("int32") % 30
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    # The output projection is the tied embedding: no head parameters.
    run_task_test(CausalLM, {"backbone": GptBackbone(**TINY_GPT)}, x, (ids + 1) % 30, (2, 7, 30),
                  expected_head_params=0)


def test_causal_lm_cache_logits_match_full_forward():
    backbone = GptBackbone(**TINY_GPT, dropout=0.0)
    model = CausalLM(backbone)
    ids = np.arange(14).reshape(2, 7).astype("int32") % 30
    full = np.asarray(model({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    logits, hidden, cache = model.call_with_cache(ids, backbone.init_cache(2, 12), 0)
    np.testing.assert_allclose(np.asarray(logits), full, atol=1e-5)
