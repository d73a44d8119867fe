"""Shared helpers: fresh-process loading, automatic-name detection, layer-creation counting."""

import inspect
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(ROOT, "scripts", "load_and_predict.py")

# Names Keras makes up for unnamed layers: conv2d, conv2d_3, add_17, activation, ...
_AUTOMATIC = re.compile(
    r"^(input_layer|conv2d|batch_normalization|activation|add|re_lu|zero_padding2d|"
    r"max_pooling2d|average_pooling2d|global_average_pooling2d|global_max_pooling2d|dense|"
    r"dropout|multiply|concatenate|reshape|lambda|functional)(_\d+)?$")


def automatic_names(model):
    return [layer.name for layer in model.layers if _AUTOMATIC.match(layer.name)]


def load_in_fresh_process(models, tmp_path, inputs):
    """Save each model, load them all in one new Python without kresnet, safe_mode on.

    Returns, per model, (outputs on its input, layer names) as the loading process saw them.
    """
    paths = []
    for i, (model, x) in enumerate(zip(models, inputs)):
        path = str(tmp_path / f"{i:02d}_{model.name}.keras")
        model.save(path)
        np.save(f"{path}.in.npy", x)
        paths.append(path)
    result = subprocess.run([sys.executable, LOADER, *paths], capture_output=True, text=True,
                            timeout=1200, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
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
    put back, as a new build would have them. Tests that share models share an xdist group
    (``full_size``, or their file's), so that one worker builds each model once."""
    import kresnet  # noqa: PLC0415

    def get(function, *args, **options):
        call = getattr(kresnet, function)
        signature = inspect.signature(call)
        bound = signature.bind(*args, **options)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, parameter in signature.parameters.items():
            if parameter.kind is parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name))
        key = (function, repr(sorted(arguments.items())))
        if key not in _FULL_SIZE:
            _FULL_SIZE[key] = call(*args, **options)
        return _FULL_SIZE[key]

    def fresh(function, *args, **options):
        model = get(function, *args, **options)
        if id(model) in _BUILT_WITH:
            model.set_weights(_BUILT_WITH[id(model)])
        else:
            _BUILT_WITH[id(model)] = model.get_weights()
        return model

    get.fresh = fresh
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
