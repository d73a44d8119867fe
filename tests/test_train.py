"""scripts/train.py: data sets and their errors, checkpoints that survive SIGKILL, --resume,
mirrored on two logical CPUs, multiworker on two local processes, mixed precision."""

import importlib.util
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import LOADER, ROOT

# One pytest-xdist worker runs this file: its module fixtures are made once.
pytestmark = pytest.mark.xdist_group("test_train")

if keras.backend.backend() != "tensorflow":
    pytest.skip("scripts/train.py trains with tf.distribute on the TensorFlow back end",
                allow_module_level=True)
for _package in ("sklearn", "matplotlib"):  # kresnet[train]; scripts/setup-env.sh installs it
    if importlib.util.find_spec(_package) is None:
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            raise ImportError(f"{_package} is missing: pip install kresnet[train]")
        pytest.skip(f"{_package} is missing: pip install kresnet[train]", allow_module_level=True)

SCRIPT = os.path.join(ROOT, "scripts", "train.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
       "KERAS_BACKEND": "tensorflow"}
#: A small, quick configuration: ResNet-18 with the CIFAR stem at width 8 on all digits.
SMALL = ["--config", "stem=cifar", "--width", "8", "--batch-size", "64", "--verbose", "2"]


def _load_script():
    spec = importlib.util.spec_from_file_location("kresnet_train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_script()


def run_script(*args, timeout=300, env=None):
    result = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                            timeout=timeout, env=env or ENV)
    return result


def read_history(out):
    with open(os.path.join(out, "history.csv")) as handle:
        lines = handle.read().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


# -- data sets ------------------------------------------------------------------------------

