"""Devices and tf.distribute strategies of ``kresnet train``, and the multi-worker work-around.

This module imports TensorFlow when it is imported; :mod:`kresnet.training.run` imports it
only when training runs.
"""

import collections
import json
import os

import tensorflow as tf

from kresnet.training.settings import TrainingError

#: What :func:`make_strategy` sets up: the strategy, its kind (``one``, ``mirrored``,
#: ``multiworker``), replicas in sync, tasks in the cluster, this task's name and whether it
#: is the chief (the one that writes checkpoints).
Devices = collections.namedtuple("Devices", "strategy kind replicas tasks task is_chief")


def cluster_config():
    """(TF_CONFIG as a dict, number of tasks, this task's name, whether it is the chief).

    >>> cluster_config() if "TF_CONFIG" not in os.environ else (None, 1, "chief", True)
    (None, 1, 'chief', True)
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return None, 1, "chief", True
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        tasks = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise TrainingError(f"TF_CONFIG is not a valid cluster description: {error}") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return config, tasks, f"{kind}-{index}", chief


def make_strategy(name, cpu_replicas):
    """Set up devices (before TensorFlow starts its runtime) and return :class:`Devices`."""
    config, tasks, task, is_chief = cluster_config()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = ("multiworker" if tasks > 1 else
                "mirrored" if len(gpus) > 1 or (not gpus and cpu_replicas > 1) else "one")
    if cpu_replicas > 1 and name == "one":
        raise TrainingError("--cpu-replicas needs --strategy mirrored, multiworker or auto")
    if cpu_replicas > 1 and gpus:
        raise TrainingError("--cpu-replicas applies to machines without GPUs; with GPUs, "
                            "mirrored uses every GPU")
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if name == "multiworker":
        if config is None:
            raise TrainingError("--strategy multiworker needs TF_CONFIG (see docs/training.md)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return Devices(strategy, name, strategy.num_replicas_in_sync, tasks, task, is_chief)


def has_gpu():
    """Whether TensorFlow sees a GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def same_on_every_worker(strategy, value):
    """Whether every replica of every worker holds the same number ``value``."""
    stats = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([float(value), float(value) ** 2, 1.0]))
    total, squares, count = strategy.reduce("SUM", stats, axis=None).numpy()
    return abs(squares * count - total ** 2) <= 1e-6 * max(1.0, total ** 2)


def patch_keras_for_multiworker(model, example):
    """Work around keras-team/keras#20585 (Keras 3 ``fit`` under MultiWorkerMirroredStrategy).

    Keras 3.15 (1) reduces a whole distributed (x, y) batch with ``strategy.reduce`` just to
    learn its shapes, which that strategy cannot do for a tuple, and (2) averages every
    per-replica log value over axis 0, which fails for the scalar loss and accuracy. We give
    (1) a local batch of the right shapes and make (2) average scalars over replicas only.
    """
    from keras.src.backend.tensorflow import trainer  # noqa: PLC0415

    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker")
    if not all(hasattr(trainer, n) for n in needed) or \
            not hasattr(type(model), "_maybe_symbolic_build"):
        raise TrainingError("this Keras version changed the internals that multiworker "
                            "training works around (tested with Keras 3.15)")
    cls = type(model)
    model._maybe_symbolic_build = (lambda iterator=None, data_batch=None: cls._maybe_symbolic_build(
        model, data_batch=example if data_batch is None else data_batch))
    if getattr(trainer.reduce_per_replica, "kresnet_patched", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.kresnet_patched = True
    trainer.reduce_per_replica = reduce_per_replica
