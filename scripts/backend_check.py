"""Exercise kresnet's public API on the Keras back end that KERAS_BACKEND selects.

Usage:
    KERAS_BACKEND=jax python scripts/backend_check.py OUTDIR [OTHER.keras ...]
    KERAS_BACKEND=jax python scripts/backend_check.py --load MODEL.keras [MODEL.keras ...]

The first form, on small inputs, builds ``create_resnet`` (depth 18) and two presets
(a ResNeXt carries pre-activation, SE, the deep stem and pooled shortcuts at once), runs
a forward pass, saves each model to ``OUTDIR/KEY.keras`` and loads it back, and fits
one batch; this part runs in a child process, forked before anything imports kresnet. It
writes ``OUTDIR/report.json`` (per model: name, output shape, layer names, seconds taken)
and, beside each ``KEY.keras``, its input ``KEY.keras.in.npy`` and its outputs
(``training=False``) before saving and after loading, ``KEY.keras.built.npy`` and
``KEY.keras.reloaded.npy``. Then the parent, which never imports kresnet, does what
``--load`` does with every saved file. Each ``OTHER.keras``, saved elsewhere (under
TensorFlow, say) with its ``.in.npy``, is loaded there too and run; its outputs go to
``OTHER.keras.<backend>.npy``.

``--load`` is scripts/load_and_predict.py for any back end: it loads each file without
importing kresnet, safe_mode on, and writes ``MODEL.keras.out.npy`` and
``MODEL.keras.names.txt``. (load_and_predict.py passes the model's output to np.asarray,
which PyTorch refuses for a tensor that requires grad.)

Under JAX, ``model.predict`` runs one compiled program per model, where a call runs op by
op and compiles a small program for every new operation and shape; with
JAX_COMPILATION_CACHE_DIR set, the loading process reuses the check's compilations.
"""

import json
import multiprocessing
import os
import sys
import time

BACKEND = os.environ.get("KERAS_BACKEND")
# Where they are installed, Keras imports JAX at its own import and TensorFlow to serialise
# a model (about two and six CPU-seconds); the other back ends run as on an install
# without them.
for _unused in {"jax": ["tensorflow"], "torch": ["tensorflow", "jax"]}.get(BACKEND, []):
    sys.modules.setdefault(_unused, None)
if BACKEND == "jax":
    # JAX compiles a few small programs for every new weight shape (its initialisation),
    # most of the time taken here. Random bits as JAX made them before 0.5 compile in about
    # a fifth of the time (their values are compared only within one back end), and XLA's
    # classic CPU emitters at LLVM's -O1 take about a fifth less in all. A user's own
    # XLA_FLAGS come after, and win.
    os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
    os.environ["XLA_FLAGS"] = " ".join([
        "--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1",
        os.environ.get("XLA_FLAGS", "")]).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402

INPUT = (32, 32, 3)  # the smallest the ImageNet-style networks take
CLASSES = 5


def models():
    """key -> builder. One bottleneck model: on JAX every new weight shape compiles small
    XLA programs (its initialisation), which is most of the time taken here."""
    import kresnet  # noqa: PLC0415 -- only the check's process imports kresnet

    return {
        "resnet18": lambda: kresnet.create_resnet(INPUT, CLASSES, 18),  # tutorial head
        "resnet20": lambda: kresnet.build("resnet20", classes=CLASSES),  # 32x32, shortcut A
        # One bottleneck model carries the rest: ResNeXt groups, squeeze-and-excitation,
        # ResNet-D's deep stem and pooled shortcut, and pre-activation blocks (each new
        # model's own weight shapes would cost seconds of compiling on JAX).
        "resnext50_32x4d_se_d_preact": lambda: kresnet.build(
            "resnext50_32x4d", input_shape=INPUT, classes=CLASSES, se_ratio=1 / 16,
            stem="deep", shortcut="avg", preact=True),
    }


#: Model trained for one batch (a compiled train step costs seconds on JAX). Its tutorial
#: head has dropout, whose random state the compiled step carries.
FIT = ("resnet18",)


def predict(model, x):
    """The outputs for ``training=False``: one batch through ``model.predict``."""
    return np.asarray(model.predict(x, batch_size=len(x), verbose=0))


def check(out):
    keras.utils.set_random_seed(0)
    report = {"backend": keras.backend.backend(), "models": {}, "fit": {}}
    rng = np.random.default_rng(0)
    for key, make in models().items():
        start = time.perf_counter()
        model = make()
        path = os.path.join(out, f"{key}.keras")
        x = rng.uniform(0, 1, (2, *model.input_shape[1:])).astype("float32")
        np.save(f"{path}.in.npy", x)
        np.save(f"{path}.built.npy", predict(model, x))
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.save(f"{path}.reloaded.npy", predict(reloaded, x))
        report["models"][key] = {
            "path": path, "name": model.name, "output_shape": list(model.output_shape),
            "names": [layer.name for layer in model.layers],
            "reloaded_names": [layer.name for layer in reloaded.layers]}
        if key in FIT:
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
            history = model.fit(x, np.arange(len(x)) % CLASSES, batch_size=len(x), epochs=1,
                                verbose=0)
            after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
            report["fit"][key] = {
                "loss": float(history.history["loss"][-1]),
                "changed": sum(not np.array_equal(b, a) for b, a in zip(before, after)),
                "weights": len(after)}
        keras.backend.clear_session()
        report["models"][key]["seconds"] = round(time.perf_counter() - start, 2)
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


def load(paths, others=()):
    """Load each of ``paths`` as a stranger would, then run each of ``others``."""
    for path in paths:
        model = keras.saving.load_model(path, safe_mode=True)
        assert "kresnet" not in sys.modules, "kresnet was imported while loading"
        np.save(f"{path}.out.npy", predict(model, np.load(f"{path}.in.npy")))
        with open(f"{path}.names.txt", "w", encoding="utf-8") as names:
            names.write("\n".join(layer.name for layer in model.layers))
        keras.backend.clear_session()
    for path in others:
        model = keras.saving.load_model(path)
        np.save(f"{path}.{keras.backend.backend()}.npy",
                predict(model, np.load(f"{path}.in.npy")))
        keras.backend.clear_session()


def check_then_load(out, others):
    """The check in a child process, then the loading here, where kresnet never was."""
    # Fork where the platform can: the child starts without importing Python, Keras and
    # the back end again. Nothing here has run a computation yet, so JAX can fork.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    child = context.Process(target=check, args=(out,))
    child.start()
    child.join()
    if child.exitcode:
        sys.exit(f"the check failed (exit code {child.exitcode})")
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        saved = [m["path"] for m in json.load(f)["models"].values()]
    load(saved, others)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load(sys.argv[2:])
    else:
        check_then_load(sys.argv[1], sys.argv[2:])
