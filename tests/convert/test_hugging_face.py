"""Hugging Face checkpoints in and out, against outputs of the real `transformers` (PyTorch CPU).

`tests/convert/references/` holds tiny random-weight models saved by transformers itself and their outputs on a
padded batch, written by `tools/make_hf_references.py` (torch is not installed in `make test`; rerun the tool
against the live libraries to refresh them). Import: every output within 1e-5. Export: the files tfm writes
hold exactly the tensors transformers wrote (names, shapes, values), so transformers reloads the same model.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tfm
from tfm.convert import hugging_face
from tfm.errors import InputError

REFERENCES = Path(__file__).parent / "references"
TOLERANCE = 1e-5


def reference(name):
    return dict(np.load(REFERENCES / name / "outputs.npz"))


def bert_inputs(ref):
    return {"token_ids": ref["token_ids"], "segment_ids": ref["segment_ids"], "padding_mask": ref["padding_mask"]}


def gpt_inputs(ref):
    return {"token_ids": ref["token_ids"], "padding_mask": ref["padding_mask"]}


def all_positions(ref):
    batch, length = ref["token_ids"].shape
    return np.tile(np.arange(length, dtype="int32"), (batch, 1))


def assert_close(ours, theirs, name):
    diff = float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g} > {TOLERANCE}"
    return diff


@pytest.mark.parametrize("name", ["bert_model", "bert_legacy_names", "bert_sharded"])
def test_bert_backbone_matches_transformers(name):
    ref = reference(name)
    backbone = tfm.models.BertBackbone.from_preset(str(REFERENCES / name))
    out = backbone(bert_inputs(ref))
    assert_close(out["sequence_output"], ref["last_hidden_state"], "last_hidden_state")
    assert_close(out["pooled_output"], ref["pooler_output"], "pooler_output")
    assert backbone.count_params() == sum(v.size for v in load_file(REFERENCES / "bert_model" / "model.safetensors").values())


def test_bert_pretraining_heads_match_transformers():
    ref = reference("bert_pretraining")
    mlm = tfm.tasks.MaskedLM.from_preset(str(REFERENCES / "bert_pretraining"))
    assert mlm.next_sentence and mlm.layer_norm_epsilon == 1e-12
    out = mlm({**bert_inputs(ref), "mask_positions": all_positions(ref)})
    assert_close(out["mask_ids"], ref["prediction_logits"], "prediction_logits")
    assert_close(out["next_sentence_label"], ref["seq_relationship_logits"], "seq_relationship_logits")
    hidden = mlm.backbone(bert_inputs(ref))
    assert_close(hidden["sequence_output"], ref["last_hidden_state"], "last_hidden_state")
    assert_close(hidden["pooled_output"], ref["pooler_output"], "pooler_output")


def test_bert_masked_lm_matches_transformers():
    ref = reference("bert_masked_lm")
    with pytest.warns(UserWarning, match="no pooler weights"):
        mlm = tfm.tasks.MaskedLM.from_preset(str(REFERENCES / "bert_masked_lm"))
    assert not mlm.next_sentence
    logits = mlm({**bert_inputs(ref), "mask_positions": all_positions(ref)})
    assert_close(logits, ref["logits"], "logits")


def test_bert_classifiers_match_transformers():
    ref = reference("bert_sequence_classification")
    classifier = tfm.tasks.TextClassifier.from_preset(str(REFERENCES / "bert_sequence_classification"))
    assert classifier.num_classes == 3
    assert_close(classifier(bert_inputs(ref)), ref["logits"], "sequence logits")
    assert hugging_face.label_names(REFERENCES / "bert_sequence_classification") == ["LABEL_0", "LABEL_1", "LABEL_2"]
    ref = reference("bert_token_classification")
    with pytest.warns(UserWarning, match="no pooler weights"):
        tagger = tfm.tasks.TokenClassifier.from_preset(str(REFERENCES / "bert_token_classification"))
    assert tagger.num_labels == 5
    assert_close(tagger(bert_inputs(ref)), ref["logits"], "token logits")


@pytest.mark.parametrize("name", ["gpt2_model", "gpt2_legacy_buffers"])
def test_gpt2_backbone_matches_transformers(name):
    ref = reference(name)
    backbone = tfm.models.GptBackbone.from_preset(str(REFERENCES / name))
    assert_close(backbone(gpt_inputs(ref)), ref["last_hidden_state"], "last_hidden_state")


def test_gpt2_lm_head_matches_transformers():
    ref = reference("gpt2_lm_head")
    lm = tfm.tasks.CausalLM.from_preset(str(REFERENCES / "gpt2_lm_head"))
    assert_close(lm(gpt_inputs(ref)), ref["logits"], "logits")


def test_architecture_picks_the_task():
    task = tfm.tasks.Task.from_preset(str(REFERENCES / "bert_sequence_classification"))
    assert type(task) is tfm.tasks.TextClassifier
    assert type(tfm.tasks.Task.from_preset(str(REFERENCES / "gpt2_lm_head"))) is tfm.tasks.CausalLM
    with pytest.raises(InputError, match="names no tfm task"):
        tfm.tasks.Task.from_preset(str(REFERENCES / "bert_model"))


# ---- export ----------------------------------------------------------------------------------------------------

EXPORTS = [  # (reference dir, how to load it in tfm, the HF dir whose tensors the export must equal)
    ("bert_model", lambda d: tfm.models.BertBackbone.from_preset(d), "bert_model"),
    ("bert_legacy_names", lambda d: tfm.models.BertBackbone.from_preset(d), "bert_model"),
    ("bert_sharded", lambda d: tfm.models.BertBackbone.from_preset(d), "bert_model"),
    ("bert_pretraining", lambda d: tfm.tasks.MaskedLM.from_preset(d), "bert_pretraining"),
    ("bert_masked_lm", lambda d: tfm.tasks.MaskedLM.from_preset(d), "bert_masked_lm"),
    ("bert_sequence_classification", lambda d: tfm.tasks.TextClassifier.from_preset(d), "bert_sequence_classification"),
    ("bert_token_classification", lambda d: tfm.tasks.TokenClassifier.from_preset(d), "bert_token_classification"),
    ("gpt2_model", lambda d: tfm.models.GptBackbone.from_preset(d), "gpt2_model"),
    ("gpt2_legacy_buffers", lambda d: tfm.models.GptBackbone.from_preset(d), "gpt2_model"),
    ("gpt2_lm_head", lambda d: tfm.tasks.CausalLM.from_preset(d), "gpt2_lm_head"),
]
CONFIG_KEYS = ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
               "n_embd", "n_layer", "n_head", "n_positions", "activation_function", "layer_norm_epsilon", "id2label")


@pytest.mark.filterwarnings("ignore:.*no pooler weights")
@pytest.mark.parametrize("source,load,expected", EXPORTS, ids=[e[0] for e in EXPORTS])
def test_export_writes_the_tensors_transformers_wrote(source, load, expected, tmp_path):
    model = load(str(REFERENCES / source))
    out = model.export_to_hf(tmp_path / "export")
    ours, theirs = load_file(out / "model.safetensors"), load_file(REFERENCES / expected / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert ours[name].shape == value.shape and ours[name].dtype == value.dtype, name
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    reference_config = json.loads((REFERENCES / expected / "config.json").read_text())
    for key in CONFIG_KEYS:
        if key in reference_config and key not in ("n_inner",):
            assert config[key] == reference_config[key], key


def test_exported_model_reloads_with_the_same_outputs(tmp_path):
    ref = reference("bert_sequence_classification")
    classifier = tfm.tasks.TextClassifier.from_preset(str(REFERENCES / "bert_sequence_classification"))
    for variable in classifier.trainable_variables:  # weights no reference has seen: a fine-tuned model
        variable.assign(variable + 0.01 * np.sign(np.asarray(variable)))
    out = classifier.export_to_hf(tmp_path / "clf", label_names=["neg", "neu", "pos"])
    again = tfm.tasks.TextClassifier.from_preset(str(out))
    np.testing.assert_allclose(again(bert_inputs(ref)), classifier(bert_inputs(ref)), atol=1e-6)
    assert hugging_face.label_names(out) == ["neg", "neu", "pos"]


# ---- bad checkpoints --------------------------------------------------------------------------------------------

def copy_reference(name, tmp_path, edit_tensors=None, edit_config=None):
    target = tmp_path / name
    shutil.copytree(REFERENCES / name, target)
    if edit_tensors:
        tensors = load_file(target / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    if edit_config:
        config = json.loads((target / "config.json").read_text())
        edit_config(config)
        (target / "config.json").write_text(json.dumps(config))
    return str(target)


def test_missing_tensor_is_named_with_its_shape(tmp_path):
    directory = copy_reference("bert_model", tmp_path, edit_tensors=lambda t: t.pop("encoder.layer.1.output.dense.weight"))
    with pytest.raises(InputError, match=r"'encoder\.layer\.1\.output\.dense\.weight' is missing \(expected shape \[16, 32\]\)"):
        tfm.models.BertBackbone.from_preset(directory)


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    def shrink(tensors):
        tensors["encoder.layer.0.attention.self.key.weight"] = tensors["encoder.layer.0.attention.self.key.weight"][:8]

    directory = copy_reference("bert_model", tmp_path, edit_tensors=shrink)
    with pytest.raises(InputError, match=r"'encoder\.layer\.0\.attention\.self\.key\.weight' has shape \[8, 16\], "
                                         r"expected \[16, 16\]"):
        tfm.models.BertBackbone.from_preset(directory)


def test_unknown_model_type_and_leftover_tensors(tmp_path):
    directory = copy_reference("bert_model", tmp_path, edit_config=lambda c: c.update(model_type="roberta"))
    with pytest.raises(InputError, match=r"model_type='roberta' is not supported; tfm reads \['bert', 'gpt2'\]"):
        tfm.models.BertBackbone.from_preset(directory)
    fewer_layers = copy_reference("gpt2_model", tmp_path / "g", edit_config=lambda c: c.update(n_layer=1))
    with pytest.raises(InputError, match=r"tensors tfm does not know how to place: \['h\.1\."):
        tfm.models.GptBackbone.from_preset(fewer_layers)
    with pytest.raises(InputError, match="loads as a GptBackbone, not a BertBackbone"):
        tfm.models.BertBackbone.from_preset(str(REFERENCES / "gpt2_model"))


def test_pytorch_bin_only_says_what_to_do():
    with pytest.raises(InputError, match=r"has only pytorch_model\.bin.*save_pretrained.*safe_serialization=True"):
        tfm.models.BertBackbone.from_preset(str(REFERENCES / "bert_pytorch_bin"))


def test_failed_load_leaves_the_model_untouched():
    from tfm.convert import hf_bert
    from tfm.convert.hf_weights import load_entries

    backbone = tfm.models.BertBackbone(vocabulary_size=99, num_layers=2, num_heads=2, hidden_dim=16,
                                       intermediate_dim=32, max_sequence_length=32)
    before = [np.array(w) for w in backbone.get_weights()]
    tensors = load_file(REFERENCES / "bert_model" / "model.safetensors")
    tensors["pooler.dense.bias"] = np.zeros(3, np.float32)  # the last entry: every other tensor was fine
    with pytest.raises(InputError, match="pooler.dense.bias"):
        load_entries(hf_bert.backbone_entries(backbone), tensors, "test")
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_untied_decoder_is_refused(tmp_path):
    def untie(tensors):
        tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"] + 1.0

    directory = copy_reference("bert_masked_lm", tmp_path, edit_tensors=untie)
    with pytest.raises(InputError, match="'cls.predictions.decoder.weight' differs from"):
        with pytest.warns(UserWarning):
            tfm.tasks.MaskedLM.from_preset(directory)
