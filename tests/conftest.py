"""Shared helpers: fresh-process loading, automatic-name detection, layer-creation counting."""

import atexit
import contextlib
import inspect
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from kresnet.training.startup import prefer_onednn  # imports no TensorFlow

# Before Keras imports TensorFlow: its oneDNN kernels, as scripts/setup-env.sh and
# kresnet's programs ask for them. Without them an AVX2 CPU cannot run the channels_first
# tests' convolutions, and trains half as fast.
prefer_onednn()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(ROOT, "scripts", "load_and_predict.py")

# Names Keras makes up for unnamed layers: conv2d, conv2d_3, add_17, activation, ...
_AUTOMATIC = re.compile(
    r"^(input_layer|conv2d|batch_normalization|activation|add|re_lu|zero_padding2d|"
    r"max_pooling2d|average_pooling2d|global_average_pooling2d|global_max_pooling2d|dense|"
    r"dropout|multiply|concatenate|reshape|lambda|functional)(_\d+)?$")


#: Build options for tests that read only a model's structure (names, strides, filters,
#: shapes, counts): zero kernels spare the he_normal draws, about half of a full-size
#: ResNet's build, which none of those assertions reads.
SHAPE_ONLY = {"kernel_initializer": "zeros"}


def automatic_names(model):
    return [layer.name for layer in model.layers if _AUTOMATIC.match(layer.name)]


# A fork server: a Python that has imported Keras (TensorFlow's import is ~6 CPU-seconds)
# and nothing of kresnet, and has run no TensorFlow op, so that forking it is safe. For each
# request line it forks a process that runs one script as __main__ (stdin /dev/null, stdout
# and stderr to files, the given arguments, directory and environment) and prints the
# process's id, then, once it has ended, its id and exit code (-9 for SIGKILL).
_SERVER = r"""
import gc, json, os, runpy, sys, traceback
import keras, numpy

gc.freeze()  # the imports' objects live for good: the processes' collections skip them
os.write(1, b"ready\n")
for line in sys.stdin:
    run = json.loads(line)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                    (1, run["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                    (2, run["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                opened = os.open(path, flags, 0o644)
                os.dup2(opened, fd)
                os.close(opened)
            sys.stdin = open(os.devnull)
            os.chdir(run["cwd"])
            os.environ.update(run["env"])
            sys.argv = [run["script"], *run["args"]]
            runpy.run_path(run["script"], run_name="__main__")
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            if status and not isinstance(stop.code, int):
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)
    os.write(1, f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    os.write(1, f"{pid} {os.waitstatus_to_exitcode(status)}\n".encode())
"""


