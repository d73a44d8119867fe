"""timm's second tier as kresnet options and presets (issue 16): stochastic depth,
anti-aliasing, dilation, ECA and timm's SE rounding, GroupNorm, richer pooling, ResNet-RS,
tiered stems. Outputs against timm's own code are in tests/test_pytorch.py (timm_tier)."""

import keras
import numpy as np
import pytest

import kresnet
from kresnet.config import BlockStyle
from kresnet.downsampling import blur
from tests.conftest import load_one_in_fresh_process, structure_only

#: The issue's table: timm 1.0.31's sum(p.numel() for p in model.parameters()). A second
#: line of defence: tests/test_pytorch.py compares every preset with timm's own count.
TIMM_PARAMS = {
    "resnet26": 15_995_176, "resnet26d": 16_014_408, "resnet18d": 11_708_744,
    "resnet34d": 21_816_904, "resnet200d": 64_693_064, "resnetaa50": 25_557_032,
    "resnetaa50d": 25_576_264, "resnetblur50": 25_557_032, "resnetrs50": 35_691_912,
    "resnetrs101": 63_618_696, "ecaresnet50d": 25_576_350, "seresnet101": 49_326_872,
    "seresnext50_32x4d": 27_559_896, "resnext50d_32x4d": 25_048_136,
    "resnet50_gn": 25_557_032, "resnet10t": 5_435_488,
}
#: timm's training sizes (its pretrained_cfg input_size).
SIZES = {"resnetrs50": 160, "resnetrs101": 192, "resnet101d": 256, "resnet152d": 256,
         "resnet200d": 256, "resnet10t": 176}


def small(depth=50, size=64, **options):
    options.setdefault("head", "fc")
    return kresnet.create_resnet((size, size, 3), 4, depth, **options)


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_the_issue_table_counts_exactly(name):
    preset = kresnet.PRESETS[name]
    assert preset.params == TIMM_PARAMS[name]
    assert preset.config.count_params()[1] == TIMM_PARAMS[name]
    assert preset.input_size == SIZES.get(name, 224)


@pytest.mark.parametrize("name", ["resnetblur50", "resnet50_gn", "resnetrs50", "resnet10t",
                                  "ecaresnet50d"])
def test_full_size_builds_count_what_the_plan_counts(name):
    with structure_only():
        model = kresnet.build(name)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == TIMM_PARAMS[name]
    assert model.input_shape == (None, SIZES.get(name, 224), SIZES.get(name, 224), 3)


def test_drop_path_rate_rises_linearly_over_the_blocks():
    config = kresnet.ResNetConfig(depth=50, drop_path_rate=0.3)
    rates = [block.drop_path for stage in config.plan.stages for block in stage]
    np.testing.assert_allclose(rates, 0.3 * np.arange(16) / 15, rtol=0, atol=1e-12)
    model = small(drop_path_rate=0.3)
    layers = {layer.name: layer for layer in model.layers}
    assert "res2a_drop_path" not in layers  # rate 0: no layer, as timm's DropPath(0)
    assert layers["res5c_drop_path"].rate == pytest.approx(0.3)
    assert layers["res4b_drop_path"].rate == pytest.approx(0.3 * 8 / 15)  # 9th of 16
    assert kresnet.config_of(model).drop_path_rate == pytest.approx(0.3)


