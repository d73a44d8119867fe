"""Parameter counts of full-size models (built, never run) against published figures.

The models with conv biases are built once per session (the ``full_size`` fixture, shared
with test_analysis' operation counts); the counts without biases come from the
configuration, whose counts equal the built models' for every preset (test_presets)."""

import keras
import pytest

import kresnet
from kresnet import DEPTHS

# Published counts, written out here so that the test does not trust the table it checks.
KERAS_APPLICATIONS_STYLE = {18: 11_703_912, 34: 21_823_208, 50: 25_636_712,
                            101: 44_707_176, 152: 60_419_944}
TORCHVISION_TRAINABLE = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032,
                         101: 44_549_160, 152: 60_192_808}


def trainable(model):
    return sum(int(keras.ops.size(w)) for w in model.trainable_weights)


@pytest.mark.slow
@pytest.mark.xdist_group("full_size")
@pytest.mark.parametrize("depth", sorted(KERAS_APPLICATIONS_STYLE))
def test_parameter_counts_with_and_without_bias(depth, full_size):
    with_bias = full_size.structure(f"ResNet{depth}")
    assert with_bias.count_params() == KERAS_APPLICATIONS_STYLE[depth]
    assert with_bias.count_params() == DEPTHS[depth].params_bias
    config = kresnet.config_of(with_bias)
    assert config.count_params() == (with_bias.count_params(), trainable(with_bias))
    no_bias = config.replace(use_bias=False).count_params()[1]
    assert no_bias == TORCHVISION_TRAINABLE[depth]
    assert no_bias == DEPTHS[depth].params_no_bias


@pytest.mark.slow
@pytest.mark.xdist_group("full_size")
def test_tutorial_model_has_the_tutorial_count(full_size):
    model = full_size.structure("create_resnet")
    assert model.name == "resnet50"
    assert model.count_params() == 23_999_522
    assert [layer.name for layer in model.layers[-5:]] == [
        "avg_pool", "dropout_fc_01", "fc_01", "dropout_fc_final", "fc_final"]
    assert model.get_layer("fc_01").units == 200
    assert model.get_layer("fc_01").activation.__name__ == "relu"
    assert model.get_layer("dropout_fc_01").rate == 0.5
    assert model.get_layer("fc_final").activation.__name__ == "softmax"
    assert model.output_shape == (None, 10)


def test_depth_of_the_table_rows_is_their_depth():
    for depth in DEPTHS:
        assert kresnet.plan(depth).depth == depth
