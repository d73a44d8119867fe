"""The main job: build, summarise, plot, save and reload a ResNet, then train one for real.

Run it through ``scripts/demo.sh`` (which sets everything up), or directly in the venv:
``python scripts/demo.py [--out out] [--epochs 4]``.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np

import kresnet

HERE = os.path.dirname(os.path.abspath(__file__))


def build_plot_save_reload(out):
    """The tutorial's ResNet-50: summary, pictures, .keras file, reload in a fresh process."""
    model = kresnet.create_resnet()
    model.summary(line_length=110)
    print(f"parameters: {model.count_params():,}")
    if shutil.which("dot"):
        for extension in ("png", "svg"):
            print("wrote", kresnet.plot_model(model, os.path.join(out, f"resnet50.{extension}")))
    else:
        print("Graphviz' dot is missing: skipped resnet50.png/.svg")

    path = os.path.join(out, "resnet50.keras")
    model.save(path)
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    x = np.random.default_rng(0).uniform(0, 1, (2, 224, 224, 3)).astype("float32")
    np.save(f"{path}.in.npy", x)
    expected = np.asarray(model(x, training=False))
    subprocess.run([sys.executable, os.path.join(HERE, "load_and_predict.py"), path],
                   check=True)
    difference = np.abs(np.load(f"{path}.out.npy") - expected).max()
    print(f"reloaded {path} in a fresh process without kresnet: max |difference| = "
          f"{difference:.2e}")
    if difference > 1e-6:
        raise SystemExit("reloaded model gives different outputs")


def digits(seed=0):
    """scikit-learn's bundled 8x8 digits, upsampled 4x to 32x32, split 1,437 / 360."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.repeat(np.repeat(data.images.astype("float32") / 16.0, 4, 1), 4, 2)[..., None]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], data.target[order]
    return (x[:1437], y[:1437]), (x[1437:], y[1437:])


def train(epochs):
    """A short real run: ResNet-18 (tutorial head) on handwritten digits."""
    (x_train, y_train), (x_test, y_test) = digits()
    keras.utils.set_random_seed(0)
    model = kresnet.create_resnet((32, 32, 1), n_classes=10, depth=18)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"\ntraining {model.name} on digits: {len(x_train)} train, {len(x_test)} test images")
    start = time.time()
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy after {epochs} epochs: {accuracy:.1%} ({time.time() - start:.0f} s)")
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out", help="folder for pictures and .keras files")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the training run")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    build_plot_save_reload(args.out)
    accuracy = train(args.epochs)
    if accuracy < 0.9:
        raise SystemExit(f"training reached only {accuracy:.1%} test accuracy")


if __name__ == "__main__":
    main()
