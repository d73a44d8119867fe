"""kresnet.preprocess_input against keras.applications' own functions, value for value."""

import keras
import numpy as np
import pytest
from keras.src.applications import imagenet_utils

import kresnet

#: mode -> keras.applications' function for it: the ResNets' own for "caffe" and "tf".
KERAS = {
    "caffe": keras.applications.resnet.preprocess_input,
    "tf": keras.applications.resnet_v2.preprocess_input,
    "torch": lambda x, data_format=None: imagenet_utils.preprocess_input(
        x, data_format=data_format, mode="torch"),
}


def images(shape, dtype):
    values = np.random.default_rng(0).uniform(0, 255, shape)
    return values.astype(dtype) if dtype != "uint8" else values.round().astype("uint8")


@pytest.mark.parametrize("mode", sorted(KERAS))
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("data_format,shape", [
    ("channels_last", (2, 5, 7, 3)), ("channels_last", (5, 7, 3)),
    ("channels_first", (2, 3, 5, 7)), ("channels_first", (3, 5, 7))])
def test_numpy_equals_keras_applications_bit_for_bit(mode, dtype, data_format, shape):
    x = images(shape, dtype)
    before = x.copy()
    ours = kresnet.preprocess_input(x, data_format=data_format, mode=mode)
    assert np.array_equal(x, before)  # keras.applications changes a float input in place
    theirs = KERAS[mode](x.copy(), data_format=data_format)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("mode", sorted(KERAS))
@pytest.mark.parametrize("data_format,shape", [("channels_last", (2, 5, 7, 3)),
                                               ("channels_first", (2, 3, 5, 7))])
def test_tensors_and_symbolic_inputs_equal_keras_applications(mode, data_format, shape):
    x = images(shape, "float32")
    ours = kresnet.preprocess_input(keras.ops.convert_to_tensor(x), data_format, mode)
    theirs = KERAS[mode](keras.ops.convert_to_tensor(x), data_format=data_format)
    assert np.array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
    assert np.array_equal(keras.ops.convert_to_numpy(ours),
                          kresnet.preprocess_input(x, data_format, mode))
    # In a graph: the same function on a symbolic tensor.
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, kresnet.preprocess_input(inputs, data_format, mode))
    np.testing.assert_allclose(np.asarray(model(x)), keras.ops.convert_to_numpy(theirs),
                               rtol=1e-6, atol=1e-5)


def test_default_is_the_resnets_caffe_preprocessing_and_the_data_format_follows_keras(
        channels_first):
    x = images((1, 3, 4, 4), "float32")  # channels_first, as the fixture sets Keras
    assert np.array_equal(kresnet.preprocess_input(x),
                          keras.applications.resnet.preprocess_input(x.copy()))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels on axis 1"):
        kresnet.preprocess_input(images((1, 4, 4, 3), "float32"))


def test_lists_and_integer_images_become_floatx():
    out = kresnet.preprocess_input([[[[0, 0, 0]]]])
    assert out.dtype == np.float32
    assert out.ravel().tolist() == pytest.approx([-103.939, -116.779, -123.68])


@pytest.mark.parametrize("kwargs,error,message", [
    ({"mode": "imagenet"}, ValueError, "`mode` must be one of 'caffe', 'torch', 'tf'"),
    ({"mode": 1}, TypeError, "`mode` must be one of"),
    ({"data_format": "NHWC"}, ValueError, "`data_format` must be one of 'channels_last'"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        kresnet.preprocess_input(images((1, 4, 4, 3), "float32"), **kwargs)


def test_a_value_without_a_shape_is_a_type_error():
    with pytest.raises(TypeError, match="`x` must be a NumPy array, a nested list"):
        kresnet.preprocess_input("image.png")


@pytest.mark.parametrize("shape,message", [
    ((4, 4), "an image \\(3 axes\\) or a batch of images \\(4 axes\\)"),
    ((1, 4, 4, 1), "3 \\(RGB\\) channels on axis -1"),
])
def test_bad_shapes_are_named(shape, message):
    with pytest.raises(ValueError, match=message):
        kresnet.preprocess_input(np.zeros(shape, "float32"), data_format="channels_last")
