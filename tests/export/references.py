"""What the live (Keras) models answer, computed the training/evaluation way, for parity with the exports."""

import numpy as np
import tensorflow as tf

from tfm.data import SquadExample, classification_dataset, pack_segments, squad_features
from tfm.data.squad import _char_index_of_bytes
from tfm.metrics import get_entities
from tfm.tasks import best_spans, span_predictions


def _pack(tokenizer, segments, length):
    return pack_segments(segments, length, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)


def classifier_inputs(tokenizer, texts, length, pairs=None):
    """Model inputs exactly as `classification_dataset` builds them for training."""
    data = {"text": tf.constant(texts), "label": tf.zeros([len(texts)], tf.int32)}
    if pairs is not None:
        data["text_pair"] = tf.constant(pairs)
    x, _ = next(iter(classification_dataset(tf.data.Dataset.from_tensor_slices(data), tokenizer, length,
                                            batch_size=len(texts))))
    return x


def classify(task, tokenizer, texts, length, pairs=None):
    """Softmax probabilities `(N, C)`."""
    return tf.nn.softmax(task(classifier_inputs(tokenizer, texts, length, pairs))).numpy()


def embed(task, tokenizer, texts, length):
    """Mean of the final hidden states over non-padding tokens `(N, H)`."""
    x = classifier_inputs(tokenizer, texts, length)
    sequence = task.backbone(x)["sequence_output"].numpy()
    mask = x["padding_mask"].numpy()[..., None]
    return (sequence * mask).sum(1) / mask.sum(1)


def _constrained_tags(log_probs, label_names, crf=None):
    """Best BIO-valid tag ids by exhaustive dynamic programming in plain Python (no tfm code); with `crf =
    (transitions, start, end)`, the path's score also adds `start[first] + transitions[i, j] + ... + end[last]`."""
    def ok(prev, tag):
        return not tag.startswith("I-") or (prev is not None and prev[:1] in "BI" and prev[2:] == tag[2:])

    moved, start, end = crf if crf is not None else (np.zeros((len(label_names),) * 2), np.zeros(len(label_names)),
                                                     np.zeros(len(label_names)))
    best = {j: (float(log_probs[0, j] + start[j]), [j]) for j, t in enumerate(label_names) if ok(None, t)} \
        if len(log_probs) else {}
    for w in range(1, len(log_probs)):
        best = {j: max((score + float(moved[i, j]) + float(log_probs[w, j]), path + [j])
                       for i, (score, path) in best.items() if ok(label_names[i], t))
                for j, t in enumerate(label_names) if any(ok(label_names[i], t) for i in best)}
    return max((score + float(end[path[-1]]), path) for score, path in best.values())[1] if best else []


def entities(task, tokenizer, texts, length, label_names, use_crf=True):
    """Per text, a list of `(text, type, char_start, char_end, score)`: BIO-valid best tags (scored with a CRF
    tagger's learned transitions when it has them), chunked with `tfm.metrics.get_entities`; score = mean softmax
    probability of the chosen tags."""
    ids, begins, ends = (r.to_list() for r in tokenizer.tokenize_with_offsets(tf.constant(texts)))
    keep = length - 2
    ragged = tf.ragged.constant([row[:keep] for row in ids], dtype=tf.int32, ragged_rank=1)
    logits = task(_pack(tokenizer, [ragged], length)).numpy()
    probs = tf.nn.softmax(logits).numpy()
    crf = task.crf_scores() if use_crf and getattr(task, "crf", False) else None
    results = []
    for n, text in enumerate(texts):
        row = ids[n][:keep]
        starts = tokenizer.word_starts(tf.constant(row, tf.int32)).numpy().tolist() if row else []
        first_pieces = [t for t in range(len(row)) if t == 0 or starts[t]]
        last_pieces = [t - 1 for t in first_pieces[1:]] + [len(row) - 1]
        word_probs = probs[n, 1 + np.array(first_pieces, int)] if row else np.zeros((0, len(label_names)))
        word_scores = logits[n, 1 + np.array(first_pieces, int)] if crf is not None else np.log(word_probs + 1e-30)
        tag_ids = _constrained_tags(word_scores, label_names, crf)
        tags = [label_names[i] for i in tag_ids]
        char_of = _char_index_of_bytes(text)
        found = []
        for kind, first, last in get_entities(tags):
            start, end = char_of[begins[n][first_pieces[first]]], char_of[ends[n][last_pieces[last]]]
            score = float(np.mean([word_probs[w, tag_ids[w]] for w in range(first, last + 1)]))
            found.append((text[start:end], kind, start, end, score))
        results.append(found)
    return results


