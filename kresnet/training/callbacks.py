"""Keras callbacks of ``kresnet train``: checkpoints and history, moving-statistics sync,
resumable plateau and early-stopping counters, and the test hook that kills the process.

This module imports Keras and TensorFlow when it is imported; :mod:`kresnet.training.run`
imports it only when training runs.

The hook: with ``KRESNET_TRAIN_KILL_AFTER_BATCHES=N`` in the environment, the process kills
itself with SIGKILL right after its N-th training batch (counted from the start of this
process, over all epochs), so that tests can stop a run at an exact place instead of
sleeping. It is not an option of the command and has no other use.
"""

import json
import os
import re
import signal
import time

import keras
import tensorflow as tf

import kresnet
from kresnet import files
from kresnet.training import curves
from kresnet.training.settings import LATEST, TrainingError

KILL_AFTER_BATCHES = "KRESNET_TRAIN_KILL_AFTER_BATCHES"


def make_callbacks(settings, model, devices, run):
    """The callbacks of ``fit``, in order; the resumable ones are put in ``run.stateful``."""
    found = []
    kill = kill_after_batches()
    if kill is not None:
        found.append(KillAfterBatches(kill))
    if devices.replicas > 1:
        found.append(SyncMovingStatistics(devices.strategy, model))
    saved = run.state.get("callbacks", {})
    if settings.schedule == "plateau":
        plateau = resumable(keras.callbacks.ReduceLROnPlateau,
                            ("wait", "best", "cooldown_counter"))
        found.append(plateau(monitor="val_accuracy", mode="max", factor=0.5, patience=2,
                             min_lr=1e-6, restore=saved.get("plateau"), verbose=0))
        run.stateful["plateau"] = found[-1]
    if settings.patience:
        stopping = resumable(keras.callbacks.EarlyStopping, ("wait", "best", "best_epoch"))
        found.append(stopping(monitor="val_accuracy", mode="max", patience=settings.patience,
                              restore=saved.get("early_stopping")))
        run.stateful["early_stopping"] = found[-1]
    found.append(Checkpointer(run, devices.is_chief))
    return found


def resumable(base, keys):
    """``base`` (a Keras callback class) whose counters ``keys`` survive a restart.

    >>> Plateau = resumable(keras.callbacks.ReduceLROnPlateau, ("wait", "best"))
    >>> Plateau(restore={"wait": 1, "best": 0.5}).restore
    {'wait': 1, 'best': 0.5}
    """

    class Resumable(base):
        def __init__(self, *args, restore=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.restore = restore or {}

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)  # resets the counters; then put ours back
            for key, value in self.restore.items():
                setattr(self, key, value)

        def state(self):
            return {k: (None if getattr(self, k) is None else float(getattr(self, k)))
                    for k in keys}

    Resumable.__name__ = f"Resumable{base.__name__}"
    return Resumable


class Checkpointer(keras.callbacks.Callback):
    """Each epoch: a history row; on the chief, best.keras, the checkpoint, history.csv and
    curves.png, each written atomically."""

    def __init__(self, run, is_chief):
        super().__init__()
        self.run, self.is_chief = run, is_chief

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        # The rate this epoch starts with (a plateau cut at its end applies to the next).
        self.lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        run, state = self.run, self.run.state
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
               "seconds": time.time() - self.started}
        row["lr"] = self.lr
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["callbacks"] = {k: c.state() for k, c in run.stateful.items()}
        state["stopped"] = bool(self.model.stop_training)  # set by EarlyStopping before us
        best = state["best"]
        improved = best is None or row.get("val_accuracy", 0.0) > best["val_accuracy"]
        if improved:
            state["best"] = {"epoch": epoch + 1, "val_accuracy": row.get("val_accuracy", 0.0)}
        if not self.is_chief:
            return
        name = f"epoch-{epoch + 1:04d}.keras"
        if improved:  # the model is serialised once; the checkpoint is a copy of its bytes
            kresnet.save(self.model, run.path("best.keras"))
            with open(run.path("best.keras"), "rb") as handle:
                files.write_bytes(os.path.join(run.checkpoints, name), handle.read())
        else:
            kresnet.save(self.model, os.path.join(run.checkpoints, name))
        state["checkpoint"] = name
        files.write_bytes(os.path.join(run.checkpoints, LATEST),
                          json.dumps(state, indent=1).encode())
        for old in os.listdir(run.checkpoints):  # only after the pointer moved on
            if re.fullmatch(r"epoch-\d+\.keras", old) and old != name:
                os.remove(os.path.join(run.checkpoints, old))
        run.write_text("history.csv", curves.history_csv(state["history"]))
        picture = curves.draw(state["history"], run.title)
        if picture is not None:
            files.write_bytes(run.path("curves.png"), picture)


class SyncMovingStatistics(keras.callbacks.Callback):
    """Average batch-norm moving statistics over replicas at each epoch's end.

    Keras 3 keeps one copy of a moving mean or variance per replica (aggregation
    ``NONE``), each updated from its own replica's batches only, and saves the first.
    Averaging them makes every replica, and every worker, hold the same model; it runs
    before validation and before the epoch's checkpoint.
    """

    def __init__(self, strategy, model):
        super().__init__()
        variables = [v for layer in model.layers
                     if isinstance(layer, keras.layers.BatchNormalization)
                     for v in (layer.moving_mean, layer.moving_variance)]

        def replica():
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                       [tf.identity(v.value) for v in variables])
            for variable, mean in zip(variables, means):
                variable.value.assign(mean)

        self.sync = tf.function(lambda: strategy.run(replica))

    def on_test_begin(self, logs=None):
        self.sync()

    def on_epoch_end(self, epoch, logs=None):
        self.sync()


def kill_after_batches(environ=None):
    """The N of ``KRESNET_TRAIN_KILL_AFTER_BATCHES`` (see the module's docstring), or None.

    >>> kill_after_batches({}) is None, kill_after_batches({KILL_AFTER_BATCHES: "24"})
    (True, 24)
    """
    text = (os.environ if environ is None else environ).get(KILL_AFTER_BATCHES, "")
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise TrainingError(f"{KILL_AFTER_BATCHES} must be a positive number of batches; "
                            f"got {text!r}")
    return int(text)


class KillAfterBatches(keras.callbacks.Callback):
    """Kill this process with SIGKILL right after its ``n``-th training batch (tests only)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            os.kill(os.getpid(), signal.SIGKILL)
