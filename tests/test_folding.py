"""fold_batchnorm: BNs after convs folded away, same outputs as training=False, on every preset."""

import warnings

import keras
import numpy as np
import pytest

import kresnet
from kresnet.folding import fold_batchnorm, foldable
from tests.conftest import load_in_fresh_process

RTOL = 1e-4
# Pre-activation BNs follow a sum or a pooling; they are the only ones kept.
PREACT_KEPT = ("_preact", "bn_post")


def randomise_bn(model, seed=0):
    """Moving statistics, gamma and beta away from their initial 0/1 so folding matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
    return model


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


def check_folded(model, x):
    """Fold ``model`` (warnings allowed for pre-activation BNs only) and compare."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folded = fold_batchnorm(model)
    bns = [layer.name for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    preact = [name for name in bns if name.endswith(PREACT_KEPT)]
    left = [layer.name for layer in folded.layers
            if isinstance(layer, keras.layers.BatchNormalization)]
    assert left == preact
    assert bool([w for w in caught if "BatchNormalization" in str(w.message)]) == bool(preact)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.name for layer in folded.layers
            if isinstance(layer, keras.layers.Conv2D)] == convs
    assert folded.name == model.name and folded.input.name == model.input.name
    assert folded.output_names == model.output_names
    assert relative_error(folded(x), model(x, training=False)) <= RTOL
    return folded


#: Presets checked at their full depth; the others with two blocks in the first stage and
#: one in each other stage (a projection and an identity block: more blocks only repeat
#: them), which keeps this file near a minute. Full-depth ResNet-152 is checked below.
FULL_DEPTH = ("resnet18", "resnet50", "resnet20")


def preset_kwargs(name):
    """Small inputs, logits instead of softmax."""
    preset = kresnet.PRESETS[name]
    size = 32 if preset.input_size == 32 else 64
    kwargs = {"input_shape": (size, size, 3), "classifier_activation": None}
    if name not in FULL_DEPTH:
        stages = len(preset.options.get("blocks", (0, 0, 0, 0)))
        kwargs["blocks"] = (2,) + (1,) * (stages - 1)
    return kwargs


# Slow: about 1.4 s a preset, 45 s in all; the quick tier folds the CIFAR resnet20 only.
@pytest.mark.parametrize("name", [n if n == "resnet20" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in kresnet.PRESETS])
def test_every_preset_folds_to_the_same_outputs(name):
    keras.backend.clear_session()
    kwargs = preset_kwargs(name)
    model = randomise_bn(kresnet.build(name, **kwargs))
    x = np.random.default_rng(1).random((2, *kwargs["input_shape"]), "float32")
    folded = check_folded(model, x)
    assert not folded.trainable


@pytest.mark.slow
def test_full_depth_resnet152_stays_within_tolerance():
    keras.backend.clear_session()
    model = randomise_bn(kresnet.ResNet152(input_shape=(32, 32, 3), classifier_activation=None))
    check_folded(model, np.random.default_rng(2).random((2, 32, 32, 3), "float32"))


def test_folded_conv_weights():
    model = randomise_bn(kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), use_bias=False,
                                               bn_epsilon=1e-3))
    folded = fold_batchnorm(model)
    conv, bn = model.get_layer("res2a_branch2b"), model.get_layer("bn2a_branch2b")
    gamma, beta, mean, variance = bn.get_weights()
    scale = gamma / np.sqrt(variance + 1e-3)
    kernel, bias = folded.get_layer("res2a_branch2b").get_weights()
    np.testing.assert_allclose(kernel, conv.get_weights()[0] * scale, rtol=1e-6)
    np.testing.assert_allclose(bias, beta - mean * scale, rtol=1e-5, atol=1e-7)
    assert not conv.use_bias and folded.get_layer("res2a_branch2b").use_bias


def test_grouped_conv_without_bias_in_channels_first(channels_first):
    model = randomise_bn(kresnet.build("resnext50_32x4d", input_shape=(3, 32, 32),
                                       blocks=(1, 1), classifier_activation=None))
    assert model.get_layer("bn2a_branch2b").axis == 1
    check_folded(model, np.random.default_rng(3).random((2, 3, 32, 32), "float32"))


def test_original_model_is_left_alone():
    model = randomise_bn(kresnet.build("resnet20", blocks=(1, 1, 1)))
    before = [np.array(w) for w in model.weights]
    folded = fold_batchnorm(model)
    for layer in folded.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.weights))
    assert "bn_conv1" in [layer.name for layer in model.layers]


