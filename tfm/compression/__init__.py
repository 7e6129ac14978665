"""Model compression: int8 weights (`quantize`) for decoding and serving.

>>> lm = tfm.tasks.CausalLM(tfm.models.GptBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=32))
>>> _ = tfm.compression.quantize(lm, "int8_weight_only")
>>> lm.backbone.get_layer("token_embedding").embeddings.dtype
'int8'
"""

from tfm.compression.quantization import MODES, quantize, quantization_error_bound  # noqa: F401
