"""TFLite export of a TextClassifier with the WordPiece tokenizer inside the model.

`tf_text.FastBertTokenizer` converts to the tf-text TFLite custom ops (FastBertNormalize +
FastWordpieceTokenize); packing is written with dense ops so everything else is a TFLite built-in.
Run the file with tf-text's op registrar (see `tflite_interpreter`).
"""

import json
import warnings
from pathlib import Path

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfm.export.text_ops import pack_dense_single

TFLITE_FILE = "model.tflite"
METADATA_FILE = "tfm_export.json"


class _TFLiteClassifier(tf.Module):
    def __init__(self, task, tokenizer, sequence_length, label_names):
        super().__init__(name="text_classifier_tflite")
        self.model = task
        self.tf_tokenizer = tokenizer.tf_tokenizer
        self.ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
        self.sequence_length = sequence_length
        self.label_names = list(label_names)

    @tf.function(input_signature=[tf.TensorSpec([1], tf.string, name="text")])
    def classify(self, text):
        ids = tf.cast(self.tf_tokenizer.tokenize(text).flat_values, tf.int32)  # one row: its tokens
        x = pack_dense_single(ids, self.sequence_length, *self.ids)
        logits = tf.cast(self.model(x, training=False), tf.float32)
        label = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {"label": label, "label_name": tf.gather(tf.constant(self.label_names), label),
                "probabilities": tf.nn.softmax(logits, axis=-1)}


class _FrozenSignature(tf.Module):
    """Gives the frozen function a named `serving_default` signature (`text` in, named outputs)."""

    def __init__(self, frozen, output_names):
        super().__init__()
        self._frozen = frozen
        self._output_names = sorted(output_names)  # the frozen function returns the dict flattened, keys sorted

    @tf.function(input_signature=[tf.TensorSpec([1], tf.string, name="text")])
    def classify(self, text):
        return dict(zip(self._output_names, self._frozen(text)))


def export_tflite(task, tokenizer, path, sequence_length=128, label_names=None, quantize=None):
    """Write `path/model.tflite` (+ `tfm_export.json`) for a TextClassifier with a WordPiece tokenizer.

    The model takes one text per call (`text`: string `[1]`) and returns `label` int32 `[1]`,
    `label_name` string `[1]` and `probabilities` float32 `[1, num_classes]`. Texts keep their first
    `sequence_length - 2` tokens, as the SavedModel. Unlike the SavedModel, invalid UTF-8 is not cleaned
    first (TFLite has no transcoding op); the tokenizer reads the raw bytes.

    Args:
        task: a single-text `tfm.tasks.TextClassifier` (not regression).
        tokenizer: a `tfm.data.WordPieceTokenizer`.
        path: output directory.
        sequence_length: int.
        label_names: list of str; default "0", "1", ...
        quantize: None (float32 weights) or `"int8"`: TFLite's dynamic-range quantization (int8 weights with a
            scale per output channel; the kernels quantize activations on the fly, per batch row).

    Returns:
        Path of the .tflite file.
    """
    from tfm.data import WordPieceTokenizer
    from tfm.tasks import TextClassifier

    if not isinstance(task, TextClassifier) or task.regression:
        raise ValueError(f"TFLite export supports TextClassifier (classification) only, got {type(task).__name__}")
    if not isinstance(tokenizer, WordPieceTokenizer):
        raise ValueError(f"TFLite export needs a WordPiece tokenizer (Fast WordPiece ops), got {tokenizer!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"TFLite export quantizes to 'int8' (dynamic range) only, got quantize={quantize!r}")
    names = [str(i) for i in range(task.num_classes)] if label_names is None else list(label_names)
    module = _TFLiteClassifier(task, tokenizer, int(sequence_length), names)
    # Freeze the weights first: converted as-is, the Keras variables stay READ_VARIABLE ops that the
    # interpreter (with its default XNNPACK delegate) reads as garbage, giving NaN probabilities.
    function = module.classify.get_concrete_function()
    signature = _FrozenSignature(convert_variables_to_constants_v2(function), function.structured_outputs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([signature.classify.get_concrete_function()],
                                                                signature)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True  # the tf-text tokenizer ops, provided by tf_text.tflite_registrar
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative dataset: dynamic range
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    target = path / TFLITE_FILE
    target.write_bytes(converter.convert())
    metadata = {"task": "text_classifier", "format": "tflite", "sequence_length": int(sequence_length),
                "inputs": ["text"], "label_names": names, "regression": False,
                "quantization": "int8_dynamic_range" if quantize else None}
    (path / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return target


def tflite_interpreter(tflite_file):
    """An interpreter for `tflite_file` with the tf-text custom ops registered (allocated, ready to run)."""
    import tensorflow_text as tf_text
    from tensorflow.lite.python import interpreter as tflite

    # tf.lite.Interpreter itself takes no op registerers in TF 2.21; this subclass does. Its deprecation
    # notice (use ai_edge_litert) is silenced: that package is not a tfm dependency.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tflite.InterpreterWithCustomOps(
            model_path=str(tflite_file), custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS)
    interpreter.allocate_tensors()
    return interpreter
