"""Google's original BERT checkpoints (google-research/bert, TF1): `bert_model.ckpt.*`, `bert_config.json`,
`vocab.txt`.

Why a renamer and not a second loader: the variables are renamed to Hugging Face names and layouts (Dense `kernel`
`(in, out)` -> `weight` `(out, in)`, LayerNorm `gamma`/`beta` -> `weight`/`bias`) and handed to the HF engine
(`tfm.convert.hugging_face`), so BERT keeps one tensor table. Checks run on Google's names first, so an error
names the variable as it is in the checkpoint:

| Google variable                                          | Hugging Face tensor                                 |
|----------------------------------------------------------|-----------------------------------------------------|
| `bert/embeddings/{word,position,token_type}_embeddings`  | `bert.embeddings.*_embeddings.weight`               |
| `bert/embeddings/LayerNorm/{gamma,beta}`                 | `bert.embeddings.LayerNorm.{weight,bias}`           |
| `bert/encoder/layer_N/attention/self/{query,key,value}`  | `bert.encoder.layer.N.attention.self.*` (transposed)|
| `.../attention/output/{dense,LayerNorm}`, `.../intermediate/dense`, `.../output/{dense,LayerNorm}` | same path |
| `bert/pooler/dense`                                      | `bert.pooler.dense`                                 |
| `cls/predictions/transform/{dense,LayerNorm}`            | `cls.predictions.transform.*`                       |
| `cls/predictions/output_bias`                            | `cls.predictions.bias` (decoder tied to words)      |
| `cls/seq_relationship/output_{weights,bias}` (`[2, H]`)  | `cls.seq_relationship.{weight,bias}` (as stored)    |

Optimizer state (`*/adam_m`, `*/adam_v`, `*/Adam*`, `global_step`, ...) is skipped; any other variable the config
does not account for is an error naming it. `hidden_act: gelu` in a Google config is the tanh approximation
(Google's `modeling.gelu`), so it maps to HF `gelu_new` (tfm `gelu_approximate`), not HF's exact-erf `gelu`.
Google's LayerNorm epsilon (`tf.contrib.layers.layer_norm`) is 1e-12, as tfm's BERT.
"""

import json
from pathlib import Path

import numpy as np

from tfm.errors import InputError

CONFIG_FILE = "bert_config.json"
VOCAB_FILE = "vocab.txt"
CHECKPOINT = "bert_model.ckpt"
ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "tanh": "tanh"}  # Google name -> HF name (Google's gelu is tanh)
SKIPPED_SUFFIXES = ("/adam_m", "/adam_v", "/Adam", "/Adam_1", "/Momentum", "/ExponentialMovingAverage")
SKIPPED_NAMES = ("global_step", "beta1_power", "beta2_power", "good_steps", "current_loss_scale", "loss_scale")


# ---- TF1 name-based checkpoints (shared with `openai_gpt2`) ------------------------------------------------------
def checkpoint_prefix(directory, default):
    """The checkpoint prefix in `directory`: `default` when present, else the `checkpoint` file's, else the only one.

    Raises:
        InputError: no `*.index` file, or several with nothing saying which.
    """
    import tensorflow as tf

    d = Path(directory)
    if (d / f"{default}.index").is_file():
        return d / default
    indexes = sorted(p.name[: -len(".index")] for p in d.glob("*.index"))
    if not indexes:
        raise InputError(f"{d}: no TensorFlow checkpoint (expected {default}.index and {default}.data-*)")
    latest = tf.train.latest_checkpoint(str(d)) if (d / "checkpoint").is_file() else None
    if latest and Path(latest + ".index").is_file():
        return Path(latest)
    if len(indexes) > 1:
        raise InputError(f"{d}: several checkpoints {indexes} and no {default}.index or `checkpoint` file naming one")
    return d / indexes[0]


def is_optimizer_state(name):
    """Training state saved beside the weights (Adam/momentum slots, step counters, loss scale): never weights."""
    return name in SKIPPED_NAMES or name.endswith(SKIPPED_SUFFIXES)


