"""Bad input: a ValueError/TypeError naming the argument, raised before any layer is built."""

import keras
import numpy as np
import pytest

import kresnet

BAD_CREATE = [
    (dict(depth=42), ValueError, "`depth` must be one of 18, 34, 50, 101, 152"),
    (dict(depth="50"), TypeError, "`depth`"),
    (dict(in_shape=(64, 64)), ValueError, "`in_shape` must have 3 entries"),
    (dict(in_shape=(64, 64, 3, 1)), ValueError, "`in_shape` must have 3 entries"),
    (dict(in_shape="64x64"), TypeError, "`in_shape` must be a tuple"),
    (dict(in_shape=(64.0, 64, 3)), TypeError, "`in_shape`: height must be a positive integer"),
    (dict(in_shape=(64, True, 3)), TypeError, "`in_shape`: width"),
    (dict(in_shape=(0, 64, 3)), ValueError, "`in_shape`: height must be None or at least 32"),
    (dict(in_shape=(64, -5, 3)), ValueError, "`in_shape`: width"),
    (dict(in_shape=(31, 64, 3)), ValueError, "at least 32"),
    (dict(in_shape=(64, 64, 0)), ValueError, "`in_shape`: channels"),
    (dict(in_shape=(64, 64, None)), TypeError, "`in_shape`: channels"),
    (dict(n_classes=0), ValueError, "`n_classes` must be an integer >= 1"),
    (dict(n_classes=2.5), TypeError, "`n_classes`"),
    (dict(blocks=()), ValueError, "`blocks`"),
    (dict(blocks=5), TypeError, "`blocks`"),
    (dict(blocks=(2, 0)), ValueError, r"`blocks\[1\]`"),
    (dict(block_type="wide"), ValueError, "`block_type` must be one of 'basic', 'bottleneck'"),
    (dict(middle_kernel_size=4), ValueError, "`middle_kernel_size`.*odd"),
    (dict(middle_kernel_size=(3, 3, 3)), TypeError, "`middle_kernel_size`"),
    (dict(middle_kernel_size=0), ValueError, "`middle_kernel_size`"),
    (dict(head="mlp"), ValueError, "`head` must be one of 'tutorial', 'fc', None"),
    (dict(include_top="yes"), TypeError, "`include_top`"),
    (dict(pooling="sum", head=None), ValueError, "`pooling` must be one of None, 'avg', 'max'"),
    (dict(classifier_activation="nope"), ValueError, "`classifier_activation`"),
    (dict(dropout=1.0), ValueError, r"`dropout` must be a number in \[0, 1\)"),
    (dict(fc_units=0), ValueError, "`fc_units`"),
    (dict(weights="no/such/file.weights.h5"), ValueError, "`weights`.*no file"),
    (dict(weights="imagenet"), ValueError, "`weights`"),
    (dict(weights=3), TypeError, "`weights`"),
    (dict(input_tensor=np.zeros((1, 64, 64, 3))), TypeError, "`input_tensor`"),
    (dict(use_bias="no"), TypeError, "`use_bias`"),
    (dict(bn_epsilon=0), ValueError, "`bn_epsilon`"),
    (dict(bn_momentum=1.0), ValueError, "`bn_momentum`"),
    (dict(kernel_initializer="nonsense"), ValueError, "`kernel_initializer`"),
    (dict(name_prefix="a b"), ValueError, "`name_prefix`"),
    (dict(name_prefix=5), TypeError, "`name_prefix`"),
    (dict(name=""), ValueError, "`name`"),
    (dict(name=5), TypeError, "`name`"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD_CREATE, ids=lambda v: str(v)[:40])
def test_create_resnet_refuses_bad_input_before_building(kwargs, error, message, count_layers):
    arguments = {"in_shape": (64, 64, 3), **kwargs}
    with pytest.raises(error, match=message):
        kresnet.create_resnet(**arguments)
    assert count_layers() == 0


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(input_shape=(64, 64)), ValueError, "`input_shape` must have 3 entries"),
    (dict(input_shape=(16, 16, 3)), ValueError, "`input_shape`: height must be None or at"),
    (dict(pooling="mean", include_top=False), ValueError, "`pooling`"),
    (dict(classes=0), ValueError, "`classes`|`n_classes`"),
    (dict(include_top=1), TypeError, "`include_top`"),
    (dict(input_tensor="x"), TypeError, "`input_tensor`"),
    (dict(strides=2), TypeError, "Unknown option.*strides"),
    (dict(input_shape=(64, 64, 3), input_tensor=keras.KerasTensor((None, 32, 32, 3))),
     ValueError, "`input_shape`.*`input_tensor`"),
])
def test_applications_functions_refuse_bad_input(kwargs, error, message, count_layers):
    with pytest.raises(error, match=message):
        kresnet.ResNet50(**kwargs)
    assert count_layers() == 0


