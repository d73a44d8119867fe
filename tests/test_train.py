"""kresnet.training (``kresnet train``, ``scripts/train.py``): data sets and their errors,
checkpoints that survive SIGKILL, --resume, mirrored on two logical CPUs, multiworker on two
local processes, mixed precision, curves, and the command run from an installed wheel."""

import dataclasses
import importlib.util
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import venv

import keras
import numpy as np
import pytest
import tensorflow as tf

from kresnet import cli, training
from kresnet.training import callbacks, curves, data as datasets, model as models
from kresnet.training.settings import Settings
from tests.conftest import LOADER, ROOT, run_in_fresh_process

# The tests that share a run (a session fixture: one worker may run other modules' tests in
# between, which would end a module fixture and make it again) share a pytest-xdist group,
# so that one worker makes it once; the other tests are spread over the workers one by one.
UNINTERRUPTED = pytest.mark.xdist_group("test_train_uninterrupted")
TINY_RUN = pytest.mark.xdist_group("test_train_tiny_run")

if keras.backend.backend() != "tensorflow":
    pytest.skip("kresnet.training trains with tf.distribute on the TensorFlow back end",
                allow_module_level=True)
for _package in ("sklearn", "matplotlib"):  # kresnet[train]; scripts/setup-env.sh installs it
    if importlib.util.find_spec(_package) is None:
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            raise ImportError(f"{_package} is missing: pip install kresnet[train]")
        pytest.skip(f"{_package} is missing: pip install kresnet[train]", allow_module_level=True)

SCRIPT = os.path.join(ROOT, "scripts", "train.py")
#: Subprocesses import kresnet from this checkout (PYTHONPATH), whatever is installed.
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
       "KERAS_BACKEND": "tensorflow",
       "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
#: A small, quick configuration on all digits: a ResNet-18 cut to one block per stage (the
#: CIFAR stem, widths 8-64), with a rate that gets it well above chance in 3 epochs.
SMALL = ["--config", "stem=cifar", "--config", "blocks=1,1,1,1", "--width", "8", "--lr", "3e-3",
         "--batch-size", "64", "--verbose", "2"]
STEPS = 1258 // 64  # training batches per epoch of SMALL
#: A tiny one for the tests of settings, files and counters: two stages of one block, width
#: 4 (little for tf.function to trace), 64 images.
MODEL = ["--width", "4", "--config", "stem=cifar", "--config", "blocks=1,1"]
TINY = ["--epochs", "1", "--limit", "64", "--batch-size", "32", *MODEL, "--verbose", "0"]


#: What ENV sets for a process forked by run_in_fresh_process (the rest it inherits).
FORKED = {k: ENV[k] for k in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "KERAS_BACKEND")}


def run_script(*args, timeout=300, env=None):
    """scripts/train.py in a new process, forked from a Python that has imported Keras only
    (tests.conftest.run_in_fresh_process: no TensorFlow op run, so it can still set up its
    devices); ``env`` adds to the environment."""
    return run_in_fresh_process(SCRIPT, args, env={**FORKED, **(env or {})}, timeout=timeout)


def read_history(out):
    with open(os.path.join(out, "history.csv")) as handle:
        lines = handle.read().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


# -- data sets ------------------------------------------------------------------------------