def read_variables(prefix, expected, optional_groups=(), config_file=""):
    """Checks a TF1 checkpoint against `expected` and returns its arrays.

    Args:
        prefix: checkpoint path prefix (`DIR/bert_model.ckpt`).
        expected: dict variable name -> expected shape (tuple).
        optional_groups: name prefixes whose variables may be absent together (e.g. a head); a group present in
            part is an error naming the missing variable.
        config_file: the config named in the "does it match" hint of errors.

    Returns:
        dict variable name -> numpy array, for the expected variables present.

    Raises:
        InputError: unreadable checkpoint; a variable nobody expects (optimizer state aside), a missing one or a
            wrong shape, naming the variable and both shapes.
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    except Exception as error:  # tf raises NotFoundError / DataLossError with multi-line text
        raise InputError(f"{prefix}: unreadable TensorFlow checkpoint ({str(error).splitlines()[0][:200]})") from None
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes:  # e.g. TF Model Garden's BERT: `layer_with_weights-N/...` names
        raise InputError(f"{prefix}: a TF2 object-based checkpoint; tfm reads the TF1 name-based checkpoints of "
                         f"google-research/bert and openai/gpt-2")
    hint = f" (does {config_file} match the checkpoint?)" if config_file else ""
    unknown = sorted(n for n in shapes if n not in expected and not is_optimizer_state(n))
    if unknown:
        listed = ", ".join(f"{n!r} {list(shapes[n])}" for n in unknown[:8])
        raise InputError(f"{prefix}: variables tfm does not know how to place: {listed}"
                         f"{' ...' if len(unknown) > 8 else ''}{hint}")
    absent_groups = [g for g in optional_groups if not any(n.startswith(g) for n in shapes)]
    out = {}
    for name, shape in expected.items():
        if name not in shapes:
            if any(name.startswith(g) for g in absent_groups):
                continue
            raise InputError(f"{prefix}: variable {name!r} is missing (expected shape {list(shape)}){hint}")
        if shapes[name] != tuple(shape):
            raise InputError(f"{prefix}: variable {name!r} has shape {list(shapes[name])}, expected {list(shape)}"
                             f"{hint}")
        try:
            out[name] = reader.get_tensor(name)
        except Exception as error:  # a truncated or corrupt .data-* file shows only when a tensor is read
            raise InputError(f"{prefix}: variable {name!r} is unreadable "
                             f"({str(error).splitlines()[0][:200]})") from None
    return out


def read_json(path, what):
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


# ---- BERT -----------------------------------------------------------------------------------------------------
def hf_config(google, source):
    """The HF `config.json` dict of a `bert_config.json` dict (Google's `BertConfig` defaults where absent)."""
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in google]
    if missing:
        raise InputError(f"{source}: no {missing[0]!r}")
    act = str(google.get("hidden_act", "gelu")).lower()  # Google's get_activation is case-insensitive
    if act not in ACTIVATIONS:
        raise InputError(f"{source}: hidden_act={google.get('hidden_act')!r} is not supported; expected one of "
                         f"{sorted(ACTIVATIONS)}")
    return {
        "model_type": "bert",
        "vocab_size": google["vocab_size"],
        "hidden_size": google["hidden_size"],
        "num_hidden_layers": google["num_hidden_layers"],
        "num_attention_heads": google["num_attention_heads"],
        "intermediate_size": google["intermediate_size"],
        "hidden_act": ACTIVATIONS[act],
        "hidden_dropout_prob": google.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": google.get("attention_probs_dropout_prob", 0.1),
        "max_position_embeddings": google.get("max_position_embeddings", 512),
        "type_vocab_size": google.get("type_vocab_size", 16),  # Google's BertConfig default; released configs say 2
        "initializer_range": google.get("initializer_range", 0.02),
        "layer_norm_eps": 1e-12,
    }


