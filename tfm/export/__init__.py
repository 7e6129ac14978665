"""tfm.export: SavedModels (and a TFLite classifier) that take raw text, and `tfm export` / `tfm predict`.

`export_saved_model(task, tokenizer, path)` builds the tokenizer, packing and the task's decoding into the
graph; the export loads with `tf.saved_model.load` after `import tensorflow_text` (no tfm, no KerasHub).
"""

from tfm.export.latency import measure_latency
from tfm.export.predict import Predictor, format_prediction
from tfm.export.saved_model import export_saved_model, latest_version_dir, read_metadata
from tfm.export.tflite import export_tflite, tflite_interpreter

__all__ = ["Predictor", "export_saved_model", "export_tflite", "format_prediction", "latest_version_dir",
           "measure_latency", "read_metadata", "tflite_interpreter"]
