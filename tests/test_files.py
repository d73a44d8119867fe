"""kresnet.save and kresnet.load: atomic writes, clear errors for broken files, no hidden code."""

import json
import os
import signal
import time
import zipfile

import keras
import numpy as np
import pytest

import kresnet
from kresnet import files as kfiles
from tests.conftest import run_in_fresh_process

# One pytest-xdist worker runs this file: its module fixtures are made once.
pytestmark = pytest.mark.xdist_group("test_files")


def tiny(n_classes=3, **options):
    return kresnet.create_resnet((32, 32, 3), n_classes, blocks=(1,), widths=(4,),
                                 stem_width=4, **options)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny kresnet model and its .keras file."""
    model = tiny()
    path = str(tmp_path_factory.mktemp("saved") / "tiny.keras")
    kresnet.save(model, path)
    return model, path


def _weights_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights())) and \
        len(a.get_weights()) == len(b.get_weights())


# --- save ----------------------------------------------------------------------------------

def test_save_round_trips_and_leaves_only_the_file(tmp_path):
    model = tiny(head="fc")
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "deep" / "er" / "model.keras"
    assert kresnet.save(model, path) == str(path)
    assert os.listdir(path.parent) == ["model.keras"]
    loaded = kresnet.load(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert _weights_equal(model, loaded)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    # Permissions are those of an ordinary new file, not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_save_replaces_an_existing_file(tmp_path):
    path = str(tmp_path / "m.keras")
    kresnet.save(tiny(3), path)
    kresnet.save(tiny(5), path)
    assert kresnet.load(path).output_shape == (None, 5)
    assert os.listdir(tmp_path) == ["m.keras"]


@pytest.mark.parametrize("model,path,error,message", [
    ("resnet", "m.keras", TypeError, "`model` must be a keras.Model"),
    (None, "m.keras", TypeError, "`model` must be a keras.Model"),
    ("MODEL", 3, TypeError, "`path` must be a str or os.PathLike"),
    ("MODEL", b"m.keras", TypeError, "`path` must be a str or os.PathLike"),
    ("MODEL", "", ValueError, "`path` must be a non-empty path"),
    ("MODEL", "m.h5", ValueError, "`path` must end in '.keras'"),
    ("MODEL", "m.weights.h5", ValueError, "`path` must end in '.keras'"),
    ("MODEL", "m.keras.tmp", ValueError, "`path` must end in '.keras'"),
    ("MODEL", "folder.keras", ValueError, "is a folder"),
])
def test_save_checks_its_arguments_before_writing(model, path, error, message, tmp_path,
                                                  monkeypatch, saved):
    monkeypatch.chdir(tmp_path)
    os.mkdir("folder.keras")
    with pytest.raises(error, match=message):
        kresnet.save(saved[0] if model == "MODEL" else model, path)
    assert os.listdir(tmp_path) == ["folder.keras"]
    assert os.listdir("folder.keras") == []


def test_a_failed_save_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch,
                                                                     saved):
    path = str(tmp_path / "m.keras")
    kresnet.save(saved[0], path)
    before = open(path, "rb").read()

    def broken_save(model, filepath, **kwargs):
        with open(filepath, "wb") as file:
            file.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.saving, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        kresnet.save(tiny(7), path)
    assert os.listdir(tmp_path) == ["m.keras"]
    assert open(path, "rb").read() == before


def test_write_bytes_replaces_whole_files_and_names_its_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "state.json"
    assert kfiles.write_bytes(path, b"old") == str(path)
    assert kfiles.write_bytes(str(path), b"new") == str(path)
    assert path.read_bytes() == b"new" and os.listdir(path.parent) == ["state.json"]
    with pytest.raises(TypeError, match="`data` must be bytes"):
        kfiles.write_bytes(path, "text")
    seen = []
    real_replace = os.replace

    def failing_replace(source, target):
        seen.append(os.path.basename(source))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        kfiles.write_bytes(path, b"newer")
    monkeypatch.setattr(os, "replace", real_replace)
    match = kfiles.TEMPORARY.match(seen[0])
    assert match and match.group("target") == "state.json" and seen[0].endswith(".part")
    assert path.read_bytes() == b"new" and os.listdir(path.parent) == ["state.json"]


# --- broken files --------------------------------------------------------------------------

def _write(path, data):
    with open(path, "wb") as file:
        file.write(data)
    return str(path)


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _with_config(path, good, config):
    """A copy of the .keras file ``good`` whose config.json is ``config``."""
    with zipfile.ZipFile(good) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["config.json"] = json.dumps(config)
    return _zip(path, members)


def _config(good):
    with zipfile.ZipFile(good) as archive:
        return json.loads(archive.read("config.json"))


def _flip_byte(path, good):
    data = bytearray(open(good, "rb").read())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("model.weights.h5")
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    return _write(path, bytes(data))


def _h5_weights(path, model):
    model.save_weights(str(path))
    return str(path)


def _legacy_h5(path, model):
    model.save(str(path))  # Keras' legacy HDF5 model format
    return str(path)


def _lambda_model(path):
    x = keras.Input((4,), name="x")
    y = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    keras.saving.save_model(keras.Model(x, y, name="with_lambda"), str(path))
    return str(path)


def _nested_lambda_model(path):
    x = keras.Input((4,), name="x")
    inner = keras.Model(x, keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")(x),
                        name="inner")
    outer_in = keras.Input((4,), name="outer_x")
    y = keras.layers.Dense(2, name="head")(inner(outer_in))
    keras.saving.save_model(keras.Model(outer_in, y, name="outer"), str(path))
    return str(path)


class Doubler(keras.layers.Layer):
    """A custom layer: it can be loaded only with its code."""

    def call(self, inputs):
        return inputs * 2.0


def _custom_class_model(path):
    x = keras.Input((4,), name="x")
    keras.saving.save_model(keras.Model(x, Doubler(name="doubler")(x)), str(path))
    return str(path)


def _custom_function_model(path):
    def squash(t):
        return t / (1.0 + abs(t))

    x = keras.Input((4,), name="x")
    y = keras.layers.Dense(2, activation=squash, name="squashed")(x)
    keras.saving.save_model(keras.Model(x, y), str(path))
    return str(path)


def _custom_loss_model(path):
    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred))

    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="out")(x))
    model.compile(optimizer="sgd", loss=my_loss)
    keras.saving.save_model(model, str(path))
    return str(path)


def _forged_module(path, good):
    config = _config(good)
    config["config"]["layers"][1] = {"module": "os", "class_name": "system",
                                     "config": {"name": "res2a", "command": "echo owned"},
                                     "registered_name": None}
    return _with_config(path, good, config)


def _forged_registered_name(path, good):
    config = _config(good)
    config["config"]["layers"][1]["registered_name"] = "evil>Conv2D"
    return _with_config(path, good, config)


#: Each broken or refused file: how to build it (from a folder and a good .keras file).
FILE_CASES = {
    "missing": lambda d, good: str(d / "missing.keras"),
    "folder": lambda d, good: (os.mkdir(d / "folder.keras"), str(d / "folder.keras"))[1],
    "empty": lambda d, good: _write(d / "empty.keras", b""),
    "zero-filled": lambda d, good: _write(d / "zeros.keras", bytes(os.path.getsize(good))),
    "truncated": lambda d, good: _write(d / "half.keras",
                                        open(good, "rb").read()[: os.path.getsize(good) // 2]),
    "end-cut": lambda d, good: _write(d / "cut.keras", open(good, "rb").read()[:-20]),
    "not-zip": lambda d, good: _write(d / "text.keras", b"model weights, honest\n" * 10),
    "damaged": lambda d, good: _flip_byte(d / "flipped.keras", good),
    "zip-without-config": lambda d, good: _zip(d / "other.keras", {"readme.txt": "hello"}),
    "bad-json": lambda d, good: _zip(d / "json.keras", {"config.json": "{not json"}),
    "weights-h5": lambda d, good: _h5_weights(d / "tiny.weights.h5", kresnet.load(good)),
    "legacy-h5": lambda d, good: _legacy_h5(d / "tiny.h5", kresnet.load(good)),
    "other-name": lambda d, good: _write(d / "tiny.zip", open(good, "rb").read()),
    "lambda": lambda d, good: _lambda_model(d / "lambda.keras"),
    "nested-lambda": lambda d, good: _nested_lambda_model(d / "nested.keras"),
    "custom-class": lambda d, good: _custom_class_model(d / "custom.keras"),
    "custom-function": lambda d, good: _custom_function_model(d / "function.keras"),
    "custom-loss": lambda d, good: _custom_loss_model(d / "loss.keras"),
    "forged-module": lambda d, good: _forged_module(d / "forged.keras", good),
    "forged-registered-name": lambda d, good: _forged_registered_name(d / "forged2.keras",
                                                                      good),
}

# What the message says besides the file's name (docs/errors.md lists the same).
FILE_MESSAGES = {
    "missing": "No file at",
    "folder": "is a folder, not a .keras file",
    "empty": "is empty (0 bytes)",
    "zero-filled": "holds only zero bytes",
    "truncated": "is truncated or damaged",
    "end-cut": "is truncated or damaged",
    "not-zip": "is not a .keras file",
    "damaged": "fails its checksum",
    "zip-without-config": "it has no config.json",
    "bad-json": "is not valid JSON",
    "weights-h5": "is an HDF5 file",
    "legacy-h5": "is an HDF5 file",
    "other-name": "is a .keras archive under another name",
    "lambda": "layer 'double': a Lambda layer runs Python code",
    "nested-lambda": "layer 'plus_one': a Lambda layer runs Python code",
    "custom-class": "layer 'doubler': class 'Doubler'",
    "custom-function": "layer 'squashed': function 'squash' is not part of Keras",
    "custom-loss": "function 'my_loss' is not part of Keras",
    "forged-module": "layer 'res2a': class 'system' (module 'os') is not part of Keras",
    "forged-registered-name": "is registered as 'evil>Conv2D'",
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_broken_or_unsafe_files_give_a_clear_error_naming_the_file(case, tmp_path, saved):
    path = FILE_CASES[case](tmp_path, saved[1])
    with pytest.raises(ValueError) as error:
        kresnet.load(path)
    message = str(error.value)
    assert repr(path) in message, message
    assert FILE_MESSAGES[case] in message, message


def test_unsafe_files_say_how_to_load_them_anyway(tmp_path):
    with pytest.raises(ValueError, match=r"trusted=True"):
        kresnet.load(_lambda_model(tmp_path / "lambda.keras"))


def test_trusted_loads_a_lambda_and_runs_it(tmp_path):
    model = kresnet.load(_lambda_model(tmp_path / "lambda.keras"), trusted=True)
    np.testing.assert_allclose(model(np.ones((1, 4), "float32")), 2 * np.ones((1, 4)))


def test_trusted_loads_a_registered_custom_class(tmp_path):
    path = _custom_class_model(tmp_path / "custom.keras")
    with keras.saving.custom_object_scope({"Doubler": Doubler}):
        model = kresnet.load(path, trusted=True)
    assert isinstance(model.get_layer("doubler"), Doubler)


def test_trusted_without_the_code_still_names_the_file(tmp_path):
    """A custom class Keras cannot find: Keras' own error, with the file's name."""
    config = {"module": "nowhere_to_be_found", "class_name": "Mystery", "config": {},
              "registered_name": "Mystery"}
    path = _zip(tmp_path / "mystery.keras", {"config.json": json.dumps(config),
                                             "metadata.json": "{}"})
    with pytest.raises(ValueError, match=r"Could not load '.*mystery.keras'"):
        kresnet.load(path, trusted=True)


def test_the_check_reads_the_json_before_keras_does(tmp_path, saved, monkeypatch):
    calls = []
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match="not part of Keras"):
        kresnet.load(_forged_module(tmp_path / "forged.keras", saved[1]))
    assert calls == []


def test_every_object_of_a_kresnet_model_passes_the_check(tmp_path):
    """All variants at once, compiled with an optimizer, loss and metric objects."""
    model = kresnet.create_resnet(
        (32, 32, 3), 3, blocks=(1, 1), widths=(4, 8), stem="deep", stem_width=(4, 4, 4),
        se_ratio=0.25, shortcut="A", weight_decay=1e-4, preact=True,
        kernel_initializer=keras.initializers.HeNormal(seed=1),
        classifier_activation=keras.activations.softmax)
    model.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(), "accuracy"], run_eagerly=True)
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.uniform(0, 1, (2, 32, 32, 3)), rng.integers(0, 3, 2))
    path = kresnet.save(model, tmp_path / "variants.keras")
    assert kfiles.unsafe_object(kfiles.read_config(path)) is None
    loaded = kresnet.load(path)
    assert _weights_equal(model, loaded)
    assert int(loaded.optimizer.iterations) == 1  # the optimizer state survives for resuming
    assert getattr(kresnet.load(path, compile=False), "optimizer", None) is None


def test_keras_applications_models_pass_the_check(tmp_path):
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3),
                                                classes=3, include_preprocessing=True)
    path = kresnet.save(model, tmp_path / "mobilenet.keras")
    assert kresnet.load(path).count_params() == model.count_params()


# --- a file of another model ---------------------------------------------------------------

def test_any_keras_model_loads_without_expect(tmp_path):
    x = keras.Input((4,), name="x")
    plain = keras.Model(x, keras.layers.Dense(2, name="out")(x), name="plain")
    assert kresnet.load(kresnet.save(plain, tmp_path / "plain.keras")).name == "plain"


def test_expect_refuses_a_file_of_another_model(tmp_path, saved):
    model, path = saved
    assert kresnet.load(path, expect=model).name == model.name
    assert kresnet.load(path, expect=model.name).name == model.name
    with pytest.raises(ValueError, match=r"tiny.keras' holds model 'resnet5', not the "
                                         r"expected 'resnet50'"):
        kresnet.load(path, expect="resnet50")
    with pytest.raises(ValueError, match=r"holds another model than the expected 'resnet5'.*"
                                         r"Dense 'fc_final' with weight shapes \[\(200, 3\)"):
        kresnet.load(path, expect=tiny(n_classes=4))
    with pytest.raises(ValueError, match=r"holds another model than the expected 'resnet8'"):
        kresnet.load(path, expect=kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1)))


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(path=3), TypeError, "`path` must be a str or os.PathLike"),
    (dict(trusted="yes"), TypeError, "`trusted` must be True or False"),
    (dict(trusted=1), TypeError, "`trusted` must be True or False"),
    (dict(compile=None), TypeError, "`compile` must be True or False"),
    (dict(expect=3), TypeError, "`expect` must be None, a model name"),
])
def test_load_checks_its_arguments(kwargs, error, message, saved):
    with pytest.raises(error, match=message):
        kresnet.load(**{"path": saved[1], **kwargs})


# --- killed while saving -------------------------------------------------------------------

# A saving process, one per kill, forked by run_in_fresh_process (tests/conftest.py) from a
# Python that has imported Keras once and run no TensorFlow op: given PATH FIRST SAVES PHASE
# LIMIT it saves one tiny model to PATH, version k with every weight equal to k: SAVES
# complete saves of versions FIRST, FIRST + 1, ..., then one more that kills the process
# (SIGKILL) at PHASE. PHASE is a step of kresnet.files._replace, reported through its _phase
# hook, or "writing": in the middle of the archive, once LIMIT bytes of it are written. No
# timing is involved.
SAVER = """
import os, signal, sys, zipfile
import numpy as np
import kresnet, kresnet.files