def variable_table(config):
    """Google variable -> (HF name, expected Google shape, transpose), for every variable a BERT may hold."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    table = {
        "bert/embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", (v, h), False),
        "bert/embeddings/position_embeddings": ("bert.embeddings.position_embeddings.weight",
                                                (config["max_position_embeddings"], h), False),
        "bert/embeddings/token_type_embeddings": ("bert.embeddings.token_type_embeddings.weight",
                                                  (config["type_vocab_size"], h), False),
    }

    def dense(google, hf, n_in, n_out):
        table[f"{google}/kernel"] = (f"{hf}.weight", (n_in, n_out), True)  # Keras (in, out) -> torch (out, in)
        table[f"{google}/bias"] = (f"{hf}.bias", (n_out,), False)

    def norm(google, hf):
        table[f"{google}/gamma"] = (f"{hf}.weight", (h,), False)
        table[f"{google}/beta"] = (f"{hf}.bias", (h,), False)

    norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm")
    for n in range(config["num_hidden_layers"]):
        g, t = f"bert/encoder/layer_{n}/", f"bert.encoder.layer.{n}."
        for part in ("query", "key", "value"):
            dense(g + f"attention/self/{part}", t + f"attention.self.{part}", h, h)
        dense(g + "attention/output/dense", t + "attention.output.dense", h, h)
        norm(g + "attention/output/LayerNorm", t + "attention.output.LayerNorm")
        dense(g + "intermediate/dense", t + "intermediate.dense", h, i)
        dense(g + "output/dense", t + "output.dense", i, h)
        norm(g + "output/LayerNorm", t + "output.LayerNorm")
    dense("bert/pooler/dense", "bert.pooler.dense", h, h)
    dense("cls/predictions/transform/dense", "cls.predictions.transform.dense", h, h)
    norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
    table["cls/predictions/output_bias"] = ("cls.predictions.bias", (v,), False)
    table["cls/seq_relationship/output_weights"] = ("cls.seq_relationship.weight", (2, h), False)  # already (out, in)
    table["cls/seq_relationship/output_bias"] = ("cls.seq_relationship.bias", (2,), False)
    return table


OPTIONAL_GROUPS = ("bert/pooler/", "cls/predictions/", "cls/seq_relationship/")


def read_checkpoint(directory):
    """`(HF config dict, {HF name: numpy array})` of a Google BERT directory, checked in Google's names.

    `architectures` is `BertForPreTraining` with both heads, `BertForMaskedLM` with the MLM head only, else
    `BertModel`.
    """
    d = Path(directory)
    config = hf_config(read_json(d / CONFIG_FILE, "a Google BERT directory has bert_config.json"), d / CONFIG_FILE)
    prefix = checkpoint_prefix(d, CHECKPOINT)
    table = variable_table(config)
    found = read_variables(prefix, {name: shape for name, (_, shape, _) in table.items()}, OPTIONAL_GROUPS,
                           config_file=CONFIG_FILE)
    has_mlm = "cls/predictions/output_bias" in found
    has_nsp = "cls/seq_relationship/output_bias" in found
    if has_nsp and not has_mlm:
        raise InputError(f"{prefix}: cls/seq_relationship without cls/predictions (a next-sentence-only model) is "
                         f"not supported")
    config["architectures"] = ["BertForPreTraining" if has_nsp else "BertForMaskedLM" if has_mlm else "BertModel"]
    tensors = {}
    for name, value in found.items():
        hf_name, _, transpose = table[name]
        tensors[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    return config, tensors


def source(directory):
    """How errors name the checkpoint: its path prefix."""
    return str(checkpoint_prefix(directory, CHECKPOINT))


def lowercase_from_name(name):
    """Google's convention: the directory name says the case (`uncased_L-12_H-768_A-12` vs `cased_...`).

    `*cased*` without `uncased` is cased; everything else lowercases, as Google's `--do_lower_case` default and its
    `multilingual_*` / `chinese_*` (uncased) releases do.
    """
    name = name.lower()
    return not ("cased" in name and "uncased" not in name)


def load_tokenizer(directory, do_lower_case=None):
    """`tfm.data.WordPieceTokenizer` over `vocab.txt`; case from `do_lower_case`, else the directory's name."""
    from tfm.data import WordPieceTokenizer

    path = Path(directory) / VOCAB_FILE
    if not path.is_file():
        raise InputError(f"{path}: no such file (a Google BERT directory has vocab.txt)")
    vocabulary = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]  # as Google's load_vocab
    if "[UNK]" not in vocabulary:
        raise InputError(f"{path}: no '[UNK]' token ({len(vocabulary)} lines)")
    if do_lower_case is None:
        do_lower_case = lowercase_from_name(Path(directory).resolve().name)
    return WordPieceTokenizer(vocabulary, lowercase=do_lower_case)