class _FreshPythons:
    """The fork server above, started on first use, one per test process."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="kresnet-fresh-")
        self.log = open(os.path.join(self.folder, "server.log"), "w+b")
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONPATH": ROOT + (os.pathsep + path if path else "")}
        self.process = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log)
        self.buffer = b""
        self.runs = 0
        atexit.register(self.close)
        assert self._line(timeout=600) == "ready"

    def close(self):
        """End the server (it stops at the end of its input) and remove its files."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # still waiting for a process of an aborted run
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _line(self, timeout):
        """The server's next line, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                return None
            data = os.read(self.process.stdout.fileno(), 4096)
            if not data:
                self.log.seek(0)
                raise AssertionError("the fork server stopped: "
                                     + self.log.read()[-3000:].decode(errors="replace"))
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def run(self, script, args, env, cwd, timeout):
        self.runs += 1
        stem = os.path.join(self.folder, f"{self.runs:04d}")
        request = {"script": script, "args": [str(a) for a in args], "env": env or {},
                   "cwd": str(cwd), "stdout": stem + ".out", "stderr": stem + ".err"}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        pid = self._line(timeout=60)
        assert pid and pid.isdigit(), pid
        ended = self._line(timeout)
        if ended is None:
            os.kill(int(pid), signal.SIGKILL)
            self._line(timeout=60)
        texts = []
        for path in (request["stdout"], request["stderr"]):
            with open(path, encoding="utf-8", errors="replace") as file:
                texts.append(file.read())
            os.remove(path)
        assert ended is not None, f"{script} ran over {timeout} s: {texts[1][-3000:]}"
        ended_pid, code = ended.split()
        assert ended_pid == pid, (pid, ended)
        return subprocess.CompletedProcess([script, *request["args"]], int(code), *texts)


_FRESH = []


def run_in_fresh_process(script=None, args=(), *, code=None, env=None, cwd=ROOT,
                         timeout=1200):
    """Run ``script`` (a path, or the Python source ``code``) as ``__main__`` in a new
    process, forked from a Python that has imported Keras and nothing else: no kresnet, no
    model, no TensorFlow op run. Returns a ``subprocess.CompletedProcess`` (its ``args``,
    ``returncode``, ``stdout``, ``stderr``); ``env`` adds to the environment. Where the
    process does ``import kresnet`` it gets this checkout's. One fork server per test
    process spares each run TensorFlow's import."""
    if not _FRESH or _FRESH[0].process.poll() is not None:
        _FRESH[:] = [_FreshPythons()]
    server = _FRESH[0]
    if code is None:
        return server.run(script, args, env, cwd, timeout)
    assert script is None, "a script or code, not both"
    script = os.path.join(server.folder, f"code{server.runs + 1:04d}.py")
    with open(script, "w", encoding="utf-8") as file:
        file.write(code)
    try:
        return server.run(script, args, env, cwd, timeout)
    finally:
        os.remove(script)


def load_in_fresh_process(models, tmp_path, inputs):
    """Save each model, load them all in one new Python without kresnet, safe_mode on
    (scripts/load_and_predict.py, run by run_in_fresh_process).

    Returns, per model, (outputs on its input, layer names) as the loading process saw them.
    """
    paths = []
    for i, (model, x) in enumerate(zip(models, inputs)):
        path = str(tmp_path / f"{i:02d}_{model.name}.keras")
        cache_saving_skipsets()
        model.save(path)
        np.save(f"{path}.in.npy", x)
        paths.append(path)
    result = run_in_fresh_process(LOADER, paths)
    assert result.returncode == 0, result.stderr[-3000:]
    return [(np.load(f"{p}.out.npy"), open(f"{p}.names.txt", encoding="utf-8").read().split())
            for p in paths]


def load_one_in_fresh_process(model, tmp_path, x):
    return load_in_fresh_process([model], tmp_path, [x])[0]


@pytest.fixture
def count_layers(monkeypatch):
    """Count every Keras layer constructed while the test runs: ``count_layers()``."""
    created = []
    original = keras.layers.Layer.__init__

    def counting_init(self, *args, **kwargs):
        created.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__init__", counting_init)
    return lambda: len(created)


@pytest.fixture
def channels_first():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format(previous)


_FULL_SIZE = {}
_BUILT_WITH = {}


@pytest.fixture(scope="session")
def full_size():
    """Models that several tests build alike, each built once per test process:
    ``full_size("ResNet50", stride_on="3x3")`` is ``kresnet.ResNet50(stride_on="3x3")``,
    ``full_size("build", "resnet50v2")`` is ``kresnet.build("resnet50v2")``. Arguments are
    compared bound, defaults filled in: ``full_size("ResNet50")`` is ``full_size("ResNet50",
    include_top=True)``. Tests that only read a model share it as it is; a test that changes
    its weights takes ``full_size.fresh(...)``: the model with the weights it was built with
    put back, as a new build would have them. A test that reads only the structure (names,
    shapes, counts, settings) takes ``full_size.structure(...)``: the model built within
    ``structure_only``, its weights declared, not made. Tests that share models share an
    xdist group (``full_size``, or their file's), so that one worker builds each model once."""
    import kresnet  # noqa: PLC0415

    def get(function, *args, _structure=False, **options):
        call = getattr(kresnet, function)
        signature = inspect.signature(call)
        bound = signature.bind(*args, **options)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, parameter in signature.parameters.items():
            if parameter.kind is parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name))
        key = (function, repr(sorted(arguments.items())), _structure)
        if key not in _FULL_SIZE:
            with structure_only() if _structure else contextlib.nullcontext():
                _FULL_SIZE[key] = call(*args, **options)
        return _FULL_SIZE[key]

    def structure(function, *args, **options):
        return get(function, *args, _structure=True, **options)

    def fresh(function, *args, **options):
        model = get(function, *args, **options)
        if id(model) in _BUILT_WITH:
            model.set_weights(_BUILT_WITH[id(model)])
        else:
            _BUILT_WITH[id(model)] = model.get_weights()
        return model

    get.fresh = fresh
    get.structure = structure
    return get