def test_digits_split_is_fixed_and_complete():
    first, second = datasets.load_digits(), datasets.load_digits()
    assert first.sizes() == (1258, 180, 359) and sum(first.sizes()) == 1797
    for a, b in zip((first.train, first.val, first.test), (second.train, second.val, second.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert first.train.images.shape[1:] == (32, 32, 1) and first.image_shape == (32, 32, 1)
    assert set(first.test.labels) == set(range(10))  # every class in the test set


def _cifar_batch(n, offset):
    rng = np.random.default_rng(offset)
    return {b"batch_label": b"batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"filenames": [b"x.png"] * n}


def make_cifar(folder, n=20, archive=True, drop=None, replace=None):
    """A CIFAR-10 python archive (or folder) of the real layout, with n images per batch."""
    members = {}
    for i, name in enumerate(datasets.CIFAR_MEMBERS):
        members[name] = pickle.dumps(_cifar_batch(n, i), protocol=2)
    members.update(replace or {})
    members.pop(drop, None)
    if not archive:
        root = os.path.join(folder, "cifar-10-batches-py")
        os.makedirs(root)
        for name, raw in members.items():
            with open(os.path.join(root, name), "wb") as handle:
                handle.write(raw)
        return str(folder)
    path = os.path.join(folder, "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "folder"])
def test_cifar10_reads_the_python_archive_and_its_folder(tmp_path, archive):
    data = datasets.load_data(f"cifar10:{make_cifar(tmp_path, archive=archive)}", None)
    assert data.sizes() == (90, 10, 20) and data.image_shape == (32, 32, 3)
    expected = _cifar_batch(20, 5)  # test_batch: rows are R plane, G plane, B plane
    image = expected[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(data.test.images[3], image)
    np.testing.assert_array_equal(data.test.labels, expected[b"labels"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


@pytest.mark.parametrize("case, message", [
    ("missing", "no file or folder at"),
    ("no_test_batch", "has no cifar-10-batches-py/test_batch"),
    ("not_pickle", "data_batch_3' is not a CIFAR-10 python batch"),
    ("code", "refusing to load"),
    ("wrong_shape", "data_batch_2': 'data' must be uint8 rows of 3,072"),
    ("not_tar", "is not a readable tar archive"),
    ("folder_missing_member", "data_batch_4' is missing"),
])
def test_cifar10_errors_name_the_file(tmp_path, case, message):
    bad = {"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}
    path = {
        "missing": lambda: str(tmp_path / "nowhere.tar.gz"),
        "no_test_batch": lambda: make_cifar(tmp_path, drop="test_batch"),
        "not_pickle": lambda: make_cifar(tmp_path, replace={"data_batch_3": b"garbage"}),
        "code": lambda: make_cifar(tmp_path, replace={"data_batch_1": pickle.dumps(_Evil())}),
        "wrong_shape": lambda: make_cifar(tmp_path, replace={"data_batch_2": pickle.dumps(bad)}),
        "not_tar": lambda: (tmp_path / "x.tar.gz").write_bytes(b"not a tar") and
        str(tmp_path / "x.tar.gz"),
        "folder_missing_member": lambda: make_cifar(tmp_path, archive=False,
                                                    drop="data_batch_4"),
    }[case]()
    with pytest.raises(training.TrainingError, match=message):
        datasets.load_data(f"cifar10:{path}", None)


def make_folder(root, classes=("cat", "dog"), per_class=15, size=12):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            image = np.full((size, size, 3), 40 + 150 * c, np.uint8)
            image += rng.integers(0, 30, image.shape).astype(np.uint8)
            with open(os.path.join(root, name, f"{i}.png"), "wb") as handle:
                handle.write(tf.io.encode_png(image).numpy())
    return str(root)


def test_folder_splits_by_class_folders(tmp_path):
    data = datasets.load_data(f"folder:{make_folder(tmp_path)}", (16, 16))
    assert data.sizes() == (21, 3, 6) and data.classes == 2 and data.class_names == ("cat",
                                                                                      "dog")
    parts = (data.train, data.val, data.test)
    pairs = [(x.numpy(), int(y)) for part in parts for x, y in part.dataset()]
    assert pairs[0][0].shape == (16, 16, 3) and pairs[0][0].dtype == np.float32
    assert len({x.tobytes() for x, _ in pairs}) == 30  # the three parts do not overlap
    for x, y in pairs:  # labels follow the class folders (cat images are dark)
        assert (x.mean() < 128) == (y == 0)
    again = datasets.limit(datasets.load_data(f"folder:{tmp_path}", (16, 16)), 5)
    assert list(again.train.paths) == list(data.train.paths[:5])  # a fixed subset
    assert len(data.train) == 21  # limit made a new Data; the old one is unchanged


def test_arrays_and_files_are_parts_with_one_interface(tmp_path):
    folder = make_folder(tmp_path, per_class=2, size=8)
    paths = sorted(os.path.join(folder, c, f) for c in ("cat", "dog") for f in ("0.png", "1.png"))
    files = datasets.Files(paths, [0, 0, 1, 1], (8, 8))
    arrays = datasets.Arrays(files.array().astype("uint8"), [0, 0, 1, 1])
    for part in (files, arrays):
        assert isinstance(part, datasets.Part) and len(part) == 4 and len(part[1:3]) == 2
        assert type(part[1:3]) is type(part) and type(part[np.array([3, 0])]) is type(part)
        pairs = [(x.numpy(), int(y)) for x, y in part.dataset()]
        assert [y for _, y in pairs] == [0, 0, 1, 1] and pairs[0][0].dtype == np.float32
        order = tf.constant([3, 1], tf.int64)
        np.testing.assert_array_equal([x.numpy() for x, _ in part.dataset(order)],
                                      [pairs[3][0], pairs[1][0]])
        with pytest.raises(TypeError, match="takes a slice or an array of indices"):
            part[0]
    np.testing.assert_array_equal(files.array(), arrays.array())


def test_settings_are_derived_without_changing_the_arguments():
    args = training.parser().parse_args(["--weight-decay", "1e-4", "--config", "stem=cifar"])
    settings = Settings.from_args(args)
    assert settings.config == (("stem", "cifar"), ("weight_decay", 1e-4))
    assert settings.augment == "crop" and settings.learning_rate == 1e-3
    assert args.config == [("stem", "cifar")] and args.augment == "auto"  # untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 3
    assert Settings.from_args(training.parser().parse_args(["--dataset", "cifar10:x"])
                              ).augment == "crop-flip"
    assert sorted(settings.as_dict()) == sorted(vars(args))  # metrics.json: every argument
    with pytest.raises(TypeError, match="takes a Settings"):
        training.train(args)
    with pytest.raises(ValueError, match="Settings.optimizer must be one of"):
        Settings(optimizer="lbfgs")
    with pytest.raises(TypeError, match="Settings.epochs must be an int"):
        Settings(epochs="3")
    with pytest.raises(TypeError, match="takes the parsed arguments"):
        Settings.from_args(object())


def test_width_follows_the_presets_stem():
    settings = Settings.from_args(training.parser().parse_args(["--width", "16"]))
    assert models.model_options(settings, 4) == {"widths": (16, 32, 64, 128), "stem_width": 16}
    deep = models.model_options(settings, 4, preset_stem="deep")
    assert deep["stem_width"] == (8, 8, 16)
    assert models.model_options(settings, 3)["widths"] == (16, 32, 64)


@pytest.mark.parametrize("case, message", [
    ("missing", "no folder at"),
    ("one_class", "has 1 class sub-folder"),
    ("empty_class", "class folder '.*bird' holds no images"),
    ("corrupt", "cannot decode image '.*dog.3.png'"),
])
def test_folder_errors_name_the_file(tmp_path, case, message):
    root = tmp_path / "images"
    if case == "one_class":
        make_folder(root, classes=("cat",))
    elif case != "missing":
        make_folder(root)
    if case == "empty_class":
        (root / "bird").mkdir()
        (root / "bird" / "notes.txt").write_text("no images here")
    if case == "corrupt":
        (root / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(training.TrainingError, match=message):
        datasets.load_data(f"folder:{root}", (16, 16))


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], "--dataset must be digits, cifar10:PATH or folder:PATH"),
    (["--image-size", "64"], "--image-size applies to folder:PATH only"),
    (["--model", "resnet19"], "--model must be create_resnet or one of the presets"),
    (["--width", "8", "--config", "widths=8,16,32,64"], "give --width or --config widths="),
    (["--batch-size", "5000"], "is larger than the 1258 training images"),
    (["--momentum", "1.5"], "--momentum must be in"),
    (["--cpu-replicas", "2", "--strategy", "one"], "--cpu-replicas needs --strategy"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert training.main(argv + ["--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "run" / "best.keras").exists()


def test_kresnet_train_help_lists_the_options(capsys):
    options = ("--strategy", "--cpu-replicas", "--resume", "--mixed-precision", "--epochs")
    # The command, the module and the script, each in a new process.
    for command, usage in (([sys.executable, "-m", "kresnet", "train", "--help"],
                            "usage: kresnet train"),
                           ([sys.executable, SCRIPT, "--help"], "usage: train.py")):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)
        assert result.returncode == 0 and usage in result.stdout, result.stderr
        for option in options:
            assert option in result.stdout
    # In this process: `kresnet train` calls kresnet.training, no subprocess.
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--help"])
    assert stop.value.code == 0 and "usage: kresnet train" in capsys.readouterr().out


def test_importing_the_training_package_does_not_start_tensorflow():
    code = ("import sys, kresnet, kresnet.cli, kresnet.training\n"
            "loaded = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]\n"
            "assert not loaded, loaded\n"
            "assert kresnet.training.__file__.startswith(sys.argv[1]), kresnet.training.__file__")
    result = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True,
                            text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr


def test_argument_parser_rejects_bad_values(capsys):
    for argv in (["--epochs", "0"], ["--config", "stem"], ["--image-size", "0"],
                 ["--optimizer", "lbfgs"]):
        with pytest.raises(SystemExit) as stop:
            training.parser().parse_args(argv)
        assert stop.value.code == 2
    capsys.readouterr()


def test_curves_count_whole_epochs_and_show_the_learning_rate():
    history = [{"epoch": e, "loss": 2.0 / e, "accuracy": 0.2 * e, "val_loss": 2.5 / e,
                "val_accuracy": 0.18 * e, "lr": 1e-3 / e} for e in (1, 2, 3, 4)]
    figure = curves.figure(history, "resnet18 on digits")
    try:
        assert [axis.get_ylabel() for axis in figure.axes] == [
            "loss", "accuracy", "learning rate (at the epoch's start)"]
        for axis in figure.axes:
            ticks = [t for t in axis.get_xticks() if 1 <= t <= 4]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        (rate,) = figure.axes[2].get_lines()
        assert list(rate.get_ydata()) == [row["lr"] for row in history]
    finally:
        from matplotlib import pyplot

        pyplot.close(figure)
    assert curves.draw(history)[:8] == b"\x89PNG\r\n\x1a\n"


# -- training in this process ---------------------------------------------------------------

CIFAR_RUN = pytest.mark.xdist_group("test_train_cifar_run")


@pytest.fixture(scope="session")
def cifar_run(tmp_path_factory):
    """Two epochs on a small CIFAR-10 archive with the plateau schedule, early stopping, SGD
    and weight decay: (the run's folder, its arguments but --epochs and --out). The test of
    --resume works on a copy."""
    folder = tmp_path_factory.mktemp("cifar")
    argv = ["--dataset", f"cifar10:{make_cifar(folder, n=40)}", "--batch-size", "32", *MODEL,
            "--schedule", "plateau", "--patience", "3", "--optimizer", "sgd",
            "--weight-decay", "5e-4", "--verbose", "0"]
    out = folder / "cifar"
    assert training.main(argv + ["--epochs", "2", "--out", str(out)]) == 0
    return out, argv


@pytest.mark.slow
@CIFAR_RUN
def test_cifar10_and_folder_train_and_report(tmp_path, cifar_run):
    out, _ = cifar_run
    cifar_best = out / "best.keras"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == {"train": 180, "validation": 20, "test": 40}
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs"] == 2
    assert [row["epoch"] for row in read_history(out)] == ["1", "2"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = keras.saving.load_model(out / "best.keras")
    assert model.layers[1].name == "normalize" and model.output_shape == (None, 10)
    assert model.get_layer("res2a_branch2a").kernel_regularizer is not None  # --weight-decay

    folder = make_folder(tmp_path / "images", per_class=20)
    out = tmp_path / "folder"
    assert training.main(["--dataset", f"folder:{folder}", "--image-size", "16", "--epochs", "1",
                          "--batch-size", "8", "--model", "resnet20", "--config",
                          "blocks=1,1,1", "--verbose", "0",
                          "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == {"train": 28, "validation": 4, "test": 8}
    loaded = [model, keras.saving.load_model(out / "best.keras")]
    assert loaded[1].input_shape == (None, 16, 16, 3)

    # Both best.keras files load in a fresh process without kresnet (safe_mode on) and give
    # the outputs they give here.
    paths = [tmp_path / "cifar.keras", out / "best.keras"]
    shutil.copy(cifar_best, paths[0])  # the .in/.out/.names files go next to the copy
    rng = np.random.default_rng(0)
    expected = []
    for path, shape, loaded_model in zip(paths, [(2, 32, 32, 3), (2, 16, 16, 3)], loaded):
        x = rng.uniform(0, 255, shape).astype("float32")
        np.save(f"{path}.in.npy", x)
        expected.append(keras.ops.convert_to_numpy(loaded_model(x, training=False)))
    result = run_in_fresh_process(LOADER, paths, env=FORKED, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for path, outputs in zip(paths, expected):
        np.testing.assert_allclose(np.load(f"{path}.out.npy"), outputs, atol=1e-6)
        assert open(f"{path}.names.txt").read().split()[:2] == ["input", "normalize"]


#: The arguments of the tiny_run fixture's run.
TINY_RUN_ARGS = TINY + ["--patience", "1", "--mixed-precision"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished run of TINY with --patience 1 and --mixed-precision (one epoch), for the
    test of mixed precision and the tests of what --resume refuses; each of those works on a
    copy (latest.json names its checkpoint by file name only). Also the global dtype policy
    names before and after the run."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    before = keras.config.dtype_policy().name
    assert training.main(TINY_RUN_ARGS + ["--out", str(out)]) == 0
    return out, (before, keras.config.dtype_policy().name)


@pytest.mark.slow
@TINY_RUN
def test_mixed_precision_trains_with_a_float32_classifier(tiny_run):
    out, (before, after) = tiny_run
    assert after == before  # restored for whoever comes next
    model = keras.saving.load_model(out / "best.keras")
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    assert model.get_layer("res2a_branch2a").dtype_policy.name == policy
    assert model.get_layer("fc10").dtype_policy.name == "float32"


@pytest.mark.slow
@TINY_RUN
def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, capsys, tiny_run):
    out = str(tmp_path / "run")
    argv = TINY_RUN_ARGS + ["--out", out]
    shutil.copytree(tiny_run[0], out)  # what training.main(argv) == 0 made
    before = (tmp_path / "run" / "best.keras").read_bytes()
    assert training.main(argv) == 2
    assert "already holds a run (checkpoint of epoch 1): pass --resume" in capsys.readouterr().err
    assert training.main(argv + ["--resume"]) == 2  # nothing left to do at --epochs 1
    assert "already finished 1 epochs" in capsys.readouterr().err
    assert training.main(argv + ["--resume", "--epochs", "2", "--lr", "0.01"]) == 2
    assert "was started with --lr None, this call has 0.01: a resumed run keeps its " \
        "settings" in capsys.readouterr().err
    assert (tmp_path / "run" / "best.keras").read_bytes() == before


@pytest.mark.slow
@CIFAR_RUN
def test_resume_carries_plateau_and_early_stopping_counters(tmp_path, capsys, cifar_run):
    source, argv = cifar_run  # 2 epochs, --schedule plateau --patience 3
    out = tmp_path / "run"
    shutil.copytree(source, out)  # what training.main(argv + ["--epochs", "2", ...]) made
    state = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert set(state["callbacks"]) == {"plateau", "early_stopping"}
    assert training.main(argv + ["--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert [row["epoch"] for row in read_history(out)] == ["1", "2", "3"]
    resumed = json.loads((out / "checkpoints" / "latest.json").read_text())
    best = max(row["val_accuracy"] for row in resumed["history"])  # full precision
    assert resumed["callbacks"]["early_stopping"]["best"] == pytest.approx(best)
    assert max(float(row["val_accuracy"]) for row in read_history(out)) == \
        pytest.approx(best, rel=1e-5)  # history.csv keeps 6 significant digits
    capsys.readouterr()


@pytest.mark.slow
def test_restored_plateau_counters_act_on_the_next_epoch():
    plateau = callbacks.resumable(keras.callbacks.ReduceLROnPlateau,
                                  ("wait", "best", "cooldown_counter"))(
        monitor="val_accuracy", mode="max", factor=0.5, patience=2, verbose=0,
        restore={"wait": 1, "best": 0.9, "cooldown_counter": 0})
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    plateau.set_model(model)
    plateau.on_train_begin()
    assert (plateau.wait, plateau.best) == (1, 0.9)
    plateau.on_epoch_end(0, {"val_accuracy": 0.5})  # the second epoch without progress
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(0.05)
    assert plateau.state() == {"wait": 0.0, "best": 0.9, "cooldown_counter": 0.0}


@pytest.mark.slow
@TINY_RUN
def test_an_early_stopped_run_is_finished(tmp_path, capsys, tiny_run):
    out = tmp_path / "run"
    pointer = out / "checkpoints" / "latest.json"
    argv = TINY_RUN_ARGS + ["--out", str(out)]
    shutil.copytree(tiny_run[0], out)  # what training.main(argv) == 0 made
    state = json.loads(pointer.read_text())
    state["stopped"] = True
    pointer.write_text(json.dumps(state))
    assert training.main(["--epochs", "5"] + argv[2:] + ["--resume"]) == 2
    assert "stopped early at epoch 1 (--patience 1); nothing to resume" in \
        capsys.readouterr().err


# -- checkpoints that survive, and resuming -------------------------------------------------

@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """Three epochs without interruption, in this process: the reference for --resume and for
    mirrored."""
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    assert training.main(SMALL + ["--epochs", "3", "--verbose", "0", "--out", out]) == 0
    return out


@pytest.mark.slow
@UNINTERRUPTED
def test_sigkill_in_the_second_epoch_leaves_a_loadable_checkpoint_and_resume_continues(
        tmp_path, uninterrupted, capsys):
    out = str(tmp_path / "killed")
    pointer = os.path.join(out, "checkpoints", "latest.json")
    # The process kills itself (SIGKILL) after 5 batches of the second epoch: a deterministic
    # place, after the first checkpoint (see kresnet.training.callbacks).
    result = run_script(*SMALL, "--epochs", "3", "--out", out,
                        env={callbacks.KILL_AFTER_BATCHES: str(STEPS + 5)})
    assert result.returncode == -signal.SIGKILL, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Epoch 2/3" in result.stdout and "Epoch 3/3" not in result.stdout
    state = json.loads(open(pointer).read())
    assert state["epoch"] == 1  # killed before the run finished, after its first checkpoint
    assert [row["epoch"] for row in read_history(out)] == ["1"]
    model = keras.saving.load_model(os.path.join(out, "checkpoints", state["checkpoint"]))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == STEPS * state["epoch"]
    # What a kill during a save leaves: a partial temporary file, removed by the next run.
    partial = os.path.join(out, "checkpoints", ".epoch-0009.keras.0123456789abcdef.part.keras")
    with open(partial, "wb") as handle:
        handle.write(b"PK\x03\x04 half a zip")

    capsys.readouterr()
    assert training.main(SMALL + ["--epochs", "3", "--out", out, "--resume"]) == 0
    assert f"resuming after epoch {state['epoch']} (optimizer step {STEPS * state['epoch']})" \
        in capsys.readouterr().out
    resumed, reference = read_history(out), read_history(uninterrupted)
    assert [row["epoch"] for row in resumed] == ["1", "2", "3"]
    # Same data order, same optimizer state: the curve continues where it was cut.
    for row, expected in zip(resumed, reference):
        for key in ("loss", "val_loss"):
            assert float(row[key]) == pytest.approx(float(expected[key]), rel=1e-3, abs=1e-4), \
                (row, expected)
    # The last checkpoint and its pointer only: older ones and partial files are gone.
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["epoch-0003.keras",
                                                                     "latest.json"]


def test_a_bad_kill_hook_value_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(callbacks.KILL_AFTER_BATCHES, "soon")
    assert training.main(TINY + ["--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert f"{callbacks.KILL_AFTER_BATCHES} must be a positive number" in error
    assert len(error.splitlines()) == 1


# -- several devices, several workers -------------------------------------------------------

@pytest.mark.slow
@UNINTERRUPTED
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, uninterrupted):
    out = str(tmp_path / "mirrored")
    result = run_script(*SMALL, "--epochs", "3", "--strategy", "mirrored", "--cpu-replicas",
                        "2", "--out", out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "strategy mirrored with 2 replica(s), global batch 64" in result.stdout
    mirrored = json.loads(open(os.path.join(out, "metrics.json")).read())
    one = json.loads(open(os.path.join(uninterrupted, "metrics.json")).read())
    assert mirrored["replicas"] == 2 and one["replicas"] == 1
    assert abs(mirrored["test_accuracy"] - one["test_accuracy"]) < 0.15, (mirrored, one)
    assert mirrored["test_accuracy"] > 0.5


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


#: Run by run_in_fresh_process: starts the workers of a local cluster, each a process forked
#: from this one (Keras imported, no TensorFlow op run yet) that runs scripts/train.py with
#: its own TF_CONFIG and log file; kills them all after a time limit; prints their exit codes.
WORKERS = r"""
import json, os, runpy, signal, sys, traceback

script, cluster, limit, logs, args = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), \
    json.loads(sys.argv[4]), sys.argv[5:]


def worker(index, log):  # scripts/train.py as worker `index` of the cluster, into `log`
    opened = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd in (1, 2):
        os.dup2(opened, fd)
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}})
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


pids = []
for index, log in enumerate(logs):
    pid = os.fork()
    if pid == 0:
        code = worker(index, log)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    pids.append(pid)


def kill(*_):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


signal.signal(signal.SIGALRM, kill)
signal.alarm(limit)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]))
"""


@pytest.mark.slow
def test_multiworker_two_local_processes_end_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    out = str(tmp_path / "multi")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    logs = [str(tmp_path / f"worker-{i}.log") for i in range(2)]
    # The tiny model: what is checked is that the workers agree, not what they learn.
    result = run_in_fresh_process(
        code=WORKERS, args=[SCRIPT, json.dumps(cluster), 240, json.dumps(logs), *MODEL,
                            "--batch-size", "64", "--verbose", "2", "--epochs", "1", "--limit",
                            "256", "--strategy", "multiworker", "--out", out],
        env=FORKED, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    texts = [open(log).read() for log in logs]
    for code, text in zip(codes, texts):
        assert code == 0, text[-3000:]
    chief = json.loads(open(os.path.join(out, "metrics.json")).read())
    other = json.loads(open(os.path.join(out, "worker-1", "metrics.json")).read())
    assert chief["strategy"] == "multiworker" and chief["replicas"] == 2 and chief["workers"] == 2
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["final_test_accuracy"] == other["final_test_accuracy"]
    # Checkpoints and the best model are the chief's alone.
    assert os.path.exists(os.path.join(out, "best.keras"))
    assert os.listdir(os.path.join(out, "worker-1")) == ["metrics.json"]


# -- the command from an installed package --------------------------------------------------

def _fresh_venv(tmp_path):
    """A wheel of this checkout installed (without dependencies) into a new venv outside the
    checkout, which sees this venv's third-party packages through a .pth file listed after
    its own site-packages; returns the new venv's folder."""
    source = tmp_path / "source"  # what the wheel is built from, so the checkout stays clean
    shutil.copytree(os.path.join(ROOT, "kresnet"), source / "kresnet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    wheels = tmp_path / "wheels"
    # pip runs without PYTHONPATH: a checkout on it with a kresnet.egg-info (left by an
    # editable install) would make pip take kresnet for installed and skip the wheel.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(wheels), str(source)],
                   check=True, timeout=300, capture_output=True, env=_outside_env())
    (wheel,) = wheels.glob("kresnet-*.whl")
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    python = str(fresh / "bin" / "python")
    # pip of this venv, installing for the new one (its scripts get the new one's python).
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300,
                   capture_output=True, env=_outside_env())
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=_outside_env()).stdout.strip()
    # Lines of a .pth file only extend sys.path (after the venv's own site-packages): the
    # .pth files in those folders, such as this venv's editable-install hook of kresnet, are
    # not run, so kresnet comes from the wheel alone.
    theirs = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    with open(os.path.join(own, "zz_test_venv_packages.pth"), "w") as handle:
        handle.write("\n".join(theirs) + "\n")
    return fresh


def _outside_env():
    """This environment, without anything that would put the checkout on sys.path."""
    env = {k: v for k, v in ENV.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(sys.prefix))
    return env


@pytest.mark.slow
def test_kresnet_train_runs_from_an_installed_wheel(tmp_path):
    fresh = _fresh_venv(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**_outside_env(), "TF_CPP_MIN_LOG_LEVEL": "2"}  # as scripts/setup-env.sh sets it
    where = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import kresnet, kresnet.training\n"
         "print(kresnet.__file__); print(kresnet.training.__file__)"],
        capture_output=True, text=True, timeout=120, cwd=empty, env=env)
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert path.startswith(str(fresh)) and not path.startswith(ROOT + os.sep), path
    result = subprocess.run(
        [str(fresh / "bin" / "kresnet"), "train", *TINY, "--verbose", "2"],
        capture_output=True, text=True, timeout=300, cwd=empty, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run = empty / "runs" / "train"  # the default --out, in the current folder
    for name in ("history.csv", "curves.png", "best.keras", "metrics.json",
                 "checkpoints/latest.json", "checkpoints/epoch-0001.keras"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"]["train"] == 64 and metrics["epochs"] == 1
    assert "test accuracy" in result.stdout
    # TensorFlow's start-up lines (oneDNN, CUDA drivers, absl) are not shown.
    for noise in ("oneDNN", "cuda", "absl", "I0000", "E0000"):
        assert noise not in result.stderr, result.stderr[-3000:]
    assert sorted(os.listdir(empty)) == ["runs"]
