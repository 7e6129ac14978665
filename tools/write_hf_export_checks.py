"""Writes tfm models of every exportable architecture as Hugging Face directories, for a live check in transformers.

Each model is tfm-built with random weights of its own (not imported from anywhere), exported with `export_to_hf`,
and run by tfm on a padded batch; the directory gets `inputs.npz` and `tfm_outputs.npz` beside the weights. Then,
in a venv with torch + transformers (tests/convert/references/README.md):

    python tools/write_hf_export_checks.py /tmp/hf_exports
    /work/exp/refvenv/bin/python tools/make_hf_references.py check-export /tmp/hf_exports/*

prints transformers' max abs difference from tfm for every output.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

import tfm  # noqa: E402

BERT = dict(vocabulary_size=120, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64, max_sequence_length=40)
GPT = dict(vocabulary_size=120, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64, max_sequence_length=40)


def inputs(with_segments):
    rng = np.random.default_rng(1)
    mask = np.zeros((3, 9), np.int32)
    for row, n in enumerate((9, 6, 2)):
        mask[row, :n] = 1
    ids = np.where(mask == 1, rng.integers(1, 120, mask.shape), 0).astype(np.int32)
    x = {"token_ids": ids, "padding_mask": mask}
    if with_segments:
        x["segment_ids"] = (np.arange(9)[None, :] >= 4).astype(np.int32) * mask
    return x


def perturb(model):
    """Random weights everywhere (LayerNorms and biases too), so a wrong mapping cannot hide behind 1s and 0s."""
    rng = np.random.default_rng(2)
    for variable in model.weights:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.1, variable.shape).astype("float32"))


def models():
    keras.utils.set_random_seed(0)
    positions = np.tile(np.arange(9, dtype=np.int32), (3, 1))
    bert = lambda: tfm.models.BertBackbone(**BERT)  # noqa: E731
    gpt = lambda: tfm.models.GptBackbone(**GPT)  # noqa: E731
    yield "bert_model", bert(), lambda m, x: {"last_hidden_state": m(x)["sequence_output"],
                                              "pooler_output": m(x)["pooled_output"]}
    mlm = tfm.tasks.MaskedLM(bert(), next_sentence=True, layer_norm_epsilon=1e-12)
    yield "bert_pretraining", mlm, lambda m, x: {
        "prediction_logits": m({**x, "mask_positions": positions})["mask_ids"],
        "seq_relationship_logits": m({**x, "mask_positions": positions})["next_sentence_label"]}
    yield "bert_masked_lm", tfm.tasks.MaskedLM(bert(), layer_norm_epsilon=1e-12), \
        lambda m, x: {"logits": m({**x, "mask_positions": positions})}
    yield "bert_sequence_classification", tfm.tasks.TextClassifier(bert(), num_classes=3), lambda m, x: {"logits": m(x)}
    yield "bert_token_classification", tfm.tasks.TokenClassifier(bert(), num_labels=5), lambda m, x: {"logits": m(x)}
    yield "gpt2_model", gpt(), lambda m, x: {"last_hidden_state": m(x)}
    yield "gpt2_lm_head", tfm.tasks.CausalLM(gpt()), lambda m, x: {"logits": m(x)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="directory to write one export per architecture into")
    args = parser.parse_args(argv)
    for name, model, run in models():
        perturb(model)
        x = inputs(with_segments=name.startswith("bert"))
        directory = Path(model.export_to_hf(Path(args.out) / name))
        np.savez(directory / "inputs.npz", **x)
        np.savez(directory / "tfm_outputs.npz", **{k: np.asarray(v) for k, v in run(model, x).items()})
        print(f"wrote {directory}")


if __name__ == "__main__":
    main()
