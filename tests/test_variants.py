"""Each variant option does what its paper says, with the same naming rules."""

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import SHAPE_ONLY


def small(**options):
    options.setdefault("head", "fc")
    return kresnet.create_resnet((64, 64, 3), 4, options.pop("depth", 50), **options)


def names(model):
    return [layer.name for layer in model.layers]


def submodel(model, input_name, output_name):
    return keras.Model(model.get_layer(input_name).output, model.get_layer(output_name).output)


@pytest.mark.slow
def test_stride_on_3x3_moves_the_stride_to_the_middle_conv():
    model = small(stride_on="3x3", **SHAPE_ONLY)
    assert model.get_layer("res3a_branch2a").strides == (1, 1)
    assert model.get_layer("res3a_branch2b").strides == (2, 2)
    assert model.get_layer("res3a_branch2b_pad").padding == ((1, 1), (1, 1))
    assert small(stride_on="3x3", depth=18, **SHAPE_ONLY).count_params() == \
        small(depth=18, **SHAPE_ONLY).count_params()


def test_shortcut_a_subsamples_and_pads_zeros_without_parameters():
    model = kresnet.build("resnet20")
    assert "res3a_branch1" not in names(model)
    assert {"res3a_branch1_pool", "res3a_branch1_permute", "res3a_branch1_zeros",
            "res3a_branch1_unpermute"} <= set(names(model))
    shortcut = keras.Model(model.get_layer("res2c_relu").output,
                           model.get_layer("res3a_branch1_unpermute").output)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 16)).astype("float32")
    y = np.asarray(shortcut(x))
    assert y.shape == (2, 16, 16, 32)
    np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 16:], 0)


def test_shortcut_a_in_channels_first(channels_first):
    model = kresnet.build("resnet20", input_shape=(3, 32, 32))
    assert model.get_layer("res3a_branch1_zeros").output.shape == (None, 32, 16, 16)
    assert "res3a_branch1_permute" not in names(model)


def test_shortcut_c_projects_every_block():
    model = small(depth=18, shortcut="C", **SHAPE_ONLY)
    for block in ("2a", "2b", "3b", "5b"):
        assert f"res{block}_branch1" in names(model)
    assert model.get_layer("res2b_branch1").strides == (1, 1)


def test_shortcut_avg_is_resnet_d():
    model = kresnet.build("resnet50d", input_shape=(64, 64, 3), **SHAPE_ONLY)
    pool = model.get_layer("res3a_branch1_pool")
    assert isinstance(pool, keras.layers.AveragePooling2D) and pool.strides == (2, 2)
    assert model.get_layer("res3a_branch1").strides == (1, 1)
    assert "res2a_branch1_pool" not in names(model)  # stage 2 does not downsample


@pytest.mark.slow
def test_stems():
    deep = small(stem="deep", **SHAPE_ONLY)
    assert names(deep)[1:8] == ["conv1a_pad", "conv1a", "bn_conv1a", "conv1a_relu", "conv1b",
                                "bn_conv1b", "conv1b_relu"]
    assert [deep.get_layer(f"conv1{p}").filters for p in "abc"] == [32, 32, 64]
    assert deep.get_layer("conv1a").strides == (2, 2)
    wide = small(stem="deep", stem_width=(24, 48, 96), **SHAPE_ONLY)
    assert wide.get_layer("conv1c").filters == 96
    cifar = kresnet.create_resnet((32, 32, 3), 10, 18, stem="cifar", stem_width=32, head=None,
                                  **SHAPE_ONLY)
    assert cifar.get_layer("conv1").kernel_size == (3, 3)
    assert cifar.get_layer("conv1").strides == (1, 1)
    assert "pool1" not in names(cifar) and cifar.output_shape == (None, 4, 4, 512)
    assert small(stem_width=32, **SHAPE_ONLY).get_layer("conv1").filters == 32