def test_none_sizes_are_valid():
    assert kresnet.create_resnet((None, None, 3), 3, 18).output_shape == (None, 3)
    assert kresnet.create_resnet((None, 64, 1), 3, 18).input_shape == (None, None, 64, 1)


def test_minimum_size_follows_the_stage_count():
    assert kresnet.create_resnet((8, 8, 3), 2, blocks=(1, 1), head="fc").output_shape == (None, 2)
    with pytest.raises(ValueError, match="at least 8"):
        kresnet.create_resnet((7, 8, 3), 2, blocks=(1, 1))


@pytest.mark.parametrize("call,error,message", [
    (lambda x: kresnet.identity_block(x, 3, [64, 64], 2, "a"), ValueError,
     r"stage=2 block='a'.*256 channels.*filters\[-1\]=64"),
    (lambda x: kresnet.identity_block(x, 3, [64, 64, 64, 256], 2, "a"), ValueError,
     "`filters` must have 2 .* or 3"),
    (lambda x: kresnet.identity_block(x, 3, 256, 2, "a"), TypeError, "`filters`"),
    (lambda x: kresnet.identity_block(x, 3, [64, 0, 256], 2, "a"), ValueError, r"`filters\[1\]`"),
    (lambda x: kresnet.identity_block(x, 2, [64, 64, 256], 2, "a"), ValueError,
     "`middle_kernel_size`.*positive odd integer"),
    (lambda x: kresnet.identity_block(x, (3, 4), [64, 64, 256], 2, "a"), ValueError,
     "`middle_kernel_size`"),
    (lambda x: kresnet.identity_block(x, 3.0, [64, 64, 256], 2, "a"), TypeError,
     "`middle_kernel_size`"),
    (lambda x: kresnet.identity_block(x, 3, [64, 64, 256], "two", "a"), ValueError, "`stage`"),
    (lambda x: kresnet.identity_block(x, 3, [64, 64, 256], 2.0, "a"), TypeError, "`stage`"),
    (lambda x: kresnet.identity_block(x, 3, [64, 64, 256], 2, "a-1"), ValueError, "`block`"),
    (lambda x: kresnet.identity_block(x, 3, [64, 64, 256], 2, ""), ValueError, "`block`"),
    (lambda x: kresnet.identity_block(x, 3, [64, 64, 256], 2, 1), TypeError, "`block`"),
    (lambda x: kresnet.conv_block(x, 3, [64, 64, 256], 2, "a", strides=0), ValueError,
     "`strides`"),
    (lambda x: kresnet.conv_block(None, 3, [64, 64, 256], 2, "a"), TypeError,
     "`input_tensor`"),
    (lambda x: kresnet.do_first_conv(x, filters=-1), ValueError, "`filters`"),
    (lambda x: kresnet.do_first_conv(np.zeros((1, 8, 8, 3))), TypeError, "`input_tensor`"),
])
def test_block_functions_refuse_bad_input(call, error, message, count_layers):
    x = keras.Input((56, 56, 256))
    before = count_layers()
    with pytest.raises(error, match=message):
        call(x)
    assert count_layers() == before


def test_the_layer_counter_counts(count_layers):
    model = kresnet.create_resnet((32, 32, 3), 2, blocks=(1,), head="fc")
    assert count_layers() == len(model.layers) + 1 == 22  # the Model is a Layer too