def test_drop_path_drops_whole_samples_in_training_and_nothing_in_inference():
    x = keras.Input((4, 4, 8))
    y = kresnet.identity_block(x, 3, [8, 8], 2, "b", drop_path_rate=0.25)
    block = keras.Model(x, y)
    dropout = block.get_layer("res2b_drop_path")
    branch = keras.Model(x, dropout.input)
    inputs = np.random.default_rng(0).normal(size=(4000, 4, 4, 8)).astype("float32")
    branch_values = np.asarray(branch(inputs, training=True))  # BN on batch statistics
    kept = np.asarray(keras.Model(x, dropout.output)(inputs, training=True))
    dropped = np.all(kept == 0, axis=(1, 2, 3))
    assert abs(dropped.mean() - 0.25) < 0.03  # 4000 samples: 3 standard deviations ~ 0.02
    survivors = ~dropped
    np.testing.assert_allclose(kept[survivors], branch_values[survivors] / 0.75, rtol=1e-5,
                               atol=1e-6)
    plain = keras.Model(x, kresnet.identity_block(x, 3, [8, 8], 2, "c"))
    plain.set_weights(block.get_weights())
    np.testing.assert_allclose(block(inputs[:8]), plain(inputs[:8]), rtol=1e-6, atol=1e-6)


def test_drop_path_needs_two_blocks():
    with pytest.raises(ValueError, match="`drop_path_rate`=0.1 .* at least two blocks"):
        small(blocks=(1,), drop_path_rate=0.1)


