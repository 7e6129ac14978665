"""Loss pieces shared by the tasks' sums, distillation and R-Drop (a leaf module: it imports no tfm code)."""

from keras import ops


def label_weights(labels, sample_weight=None):
    """The weight of each labelled position, as `Task.loss_sums` counts it (labels < 0 weigh 0).

    >>> import numpy as np
    >>> ops.convert_to_numpy(label_weights(np.array([1, -1, 0]), np.array([0.5, 1.0, 2.0]))).tolist()
    [0.5, 0.0, 2.0]
    """
    weight = ops.cast(ops.greater_equal(ops.cast(labels, "int32"), 0), "float32")
    if sample_weight is not None:
        weight = weight * ops.cast(sample_weight, "float32")
    return weight
