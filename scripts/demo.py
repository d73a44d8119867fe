"""The main job: build, summarise, plot, save and reload a ResNet, then train one for real.

Run it through ``scripts/demo.sh`` (which sets everything up), or directly in the venv:
``python scripts/demo.py [--out out] [--epochs 4] [--seed 0]``.

TensorFlow's start-up lines (oneDNN, "Could not find cuda drivers", absl) are hidden: they
are written to file descriptor 2 while the back end is imported and finds its devices, before
``TF_CPP_MIN_LOG_LEVEL`` applies, so that descriptor points at /dev/null for those moments
(``kresnet.training.startup``; ``kresnet train`` does the same). ``TF_CPP_MIN_LOG_LEVEL=0``
shows them.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from kresnet.training.startup import prefer_onednn, startup_lines_hidden

prefer_onednn()
with startup_lines_hidden():
    import keras

    keras.ops.convert_to_numpy(keras.ops.zeros(()))  # the back end looks for devices here

import kresnet  # noqa: E402
from kresnet import training  # noqa: E402

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
    loaded = subprocess.run([sys.executable, os.path.join(HERE, "load_and_predict.py"), path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if loaded.returncode:  # its stderr is TensorFlow's start-up lines unless it failed
        sys.stderr.write(loaded.stderr)
        raise SystemExit("the fresh process could not load the model")
    difference = np.abs(np.load(f"{path}.out.npy") - expected).max()
    print(f"reloaded {path} in a fresh process without kresnet: max |difference| = "
          f"{difference:.2e}")
    if difference > 1e-6:
        raise SystemExit("reloaded model gives different outputs")


def train(out, epochs, seed):
    """A short, narrower version of the training run of docs/training.md: `kresnet train`,
    run in this process (``kresnet.training.main`` is the command; TensorFlow is started)."""
    folder = os.path.join(out, "train")
    if os.path.exists(os.path.join(folder, "checkpoints")):
        shutil.rmtree(folder)  # the demo starts afresh; kresnet train never overwrites a run
    arguments = ["--model", "resnet18", "--config", "stem=cifar", "--width", "16",
                 "--lr", "3e-3", "--epochs", str(epochs), "--seed", str(seed), "--verbose",
                 "2", "--out", folder]
    print("\n$ kresnet train", " ".join(arguments), flush=True)
    if training.main(arguments):
        raise SystemExit("kresnet train failed")
    with open(os.path.join(folder, "metrics.json")) as handle:
        metrics = json.load(handle)
    print(f"test accuracy after {epochs} epochs: {metrics['test_accuracy']:.1%} "
          f"({metrics['train_seconds_all_epochs']:.0f} s of training); history.csv, "
          f"curves.png, best.keras and metrics.json are in {folder}")
    return metrics["test_accuracy"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out", help="folder for pictures and .keras files")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the training run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training run")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    build_plot_save_reload(args.out)
    accuracy = train(args.out, args.epochs, args.seed)
    if accuracy < 0.9:
        raise SystemExit(f"training reached only {accuracy:.1%} test accuracy")


if __name__ == "__main__":
    main()
