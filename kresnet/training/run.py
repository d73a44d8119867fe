"""One ``kresnet train`` run: its folder, the resume checks, the steps of :func:`train`, and
:func:`main`, the command's entry point.

:func:`train` goes through named steps: :func:`open_run` (the ``--out`` folder and the
``--resume`` checks, before any device or data is touched), :func:`set_up_devices` (the
strategy and precision), :func:`load_data`, :func:`make_model` (built or loaded inside the
strategy's scope, compiled), :func:`fit` and :func:`evaluate` (test accuracy and
``metrics.json``).

Importing this module does not import TensorFlow: :func:`main` parses the arguments first
(so ``--help`` and bad arguments answer at once), then starts TensorFlow quietly
(:mod:`kresnet.training.startup`); the modules that use it (``pipeline``, ``strategy``,
``callbacks``, ``model``) are imported inside the functions below.
"""

import json
import os
import sys
import time

from kresnet.training import data as datasets
from kresnet.training.settings import (CHECKPOINTS, LATEST, RESUME_FIXED, Settings,
                                       TrainingError, parser)
from kresnet.training.startup import import_tensorflow

PROG = "kresnet train"


class Run:
    """What a run keeps on disk in ``--out`` and how it writes it (atomically)."""

    def __init__(self, out):
        self.out = out
        self.checkpoints = os.path.join(out, CHECKPOINTS)
        self.state = {"epoch": 0, "history": [], "callbacks": {}, "best": None}
        self.stateful = {}
        self.title = ""  # of the curves: model and data set

    def path(self, *names):
        return os.path.join(self.out, *names)

    def latest(self):
        """The last complete checkpoint's state, or None."""
        pointer = os.path.join(self.checkpoints, LATEST)
        if not os.path.exists(pointer):
            return None
        try:
            with open(pointer) as handle:
                state = json.load(handle)
            checkpoint = os.path.join(self.checkpoints, state["checkpoint"])
        except (ValueError, KeyError, TypeError) as error:
            raise TrainingError(f"{pointer!r} is damaged ({error}); move it away to start "
                                "afresh") from None
        if not os.path.isfile(checkpoint):
            raise TrainingError(f"{pointer!r} names {checkpoint!r}, which is missing; move "
                                f"{self.checkpoints!r} away to start afresh")
        state["checkpoint_path"] = checkpoint
        return state

    def remove_leftovers(self):
        """Temporary files of a process killed while writing; never a complete file."""
        from kresnet import files  # noqa: PLC0415

        for folder in (self.out, self.checkpoints):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if files.TEMPORARY.match(name):
                        os.remove(os.path.join(folder, name))

    def write_text(self, name, text):
        from kresnet import files  # noqa: PLC0415

        files.write_bytes(self.path(name), text.encode())


def check_resume(settings, previous):
    """The epoch to resume from, after checking that ``settings`` continue ``previous``'s run."""
    if previous.get("stopped"):
        raise TrainingError(f"{settings.out!r} stopped early at epoch {previous['epoch']} "
                            f"(--patience {previous['args']['patience']}); nothing to resume")
    if previous["epoch"] >= settings.epochs:
        raise TrainingError(f"{settings.out!r} already finished {previous['epoch']} epochs; "
                            "raise --epochs above it to train on")
    now = settings.fixed()
    for key in RESUME_FIXED:
        if key in previous["args"] and previous["args"][key] != now[key]:
            option = "--" + key.replace("_", "-")
            raise TrainingError(f"{settings.out!r} was started with {option} "
                                f"{previous['args'][key]!r}, this call has {now[key]!r}: a "
                                "resumed run keeps its settings (repeat them, or use a new "
                                "--out)")
    return previous["epoch"]


# -- the steps of train() -------------------------------------------------------------------

def open_run(settings):
    """The run folder, the checkpoint to resume from (or None) and the first epoch."""
    run = Run(settings.out)
    previous = run.latest()
    if previous is not None and not settings.resume:
        raise TrainingError(f"{settings.out!r} already holds a run (checkpoint of epoch "
                            f"{previous['epoch']}): pass --resume to continue it, or choose "
                            "another --out")
    first_epoch = 0 if previous is None else check_resume(settings, previous)
    run.state["args"] = settings.fixed()
    return run, previous, first_epoch


