"""Run an export on Python strings: what `tfm predict` does, as importable functions.

Inputs are rows of text; a signature with several text inputs (SpanQA's question and context, a text
pair, MultipleChoice's context and choices) takes one row as tab-separated fields in input order.
"""

import json
from pathlib import Path

import numpy as np

from tfm.export.saved_model import METADATA_FILE, latest_version_dir
from tfm.export.tflite import TFLITE_FILE, tflite_interpreter

GENERATION_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
_TRIM = {"num_entities": ("entity_text", "entity_type", "entity_start", "entity_end", "entity_score"),
         "num_masks": ("tokens", "token_ids", "scores"), "num_tokens": ("token_ids",)}


class Predictor:
    """Loads an export directory (SavedModel versions, or a TFLite export) and predicts rows of text.

    Args:
        export_dir: directory written by `export_saved_model` (latest version used) or `export_tflite`.

    Example:
        >>> Predictor("exported/sst2").predict(["a gorgeous, witty film"])  # doctest: +SKIP
        [{'label': 1, 'label_name': 'positive', 'probabilities': [0.03, 0.97]}]
    """

    def __init__(self, export_dir):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops the graph uses)

        export_dir = Path(export_dir)
        self.tflite = (export_dir / TFLITE_FILE).exists()
        if self.tflite:
            self.metadata = json.loads((export_dir / METADATA_FILE).read_text(encoding="utf-8"))
            self.runner = tflite_interpreter(export_dir / TFLITE_FILE).get_signature_runner()
            self.metadata["signatures"] = {"serving_default": {"inputs": {"text": ["string", [1]]}}}
        else:
            self.path = latest_version_dir(export_dir)
            self.metadata = json.loads((self.path / "assets" / METADATA_FILE).read_text(encoding="utf-8"))
            self.model = tf.saved_model.load(str(self.path))
        self.task = self.metadata["task"]

    @property
    def signature_names(self):
        return sorted(self.metadata["signatures"])

    def text_inputs(self, signature="serving_default"):
        """Names of the signature's string inputs, with the number of fields each takes from a row."""
        inputs = self._spec(signature)["inputs"]
        # Saved signatures list inputs alphabetically; the metadata keeps serving_default's natural order.
        order = self.metadata.get("inputs", list(inputs)) if signature == "serving_default" else list(inputs)
        names = [n for n in order if n in inputs and inputs[n][0] == "string"]
        return [(name, inputs[name][1][1] if len(inputs[name][1]) == 2 else 1) for name in names]

    def _spec(self, signature):
        if signature not in self.metadata["signatures"]:
            raise ValueError(f"no signature {signature!r}; this export has {self.signature_names}")
        return self.metadata["signatures"][signature]

    def predict(self, rows, signature="serving_default", batch_size=64, **settings):
        """Predictions for `rows` (list of str), one dict of plain Python values per row.

        Args:
            rows: list of str; multi-input signatures take tab-separated fields.
            signature: str, e.g. "serving_default" or "embed".
            batch_size: int, rows per call.
            **settings: scalar inputs of the signature (CausalLM: max_new_tokens, temperature, top_k,
                top_p, seed); missing ones take `GENERATION_DEFAULTS` / the export's max_new_tokens.
        """
        columns = self._columns(rows, signature)
        scalars = self._scalars(signature, settings)
        results = []
        for start in range(0, len(rows), batch_size):
            batch = {name: values[start:start + batch_size] for name, values in columns.items()}
            outputs = self._run(signature, batch, scalars)
            count = len(next(iter(batch.values())))
            results.extend(_row(outputs, i) for i in range(count))
        return results

    def _columns(self, rows, signature):
        fields = self.text_inputs(signature)
        width = sum(n for _, n in fields)
        columns = {name: [] for name, _ in fields}
        for number, row in enumerate(rows, 1):
            parts = row.split("\t") if width > 1 else [row]
            if len(parts) != width:
                described = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in fields)
                raise ValueError(f"input {number}: expected {width} tab-separated fields ({described}), got "
                                 f"{len(parts)}")
            at = 0
            for name, n in fields:
                columns[name].append(parts[at] if n == 1 else parts[at:at + n])
                at += n
        return columns

    def _scalars(self, signature, settings):
        inputs = self._spec(signature)["inputs"]
        defaults = {**GENERATION_DEFAULTS, "max_new_tokens": self.metadata.get("max_new_tokens")}
        scalars = {}
        for name, (dtype, shape) in inputs.items():
            if shape == []:
                value = settings.get(name)
                scalars[name] = np.asarray(defaults[name] if value is None else value, dtype=dtype)
        unknown = {k for k, v in settings.items() if v is not None} - set(scalars)
        if unknown:
            raise ValueError(f"signature {signature!r} takes no {sorted(unknown)}")
        return scalars

    def _run(self, signature, batch, scalars):
        import tensorflow as tf

        if self.tflite:
            outputs = [self.runner(text=np.array([t.encode("utf-8")], dtype=object)) for t in batch["text"]]
            return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        feed = {name: tf.constant(values, tf.string) for name, values in batch.items()}
        feed.update({name: tf.constant(value) for name, value in scalars.items()})
        return {k: v.numpy() for k, v in self.model.signatures[signature](**feed).items()}


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value] if value.dtype == object else value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _row(outputs, i):
    """Row `i` of batched outputs as plain values, with padded slots (past num_entities etc.) cut off."""
    row = {key: _plain(value[i]) for key, value in outputs.items()}
    for count, keys in _TRIM.items():
        if count in row:
            for key in keys:
                if key in row:
                    row[key] = row[key][: row[count]]
    return row


def format_prediction(task, row, signature="serving_default"):
    """One human-readable line for a prediction dict of `Predictor.predict` (the task recipe's format).

    Args:
        task: str, the export's task name (`Predictor.task`).
        row: dict, one prediction.
        signature: str; `embed` rows print their vector.
    """
    from tfm.recipes import RECIPES, get_recipe

    if signature == "embed":
        return " ".join(f"{v:.4f}" for v in row["embedding"])
    if task not in RECIPES:
        return json.dumps(row, ensure_ascii=False)
    return get_recipe(task).format_prediction(row)