def test_preactivation_bns_are_named_then_kept_or_refused():
    model = randomise_bn(kresnet.build("resnet50v2", input_shape=(32, 32, 3),
                                       blocks=(1, 1)))
    with pytest.raises(ValueError, match=r"bn2a_preact \(it follows MaxPooling2D 'pool1'"
                                         r".*bn_post \(it follows Add 'res3a'"):
        fold_batchnorm(model, strict=True)
    with pytest.warns(UserWarning, match=r"3 BatchNormalization .* They are kept"):
        folded = fold_batchnorm(model)
    assert [layer.name for layer in folded.layers
            if isinstance(layer, keras.layers.BatchNormalization)] == \
        ["bn2a_preact", "bn3a_preact", "bn_post"]


def test_post_activation_nets_fold_silently_even_when_strict():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fold_batchnorm(kresnet.build("resnet20", blocks=(1, 1, 1)), strict=True)


@pytest.mark.slow
def test_outputs_stages_keeps_its_dict():
    model = kresnet.create_resnet((64, 64, 3), depth=18, include_top=False,
                                  outputs="stages")
    x = np.random.default_rng(4).random((1, 64, 64, 3), "float32")
    folded = fold_batchnorm(randomise_bn(model), name="backbone")
    assert folded.name == "backbone"
    ours, theirs = folded(x), model(x, training=False)
    assert sorted(ours) == ["C2", "C3", "C4", "C5"]
    for level in ours:
        assert relative_error(ours[level], theirs[level]) <= RTOL


def test_what_cannot_fold_is_kept_with_its_reason():
    x = keras.Input((8, 8, 3), name="image")
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")(x)
    kept_1 = keras.layers.BatchNormalization(name="bn_shared")(shared)
    activated = keras.layers.Conv2D(4, 1, activation="relu", name="activated")(shared)
    kept_2 = keras.layers.BatchNormalization(name="bn_activated")(activated)
    plain = keras.layers.Conv2D(4, 1, name="plain")(kept_2)
    folds = keras.layers.BatchNormalization(name="bn_plain")(plain)
    wrong_axis = keras.layers.Activation("relu", name="axis_relu")(
        keras.layers.BatchNormalization(axis=1, name="bn_axis")(
            keras.layers.Conv2D(8, 1, name="other")(folds)))
    last = keras.layers.BatchNormalization(name="bn_out")(
        keras.layers.Conv2D(4, 1, name="last")(folds))
    model = randomise_bn(keras.Model(x, [kept_1, wrong_axis, last], name="odd"))
    pairs, kept = foldable(model)
    assert pairs == {"bn_plain": "plain"}
    assert kept == {"bn_shared": "the output of the conv 'shared' is also used elsewhere",
                    "bn_activated": "the conv 'activated' before it has an activation",
                    "bn_axis": "it normalises axis 1, not the channels of 'other'",
                    "bn_out": "its output is an output of the model"}
    with pytest.warns(UserWarning, match="4 BatchNormalization"):
        folded = fold_batchnorm(model)
    assert folded.output_names == model.output_names
    data = np.random.default_rng(5).random((2, 8, 8, 3), "float32")
    for ours, theirs in zip(folded(data), model(data, training=False)):
        assert relative_error(ours, theirs) <= RTOL


def test_bad_arguments():
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        fold_batchnorm("resnet50")
    model = kresnet.build("resnet20", blocks=(1, 1, 1))
    with pytest.raises(TypeError, match="`strict` must be True or False"):
        fold_batchnorm(model, strict=1)
    with pytest.raises(ValueError, match="`name`"):
        fold_batchnorm(model, name="")
    with pytest.raises(TypeError, match="`name`"):
        fold_batchnorm(model, name=3)
    sequential = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 1),
                                   keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="not a functional model"):
        fold_batchnorm(sequential)


@pytest.mark.slow
def test_folded_models_save_and_load_without_kresnet(tmp_path):
    models, inputs, expected = [], [], []
    for name in ("resnet50v2", "resnext50_32x4d"):
        keras.backend.clear_session()
        model = randomise_bn(kresnet.build(name, input_shape=(32, 32, 3), blocks=(1, 1),
                                           classifier_activation=None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folded = fold_batchnorm(model)
        x = np.random.default_rng(6).random((2, 32, 32, 3), "float32")
        models.append(folded)
        inputs.append(x)
        expected.append((np.asarray(model(x, training=False)),
                         [layer.name for layer in folded.layers]))
    for (out, names), (want, want_names) in zip(
            load_in_fresh_process(models, tmp_path, inputs), expected):
        assert names == want_names
        assert relative_error(out, want) <= RTOL