def test_digits_split_is_fixed_and_complete():
    first, second = train.load_digits(), train.load_digits()
    assert first.sizes() == (1258, 180, 359) and sum(first.sizes()) == 1797
    for a, b in zip((first.train, first.val, first.test), (second.train, second.val, second.test)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert first.train[0].shape[1:] == (32, 32, 1) and first.image_shape == (32, 32, 1)
    assert set(first.test[1]) == set(range(10))  # every class in the test set


def _cifar_batch(n, offset):
    rng = np.random.default_rng(offset)
    return {b"batch_label": b"batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"filenames": [b"x.png"] * n}


def make_cifar(folder, n=20, archive=True, drop=None, replace=None):
    """A CIFAR-10 python archive (or folder) of the real layout, with n images per batch."""
    members = {}
    for i, name in enumerate(train.CIFAR_MEMBERS):
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
    data = train.load_data(f"cifar10:{make_cifar(tmp_path, archive=archive)}", None)
    assert data.sizes() == (90, 10, 20) and data.image_shape == (32, 32, 3)
    expected = _cifar_batch(20, 5)  # test_batch: rows are R plane, G plane, B plane
    image = expected[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(data.test[0][3], image)
    np.testing.assert_array_equal(data.test[1], expected[b"labels"])


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
    with pytest.raises(train.TrainingError, match=message):
        train.load_data(f"cifar10:{path}", None)


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
    data = train.load_data(f"folder:{make_folder(tmp_path)}", (16, 16))
    assert data.sizes() == (21, 3, 6) and data.classes == 2 and data.class_names == ["cat",
                                                                                      "dog"]
    parts = (data.train, data.val, data.test)
    pairs = [(x.numpy(), int(y)) for part in parts for x, y in train.as_dataset(part)]
    assert pairs[0][0].shape == (16, 16, 3) and pairs[0][0].dtype == np.float32
    assert len({x.tobytes() for x, _ in pairs}) == 30  # the three parts do not overlap
    for x, y in pairs:  # labels follow the class folders (cat images are dark)
        assert (x.mean() < 128) == (y == 0)
    again = train.limit(train.load_data(f"folder:{tmp_path}", (16, 16)), 5)
    assert list(again.train.paths) == list(data.train.paths[:5])  # a fixed subset


def test_width_follows_the_presets_stem():
    args = train.parser().parse_args(["--width", "16"])
    assert train.model_options(args, 4) == {"widths": (16, 32, 64, 128), "stem_width": 16}
    deep = train.model_options(args, 4, preset_stem="deep")
    assert deep["stem_width"] == (8, 8, 16)
    assert train.model_options(args, 3)["widths"] == (16, 32, 64)


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
    with pytest.raises(train.TrainingError, match=message):
        train.load_data(f"folder:{root}", (16, 16))


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
    assert train.main(argv + ["--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "run" / "best.keras").exists()


def test_kresnet_train_runs_the_script():
    result = subprocess.run([sys.executable, "-m", "kresnet", "train", "--help"],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0 and "usage: train.py" in result.stdout, result.stderr
    for option in ("--strategy", "--cpu-replicas", "--resume", "--mixed-precision"):
        assert option in result.stdout


def test_argument_parser_rejects_bad_values(capsys):
    for argv in (["--epochs", "0"], ["--config", "stem"], ["--image-size", "0"],
                 ["--optimizer", "lbfgs"]):
        with pytest.raises(SystemExit) as stop:
            train.parser().parse_args(argv)
        assert stop.value.code == 2
    capsys.readouterr()


# -- training in this process ---------------------------------------------------------------

def test_cifar10_and_folder_train_and_report(tmp_path):
    cifar = make_cifar(tmp_path, n=40)
    out = tmp_path / "cifar"
    assert train.main(["--dataset", f"cifar10:{cifar}", "--epochs", "2", "--batch-size", "32",
                       "--config", "stem=cifar", "--width", "4", "--schedule", "plateau",
                       "--patience", "3", "--optimizer", "sgd", "--weight-decay", "5e-4",
                       "--verbose", "0",
                       "--out", str(out)]) == 0
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
    assert train.main(["--dataset", f"folder:{folder}", "--image-size", "16", "--epochs", "1",
                       "--batch-size", "8", "--model", "resnet20", "--verbose", "0",
                       "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == {"train": 28, "validation": 4, "test": 8}
    assert keras.saving.load_model(out / "best.keras").input_shape == (None, 16, 16, 3)

    # Both best.keras files load in a fresh process without kresnet (safe_mode on) and give
    # the outputs they give here.
    paths = [tmp_path / "cifar" / "best.keras", out / "best.keras"]
    rng = np.random.default_rng(0)
    expected = []
    for path, shape in zip(paths, [(2, 32, 32, 3), (2, 16, 16, 3)]):
        x = rng.uniform(0, 255, shape).astype("float32")
        np.save(f"{path}.in.npy", x)
        expected.append(keras.ops.convert_to_numpy(
            keras.saving.load_model(path)(x, training=False)))
    result = subprocess.run([sys.executable, LOADER, *map(str, paths)], capture_output=True,
                            text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    for path, outputs in zip(paths, expected):
        np.testing.assert_allclose(np.load(f"{path}.out.npy"), outputs, atol=1e-6)
        assert open(f"{path}.names.txt").read().split()[:2] == ["input", "normalize"]


def test_mixed_precision_trains_with_a_float32_classifier(tmp_path):
    before = keras.config.dtype_policy().name
    out = tmp_path / "mixed"
    assert train.main(["--mixed-precision", "--epochs", "1", "--limit", "128", "--batch-size",
                       "32", "--width", "4", "--config", "stem=cifar", "--verbose", "0",
                       "--out", str(out)]) == 0
    assert keras.config.dtype_policy().name == before  # restored for whoever comes next
    model = keras.saving.load_model(out / "best.keras")
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    assert model.get_layer("res2a_branch2a").dtype_policy.name == policy
    assert model.get_layer("fc10").dtype_policy.name == "float32"


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["--epochs", "1", "--limit", "64", "--batch-size", "32", "--width", "4",
            "--config", "stem=cifar", "--verbose", "0", "--out", out]
    assert train.main(argv) == 0
    before = (tmp_path / "run" / "best.keras").read_bytes()
    assert train.main(argv) == 2
    assert "already holds a run (checkpoint of epoch 1): pass --resume" in capsys.readouterr().err
    assert train.main(argv + ["--resume"]) == 2  # nothing left to do at --epochs 1
    assert "already finished 1 epochs" in capsys.readouterr().err
    assert train.main(argv + ["--resume", "--epochs", "2", "--lr", "0.01"]) == 2
    assert "was started with --lr None, this call has 0.01: a resumed run keeps its " \
        "settings" in capsys.readouterr().err
    assert (tmp_path / "run" / "best.keras").read_bytes() == before


def test_resume_carries_plateau_and_early_stopping_counters(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--epochs", "2", "--limit", "64", "--batch-size", "32", "--width", "4",
            "--config", "stem=cifar", "--schedule", "plateau", "--patience", "2",
            "--verbose", "0", "--out", str(out)]
    assert train.main(argv) == 0
    state = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert set(state["callbacks"]) == {"plateau", "early_stopping"}
    assert train.main(argv[:1] + ["3"] + argv[2:] + ["--resume"]) == 0
    assert [row["epoch"] for row in read_history(out)] == ["1", "2", "3"]
    resumed = json.loads((out / "checkpoints" / "latest.json").read_text())
    best = max(float(row["val_accuracy"]) for row in read_history(out))
    assert resumed["callbacks"]["early_stopping"]["best"] == pytest.approx(best)
    capsys.readouterr()


def test_restored_plateau_counters_act_on_the_next_epoch():
    plateau = train._resumable(keras.callbacks.ReduceLROnPlateau,
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


def test_an_early_stopped_run_is_finished(tmp_path, capsys):
    out = tmp_path / "run"
    pointer = out / "checkpoints" / "latest.json"
    argv = ["--epochs", "1", "--limit", "64", "--batch-size", "32", "--width", "4",
            "--config", "stem=cifar", "--patience", "1", "--verbose", "0", "--out", str(out)]
    assert train.main(argv) == 0
    state = json.loads(pointer.read_text())
    state["stopped"] = True
    pointer.write_text(json.dumps(state))
    assert train.main(["--epochs", "5"] + argv[2:] + ["--resume"]) == 2
    assert "stopped early at epoch 1 (--patience 1); nothing to resume" in \
        capsys.readouterr().err


# -- checkpoints that survive, and resuming -------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Three epochs without interruption: the reference for --resume and for mirrored."""
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    result = run_script(*SMALL, "--epochs", "3", "--out", out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint_and_resume_continues(
        tmp_path, uninterrupted):
    out = str(tmp_path / "killed")
    pointer = os.path.join(out, "checkpoints", "latest.json")
    process = subprocess.Popen([sys.executable, SCRIPT, *SMALL, "--epochs", "3", "--out", out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 240
        while not os.path.exists(pointer) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert os.path.exists(pointer), "no checkpoint after the first epoch"
        time.sleep(0.8)  # into the second epoch, which takes a few seconds
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    state = json.loads(open(pointer).read())
    assert state["epoch"] in (1, 2)  # killed before the run finished
    model = keras.saving.load_model(os.path.join(out, "checkpoints", state["checkpoint"]))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 19 * state["epoch"]
    # What a kill during a save leaves: a partial temporary file, removed by the next run.
    partial = os.path.join(out, "checkpoints", ".epoch-0009.keras.0123456789abcdef.part.keras")
    with open(partial, "wb") as handle:
        handle.write(b"PK\x03\x04 half a zip")

    result = run_script(*SMALL, "--epochs", "3", "--out", out, "--resume")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"resuming after epoch {state['epoch']} (optimizer step {19 * state['epoch']})" \
        in result.stdout
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


# -- several devices, several workers -------------------------------------------------------

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


def test_multiworker_two_local_processes_end_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    out = str(tmp_path / "multi")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"worker-{index}.log", "w")
        workers.append((subprocess.Popen(
            [sys.executable, SCRIPT, *SMALL, "--epochs", "1", "--limit", "512", "--strategy",
             "multiworker", "--out", out], stdout=log, stderr=subprocess.STDOUT,
            env={**ENV, "TF_CONFIG": config}), log))
    try:
        for process, _ in workers:
            process.wait(timeout=240)
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    for (process, _), text in zip(workers, logs):
        assert process.returncode == 0, text[-3000:]
    chief = json.loads(open(os.path.join(out, "metrics.json")).read())
    other = json.loads(open(os.path.join(out, "worker-1", "metrics.json")).read())
    assert chief["strategy"] == "multiworker" and chief["replicas"] == 2 and chief["workers"] == 2
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["final_test_accuracy"] == other["final_test_accuracy"]
    # Checkpoints and the best model are the chief's alone.
    assert os.path.exists(os.path.join(out, "best.keras"))
    assert os.listdir(os.path.join(out, "worker-1")) == ["metrics.json"]
