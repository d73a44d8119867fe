"""ResNetConfig: every option declared once, checked when a config is made, resolved, and
read back from built and loaded models."""

import dataclasses
import inspect

import numpy as np
import pytest

import kresnet
from kresnet import PRESETS
from kresnet.config import BLOCK_OPTIONS, FIELDS, LAYER_OPTIONS, ResNetConfig


def test_every_option_is_declared_with_check_allowed_values_and_doc():
    for name, spec in FIELDS.items():
        meta = spec.metadata
        assert callable(meta["check"]) and meta["allowed"] and meta["doc"], name
        assert meta["group"] in ("network", "block", "head", "layer", "model"), name
        assert spec.type is not dataclasses.MISSING, name
    assert set(LAYER_OPTIONS) == {"use_bias", "bn_epsilon", "bn_momentum",
                                  "kernel_initializer", "weight_decay", "name_prefix",
                                  "norm", "norm_groups"}
    assert set(BLOCK_OPTIONS) == {"preact", "stride_on", "shortcut", "groups", "se_ratio",
                                  "zero_init_residual", "se_divisor", "eca", "anti_alias",
                                  "drop_path_rate"}


def test_front_door_signatures_come_from_the_declaration():
    create = inspect.signature(kresnet.create_resnet).parameters
    for name, spec in FIELDS.items():
        if name in ("input_shape", "classes", "depth"):
            continue
        assert create[name].default == spec.default and create[name].annotation == spec.type
        assert create[name].kind is inspect.Parameter.KEYWORD_ONLY
    block = inspect.signature(kresnet.conv_block).parameters
    assert set(LAYER_OPTIONS + BLOCK_OPTIONS) <= set(block)
    assert list(inspect.signature(kresnet.identity_block).parameters)[:5] == [
        "input_tensor", "middle_kernel_size", "filters", "stage", "block"]
    stem = inspect.signature(kresnet.do_first_conv).parameters
    assert {"stem", "stem_width", *LAYER_OPTIONS} <= set(stem)


def test_a_config_is_resolved_frozen_and_equal_by_value():
    config = ResNetConfig(depth=101, stride_on="3x3")
    assert config.blocks == (3, 4, 23, 3) and config.block_type == "bottleneck"
    assert config.stem_width == (64,) and config.middle_kernel_size == (3, 3)
    assert config == ResNetConfig(depth=101, stride_on="3x3", blocks=[3, 4, 23, 3])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.depth = 50
    assert config.replace(depth=50).blocks == (3, 4, 6, 3)
    custom = ResNetConfig(depth=18, blocks=(1, 1), widths=(8, 16))
    assert custom.replace(depth=34).blocks == (1, 1)  # given, not derived: kept
    assert custom.replace(stem="deep").stem_width == (32, 32, 64)
    with pytest.raises(TypeError, match="Unknown option.*strides"):
        config.replace(strides=2)
    with pytest.raises(ValueError, match="`groups` must be an integer >= 1"):
        config.replace(groups=0)


def test_counts_from_the_configuration_match_published_figures():
    # Published counts, written out here so that the test does not trust the presets table.
    published = {"resnet50": 25_557_032, "resnext101_32x8d": 88_791_336,
                 "wide_resnet101_2": 126_886_696, "resnet152v2": 60_380_648,
                 "resnet110": 1_727_962, "seresnet50": 28_088_024}
    for name, count in published.items():
        preset = PRESETS[name]
        total, trainable = preset.config.count_params()
        assert (total if preset.counted == "total" else trainable) == count, name
    assert ResNetConfig().count_params()[0] == 23_999_522  # the tutorial model


def test_config_of_reads_loaded_files_and_headless_models(tmp_path):
    model = kresnet.create_resnet((32, 32, 1), 3, depth=18, blocks=(1, 2), widths=(8, 16),
                                  stem="cifar", se_ratio=0.25, zero_init_residual=True,
                                  weight_decay=1e-4, name_prefix="p_", head="tutorial",
                                  fc_units=7, dropout=0.25, classifier_activation=None)
    path = kresnet.save(model, tmp_path / "m.keras")
    loaded = kresnet.load(path)
    assert kresnet.config_of(loaded) == kresnet.config_of(model)
    config = kresnet.config_of(model)
    assert (config.stem, config.se_ratio, config.zero_init_residual, config.fc_units,
            config.classifier_activation) == ("cifar", 0.25, True, 7, None)
    assert config.weight_decay == pytest.approx(1e-4)
    headless = kresnet.ResNet18(include_top=False, pooling="max", input_shape=(None, None, 3))
    config = kresnet.config_of(headless)
    assert (config.head, config.pooling, config.input_shape) == (None, "max", (None, None, 3))
    stages = kresnet.create_resnet((64, 64, 3), depth=18, include_top=False, outputs="stages")
    assert kresnet.config_of(stages).outputs == "stages"
    with pytest.raises(ValueError, match="no kresnet stem"):
        kresnet.config_of(kresnet.to_keras_applications(kresnet.ResNet50(
            input_shape=(32, 32, 3))))


def test_build_takes_a_config():
    config = ResNetConfig(depth=18, blocks=(1, 1), input_shape=(32, 32, 3), head="fc",
                          classes=4, name="tiny")
    model = kresnet.build(config)
    assert (model.name, model.input_shape, model.output_shape) == (
        "tiny", (None, 32, 32, 3), (None, 4))
    headless = kresnet.build(config, include_top=False, pooling="avg")
    assert headless.output_shape == (None, 128)
    with pytest.raises(TypeError, match="`name` must be a preset name"):
        kresnet.build(3)
