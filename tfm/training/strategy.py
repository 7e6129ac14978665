"""tf.distribute strategy by name, and who is chief."""

import json
import os

import tensorflow as tf

from tfm.errors import InputError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def _tf_config(env):
    try:
        return json.loads(env.get("TF_CONFIG", "{}") or "{}")
    except json.JSONDecodeError as error:
        raise InputError(f"TF_CONFIG is not valid JSON ({error}): {env.get('TF_CONFIG')!r}") from None


def resolve_strategy_name(name, env, num_gpus, num_tpus=0):
    """The concrete strategy name for `name`; `auto` decided from the environment alone.

    `auto` picks `tpu` when TPU_NAME is set or this host has TPU chips (a TPU VM, as Colab's TPU runtime),
    `multi_worker` when TF_CONFIG's cluster lists more than one
    chief/worker, `mirrored` when more than one GPU is visible, and `default` otherwise. A pure function
    (no TensorFlow calls), so every branch is testable on any machine.

    Args:
        name: str, one of `STRATEGIES`.
        env: mapping, the environment (e.g. `os.environ`).
        num_gpus: int, visible GPUs.
        num_tpus: int, TPU devices attached to this host.

    Example:
    >>> resolve_strategy_name("auto", {"TPU_NAME": "my-tpu"}, num_gpus=0)
    'tpu'
    """
    if name not in STRATEGIES:
        raise InputError(f"trainer.strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if name != "auto":
        return name
    cluster = _tf_config(env).get("cluster", {})
    if env.get("TPU_NAME") or num_tpus > 0:
        return "tpu"
    if sum(len(cluster.get(k, [])) for k in ("chief", "worker")) > 1:
        return "multi_worker"
    if num_gpus > 1:
        return "mirrored"
    return "default"


def create_strategy(name="auto"):
    """Returns the strategy called `name` (`auto`: see `resolve_strategy_name`).

    Args:
        name: str, one of `auto`, `default`, `mirrored`, `multi_worker`, `tpu`.
    """
    resolved = resolve_strategy_name(name, os.environ, num_gpus=0)
    if name == "auto" and resolved == "default":
        # Count GPUs only now: listing devices initialises TensorFlow, after which MultiWorkerMirroredStrategy
        # can no longer configure its collectives.
        resolved = resolve_strategy_name(name, os.environ, len(tf.config.list_logical_devices("GPU")),
                                         len(tf.config.list_physical_devices("TPU")))
    name = resolved
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(os.environ.get("TPU_NAME", ""))


def _tpu_strategy(tpu_name):
    """TPUStrategy on `tpu_name` (a Cloud TPU name, `grpc://host:port`, or `local` on a TPU VM)."""
    if not tpu_name and not tf.config.list_physical_devices("TPU"):
        raise InputError("trainer.strategy=tpu but no TPU found: set TPU_NAME to the TPU's name or grpc:// address "
                         "(`local` on a TPU VM), or use trainer.strategy=auto")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_name or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"trainer.strategy=tpu: cannot connect to TPU_NAME={tpu_name!r}: {first_line}") from error
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
