"""Google BERT (TF1) and OpenAI GPT-2 checkpoints, against the real `transformers` outputs.

No original checkpoint is reachable offline, so each test writes one in the original format and names: a TF1
name-based checkpoint (`tf.compat.v1.train.Saver`, as Google's and OpenAI's files are) holding the weights of a
`references/` model that transformers itself saved and ran. The renaming here is written out independently of
`tfm.convert.google_bert` / `openai_gpt2`. Google's `hidden_act: gelu` is the tanh GELU, so the BERT reference is
`bert_pretraining_gelu_new` (transformers with `gelu_new`).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import tfm
from tfm.convert import google_bert, hugging_face, openai_gpt2, presets
from tfm.errors import InputError

REFERENCES = Path(__file__).parent / "references"
TOLERANCE = 1e-5
SENTENCES = ["The cat sat on the mat.", "Hello, hellos!", "the CAT's mat", "  spaced   out\ttext  "]


def reference(name):
    return dict(np.load(REFERENCES / name / "outputs.npz"))


def assert_close(ours, theirs, name):
    diff = float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g} > {TOLERANCE}"
    return diff


def write_tf1_checkpoint(prefix, variables):
    """A name-based TF1 checkpoint (`Saver` V2 format: prefix.index + prefix.data-00000-of-00001)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        holders = {name: tf.compat.v1.Variable(value, name=f"v{i}")
                   for i, (name, value) in enumerate(variables.items())}
        saver = tf.compat.v1.train.Saver(var_list=holders)  # dict keys are the names written
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False)


# ---- Google BERT ------------------------------------------------------------------------------------------------
def google_names(hf_tensors):
    """HF BertForPreTraining tensors -> Google's variables: `layer_N`, `/`, kernels (in, out), gamma/beta."""
    special = {"cls.predictions.bias": "cls/predictions/output_bias",
               "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",  # [2, H] as stored
               "cls.seq_relationship.bias": "cls/seq_relationship/output_bias"}
    out = {}
    for name, value in hf_tensors.items():
        if name in special:
            out[special[name]] = value
            continue
        g = re.sub(r"\.layer\.(\d+)\.", r"/layer_\1/", name).replace(".", "/")
        if g.endswith("_embeddings/weight"):
            g = g[: -len("/weight")]
        elif "LayerNorm/" in g:
            g = g.replace("LayerNorm/weight", "LayerNorm/gamma").replace("LayerNorm/bias", "LayerNorm/beta")
        elif g.endswith("/weight"):
            g, value = g[: -len("weight")] + "kernel", value.T
        out[g] = np.ascontiguousarray(value)
    return out


BERT_CONFIG = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
               "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 32, "max_position_embeddings": 32,
               "num_attention_heads": 2, "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": 99}
