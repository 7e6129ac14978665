"""Model compression: int8 weights (`quantize`) and bfloat16 weights (`cast_weights`) for decoding and serving, and knowledge distillation (`Distiller`,
a config's `distill:` section) into smaller students.

>>> lm = tfm.tasks.CausalLM(tfm.models.GptBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=32))
>>> _ = tfm.compression.quantize(lm, "int8_weight_only")
>>> lm.backbone.get_layer("token_embedding").embeddings.dtype
'int8'

Only the config module loads eagerly (config parsing needs no TensorFlow); the rest on first use.
"""

from tfm._lazy import lazy_exports
from tfm.compression.config import DistillConfig  # noqa: F401

__getattr__, __dir__ = lazy_exports(__name__, {
    "MODES": "tfm.compression.quantization", "quantize": "tfm.compression.quantization",
    "quantization_error_bound": "tfm.compression.quantization", "cast_weights": "tfm.compression.quantization",
    "Distiller": "tfm.compression.distillation", "Distillation": "tfm.compression.distillation",
    "student_from_teacher": "tfm.compression.distillation",
})
