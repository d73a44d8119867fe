"""Building and loading without slow draws: the same distribution and the same model.

kresnet.build_model draws the default ``he_normal`` kernels by the inverse CDF
(kresnet.initializers.DrawnHeNormal) and gives every layer Keras' HeNormal back; kresnet.load
builds with zero kernels and reads the saved weights over them. The distribution, the
configurations and the loaded models must be exactly Keras' own.
"""

import json
import math
import random
import zipfile

import keras
import numpy as np
import pytest

import kresnet
from kresnet import files as kfiles
from kresnet import initializers


def _config_text(model):
    return json.dumps(model.get_config(), sort_keys=True)


# --- the draw -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3, 64, 256), (1, 1, 512, 128), (512, 100)])
def test_the_drawn_he_normal_has_keras_distribution(shape):
    """Moments and cut-off of one large draw against Keras' HeNormal: both are a normal cut at
    two standard deviations, scaled to sqrt(2 / fan_in)."""
    keras.utils.set_random_seed(0)
    ours = np.asarray(initializers.DrawnHeNormal()(shape), dtype="float64").ravel()
    theirs = np.asarray(keras.initializers.HeNormal(seed=1)(shape), dtype="float64").ravel()
    fan_in = math.prod(shape[:-1])
    want_std = math.sqrt(2.0 / fan_in)
    cut = 2.0 * want_std / initializers.TRUNCATED_STDDEV  # two sigmas of the untruncated one
    for values in (ours, theirs):
        n = values.size
        assert abs(values.mean()) < 4 * want_std / math.sqrt(n)
        assert values.std() == pytest.approx(want_std, rel=0.02)
        # A normal cut at +-2 sigma: no mass beyond, a flat top (kurtosis 3 - 0.37 - ...).
        assert np.abs(values).max() <= cut * (1 + 1e-6)
        assert np.abs(values).max() >= 0.98 * cut
        kurtosis = np.mean((values - values.mean()) ** 4) / values.var() ** 2
        assert kurtosis == pytest.approx(2.37, abs=0.08)
        # The share within one sigma of the untruncated normal: 0.6827 / 0.9545.
        inside = np.mean(np.abs(values) <= cut / 2)
        assert inside == pytest.approx(0.6827 / 0.9545, abs=0.01)
    # The two samples come from one distribution: their quantiles agree.
    quantiles = np.linspace(0.01, 0.99, 49)
    np.testing.assert_allclose(np.quantile(ours, quantiles), np.quantile(theirs, quantiles),
                               atol=0.03 * want_std)


def test_the_draw_keeps_the_requested_dtype():
    values = initializers.DrawnHeNormal()((3, 3, 8, 4), dtype="float16")
    assert keras.backend.standardize_dtype(values.dtype) == "float16"
    assert initializers.fan_in((3, 3, 8, 4)) == 72 and initializers.fan_in((7, 5)) == 7


def test_built_models_name_keras_he_normal_and_repeat_under_a_seed():
    keras.utils.set_random_seed(3)
    first = kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1), widths=(4, 8), stem_width=4)
    keras.utils.set_random_seed(3)
    second = kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1), widths=(4, 8), stem_width=4)
    for layer in first.layers:
        initializer = getattr(layer, "kernel_initializer", None)
        if isinstance(layer, keras.layers.Conv2D):
            assert type(initializer) is keras.initializers.HeNormal, layer.name
    assert "DrawnHeNormal" not in _config_text(first)
    assert _config_text(first) == _config_text(second)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The kernels have he_normal's scale: res3a_branch2b is 3x3 over 8 channels.
    kernel = first.get_layer("res3a_branch2b").kernel.numpy()
    assert np.abs(kernel).max() <= 2 * math.sqrt(2 / 72) / initializers.TRUNCATED_STDDEV


def test_an_initializer_given_by_the_user_is_used_as_given():
    init = keras.initializers.Constant(0.25)
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(4,), stem_width=4,
                                  kernel_initializer=init)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), 0.25)
    uniform = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(4,), stem_width=4,
                                    kernel_initializer="he_uniform")
    assert type(uniform.get_layer("conv1").kernel_initializer) is keras.initializers.HeUniform


# --- the load -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A compiled model after one step (so that it has optimizer state) and its file."""
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1), widths=(4, 8), stem_width=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype="float32")
    model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("trained") / "trained.keras")
    kresnet.save(model, path)
    return model, path


def _same_as_keras(ours, theirs):
    assert _config_text(ours) == _config_text(theirs)
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights]
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for layer, other in zip(ours.layers, theirs.layers):
        for key in kfiles._UNDRAWN_KEYS:
            if hasattr(layer, key):
                assert type(getattr(layer, key)) is type(getattr(other, key)), (layer.name, key)


