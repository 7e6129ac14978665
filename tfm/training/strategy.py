"""tf.distribute strategy by name, and who is chief."""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def _tf_config():
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def create_strategy(name="auto"):
    """Returns the strategy called `name`.

    `auto` picks a TPU when one is configured (TPU_NAME), multi-worker when TF_CONFIG lists more
    than one worker, mirrored when more than one GPU is visible, and the default strategy otherwise.

    Args:
        name: str, one of `auto`, `default`, `mirrored`, `multi_worker`, `tpu`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"trainer.strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if name == "auto":
        cluster = _tf_config().get("cluster", {})
        if os.environ.get("TPU_NAME"):
            name = "tpu"
        elif sum(len(cluster.get(k, [])) for k in ("chief", "worker")) > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True on the one worker that writes summaries, configs and the real checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0) or task_type is None


def split_logical_cpus(count):
    """Splits the physical CPU into `count` logical devices (for MirroredStrategy tests and demos).

    Must run before TensorFlow initialises its devices.

    Args:
        count: int, number of logical CPUs.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
