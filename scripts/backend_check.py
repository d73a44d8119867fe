"""Exercise kresnet's public API on the Keras back end that KERAS_BACKEND selects.

Usage:
    KERAS_BACKEND=jax python scripts/backend_check.py OUTDIR [OTHER.keras ...]
    KERAS_BACKEND=jax python scripts/backend_check.py --load MODEL.keras [MODEL.keras ...]

The first form, in one process and on small inputs, builds ``create_resnet`` (depth 18)
and a few presets, runs a forward pass, saves each model to ``OUTDIR/KEY.keras`` and loads
it back, and fits one batch. It writes ``OUTDIR/report.json`` (per model: name, output
shape, layer names, seconds taken) and, beside each ``KEY.keras``, its input
``KEY.keras.in.npy`` and its outputs (``training=False``) before saving and after loading,
``KEY.keras.built.npy`` and ``KEY.keras.reloaded.npy``. Each ``OTHER.keras``, saved
elsewhere (under TensorFlow, say) with its ``.in.npy``, is loaded and run; its outputs go
to ``OTHER.keras.<backend>.npy``.

``--load`` is scripts/load_and_predict.py for any back end: it loads each file without
importing kresnet, safe_mode on, and writes ``MODEL.keras.out.npy`` and
``MODEL.keras.names.txt``. (load_and_predict.py passes the model's output to np.asarray,
which PyTorch refuses for a tensor that requires grad.)
"""

import json
import os
import sys
import time

import keras
import numpy as np

INPUT = (64, 64, 3)
CLASSES = 5


def models():
    """key -> builder. Few bottleneck models: on JAX every new weight or activation shape
    compiles a small XLA program, which is most of the time taken here."""
    import kresnet

    return {
        "resnet18": lambda: kresnet.create_resnet(INPUT, CLASSES, 18),  # tutorial head
        "resnet20": lambda: kresnet.build("resnet20", classes=CLASSES),  # 32x32, shortcut A
        "resnet50v2": lambda: kresnet.build("resnet50v2", input_shape=INPUT, classes=CLASSES),
        # ResNeXt groups, squeeze-and-excitation, ResNet-D's deep stem and pooled shortcut.
        "resnext50_32x4d_se_d": lambda: kresnet.build(
            "resnext50_32x4d", input_shape=INPUT, classes=CLASSES, se_ratio=1 / 16,
            stem="deep", shortcut="avg"),
    }


#: Model trained for one batch (a compiled train step costs seconds on JAX). Its tutorial
#: head has dropout, whose random state the compiled step carries.
FIT = ("resnet18",)


def predict(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def check(out, others):
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
    for path in others:
        model = keras.saving.load_model(path)
        np.save(f"{path}.{report['backend']}.npy", predict(model, np.load(f"{path}.in.npy")))
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


def load(paths):
    for path in paths:
        model = keras.saving.load_model(path, safe_mode=True)
        assert "kresnet" not in sys.modules, "kresnet was imported while loading"
        np.save(f"{path}.out.npy", predict(model, np.load(f"{path}.in.npy")))
        with open(f"{path}.names.txt", "w", encoding="utf-8") as names:
            names.write("\n".join(layer.name for layer in model.layers))
        keras.backend.clear_session()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load(sys.argv[2:])
    else:
        check(sys.argv[1], sys.argv[2:])