def set_up_devices(settings, run):
    """The strategy (``strategy.Devices``) and the precision policy; the chief clears
    leftovers of a killed process, the other workers write into ``--out/worker-K``."""
    import keras  # noqa: PLC0415

    from kresnet.training import strategy  # noqa: PLC0415

    devices = strategy.make_strategy(settings.strategy, settings.cpu_replicas)
    if settings.batch_size % devices.replicas:
        raise TrainingError(f"--batch-size {settings.batch_size} must be a multiple of the "
                            f"{devices.replicas} replicas, so that each gets the same share")
    if devices.is_chief:
        run.remove_leftovers()
    else:  # checkpoints are the chief's; the others report in a folder of their own
        run.out = os.path.join(settings.out, devices.task)
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if strategy.has_gpu() else "mixed_bfloat16")
    return devices


def load_data(settings):
    """The data set of ``--dataset``, cut to ``--limit``, checked against ``--batch-size``."""
    data = datasets.limit(datasets.load_data(settings.dataset, settings.image_size),
                          settings.limit)
    if len(data.train) < settings.batch_size:
        raise TrainingError(f"--batch-size {settings.batch_size} is larger than the "
                            f"{len(data.train)} training images")
    return data


def agree_on_start(devices, first_epoch):
    """With several workers, stop unless all of them start from the same epoch."""
    from kresnet.training import strategy  # noqa: PLC0415

    if devices.kind == "multiworker" and not strategy.same_on_every_worker(devices.strategy,
                                                                           first_epoch):
        raise TrainingError("the workers would start from different epochs: with --resume, "
                            "--out must be storage that every worker reads (the chief's "
                            "checkpoint)")


