"""The main job: build, summarise, plot, save and reload a ResNet, then train one for real.

Run it through ``scripts/demo.sh`` (which sets everything up), or directly in the venv:
``python scripts/demo.py [--out out] [--epochs 4]``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

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


def train(out, epochs):
    """A short version of the training run of docs/training.md, through scripts/train.py."""
    folder = os.path.join(out, "train")
    if os.path.exists(os.path.join(folder, "checkpoints")):
        shutil.rmtree(folder)  # the demo starts afresh; train.py never overwrites a run
    command = [sys.executable, os.path.join(HERE, "train.py"), "--model", "resnet18",
               "--config", "stem=cifar", "--width", "32", "--epochs", str(epochs),
               "--verbose", "2", "--out", folder]
    print("\n$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
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
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    build_plot_save_reload(args.out)
    accuracy = train(args.out, args.epochs)
    if accuracy < 0.9:
        raise SystemExit(f"training reached only {accuracy:.1%} test accuracy")


if __name__ == "__main__":
    main()
