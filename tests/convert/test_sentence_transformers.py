"""The real all-MiniLM-L6-v2 (sentence-transformers, from its PyPI package) as a tfm `TextEmbedder`, against the
embeddings sentence-transformers itself computed (`tests/convert/references/minilm`, see its README)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tfm
from tests.data_paths import shared_data
from tfm.convert import sentence_transformers
from tfm.errors import InputError

REFERENCE = Path(__file__).parent / "references" / "minilm" / "outputs.npz"


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return tfm.tasks.TextEmbedder.from_preset(str(minilm_dir))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REFERENCE))


def reference_sentences(ref):
    path = shared_data(*str(ref["sentences_file"]).split("/"))
    lines = path.read_text(encoding="utf-8").splitlines()
    return [lines[i - 1].split("\t")[1] for i in ref["sentences_lines"]]


def test_pipeline_comes_from_the_sentence_transformers_files(minilm, minilm_dir):
    assert (minilm.pooling, minilm.normalize, minilm.sequence_length) == ("mean", True, 256)
    assert minilm.backbone.count_params() == 22_713_216
    assert (minilm.backbone.num_layers, minilm.backbone.hidden_dim, minilm.backbone.num_heads) == (6, 384, 12)
    assert minilm.tokenizer.vocabulary_size == 30522


def test_embeddings_equal_sentence_transformers(minilm, ref):
    x = {"token_ids": ref["token_ids"], "segment_ids": np.zeros_like(ref["token_ids"]),
         "padding_mask": ref["padding_mask"]}
    ours = minilm.predict(x, verbose=0)
    diff = np.max(np.abs(ours - ref["embeddings"]))
    assert diff <= 1e-5, diff
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_hidden_states_equal_transformers(minilm, ref):
    ids, mask = ref["token_ids"][:4, :34], ref["padding_mask"][:4, :34]
    hidden = minilm.backbone({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask})
    real = mask.astype(bool)
    diff = np.max(np.abs(np.asarray(hidden["sequence_output"])[real] - ref["last_hidden_state"][real]))
    assert diff <= 1e-5, diff


def test_embed_raw_sentences_equals_sentence_transformers(minilm, ref):
    sentences = reference_sentences(ref)
    ids = minilm.tokenizer.tokenize(sentences).to_list()
    for row, sentence_ids, mask in zip(ids, ref["token_ids"], ref["padding_mask"]):
        assert [minilm.tokenizer.cls_id] + row + [minilm.tokenizer.sep_id] == sentence_ids[mask == 1].tolist()
    diff = np.max(np.abs(minilm.embed(sentences, batch_size=8) - ref["embeddings"]))
    assert diff <= 1e-5, diff


def test_unsupported_modules_are_refused(minilm_dir, tmp_path):
    target = tmp_path / "st"
    shutil.copytree(minilm_dir, target)
    modules = json.loads((target / "modules.json").read_text())
    (target / "modules.json").write_text(json.dumps(modules + [{"idx": 3, "name": "3", "path": "3_Dense",
                                                                  "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(InputError, match=r"module type 'sentence_transformers\.models\.Dense' is not supported"):
        sentence_transformers.read_pipeline(target)
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True,
                                                                  "pooling_mode_max_tokens": True}))
    with pytest.raises(InputError, match=r"pooling \['mean', 'max'\] is not supported"):
        sentence_transformers.read_pipeline(target)