def make_model(settings, data, devices, run, previous, first_epoch):
    """Inside the strategy's scope: the model (built, or loaded from the checkpoint), compiled,
    and the training stream; returns (model, training batches, steps per epoch)."""
    import keras  # noqa: PLC0415

    from kresnet.training import model as models, pipeline, strategy  # noqa: PLC0415

    with devices.strategy.scope():
        if previous is not None:
            try:
                model = keras.saving.load_model(previous["checkpoint_path"])
            except Exception as error:  # noqa: BLE001 - any failure means a bad checkpoint
                raise TrainingError(f"cannot load the checkpoint {previous['checkpoint_path']!r}"
                                    f": {str(error).splitlines()[0]}") from None
            run.state.update({k: previous[k] for k in ("epoch", "history", "callbacks", "best")})
        else:
            mean, variance = pipeline.channel_moments(data.train)
            model = models.build_model(settings, data, mean, variance)
        augment = pipeline.augmentation(settings.augment, data.image_shape)
        batches, steps = pipeline.train_stream(data.train, settings.batch_size, settings.seed,
                                               first_epoch, settings.epochs, augment)
        if first_epoch == 0:
            model.compile(optimizer=models.make_optimizer(settings, steps),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        elif settings.schedule == "cosine" and settings.epochs != previous["args"]["epochs"]:
            # The decay was laid out over the old number of epochs: lay it over the new one.
            model.optimizer.learning_rate = models.learning_rate(settings, steps)
            print(f"cosine schedule now spans {settings.epochs} epochs (was "
                  f"{previous['args']['epochs']})", flush=True)
    if devices.kind == "multiworker":
        import numpy as np  # noqa: PLC0415

        example = (np.zeros((1,) + data.image_shape, "float32"), np.zeros((1,), "int64"))
        strategy.patch_keras_for_multiworker(model, example)
    return model, batches, steps


def fit(settings, model, batches, steps, data, devices, run, first_epoch):
    """``model.fit`` from ``first_epoch`` to ``--epochs``; returns the seconds it took."""
    import keras  # noqa: PLC0415

    from kresnet.training import callbacks, pipeline  # noqa: PLC0415

    sizes = data.sizes()
    print(f"{model.name}: {model.count_params():,} parameters; {data.name}: "
          f"{sizes[0]:,} train, {sizes[1]:,} validation, {sizes[2]:,} test images; "
          f"strategy {devices.kind} with {devices.replicas} replica(s), global batch "
          f"{settings.batch_size}"
          + (f"; resuming after epoch {first_epoch} (optimizer step "
             f"{int(keras.ops.convert_to_numpy(model.optimizer.iterations))})"
             if first_epoch else ""), flush=True)
    found = callbacks.make_callbacks(settings, model, devices, run)
    started = time.time()
    model.fit(batches, epochs=settings.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
              validation_data=pipeline.eval_stream(data.val, settings.batch_size),
              callbacks=found, verbose=settings.progress() if devices.is_chief else 0,
              shuffle=False)
    return time.time() - started


def evaluate(settings, model, data, devices, run, seconds):
    """Test accuracy of the final weights and (on the chief) of best.keras; writes and
    returns metrics.json's dict."""
    import keras  # noqa: PLC0415

    import kresnet  # noqa: PLC0415
    from kresnet.training import model as models, pipeline  # noqa: PLC0415

    final_loss, final_accuracy = model.evaluate(
        pipeline.eval_stream(data.test, settings.batch_size), verbose=0)
    metrics = {"final_test_accuracy": float(final_accuracy), "final_test_loss": float(final_loss)}
    if devices.is_chief:
        # Written from these weights after the last epoch: best.keras gives the same numbers.
        final = bool(run.state["best"]) and run.state["best"]["epoch"] == run.state["epoch"]
        if not os.path.exists(run.path("best.keras")):  # removed by hand since it was written
            kresnet.save(model, run.path("best.keras"))
            final = True
        if final:
            test_loss, test_accuracy = final_loss, final_accuracy
        else:
            best = keras.saving.load_model(run.path("best.keras"))
            best.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            test_loss, test_accuracy = best.evaluate(
                pipeline.eval_stream(data.test, settings.batch_size), verbose=0)
        metrics.update(test_accuracy=float(test_accuracy), test_loss=float(test_loss))
    history, best_epoch = run.state["history"], run.state["best"]
    metrics.update({
        "best_epoch": best_epoch["epoch"] if best_epoch else None,
        "best_val_accuracy": best_epoch["val_accuracy"] if best_epoch else None,
        "epochs": len(history), "train_seconds_this_process": round(seconds, 1),
        "train_seconds_all_epochs": round(sum(r["seconds"] for r in history), 1),
        "model": model.name, "parameters": int(model.count_params()),
        "dataset": data.name, "images": dict(zip(("train", "validation", "test"), data.sizes())),
        "strategy": devices.kind, "replicas": devices.replicas, "workers": devices.tasks,
        "global_batch_size": settings.batch_size, "weights_sha256": models.weights_digest(model),
        "args": settings.as_dict(),
    })
    os.makedirs(run.out, exist_ok=True)
    run.write_text("metrics.json", json.dumps(metrics, indent=1, default=str) + "\n")
    if devices.is_chief:
        print(f"test accuracy {metrics['test_accuracy']:.2%} (best.keras, epoch "
              f"{metrics['best_epoch']}); final weights {final_accuracy:.2%}; "
              f"{metrics['train_seconds_all_epochs']:.0f} s of training; wrote "
              f"{os.path.join(settings.out, 'metrics.json')}", flush=True)
    return metrics


def train(settings):
    """Train as ``settings`` (a :class:`Settings`) say; return the dict of metrics.json.

    Raises :class:`TrainingError` (one line) for bad input, before training starts.

    >>> train({"epochs": 1})
    Traceback (most recent call last):
    ...
    TypeError: train() takes a Settings (Settings.from_args(parser().parse_args(argv))), not dict
    """
    if not isinstance(settings, Settings):
        raise TypeError("train() takes a Settings (Settings.from_args(parser().parse_args("
                        f"argv))), not {type(settings).__name__}")
    import_tensorflow()
    import keras  # noqa: PLC0415

    from kresnet.training import callbacks, model as models  # noqa: PLC0415

    models.check_model_name(settings)
    callbacks.kill_after_batches()  # a bad value of the tests' hook stops before any work
    run, previous, first_epoch = open_run(settings)
    devices = set_up_devices(settings, run)
    data = load_data(settings)
    keras.utils.set_random_seed(settings.seed)
    agree_on_start(devices, first_epoch)
    run.title = f"{settings.model} on {data.name}"
    model, batches, steps = make_model(settings, data, devices, run, previous, first_epoch)
    seconds = fit(settings, model, batches, steps, data, devices, run, first_epoch)
    return evaluate(settings, model, data, devices, run, seconds)


def main(argv=None, prog=PROG):
    """Run ``kresnet train`` with the arguments ``argv``; return the exit status.

    >>> main(["--model", "resnet19"])  # prints "kresnet train: error: --model must be ..."
    2
    """
    args = parser(prog).parse_args(argv)
    try:
        settings = Settings.from_args(args)
        import_tensorflow()
        import keras  # noqa: PLC0415

        policy = keras.config.dtype_policy()
        try:
            train(settings)
        finally:  # --mixed-precision sets a global policy; leave the caller's in place
            keras.config.set_dtype_policy(policy)
    except TrainingError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