say = lambda text: os.write(1, f"{text}\\n".encode())


def die(phase, version):
    say(f"killed {phase} {version}")
    os.kill(os.getpid(), signal.SIGKILL)


class Cut:
    \"\"\"The file Keras writes the archive into: the process dies in the write that would
    take the file past ``limit`` bytes, after writing up to the limit.\"\"\"

    def __init__(self, file, limit, version):
        self._file, self._limit, self._version = file, limit, version

    def write(self, data):
        data = bytes(data)
        room = self._limit - self._file.tell()
        if len(data) <= room:
            return self._file.write(data)
        self._file.write(data[:max(room, 0)])
        self._file.flush()
        die("writing", self._version)

    def __getattr__(self, name):
        return getattr(self._file, name)


def save_and_die(path, first, saves, phase, limit):
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(4,), stem_width=4,
                                  head="fc")
    shapes = [(w.shape, w.dtype) for w in model.get_weights()]
    last = first + saves
    for version in range(first, last + 1):
        model.set_weights([np.full(shape, version, dtype) for shape, dtype in shapes])
        if version == last and phase == "writing":
            class CutZipFile(zipfile.ZipFile):
                def __init__(self, file, mode="r", *args, **kwargs):
                    if mode == "w" and hasattr(file, "write"):
                        file = Cut(file, limit, version)
                    super().__init__(file, mode, *args, **kwargs)

            zipfile.ZipFile = CutZipFile
        elif version == last:
            def kill_at(step, temporary):
                if step == phase:
                    die(step, version)

            kresnet.files._phase = kill_at
        say(f"saving {version}")
        kresnet.save(model, path)
        say(f"saved {version}")