WORDS = ["the", "cat", "sat", "on", "mat", "hello", "##s", ".", ",", "!", "'", "s", "The", "CAT", "spaced", "out",
         "text", "hel", "##lo", "##ed"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
VOCAB += [f"[unused{i}]" for i in range(99 - len(VOCAB))]


def google_dir(path, edit=None, config=None, optimizer_state=True):
    """A Google BERT directory from `bert_pretraining_gelu_new`, with Adam slots and global_step as released."""
    variables = google_names(load_file(REFERENCES / "bert_pretraining_gelu_new" / "model.safetensors"))
    if optimizer_state:
        rng = np.random.default_rng(0)
        for name, value in list(variables.items()):
            variables[f"{name}/adam_m"] = rng.normal(size=value.shape).astype(np.float32)
            variables[f"{name}/adam_v"] = rng.random(value.shape).astype(np.float32)
        variables["global_step"] = np.int64(1000000)
    if edit:
        edit(variables)
    path.mkdir(parents=True)
    write_tf1_checkpoint(path / "bert_model.ckpt", variables)
    (path / "bert_config.json").write_text(json.dumps(config or BERT_CONFIG))
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return google_dir(tmp_path_factory.mktemp("google") / "uncased_L-2_H-16_A-2")


def test_google_bert_matches_transformers(bert_dir):
    ref = reference("bert_pretraining_gelu_new")
    inputs = {k: ref[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    config, tensors = google_bert.read_checkpoint(bert_dir)
    assert config["architectures"] == ["BertForPreTraining"] and config["hidden_act"] == "gelu_new"
    hf = load_file(REFERENCES / "bert_pretraining_gelu_new" / "model.safetensors")
    assert sorted(tensors) == sorted(hf)  # the renaming gives back exactly what transformers saved
    for name, value in hf.items():
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)

    backbone = tfm.models.BertBackbone.from_preset(str(bert_dir))
    assert backbone.activation == "gelu_approximate"
    out = backbone(inputs)
    diffs = [assert_close(out["sequence_output"], ref["last_hidden_state"], "last_hidden_state"),
             assert_close(out["pooled_output"], ref["pooler_output"], "pooler_output")]
    mlm = tfm.tasks.MaskedLM.from_preset(str(bert_dir))
    assert mlm.next_sentence and mlm.activation == "gelu_approximate"
    positions = np.tile(np.arange(ref["token_ids"].shape[1], dtype="int32"), (ref["token_ids"].shape[0], 1))
    heads = mlm({**inputs, "mask_positions": positions})
    diffs += [assert_close(heads["mask_ids"], ref["prediction_logits"], "prediction_logits"),
              assert_close(heads["next_sentence_label"], ref["seq_relationship_logits"], "seq_relationship_logits")]
    print("google bert max abs diffs (hidden, pooled, mlm, nsp):", diffs)
    # The reference tells the GELUs apart: HF's exact-erf `gelu` on the same weights is off by ~9e-5 here.
    erf = hugging_face.backbone_from_tensors({**config, "hidden_act": "gelu"}, tensors, "erf", tfm.models.BertBackbone)
    erf_diff = float(np.max(np.abs(np.asarray(erf(inputs)["sequence_output"]) - ref["last_hidden_state"])))
    print("exact-erf gelu instead:", erf_diff)
    assert erf_diff > 5 * TOLERANCE


def test_google_bert_tokenizer_case_follows_the_directory_name(bert_dir, tmp_path):
    from tokenizers import BertWordPieceTokenizer

    vocab_file = str(bert_dir / "vocab.txt")
    uncased = presets.load_tokenizer(bert_dir)
    assert uncased.lowercase and uncased.vocabulary_size == 99
    assert uncased.tokenize(["The CAT's hellos!"]).to_list() == [[5, 6, 15, 16, 10, 11, 14]]
    cased_dir = tmp_path / "cased_L-2_H-16_A-2"
    cased_dir.mkdir()
    (cased_dir / "vocab.txt").write_text((bert_dir / "vocab.txt").read_text())
    cased = google_bert.load_tokenizer(cased_dir)
    assert not cased.lowercase and google_bert.load_tokenizer(cased_dir, do_lower_case=True).lowercase
    assert google_bert.lowercase_from_name("multilingual_L-12_H-768_A-12")  # Google's uncased multilingual
    assert not google_bert.lowercase_from_name("multi_cased_L-12_H-768_A-12")
    for tok, lowercase in ((uncased, True), (cased, False)):
        theirs = BertWordPieceTokenizer(vocab_file, lowercase=lowercase)
        assert tok.tokenize(SENTENCES).to_list() == [theirs.encode(s, add_special_tokens=False).ids for s in SENTENCES]


def test_google_bert_without_heads_is_a_bert_model(tmp_path):
    d = google_dir(tmp_path / "plain", optimizer_state=False,
                   edit=lambda v: [v.pop(n) for n in list(v) if n.startswith("cls/")])
    assert google_bert.read_checkpoint(d)[0]["architectures"] == ["BertModel"]
    ref = reference("bert_pretraining_gelu_new")
    out = tfm.models.BertBackbone.from_preset(str(d))({k: ref[k] for k in ("token_ids", "segment_ids", "padding_mask")})
    assert_close(out["sequence_output"], ref["last_hidden_state"], "last_hidden_state")
    assert_close(out["pooled_output"], ref["pooler_output"], "pooler_output")
    with pytest.raises(InputError, match="names no tfm task"):
        tfm.tasks.Task.from_preset(str(d))


def test_google_bert_bad_checkpoints_name_the_variable(tmp_path):
    def extra(v):
        v["bert/encoder/layer_2/output/dense/kernel"] = np.zeros((32, 16), np.float32)

    with pytest.raises(InputError, match=r"variables tfm does not know how to place: "
                                         r"'bert/encoder/layer_2/output/dense/kernel' \[32, 16\] "
                                         r"\(does bert_config.json match"):
        google_bert.read_checkpoint(google_dir(tmp_path / "extra", extra))
    with pytest.raises(InputError, match=r"variable 'bert/encoder/layer_1/output/dense/kernel' is missing "
                                         r"\(expected shape \[32, 16\]\)"):
        google_bert.read_checkpoint(google_dir(tmp_path / "missing",
                                               lambda v: v.pop("bert/encoder/layer_1/output/dense/kernel")))

    def shrink(v):
        v["bert/encoder/layer_0/attention/self/key/kernel"] = v["bert/encoder/layer_0/attention/self/key/kernel"][:, :8]

    with pytest.raises(InputError, match=r"variable 'bert/encoder/layer_0/attention/self/key/kernel' has shape "
                                         r"\[16, 8\], expected \[16, 16\]"):
        tfm.models.BertBackbone.from_preset(str(google_dir(tmp_path / "shape", shrink)))
    with pytest.raises(InputError, match=r"variable 'cls/predictions/transform/dense/bias' is missing"):
        google_bert.read_checkpoint(google_dir(tmp_path / "half_head",
                                               lambda v: v.pop("cls/predictions/transform/dense/bias")))
    with pytest.raises(InputError, match=r"hidden_act='linear' is not supported"):
        google_bert.read_checkpoint(google_dir(tmp_path / "act", config={**BERT_CONFIG, "hidden_act": "linear"}))


# ---- OpenAI GPT-2 -----------------------------------------------------------------------------------------------
def openai_names(hf_tensors):
    """HF GPT2LMHeadModel tensors -> OpenAI's: `model/hN/...`, g/b, conv1d `w` with its leading axis of 1."""
    out = {}
    for name, value in hf_tensors.items():
        name = name.removeprefix("transformer.")
        g = "model/" + re.sub(r"^h\.(\d+)\.", r"h\1/", name).replace(".", "/")
        if g in ("model/wte/weight", "model/wpe/weight"):
            g = g[: -len("/weight")]
        elif re.search(r"/ln_(1|2|f)/", g):
            g = g.replace("/weight", "/g").replace("/bias", "/b")
        elif g.endswith("/weight"):
            g, value = g[: -len("weight")] + "w", value[None]
        else:
            g = g[: -len("bias")] + "b"
        out[g] = np.ascontiguousarray(value)
    return out


HPARAMS = {"n_vocab": 99, "n_ctx": 32, "n_embd": 16, "n_head": 2, "n_layer": 2}


def openai_dir(path, edit=None):
    variables = openai_names(load_file(REFERENCES / "gpt2_lm_head" / "model.safetensors"))
    assert variables["model/h0/attn/c_attn/w"].shape == (1, 16, 48) and "model/ln_f/g" in variables
    if edit:
        edit(variables)
    path.mkdir(parents=True)
    write_tf1_checkpoint(path / "model.ckpt", variables)
    (path / "hparams.json").write_text(json.dumps(HPARAMS))
    return path


def test_openai_gpt2_matches_transformers(tmp_path):
    ref = reference("gpt2_lm_head")
    d = openai_dir(tmp_path / "124M")
    assert presets.detect(d) == "openai_gpt2"
    lm = tfm.tasks.CausalLM.from_preset(str(d))
    diff = assert_close(lm({"token_ids": ref["token_ids"], "padding_mask": ref["padding_mask"]}), ref["logits"],
                        "logits")
    print("openai gpt2 logits max abs diff:", diff)
    assert type(tfm.tasks.Task.from_preset(str(d))) is tfm.tasks.CausalLM
    hf = load_file(REFERENCES / "gpt2_lm_head" / "model.safetensors")
    assert lm.backbone.count_params() == sum(v.size for v in hf.values())


def test_openai_gpt2_tokenizer_matches_tokenizers(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(SENTENCES * 20 + ["the quick brown fox jumps over the lazy dog"] * 5,
                                vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False)
    model = json.loads(trained.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    assert len(merges) > 10
    (tmp_path / "encoder.json").write_text(json.dumps(model["vocab"]))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (tmp_path / "hparams.json").write_text(json.dumps(HPARAMS))
    ours = presets.load_tokenizer(tmp_path)
    # No trailing whitespace: KerasHub's BPE splits a final "  " into two "Ġ" where GPT-2's regex keeps "ĠĠ".
    texts = [s.rstrip() for s in SENTENCES] + ["the lazy cat jumps over the fox", "unseen wörds ✓"]
    assert ours.tokenize(texts).to_list() == [trained.encode(t).ids for t in texts]
    assert ours.eos_id == model["vocab"]["<|endoftext|>"] == 0


def test_openai_gpt2_bad_checkpoints_name_the_variable(tmp_path):
    def flat(v):
        v["model/h1/mlp/c_fc/w"] = v["model/h1/mlp/c_fc/w"][0]

    with pytest.raises(InputError, match=r"variable 'model/h1/mlp/c_fc/w' has shape \[16, 64\], "
                                         r"expected \[1, 16, 64\]"):
        openai_gpt2.read_checkpoint(openai_dir(tmp_path / "flat", flat))
    with pytest.raises(InputError, match=r"variable 'model/ln_f/b' is missing \(expected shape \[16\]\)"):
        tfm.models.GptBackbone.from_preset(str(openai_dir(tmp_path / "missing", lambda v: v.pop("model/ln_f/b"))))

    def extra(v):
        v["model/h0/attn/c_attn/w_extra"] = np.zeros((2,), np.float32)
        v["model/h0/attn/c_attn/w/Adam"] = v["model/h0/attn/c_attn/w"]  # optimizer slots are skipped

    with pytest.raises(InputError, match=r"does not know how to place: 'model/h0/attn/c_attn/w_extra' \[2\] "
                                         r"\(does hparams.json match"):
        openai_gpt2.read_checkpoint(openai_dir(tmp_path / "extra", extra))
    truncated = openai_dir(tmp_path / "truncated")
    data = truncated / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"model.ckpt: variable 'model/wte' is unreadable"):
        openai_gpt2.read_checkpoint(truncated)
    (tmp_path / "nockpt").mkdir()
    (tmp_path / "nockpt" / "hparams.json").write_text(json.dumps(HPARAMS))
    with pytest.raises(InputError, match=r"no TensorFlow checkpoint \(expected model.ckpt.index"):
        openai_gpt2.read_checkpoint(tmp_path / "nockpt")