def answers(task, tokenizer, questions, contexts, length, doc_stride, max_query_length, max_answer_length=30):
    """`(answers, scores, windows)` per question with `squad_features` + `span_predictions` (SQuAD v1 rules)."""
    examples = [SquadExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(questions, contexts))]
    features = squad_features(examples, tokenizer, length, doc_stride, max_query_length)
    outputs = task(features.features)
    start_logits, end_logits = outputs["start_logits"].numpy(), outputs["end_logits"].numpy()
    by_id = span_predictions(features, start_logits, end_logits, max_answer_length)
    context = features.token_offsets[..., 0] >= 0
    _, _, scores = best_spans(start_logits, end_logits, max_answer_length, context_mask=context)
    best = [max((scores[w] for w in range(len(features)) if features.example_index[w] == n and context[w].any()),
                default=None) for n in range(len(examples))]
    windows = np.bincount(features.example_index, minlength=len(examples))
    return [by_id[e.id] for e in examples], best, windows


def fill_mask(task, tokenizer, texts, length, top_k):
    """Per text, per mask: `[(token, probability)] * top_k` (text split on "[MASK]", pieces tokenized)."""
    rows = []
    for text in texts:
        ids = []
        pieces = text.split("[MASK]")
        for k, piece in enumerate(pieces):
            ids += tokenizer.tokenize(tf.constant([piece])).flat_values.numpy().tolist()
            if k < len(pieces) - 1:
                ids.append(tokenizer.mask_id)
        rows.append([tokenizer.cls_id] + ids[: length - 2] + [tokenizer.sep_id])
    results = []
    for row in rows:
        positions = [i for i, t in enumerate(row) if t == tokenizer.mask_id]
        if not positions:
            results.append([])
            continue
        pad = length - len(row)
        x = {"token_ids": np.array([row + [tokenizer.pad_id] * pad], "int32"),
             "segment_ids": np.zeros((1, length), "int32"),
             "padding_mask": np.array([[1] * len(row) + [0] * pad], "int32"),
             "mask_positions": np.array([positions], "int32")}
        probs = tf.nn.softmax(task(x)).numpy()[0]
        top = np.argsort(-probs, axis=-1)[:, :top_k]
        results.append([[(tokenizer.id_to_token(int(i)), float(p[i])) for i in ids] for p, ids in zip(probs, top)])
    return results


def choose(task, tokenizer, contexts, choices, length):
    """Softmax over choices `(N, C)`; each pair packed `[CLS] context [SEP] choice [SEP]`."""
    c = len(choices[0])
    flat_contexts = [ctx for ctx in contexts for _ in range(c)]
    flat_choices = [choice for row in choices for choice in row]
    x = _pack(tokenizer, [tokenizer.tokenize(tf.constant(flat_contexts)),
                          tokenizer.tokenize(tf.constant(flat_choices))], length)
    x = {k: tf.reshape(v, [len(contexts), c, length]) for k, v in x.items()}
    return tf.nn.softmax(task(x)).numpy()


def generate(task, tokenizer, prompts, prompt_length, max_new_tokens):
    """Greedy continuations with `CausalLM.generate`: `(new token ids, text bytes)` without the end token."""
    end = tokenizer.end_token_id
    prompt_ids = []
    for prompt in prompts:
        ids = tokenizer.tokenize(tf.constant([prompt])).flat_values.numpy().tolist()[-prompt_length:]
        prompt_ids.append(ids or [end])
    out = task.generate(prompt_ids, max_new_tokens=max_new_tokens, stop_token_ids=[end],
                        pad_token_id=tokenizer.pad_id)
    new_ids = []
    for r, ids in enumerate(prompt_ids):
        row = zip(out["token_ids"][r][len(ids):], out["padding_mask"][r][len(ids):])
        new_ids.append([int(t) for t, m in row if m and t != end])
    texts = tokenizer.detokenize(tf.ragged.constant(new_ids, tf.int32, ragged_rank=1)).numpy().tolist()
    return new_ids, texts  # texts as bytes: random byte-level tokens need not form valid UTF-8
