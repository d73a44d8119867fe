"""The seed functions, used the way the tutorial uses them."""

import keras
import numpy as np
import pytest

from kresnet import conv_block, do_first_conv, identity_block
from tests.conftest import automatic_names


def tutorial_resnet50(shape=(64, 64, 3), classes=10):
    """The tutorial's own composition of the three public functions."""
    inputs = keras.Input(shape, name="input")
    x = do_first_conv(inputs)
    x = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1))
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="b")
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="c")
    for stage, (n, width) in enumerate([(4, 128), (6, 256), (3, 512)], start=3):
        x = conv_block(x, 3, [width, width, 4 * width], stage=stage, block="a")
        for block in "bcdef"[: n - 1]:
            x = identity_block(x, 3, [width, width, 4 * width], stage=stage, block=block)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.5, name="dropout_fc_01")(x)
    x = keras.layers.Dense(200, activation="relu", name="fc_01")(x)
    x = keras.layers.Dropout(0.5, name="dropout_fc_final")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax",
                                                  name="fc_final")(x), name="resnet50")


@pytest.mark.slow
def test_tutorial_composition_equals_create_resnet():
    import kresnet

    by_hand = tutorial_resnet50((224, 224, 3))
    built = kresnet.create_resnet()
    assert by_hand.count_params() == built.count_params() == 23_999_522
    assert [layer.name for layer in by_hand.layers] == [layer.name for layer in built.layers]
    assert automatic_names(by_hand) == []


def test_positional_seed_signatures():
    x = keras.Input((56, 56, 64))
    y = conv_block(x, 3, [64, 64, 256], 2, "a", (1, 1))
    y = identity_block(y, 3, [64, 64, 256], 2, "b")
    assert tuple(y.shape) == (None, 56, 56, 256)


def test_bottleneck_layers_and_order():
    x = keras.Input((56, 56, 256))
    model = keras.Model(x, identity_block(x, 3, [64, 64, 256], stage=2, block="b"))
    assert [layer.name for layer in model.layers[1:]] == [
        "res2b_branch2a", "bn2b_branch2a", "res2b_branch2a_relu",
        "res2b_branch2b", "bn2b_branch2b", "res2b_branch2b_relu",
        "res2b_branch2c", "bn2b_branch2c", "res2b", "res2b_relu"]
    assert [model.get_layer(f"res2b_branch2{b}").kernel_size for b in "abc"] == [
        (1, 1), (3, 3), (1, 1)]


def test_identity_block_adds_its_input():
    """With the last BN's gamma at zero the residual branch is 0: output = relu(input)."""
    x = keras.Input((8, 8, 16))
    model = keras.Model(x, identity_block(x, 3, [4, 4, 16], stage=2, block="b"))
    gamma, beta, mean, variance = model.get_layer("bn2b_branch2c").get_weights()
    model.get_layer("bn2b_branch2c").set_weights(
        [np.zeros_like(gamma), np.zeros_like(beta), mean, variance])
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
    np.testing.assert_allclose(model(data, training=False), np.maximum(data, 0), atol=1e-6)


def test_conv_block_projection_and_strides():
    x = keras.Input((56, 56, 256))
    y = conv_block(x, 3, [128, 128, 512], stage=3, block="a")
    model = keras.Model(x, y)
    assert tuple(y.shape) == (None, 28, 28, 512)
    projection = model.get_layer("res3a_branch1")
    assert (projection.kernel_size, projection.strides, projection.filters) == (
        (1, 1), (2, 2), 512)
    assert "bn3a_branch1" in [layer.name for layer in model.layers]


def test_basic_blocks():
    x = keras.Input((32, 32, 64))
    y = identity_block(x, 3, [64, 64], stage=2, block="a")
    y = conv_block(y, 3, [128, 128], stage=3, block="a")
    model = keras.Model(x, y)
    assert tuple(y.shape) == (None, 16, 16, 128)
    assert "res2a_branch2c" not in [layer.name for layer in model.layers]
    assert model.get_layer("res3a_branch2a").kernel_size == (3, 3)


@pytest.mark.parametrize("kernel", [5, (1, 3), [3, 5]])
def test_kernel_sizes(kernel):
    x = keras.Input((16, 16, 32))
    y = identity_block(x, kernel, [8, 8, 32], stage=2, block="b")
    assert tuple(y.shape) == (None, 16, 16, 32)


def test_odd_sizes_keep_branches_aligned():
    for size in (7, 15, 33):
        x = keras.Input((size, size, 64))
        for filters in ([32, 32, 128], [64, 64]):
            y = conv_block(x, 3, filters, stage=3, block="a")
            assert y.shape[1] == (size + 1) // 2


def test_stem_shapes_and_names():
    x = keras.Input((224, 224, 3))
    model = keras.Model(x, do_first_conv(x))
    assert model.output_shape == (None, 56, 56, 64)
    assert [layer.name for layer in model.layers[1:]] == [
        "conv1_pad", "conv1", "bn_conv1", "conv1_relu", "pool1_pad", "pool1"]
    assert model.get_layer("conv1").kernel_size == (7, 7)
    assert model.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