path, first, saves, phase, limit = sys.argv[1:]
save_and_die(path, int(first), int(saves), phase, int(limit))
raise SystemExit("the saving process was not killed")
"""
#: Where the saving process dies, in the order of kresnet.files._replace: its temporary file
#: reserved (empty), half the archive written, all of it written, flushed to disk, renamed.
PHASES = ("reserved", "writing", "written", "synced", "replaced")
#: (phase, complete saves before the killed one), in the order run on one path: every phase
#: with no file at the path yet, then every phase over an old file. "written" comes before
#: "writing", which cuts the archive at half the size of the complete one that it leaves.
KILLS = [(phase, 0) for phase in ("reserved", "written", "synced", "writing", "replaced")] + \
    [(phase, 2) for phase in PHASES]



def run_saver(path, first, saves, phase, limit, timeout=120):
    """Run one saving process to its end: its exit code (``-9`` for SIGKILL), the lines it
    printed as ``[word, args...]`` lists (a line cut by the kill is not counted) and its
    stderr."""
    result = run_in_fresh_process(code=SAVER, args=[path, first, saves, phase, limit],
                                  env={"CUDA_VISIBLE_DEVICES": ""}, timeout=timeout)
    lines = [line.split() for line in result.stdout.splitlines(keepends=True)
             if line.endswith("\n")]
    return result.returncode, lines, result.stderr


def _version_in(path):
    """The version stored in a complete file: every weight of the model equals it."""
    weights = kresnet.load(path, compile=False).get_weights()
    values = {float(v) for w in weights for v in np.unique(w)}
    assert len(values) == 1, f"{path} mixes versions {sorted(values)[:5]}"
    return int(values.pop())


def test_the_kill_phases_are_the_steps_of_an_atomic_write(tmp_path, monkeypatch):
    """The hook the kill test relies on: each step once, in order, with the temporary."""
    steps = []

    def record(step, temporary):
        steps.append((step, os.path.basename(temporary), os.path.exists(temporary),
                      os.path.exists(tmp_path / "state.json")))

    monkeypatch.setattr(kfiles, "_phase", record)
    kfiles.write_bytes(tmp_path / "state.json", b"{}")
    names = {name for _, name, _, _ in steps}
    assert len(names) == 1 and kfiles.TEMPORARY.match(names.pop()).group("target") == \
        "state.json"
    assert [(step, there, done) for step, _, there, done in steps] == [
        ("reserved", True, False), ("written", True, False), ("synced", True, False),
        ("replaced", False, True)]


@pytest.mark.slow  # ten saving processes that build and save models
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the saving processes are forked")
def test_a_killed_save_leaves_the_old_or_the_new_file(tmp_path):
    """SIGKILL a process while it saves, at each step of the atomic write in turn (with no
    file at the path yet, then over an old one): the path holds exactly the old complete
    file (or none) up to the rename and the new complete one from it on, never a partial
    one; a killed save leaves one temporary file with a recognisable name (an empty one, a
    partial one, the complete new file), until the rename."""
    started = time.monotonic()
    folder = tmp_path / "target"
    path = str(folder / "model.keras")
    current = None  # the version in the file at the path, None while there is none
    complete = None  # the size of a complete file
    completed_saves = 0
    for kill, (phase, saves) in enumerate(KILLS):
        first = 1 + 1000 * kill
        new = first + saves  # the version being saved when the process dies
        limit = complete // 2 if phase == "writing" else 0
        code, lines, stderr = run_saver(path, first, saves, phase, limit)
        expected = [words for version in range(first, new)
                    for words in (["saving", str(version)], ["saved", str(version)])]
        expected += [["saving", str(new)], ["killed", phase, str(new)]]
        assert (code, lines) == (-signal.SIGKILL, expected), \
            (phase, code, lines, stderr[-3000:])
        completed_saves += saves
        if saves:
            current = new - 1
        if phase == "replaced":
            current = new
        if current is None:
            assert not os.path.lexists(path), phase
        else:
            assert _version_in(path) == current, (phase, current)
            assert complete is None or os.path.getsize(path) == complete, phase
        others = sorted(set(os.listdir(folder)) - {"model.keras"})
        if phase == "replaced":
            assert others == [], others
            continue
        assert len(others) == 1, (phase, others)
        match = kfiles.TEMPORARY.match(others[0])
        assert match and match.group("target") == "model.keras", others
        temporary = str(folder / others[0])
        size = os.path.getsize(temporary)
        if phase == "reserved":
            assert size == 0
        elif phase == "writing":
            assert size == limit > 0, (size, limit)
            with pytest.raises(ValueError, match="is truncated or damaged"):
                kresnet.load(temporary)
        else:  # the new file, complete, not yet renamed
            assert _version_in(temporary) == new, phase
            assert complete in (None, size), (complete, size)
            complete = size
        os.remove(temporary)  # what a killed save leaves behind
    print(f"{len(KILLS)} kills, {completed_saves} completed saves, "
          f"{time.monotonic() - started:.1f} s")
    assert completed_saves == sum(saves for _, saves in KILLS) > 0
