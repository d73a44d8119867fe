"""The public API on Keras' JAX and PyTorch back ends, each in one subprocess.

scripts/backend_check.py builds ``create_resnet`` and two presets on small inputs (one
ResNeXt with pre-activation, SE, the deep stem and pooled shortcuts), runs
them, saves and reloads them and fits one batch, in a child process; then the parent, which
never imports kresnet, loads the saved files as scripts/load_and_predict.py does (on any
back end). Models saved here (under this run's
back end, TensorFlow by default) are loaded there too. Both back ends run at once.
"""

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import _AUTOMATIC, ROOT

# One pytest-xdist worker runs this file: its module fixtures are made once.
# Slow (seconds to minutes): left out of `bash scripts/test.sh --quick`.
pytestmark = [pytest.mark.xdist_group("test_backends"), pytest.mark.slow]

CHECK = os.path.join(ROOT, "scripts", "backend_check.py")
BACKENDS = {"jax": "jax", "torch": "torch"}  # back end -> package it needs
#: Saved here, loaded under the other back ends.
SHARED = {
    "resnet18": lambda: kresnet.create_resnet((32, 32, 3), 5, 18),
    "resnet20": lambda: kresnet.build("resnet20", classes=5),
}


def _pipeline(backend, out, others):
    """backend_check.py: its check, then the loading (load_and_predict.py for every back
    end) in its process that never imports kresnet, on what the check saved; the error, or
    None."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           # The loader compiles the same small XLA programs as the check: reuse them.
           "JAX_COMPILATION_CACHE_DIR": str(out / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           # Both back ends run at once on a small machine: one thread each.
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, CHECK, str(out), *others], check=False,
                            capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    if result.returncode:
        return f"backend_check.py under {backend}:\n{result.stderr[-4000:]}"
    return None


@pytest.fixture(scope="module")
def saved_here(tmp_path_factory):
    """Models saved by this process: path -> outputs on its ``.in.npy``."""
    folder = tmp_path_factory.mktemp("saved_here")
    expected = {}
    for name, make in SHARED.items():
        keras.utils.set_random_seed(1)
        model = make()
        path = str(folder / f"{name}.keras")
        x = np.random.default_rng(1).uniform(0, 1, (2, *model.input_shape[1:]))
        np.save(f"{path}.in.npy", x.astype("float32"))
        model.save(path)
        expected[path] = keras.ops.convert_to_numpy(model(x.astype("float32"),
                                                          training=False))
    keras.backend.clear_session()
    return expected


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, saved_here):
    """Start every installed back end's pipeline at once (two cores: they overlap)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(BACKENDS))
    started = {}
    for backend, package in BACKENDS.items():
        if importlib.util.find_spec(package) is not None:
            out = tmp_path_factory.mktemp(backend)
            started[backend] = (out, pool.submit(_pipeline, backend, out, list(saved_here)))
    yield started
    pool.shutdown(wait=True)


# Function scope: reading a report is cheap, and a module-scoped parametrised fixture is set
# up again whenever its parameters interleave (as they may under pytest-xdist), restarting
# both pipelines (about 100 s).
@pytest.fixture(params=sorted(BACKENDS))
def run(request, pipelines):
    """The report of one back end's check, after its loader ran too."""
    backend = request.param
    if backend not in pipelines:
        message = (f"{BACKENDS[backend]} is not installed: `pip install jax==0.10.2 "
                   "torch==2.13.0` (scripts/setup-env.sh does) to test that back end")
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out, future = pipelines[backend]
    error = future.result()
    assert error is None, error
    with open(out / "report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["backend"] == backend
    return report


def _load(path, suffix):
    return np.load(f"{path}.{suffix}.npy")


def test_models_build_with_their_shapes_and_names(run):
    models = run["models"]
    for key, model in models.items():
        assert model["output_shape"] == [None, 5], key
        assert [n for n in model["names"] if _AUTOMATIC.match(n)] == [], key
        assert len(set(model["names"])) == len(model["names"]), key
    names = models["resnet18"]["names"]
    assert names[:3] == ["input", "conv1_pad", "conv1"] and names[-1] == "fc_final"
    assert models["resnet20"]["names"][-1] == "fc5"
    # One model carries pre-activation, the deep stem, pooled shortcuts, SE and groups.
    bottleneck = models["resnext50_32x4d_se_d_preact"]
    assert {"bn5c_preact", "bn_post"} <= set(bottleneck["names"])
    assert {"conv1c", "res3a_branch1_pool", "res5c_se_scale"} <= set(bottleneck["names"])
    assert bottleneck["name"] == "resnext50_32x4d"


def test_forward_pass_gives_probabilities(run):
    for model in run["models"].values():
        y = _load(model["path"], "built")
        assert y.shape == (2, 5) and np.isfinite(y).all()
        np.testing.assert_allclose(y.sum(axis=1), 1, atol=1e-5)


def test_save_and_reload_in_the_same_process(run):
    for name, model in run["models"].items():
        assert model["reloaded_names"] == model["names"], name
        np.testing.assert_allclose(_load(model["path"], "reloaded"),
                                   _load(model["path"], "built"), atol=1e-5, err_msg=name)


def test_reload_in_a_fresh_process_without_kresnet(run):
    for name, model in run["models"].items():
        with open(f"{model['path']}.names.txt", encoding="utf-8") as f:
            assert f.read().split() == model["names"], name
        np.testing.assert_allclose(_load(model["path"], "out"), _load(model["path"], "built"),
                                   atol=1e-5, err_msg=name)


def test_one_compiled_train_step(run):
    for name, fit in run["fit"].items():
        assert np.isfinite(fit["loss"]), name
        assert fit["changed"] == fit["weights"] > 0, name


def test_a_model_saved_here_loads_there_with_the_same_outputs(run, saved_here):
    if keras.backend.backend() == run["backend"]:
        pytest.skip("this run's own back end is the one under test")
    for path, expected in saved_here.items():
        np.testing.assert_allclose(_load(path, run["backend"]), expected, atol=1e-5,
                                   err_msg=os.path.basename(path))
