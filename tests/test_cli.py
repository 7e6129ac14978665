import os
import subprocess
import sys

from tests.helpers import shared_sentences

TFM = os.path.join(os.path.dirname(sys.executable), "tfm")


def test_vocab_command_trains_and_saves_a_loadable_wordpiece_vocabulary(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(shared_sentences("sst2", count=3000)) + "\n", encoding="utf-8")
    result = subprocess.run([TFM, "vocab", "--corpus", str(corpus), "--type", "wordpiece", "--vocabulary-size", "1000",
                             "--out", str(tmp_path / "vocab")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    vocab = (tmp_path / "vocab" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 500 < len(vocab) <= 1000
    assert f"wordpiece vocabulary of {len(vocab)} tokens written to" in result.stdout

    from tfm.data import load_tokenizer

    tokenizer = load_tokenizer(tmp_path / "vocab")
    assert tokenizer.vocabulary_size == len(vocab)
    ids = tokenizer.tokenize(["the film"]).to_list()[0]
    assert [vocab[i] for i in ids] == ["the", "film"]


def test_vocab_command_names_a_missing_corpus(tmp_path):
    result = subprocess.run([TFM, "vocab", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "v")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "nope.txt" in result.stderr
