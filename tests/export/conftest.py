"""Exports one tiny model per task, moves the exports, and runs every request in one fresh process that
imports only tensorflow + tensorflow_text (`standalone_runner.py`, started first: it answers each export's requests
while the next model is exported). Tests compare those answers with the live models (`references.py`) and check
the bad-input answers."""

import shutil

import keras
import numpy as np
import pytest

import tfm
from tests.export import builders
from tests.helpers import StandaloneRunner
from tfm.export import export_saved_model

L = builders.SEQUENCE_LENGTH
LONG = "John Smith flew from Paris to Berlin, then lived in London with Maria Garcia for years. " * 4
TEXTS = builders.CORPUS + ["", "Müller 北京 café Москва 🙂 ok", LONG]
QUESTIONS = ["Where did John fly?", "Who works in Geneva?", "", "What?", "Where did Ada live?"]
CONTEXTS = [builders.CORPUS[0], builders.CORPUS[1], "", LONG, builders.CORPUS[4] + " " + LONG]
MASKED = ["The film was [MASK] fun.", "[MASK] Smith flew to [MASK].", "no mask here", "", "北京 [MASK]",
          "[MASK]" + " word" * 40 + " [MASK]"]
MC_CONTEXTS = ["John Smith flew from Paris", "A dull movie", ""]
MC_CHOICES = [["to Berlin", "to the film", "great fun"], ["bad script", "witty", ""], ["a", "", "b"]]
PROMPTS = ["the film", "", "Paris 北京 in the", "the " * 40]
MAX_NEW = 12
GREEDY = {"max_new_tokens": MAX_NEW, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}

# Bad input, for every signature of every export: empty, 100,000 characters, invalid UTF-8, mixed scripts;
# batches of 1 (also a lone empty text: no token in the whole batch) and 256.
HUGE = ("Paris 北京 Müller Москва ﷺ 🙂 the film, ok. " * 3000)[:100_000]
INVALID = b"caf\xc3\xa9 \xff\xfe broken \xc3"
MIXED = "English, 中文, العربية, हिन्दी, Ελληνικά and emoji 🙂🙃"
BAD_BATCHES = {"bad": ["", HUGE, INVALID, MIXED], "one": [INVALID], "empty": [""], "none": [],
               "many": [(TEXTS + [MIXED])[i % (len(TEXTS) + 1)] for i in range(256)]}


def _strings(values):
    return np.array([v if isinstance(v, bytes) else v.encode("utf-8") for v in values], dtype=object)


def _scalars(settings):
    dtypes = {"max_new_tokens": np.int32, "temperature": np.float32, "top_k": np.int32, "top_p": np.float32,
              "seed": np.int64}
    return {k: np.asarray(v, dtypes[k]) for k, v in settings.items()}


def _models():
    """name -> (task, tokenizer, export options)."""
    # Seeded here: the session fixture is built before the per-test seed is set, so the weights would otherwise
    # depend on which tests ran first in this process (a CRF tagger's best path can then sit on a near-tie).
    keras.utils.set_random_seed(0)
    wp, sp, bpe = builders.wordpiece(), builders.sentencepiece(), builders.byte_pair()
    tasks = tfm.tasks
    return {
        "classifier": (tasks.TextClassifier(builders.bert(wp), 3), wp, {"label_names": builders.LABEL_NAMES}),
        "pair_classifier": (tasks.TextClassifier(builders.bert(wp), 2), wp, {"text_pair": True}),
        "tagger": (builders.spread_head(tasks.TokenClassifier(builders.bert(wp), 5), "logits"), wp,
                   {"label_names": builders.TAGS}),
        # A CRF tagger: the learned transitions (spread, std 1) decide tags alongside the emissions.
        "tagger_crf": (builders.spread_head(builders.spread_head(tasks.TokenClassifier(builders.bert(wp), 5, crf=True),
                                                                 "logits"), "crf", seed=3), wp,
                       {"label_names": builders.TAGS}),
        "qa": (builders.spread_head(tasks.SpanQA(builders.bert(wp)), "span_logits"), wp,
               {"doc_stride": 8, "max_query_length": 8, "max_windows": 16}),
        "mlm": (tasks.MaskedLM(builders.bert(sp)), sp, {"num_candidates": 3}),
        "mc": (tasks.MultipleChoice(builders.bert(wp), 3), wp, {}),
        "clm": (tasks.CausalLM(builders.gpt(bpe)), bpe, {"max_new_tokens": MAX_NEW}),
        # PEFT adapters go through the same export path (unmerged: the hooks are in the served graph).
        "classifier_prompt": (builders.with_adapter(builders.spread_head(tasks.TextClassifier(builders.spread_head(builders.bert(wp), "transformer_layer_0"), 3,
                                                                                             pooling="mean"),
                                                                        "logits"), method="prompt",
                                                    num_virtual_tokens=4, std=20.0), wp, {"label_names": builders.LABEL_NAMES}),
        "clm_prefix": (builders.with_adapter(tasks.CausalLM(builders.spread_head(builders.gpt(bpe),
                                                                                "transformer_layer_0")), method="prefix", num_virtual_tokens=3,
                                            std=20.0),
                       bpe, {"max_new_tokens": MAX_NEW}),
        # int8 weights go through the same export path too, with TensorFlow's own ops only.
        "classifier_int8": (builders.quantized(tasks.TextClassifier(builders.bert(wp), 3), "int8"), wp,
                            {"label_names": builders.LABEL_NAMES}),
        "clm_int8": (builders.quantized(tasks.CausalLM(builders.gpt(bpe)), "int8_weight_only"), bpe,
                     {"max_new_tokens": MAX_NEW}),
    }