def reflect_blur(x, stride):
    """timm's BlurPool2d in NumPy: reflection pad 1, [1, 2, 1]^2 / 16, then the stride."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16
    height, width = x.shape[1:3]
    out = sum(kernel[i, j] * padded[:, i:i + height, j:j + width]
              for i in range(3) for j in range(3))
    return out[:, ::stride, ::stride]


@pytest.mark.parametrize("size", [(5, 8), (6, 7), (2, 3), (9, 9)])
@pytest.mark.parametrize("stride", [1, 2])
def test_blur_is_timms_reflection_padded_binomial_filter(size, stride):
    x = np.random.default_rng(sum(size)).normal(size=(2, *size, 3)).astype("float32")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, blur(inputs, (stride, stride), "b", "channels_last"))
    np.testing.assert_allclose(model(x), reflect_blur(x, stride), rtol=1e-5, atol=1e-6)


def test_blur_in_channels_first(channels_first):
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 6)).astype("float32")
    inputs = keras.Input((3, 7, 6))
    model = keras.Model(inputs, blur(inputs, (2, 2), "b", "channels_first"))
    expected = reflect_blur(x.transpose(0, 2, 3, 1), 2).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def test_anti_aliasing_puts_the_stride_where_timm_does():
    model = small(anti_alias="avg", stride_on="3x3")
    layers = {layer.name: layer for layer in model.layers}
    assert layers["res3a_branch2b"].strides == (1, 1)
    assert isinstance(layers["res3a_branch2b_aa"], keras.layers.AveragePooling2D)
    assert layers["res3a_branch2b_aa"].input is layers["res3a_branch2b_relu"].output
    assert isinstance(layers["pool1"], keras.layers.AveragePooling2D)  # replaces the max pool
    assert layers["res3a_branch1"].strides == (2, 2)  # the shortcut is timm's, unchanged
    blurred = small(anti_alias="blur", stride_on="3x3")
    layers = {layer.name: layer for layer in blurred.layers}
    assert layers["pool1"].strides == (1, 1) and "pool1_aa_stride" in layers
    assert layers["res4a_branch2b_aa_stride"].strides == (2, 2)
    assert blurred.count_params() == small(stride_on="3x3").count_params()
    assert kresnet.feature_strides(blurred) == {"C2": 4, "C3": 8, "C4": 16, "C5": 32}


def test_output_stride_dilates_later_stages():
    model = small(output_stride=8, head=None, stem="deep", shortcut="avg")
    assert model.output_shape == (None, 8, 8, 2048)
    layers = {layer.name: layer for layer in model.layers}
    assert layers["res4a_branch2b"].dilation_rate == (1, 1)  # the previous stage's
    assert layers["res4b_branch2b"].dilation_rate == (2, 2)
    assert layers["res5a_branch2b"].dilation_rate == (2, 2)
    assert layers["res5b_branch2b"].dilation_rate == (4, 4)
    assert kresnet.feature_strides(model) == {"C2": 4, "C3": 8, "C4": 8, "C5": 8}
    shapes = {k: tuple(v.shape) for k, v in kresnet.feature_maps(model).items()}
    assert shapes["C5"] == (None, 8, 8, 2048)
    assert kresnet.config_of(model).output_stride == 8
    assert kresnet.ResNetConfig(output_stride=16).plan.min_size == 16
    assert small(output_stride=16, head=None).output_shape == (None, 4, 4, 2048)


def test_eca_kernel_and_timms_squeeze_rounding():
    assert [BlockStyle.eca_kernel(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    model = small(eca=True)
    assert model.get_layer("res5c_eca_conv").kernel.shape == (7, 1, 1)
    timm_se = BlockStyle(se_ratio=1 / 16, se_divisor=8)
    assert [timm_se.squeeze_width(c) for c in (64, 128, 256, 2048)] == [8, 8, 16, 128]
    assert [BlockStyle(se_ratio=1 / 16).squeeze_width(c) for c in (64, 128)] == [4, 8]
    assert kresnet.config_of(small(depth=18, se_ratio=1 / 16, se_divisor=8)).se_divisor == 8


def test_group_norm_and_pooling_kinds():
    model = small(norm="group", norm_groups=16)
    norms = [layer for layer in model.layers if "bn" in layer.name]
    assert norms and all(isinstance(n, keras.layers.GroupNormalization) and n.groups == 16
                         for n in norms)
    with pytest.raises(ValueError, match="`norm_groups`=32 .* `stem_width` .* 24"):
        small(norm="group", stem="deep", stem_width=(24, 32, 64))
    for pooling, channels in (("avgmax", 2048), ("catavgmax", 4096)):
        headless = small(head=None, pooling=pooling)
        assert headless.output_shape == (None, channels)
        assert kresnet.config_of(headless).pooling == pooling
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    features = keras.Model(headless.input, headless.get_layer("res5c_relu").output)(x)
    mean = (np.mean(features, axis=(1, 2)) + np.max(features, axis=(1, 2))) / 2
    avgmax = small(head=None, pooling="avgmax")
    avgmax.set_weights(headless.get_weights())
    np.testing.assert_allclose(avgmax(x), mean, rtol=1e-5, atol=1e-5)


def test_resnet_rs_stem_and_tiered_stem():
    model = kresnet.build("resnetrs50", input_shape=(64, 64, 3))
    layers = {layer.name: layer for layer in model.layers}
    assert isinstance(layers["pool1"], keras.layers.Conv2D) and layers["pool1"].strides == (2, 2)
    assert isinstance(layers["bn_pool1"], keras.layers.BatchNormalization)
    assert layers["res2a_se_squeeze"].filters == 64  # ratio 1/4 of 256
    assert kresnet.config_of(model).stem_pool == "conv"
    tiered = kresnet.build("resnet10t", input_shape=(64, 64, 3))
    assert [tiered.get_layer(f"conv1{p}").filters for p in "abc"] == [24, 32, 64]


@pytest.mark.parametrize("options,message", [
    (dict(eca=True, se_ratio=0.25), "`eca=True` and `se_ratio`=0.25"),
    (dict(anti_alias="blur"), "needs `stride_on`='3x3'"),
    (dict(anti_alias="avg", stride_on="3x3", preact=True), "does not go with `preact=True`"),
    (dict(anti_alias="blur", stride_on="3x3", stem_pool="ignore"), "leave stem_pool"),
    (dict(anti_alias="box"), "`anti_alias` must be one of None, 'avg', 'blur'"),
    (dict(output_stride=4), "`output_stride` must be one of None, 8, 16, 32"),
    (dict(output_stride=16, stride_block="last"), "needs `stride_block`='first'"),
    (dict(norm="layer"), "`norm` must be one of 'batch', 'group'"),
    (dict(stem_pool="conv", preact=True), "does not go with `preact=True`"),
    (dict(drop_path_rate=1.0), r"`drop_path_rate` must be a number in \[0, 1\)"),
    (dict(pooling="sum", head=None), "`pooling` must be one of"),
])
def test_options_that_do_not_fit_are_refused_before_building(options, message, count_layers):
    with pytest.raises(ValueError, match=message):
        small(**options)
    assert count_layers() == 0


@pytest.mark.slow
def test_every_new_kind_saves_plots_and_loads_without_kresnet(tmp_path):
    """One model with every option of the tier: it plots, and a fresh Python without
    kresnet loads its .keras file with safe_mode on and gives the same outputs."""
    model = small(anti_alias="blur", stride_on="3x3", stem="deep", stem_pool="conv",
                  shortcut="avg", eca=True, norm="group", drop_path_rate=0.2,
                  output_stride=16, head=None, pooling="catavgmax", size=72)
    second = small(depth=18, anti_alias="avg", se_ratio=0.25, se_divisor=8, size=72,
                   output_stride=8, shortcut="avg", stem="deep")
    x = np.random.default_rng(0).normal(size=(2, 72, 72, 3)).astype("float32")
    for net in (model, second):
        outputs, names = load_one_in_fresh_process(net, tmp_path, x)
        np.testing.assert_allclose(outputs, net(x), rtol=1e-5, atol=1e-5)
        assert names == [layer.name for layer in net.layers]
        config = kresnet.config_of(keras.saving.load_model(tmp_path / f"00_{net.name}.keras"))
        assert config == kresnet.config_of(net)
    keras.utils.plot_model(model, str(tmp_path / "tier.png"))
    assert (tmp_path / "tier.png").stat().st_size > 0


@pytest.mark.parametrize("options,strides", [
    (dict(blocks=(1, 1, 1, 1), output_stride=16), {"C2": 4, "C3": 8, "C4": 16, "C5": 16}),
    (dict(blocks=(1, 1, 1, 1), output_stride=8), {"C2": 4, "C3": 8, "C4": 8, "C5": 8}),
    (dict(blocks=(2,), anti_alias="avg"), {"C2": 4}),
    (dict(blocks=(2,), anti_alias="blur"), {"C2": 4}),
])
def test_one_block_stages_and_stem_only_anti_aliasing_read_back(options, strides):
    """A one-bottleneck dilated stage has no dilated conv (its 3x3 keeps the previous
    stage's dilation, as timm's) and a one-stage net anti-aliases its stem only: both are
    read from the strides, not from the convs."""
    config = kresnet.ResNetConfig(depth=50, input_shape=(64, 64, 3), head=None,
                                  stride_on="3x3", **options)
    model = kresnet.build(config)
    assert kresnet.config_of(model) == config
    assert kresnet.feature_strides(model) == strides


def test_block_functions_check_group_norm_against_their_own_filters():
    x = keras.Input((16, 16, 64))
    y = kresnet.conv_block(x, 3, [48, 48, 96], 2, "a", norm="group", norm_groups=48)
    assert isinstance(y._keras_history.operation, keras.layers.Activation)
    with pytest.raises(ValueError, match="`filters` gives the width 48"):
        kresnet.conv_block(x, 3, [48, 48, 96], 2, "b", norm="group")
    stem = kresnet.do_first_conv(keras.Input((32, 32, 3)), norm="group", stem_width=48,
                                 norm_groups=48)
    assert tuple(stem.shape) == (None, 8, 8, 48)


def test_average_anti_aliasing_refuses_sizes_that_turn_odd(count_layers):
    with pytest.raises(ValueError, match="block res5a gets a height of 7 from `input_shape`"):
        kresnet.ResNetConfig(depth=18, anti_alias="avg", input_shape=(112, 112, 3))
    assert count_layers() == 0
    assert kresnet.ResNetConfig(depth=18, anti_alias="avg", input_shape=(None, 224, 3))