def test_load_gives_keras_own_model_with_its_optimizer_state(trained, monkeypatch):
    model, path = trained
    calls = []
    real = kfiles._load_undrawn
    monkeypatch.setattr(kfiles, "_load_undrawn", lambda *a: calls.append(1) or real(*a))
    ours = kresnet.load(path)
    assert calls == [1] and ours is not None
    theirs = keras.saving.load_model(path)
    _same_as_keras(ours, theirs)
    assert ours.compiled and type(ours.optimizer) is type(theirs.optimizer)
    assert len(ours.optimizer.variables) == len(theirs.optimizer.variables) > 0
    for a, b in zip(ours.optimizer.variables, theirs.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(ours.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The loaded model has the saved model's configuration, initializers included.
    assert _config_text(ours) == _config_text(model)
    uncompiled = kresnet.load(path, compile=False)
    assert not uncompiled.compiled


def test_the_fast_load_really_skips_the_draws(trained):
    config = kfiles.read_config(trained[1])
    held = kfiles._undraw(config)
    kernels = {layer.name for layer in trained[0].layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
    assert sorted(path[-1] for path, _, _ in held) == sorted(kernels)
    assert {value["class_name"] for _, _, value in held} == {"HeNormal", "GlorotUniform"}
    text = json.dumps(config)
    assert text.count(kfiles._STAND_IN) == len(held) == len(kernels)
    assert '"class_name": "HeNormal"' in text  # inside the stand-ins, made as Keras makes it

def test_nested_models_load_as_keras_loads_them(tmp_path):
    inputs = keras.Input((32, 32, 3))
    first = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(4,), stem_width=4)
    second = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(4,), stem_width=4,
                                   name_prefix="b_", name="other")
    joined = keras.Model(inputs, keras.layers.Add()([first(inputs), second(inputs)]))
    path = kresnet.save(joined, str(tmp_path / "two.keras"))
    held = kfiles._undraw(kfiles.read_config(path))
    assert {path[0] for path, _, _ in held} == {first.name, "other"}
    _same_as_keras(kresnet.load(path), keras.saving.load_model(path))


def test_without_keras_loader_parts_load_falls_back_to_keras(trained, monkeypatch):
    monkeypatch.setattr(kfiles, "_LOADER_PARTS", kfiles._LOADER_PARTS + ("_not_in_keras",))
    assert kfiles._load_undrawn(trained[1], kfiles.read_config(trained[1]), True, True) is None
    _same_as_keras(kresnet.load(trained[1]), keras.saving.load_model(trained[1]))


def test_damaged_weights_still_name_the_file(trained, tmp_path):
    data = bytearray(open(trained[1], "rb").read())
    with zipfile.ZipFile(trained[1]) as archive:
        info = archive.getinfo("model.weights.h5")
    # A byte in the middle of the stored weights member: its checksum fails.
    data[info.header_offset + 200 + info.compress_size // 2] ^= 0xFF
    broken = tmp_path / "broken.keras"
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="broken.keras"):
        kresnet.load(str(broken))


def test_a_shared_initializer_stays_shared_and_seeds_are_taken_in_keras_order(tmp_path):
    """One initializer object on every conv is saved with a shared_object_id and loaded
    as Keras' loader loads it; under a global seed, the layers that draw seeds at load (the tutorial
    head's Dropout) get the seeds that Keras' loader gives them."""
    shared = keras.initializers.HeNormal()
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(4,), stem_width=4,
                                  kernel_initializer=shared)
    path = kresnet.save(model, str(tmp_path / "shared.keras"))
    loaded = {}
    for name, load in (("kresnet", kresnet.load), ("keras", keras.saving.load_model)):
        keras.utils.set_random_seed(5)
        loaded[name] = load(path)
        loaded[name + " after"] = random.random()  # as many seeds taken from Python's
    ours, theirs = loaded["kresnet"], loaded["keras"]
    _same_as_keras(ours, theirs)
    assert loaded["kresnet after"] == loaded["keras after"]

    def sharing(found):  # which convs hold one initializer object, as first-holder indices
        held = [layer.kernel_initializer for layer in found.layers
                if isinstance(layer, keras.layers.Conv2D)]
        return [next(i for i, other in enumerate(held) if other is value) for value in held]

    # However Keras' loader shares the objects saved with one shared_object_id (Keras 3.15
    # makes one object per layer), kresnet.load shares them the same way.
    assert sharing(ours) == sharing(theirs)
    dropouts = [layer.name for layer in ours.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts
    for name in dropouts:
        np.testing.assert_array_equal(
            np.asarray(ours.get_layer(name).seed_generator.state),
            np.asarray(theirs.get_layer(name).seed_generator.state))


def test_layers_that_hold_layers_but_are_no_models_load_through_keras(tmp_path):
    """A Pipeline lists layers in its configuration but is no Model: nothing inside it is
    replaced, and the model is Keras' own."""
    inputs = keras.Input((8,))
    pipeline = keras.layers.Pipeline([keras.layers.Dense(4), keras.layers.Dense(3)])
    model = keras.Model(inputs, keras.layers.Dense(2)(pipeline(inputs)))
    path = kresnet.save(model, str(tmp_path / "pipeline.keras"))
    held = kfiles._undraw(kfiles.read_config(path))
    assert len(held) == 1  # the outer Dense only
    _same_as_keras(kresnet.load(path), keras.saving.load_model(path))
