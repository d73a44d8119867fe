"""What keras' own applications tests check of its ResNets holds for kresnet's ResNet*.

Ported checks (keras/src/applications/applications_test.py): variable input channels with
None height/width, custom input shapes and tensors, pooling, classifier activation, and
serialisation, in both image data formats. Plus output shapes at several input sizes.

These check shapes, names and configs, never initial values: models that are only looked
at are built within ``structure_only`` (the same layers, their weights declared but not
made; ``full_size.structure`` shares such models), models that run within
``zero_initial_weights`` (zero kernels instead of random draws), except where weights are
compared.
"""

import warnings

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import structure_only, zero_initial_weights

APPS = [(kresnet.ResNet18, 512), (kresnet.ResNet34, 512), (kresnet.ResNet50, 2048),
        (kresnet.ResNet101, 2048), (kresnet.ResNet152, 2048)]
FORMATS = ["channels_last", "channels_first"]


@pytest.fixture(params=FORMATS)
def data_format(request):
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(request.param)
    keras.backend.clear_session()
    yield request.param
    keras.config.set_image_data_format(previous)


def shape(data_format, height, width, channels):
    return (channels, height, width) if data_format == "channels_first" else \
        (height, width, channels)


@pytest.mark.slow
@pytest.mark.parametrize("app,last_dim", APPS, ids=lambda a: getattr(a, "__name__", ""))
def test_notop_variable_input_channels(app, last_dim, data_format):
    for channels in (1, 4):
        with structure_only():
            model = app(weights=None, include_top=False,
                        input_shape=shape(data_format, None, None, channels))
        expected = shape(data_format, None, None, last_dim)
        assert list(model.outputs[0].shape) == [None, *expected]


@pytest.mark.slow
@pytest.mark.parametrize("app,last_dim", APPS[::2], ids=lambda a: getattr(a, "__name__", ""))
def test_notop_custom_input_shape_and_tensor(app, last_dim, data_format):
    axis = 1 if data_format == "channels_first" else -1
    with structure_only():
        model = app(weights=None, include_top=False,
                    input_shape=shape(data_format, 123, 123, 3))
    assert model.outputs[0].shape[axis] == last_dim
    inputs = keras.Input(shape=shape(data_format, 200, 200, 4), name="custom_input")
    x = keras.layers.Conv2D(3, (2, 2), strides=(2, 2), name="custom_conv")(inputs)
    with structure_only():
        model = app(weights=None, include_top=False, input_tensor=x)
    assert model.outputs[0].shape[axis] == last_dim
    assert model.inputs[0].name == "custom_input"
    assert model.get_layer("custom_conv")


@pytest.mark.slow
@pytest.mark.xdist_group("full_size")
@pytest.mark.parametrize("app,last_dim", APPS, ids=lambda a: getattr(a, "__name__", ""))
def test_pooling_and_classifier_activation(app, last_dim, full_size):
    with structure_only():
        model = app(weights=None, include_top=False, pooling="max")
    assert list(model.outputs[0].shape) == [None, last_dim]
    assert model.layers[-1].name == "max_pool"
    # The natural-size model test_analysis and test_counts read too, built once.
    model = full_size.structure(app.__name__, weights=None, include_top=True,
                                classifier_activation="softmax")
    assert model.layers[-1].activation.__name__ == "softmax"
    assert model.input_shape == (None, 224, 224, 3)
    assert model.layers[-1].name == "fc1000"
    config = keras.saving.serialize_keras_object(model)
    with structure_only():  # counted, not read
        reconstructed = keras.saving.deserialize_keras_object(config)
    assert len(reconstructed.weights) == len(model.weights)


@pytest.mark.slow
@pytest.mark.xdist_group("full_size")
def test_defaults_follow_keras_applications(full_size):
    model = full_size.structure("ResNet50")
    assert (model.name, model.input_shape, model.output_shape) == (
        "resnet50", (None, 224, 224, 3), (None, 1000))
    with structure_only():
        assert kresnet.ResNet50(include_top=False).input_shape == (None, None, None, 3)
        model = kresnet.ResNet18(classes=7, classifier_activation=None, name="mine")
    assert (model.name, model.output_shape, model.layers[-1].name) == ("mine", (None, 7), "fc7")
    assert model.layers[-1].activation.__name__ == "linear"


@pytest.mark.slow
@pytest.mark.parametrize("size,final", [(224, 7), (64, 2), (32, 1), (100, 4), (65, 3)])
@pytest.mark.parametrize("depth", [18, 50])
def test_output_shapes(depth, size, final):
    features = 512 if depth == 18 else 2048
    with structure_only():
        model = kresnet.create_resnet((size, size, 3), 5, depth, include_top=False)
        assert model.output_shape == (None, final, final, features)
        assert kresnet.create_resnet((size, size, 3), 5, depth).output_shape == (None, 5)
        model = kresnet.create_resnet((size, size, 3), 5, depth, head=None, pooling="avg")
    assert model.output_shape == (None, features)
    assert model.layers[-1].name == "avg_pool"


@pytest.mark.slow
def test_fully_convolutional_use_runs_on_several_sizes():
    with zero_initial_weights():  # output shapes only
        model = kresnet.ResNet18(include_top=False, input_shape=(None, None, 3))
        with_head = kresnet.create_resnet((None, None, 3), 4, 18, head="fc")
    for height, width in ((64, 64), (96, 128), (33, 47)):
        out = model(np.zeros((1, height, width, 3), "float32"), training=False)
        assert out.shape == (1, -(-height // 32), -(-width // 32), 512)
    assert with_head(np.zeros((2, 80, 48, 3), "float32")).shape == (2, 4)


@pytest.mark.slow
def test_channels_first_layers_use_channel_axis_1(channels_first):
    with structure_only():
        model = kresnet.ResNet50(include_top=False, input_shape=(3, 64, 64))
    assert model.get_layer("bn2a_branch2a").axis == 1
    assert model.get_layer("res2a_branch2a").data_format == "channels_first"
    assert model.output_shape == (None, 2048, 2, 2)


@pytest.mark.slow
def test_weights_path_is_loaded(tmp_path):
    source = kresnet.ResNet18(input_shape=(32, 32, 3), classes=3)
    path = str(tmp_path / "r18.weights.h5")
    source.save_weights(path)
    with zero_initial_weights():  # every weight is loaded: a layer left out stays zeros
        target = kresnet.ResNet18(input_shape=(32, 32, 3), classes=3, weights=path)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_model_on_an_input_tensor_takes_a_plain_tensor():
    inputs = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    model = kresnet.ResNet18(input_tensor=x, weights=None, classes=3)
    assert model.input is inputs and model.layers[1].name == "rescale"
    data = np.zeros((1, 32, 32, 3), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns if the inputs' structure differs
        assert model(data).shape == (1, 3)