@pytest.mark.slow
def test_preact_keras_and_paper_placements():
    keras_style = kresnet.build("resnet50v2", input_shape=(64, 64, 3), **SHAPE_ONLY)
    assert {"bn2a_preact", "res2a_preact_relu", "bn_post", "post_relu"} <= set(names(keras_style))
    assert "res2a_relu" not in names(keras_style) and "bn_conv1" not in names(keras_style)
    assert keras_style.get_layer("res2c_branch2b").strides == (2, 2)  # last block strides
    assert keras_style.get_layer("res5c_branch2b").strides == (1, 1)
    assert "res2c_branch1_pool" in names(keras_style)
    assert not keras_style.get_layer("res2a_branch2a").use_bias
    assert keras_style.get_layer("res2a_branch2c").use_bias
    paper = kresnet.build("resnet50v2_paper", input_shape=(64, 64, 3), **SHAPE_ONLY)
    assert paper.get_layer("res3a_branch2b").strides == (2, 2)  # first block strides
    assert paper.get_layer("res2c_branch2b").strides == (1, 1)
    assert paper.get_layer("res5a_branch1").strides == (2, 2)


@pytest.mark.slow
def test_groups_and_width_per_group():
    model = kresnet.build("resnext50_32x4d", input_shape=(64, 64, 3), **SHAPE_ONLY)
    conv = model.get_layer("res2a_branch2b")
    assert (conv.groups, conv.filters) == (32, 128)
    assert model.get_layer("res2a_branch2a").groups == 1
    wide = kresnet.build("wide_resnet50_2", input_shape=(64, 64, 3), **SHAPE_ONLY)
    assert wide.get_layer("res5c_branch2b").filters == 1024
    assert wide.get_layer("res5c_branch2c").filters == 2048


def test_squeeze_and_excitation_names_and_effect():
    model = small(se_ratio=0.25, depth=18)
    assert model.get_layer("res2a_se_squeeze").filters == 16
    assert model.get_layer("res2a_se_excite").filters == 64
    assert isinstance(model.get_layer("res2a_se_scale"), keras.layers.Multiply)
    block = submodel(model, "bn2a_branch2b", "res2a_se_scale")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 64)).astype("float32")
    gate = np.asarray(block(x)) / x
    assert np.all((gate > 0) & (gate < 1))


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = small(depth=18, zero_init_residual=True)
    gamma = model.get_layer("bn2b_branch2b").gamma
    np.testing.assert_array_equal(np.asarray(gamma), 0)
    assert np.all(np.asarray(model.get_layer("bn2b_branch2a").gamma) == 1)
    block = submodel(model, "res2a_relu", "res2b_relu")
    x = np.abs(np.random.default_rng(0).normal(size=(1, 16, 16, 64))).astype("float32")
    np.testing.assert_allclose(np.asarray(block(x, training=False)), x, atol=1e-6)


def test_kernel_initializer_is_any_keras_initializer():
    fan_out = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal", seed=3)
    model = small(depth=18, kernel_initializer=fan_out)
    config = model.get_layer("res2a_branch2a").get_config()["kernel_initializer"]
    assert config["config"]["mode"] == "fan_out"
    std = np.asarray(model.get_layer("res5a_branch2a").kernel).std()
    assert abs(std - np.sqrt(2.0 / (3 * 3 * 512))) < 0.01