def _parity_requests():
    """(export, signature, inputs) per request; answers are compared with the live models."""
    requests = {
        "classifier": [("serving_default", {"text": _strings(TEXTS)}), ("embed", {"text": _strings(TEXTS)})],
        "pair_classifier": [("serving_default", {"text": _strings(TEXTS), "text_pair": _strings(TEXTS[::-1])})],
        "tagger": [("serving_default", {"text": _strings(TEXTS)})],
        "tagger_crf": [("serving_default", {"text": _strings(TEXTS)})],
        "qa": [("serving_default", {"question": _strings(QUESTIONS), "context": _strings(CONTEXTS)})],
        "mlm": [("serving_default", {"text": _strings(MASKED)})],
        "mc": [("serving_default", {"context": _strings(MC_CONTEXTS), "choices": _strings(
            [c for row in MC_CHOICES for c in row]).reshape(len(MC_CHOICES), -1)})],
        "clm": [("serving_default", {"prompt": _strings(PROMPTS), **_scalars(GREEDY)})]
               + [("serving_default", {"prompt": _strings(PROMPTS), **_scalars(
                   {**GREEDY, "temperature": 1.0, "top_k": k, "top_p": p, "seed": seed})})
                  for k, p, seed in ((0, 0.9, 7), (0, 0.9, 7), (0, 0.9, 8), (1, 1.0, 5), (3, 1.0, 9))],
        "classifier_prompt": [("serving_default", {"text": _strings(TEXTS)})],
        "clm_prefix": [("serving_default", {"prompt": _strings(PROMPTS), **_scalars(GREEDY)})],
        "classifier_int8": [("serving_default", {"text": _strings(TEXTS)})],
        "clm_int8": [("serving_default", {"prompt": _strings(PROMPTS), **_scalars(GREEDY)})],
    }
    return [(name, signature, inputs) for name, items in requests.items() for signature, inputs in items]


def _bad_requests(signatures):
    """Every batch of BAD_BATCHES through every signature (all text inputs get the batch)."""
    requests = []
    for name, by_signature in signatures.items():
        for signature, inputs in by_signature.items():
            for batch_name, batch in BAD_BATCHES.items():
                feed = {}
                for input_name, (dtype, shape) in inputs.items():
                    if dtype != "string":
                        feed[input_name] = _scalars({input_name: GREEDY[input_name]})[input_name]
                    elif len(shape) == 2:
                        feed[input_name] = np.repeat(_strings(batch)[:, None], shape[1], axis=1)
                    else:
                        feed[input_name] = _strings(batch)
                requests.append((name, signature, feed, batch_name))
    return requests


class Served:
    """The live models, their export directories and the standalone process's answers."""

    def __init__(self, models, dirs, answers, bad, forbidden_modules):
        self.models, self.dirs, self.answers, self.bad = models, dirs, answers, bad
        self.forbidden_modules = forbidden_modules

    def answer(self, name, index=0):
        return self.answers[name][index]


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    runner = StandaloneRunner(root)  # answers each export's requests while the next one is built
    try:
        models = _models()
        parity = _parity_requests()
        dirs, order = {}, []
        for name, (task, tokenizer, options) in models.items():
            built = export_saved_model(task, tokenizer, root / "build" / name, sequence_length=L, **options)
            # Move the whole export: nothing may point back at the build location or the tokenizer files.
            shutil.move(str(built.parent), str(root / "served" / name))
            dirs[name] = root / "served" / name / built.name
            metadata = tfm.export.read_metadata(dirs[name])
            signatures = {s: spec["inputs"] for s, spec in metadata["signatures"].items()}
            # The int8 and CRF exports share their signatures' code with the plain ones: bad batches run on those.
            bad = [] if name.endswith(("_int8", "_crf")) else _bad_requests({name: signatures})
            mine = [(n, s, i) for n, s, i in parity if n == name]
            runner.submit([{"dir": str(dirs[name]), "signature": s, "inputs": i} for _, s, i in mine]
                          + [{"dir": str(dirs[name]), "signature": s, "inputs": i} for _, s, i, _ in bad])
            order += [("parity", request) for request in mine] + [("bad", request) for request in bad]
        out = runner.finish(timeout=900)
    except BaseException:
        runner.stop()
        raise
    answers, bad_answers = {}, []
    for (kind, request), result in zip(order, out["results"], strict=True):
        if kind == "parity":
            answers.setdefault(request[0], []).append(result)
        else:
            name, signature, feed, batch_name = request
            bad_answers.append((name, signature, batch_name, feed, result))
    return Served(models, dirs, answers, bad_answers, out["forbidden_modules"])