#: Doctests (collected from kresnet/ by --doctest-modules) that build full-size models or
#: keras.applications pairs: marked slow here, as a docstring cannot carry a marker.
SLOW_DOCTESTS = {"kresnet.applications.ResNet101", "kresnet.applications.ResNet152",
                 "kresnet.applications.to_keras_applications",
                 "kresnet.applications.from_keras_applications",
                 "kresnet.weights.load_weights", "kresnet.analysis.count_macs",
                 "kresnet.analysis.describe", "kresnet.inspection.config_of",
                 "kresnet.inspection.stage_labels", "kresnet.config.ResNetConfig.count_params"}


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)


def _zeros(self, shape, dtype=None):
    return keras.ops.zeros(shape, dtype=dtype)


@contextlib.contextmanager
def zero_initial_weights():
    """Within it, Keras' random initializers of the VarianceScaling family (he_normal,
    glorot_uniform: every conv and dense kernel of kresnet and keras.applications) give
    zeros, sparing the draws (about 2 s for a ResNet-152's 60M weights). The layers and
    their configs are the same; only the initial values differ. For models whose initial
    values no assertion reads: shape and name checks, and models whose every weight is then
    loaded or transferred. Never around ``full_size`` (its models are shared)."""
    original = keras.initializers.VarianceScaling.__call__
    keras.initializers.VarianceScaling.__call__ = _zeros
    try:
        yield
    finally:
        keras.initializers.VarianceScaling.__call__ = original


@contextlib.contextmanager
def structure_only():
    """Within it, layers declare their weights without making them: each is a shape, a dtype
    and an initializer (Keras' deferred variables, ``StatelessScope(initialize_variables=
    False)``), so no backend variable is allocated or filled, which is most of building a
    full-size ResNet. Layers, configs, shapes, names and ``count_params`` are what a normal
    build gives; the weights hold no values, so such a model is only to be looked at: never
    called, trained, saved or given weights. For tests that read the structure alone."""
    from keras.src.backend.common import global_state  # noqa: PLC0415

    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        # Keras lists the deferred variables to make them when a StatelessScope that does
        # initialise ends (Keras opens such scopes itself, e.g. in stateless_call): drop them.
        global_state.set_global_attribute("uninitialized_variables", [])


def cache_saving_skipsets():
    """Work around a cache miss of Keras 3.15's saving in this process: its
    ``saving_lib.get_attr_skipset`` stores each object kind's attribute skip set under
    "saving_attr_skipset_<kind>" but looks it up under "saving_attr_skiplist_<kind>", so
    it builds a reference ``Layer()`` again for every layer saved (a quarter of the time
    of saving a ResNet). The same sets stored under the name it looks up change nothing
    in the file. ``keras.backend.clear_session()`` drops them; this stores them again."""
    from keras.src.backend.common import global_state  # noqa: PLC0415
    from keras.src.saving import saving_lib  # noqa: PLC0415

    for kind in ("Operation", "Layer", "Functional"):
        if global_state.get_global_attribute(f"saving_attr_skiplist_{kind}") is None:
            global_state.set_global_attribute(f"saving_attr_skiplist_{kind}",
                                              saving_lib.get_attr_skipset(kind))