def test_weight_decay_survives_save_and_load(tmp_path):
    model = small(depth=18, weight_decay=1e-4)
    regularizer = model.get_layer("res3a_branch2a").kernel_regularizer
    assert isinstance(regularizer, keras.regularizers.L2)
    assert np.isclose(regularizer.l2, 5e-5)
    assert model.get_layer("fc4").kernel_regularizer is not None
    assert len(model.losses) == sum(1 for layer in model.layers
                                    if isinstance(layer, (keras.layers.Conv2D,
                                                          keras.layers.Dense)))
    path = str(tmp_path / "wd.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert np.isclose(loaded.get_layer("res3a_branch2a").kernel_regularizer.l2, 5e-5)
    assert len(loaded.losses) == len(model.losses)


def test_head_options():
    model = small(depth=18, head="tutorial", dropout=0.2, fc_units=64, **SHAPE_ONLY)
    assert model.get_layer("fc_01").units == 64
    assert model.get_layer("dropout_fc_final").rate == 0.2
    assert small(depth=18, head=None, **SHAPE_ONLY).output_shape == (None, 2, 2, 512)


@pytest.mark.parametrize("options,message", [
    (dict(preact=True, zero_init_residual=True), "`zero_init_residual=True`.*`preact=True`"),
    (dict(depth=18, groups=32), "`groups`.*`block_type`='basic'"),
    (dict(depth=34, width_per_group=128), "`width_per_group`.*`block_type`='basic'"),
    (dict(stem="resnet"), "`stem` must be one of 'classic', 'deep', 'cifar'"),
    (dict(stem="deep", stem_width=64), "`stem_width` for `stem`='deep' must be 3"),
    (dict(stem="classic", stem_width=(32, 64)), "`stem_width` for `stem`='classic' must be 1"),
    (dict(blocks=(2, 2), widths=(64, 128, 256)), "`widths` must list one .* `blocks`"),
    (dict(shortcut="D"), "`shortcut` must be one of 'B', 'A', 'C', 'avg'"),
    (dict(stride_on="7x7"), "`stride_on` must be one of '1x1', '3x3'"),
    (dict(stride_block="middle"), "`stride_block` must be one of 'first', 'last'"),
    (dict(se_ratio=2), r"`se_ratio` must be a number in \[0, 1\]"),
    (dict(weight_decay=-1), "`weight_decay`"),
])
def test_options_that_do_not_fit_are_refused_before_building(options, message, count_layers):
    with pytest.raises(ValueError, match=message):
        small(**options)
    assert count_layers() == 0


def test_block_functions_take_the_variant_options():
    x = keras.Input((16, 16, 64))
    y = kresnet.conv_block(x, 3, [64, 64, 256], 2, "a", (1, 1), groups=32, se_ratio=0.25,
                           shortcut="avg")
    assert tuple(y.shape) == (None, 16, 16, 256)
    with pytest.raises(ValueError, match="`groups`=3 must divide"):
        kresnet.conv_block(x, 3, [64, 64, 256], 2, "b", groups=3)
    with pytest.raises(ValueError, match="cannot shrink"):
        kresnet.conv_block(keras.Input((8, 8, 512)), 3, [64, 64, 256], 2, "a", shortcut="A")
    z = kresnet.identity_block(keras.Input((8, 8, 32)), 3, [8, 8, 32], 2, "b", preact=True)
    assert z._keras_history.operation.name == "res2b"


@pytest.mark.parametrize("head", ["fc", "tutorial"])
def test_classifier_stays_float32_under_a_mixed_precision_policy(head):
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kresnet.create_resnet((32, 32, 3), 4, depth=18, head=head, widths=(4, 8, 16, 32),
                                      stem_width=4)
    finally:
        keras.config.set_dtype_policy(before)
    classifier = model.layers[-1]
    assert classifier.name == ("fc4" if head == "fc" else "fc_final")
    assert classifier.dtype_policy.name == "float32"
    assert model.get_layer("res2a_branch2a").dtype_policy.name == "mixed_bfloat16"
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    assert keras.ops.convert_to_numpy(model(x)).dtype == np.float32
    plain = kresnet.create_resnet((32, 32, 3), 4, depth=18, head=head, widths=(4, 8, 16, 32),
                                  stem_width=4)
    assert plain.layers[-1].dtype_policy.name == "float32"  # unchanged without a policy


def test_stem_pool_ignore_pads_with_cells_that_never_win():
    """torch's MaxPool2d(3, 2, padding=1): at the border the padding never wins, even over
    negative values (a pre-activation stem pools the raw conv output)."""
    model = kresnet.build("resnet50v2_paper", input_shape=(32, 32, 3), classes=3,
                          widths=(8, 16, 32, 64), stem_width=8, stem_pool="ignore")
    names = [layer.name for layer in model.layers[:5]]
    assert names == ["input", "conv1_pad", "conv1", "pool1", "pool1_stride"]
    assert kresnet.config_of(model).stem_pool == "ignore"
    stem = keras.Model(model.input, [model.get_layer("conv1").output,
                                     model.get_layer("pool1_stride").output])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    conv, pooled = (np.asarray(t) for t in stem(x))
    padded = np.pad(conv, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    expected = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                                   for j in range(8)], axis=1) for i in range(8)], axis=1)
    np.testing.assert_array_equal(pooled, expected)
    assert (conv < 0).any()  # the case where zero padding would differ
    with pytest.raises(ValueError, match="`stem`='cifar' has none"):
        kresnet.build("resnet20", stem_pool="ignore")
