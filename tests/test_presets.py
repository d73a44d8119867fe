"""Every preset: its published parameter count, shapes, names, config, save/load, a graph."""

import keras
import numpy as np
import pytest

import kresnet
from kresnet import safety
from kresnet import PRESETS
from tests.conftest import automatic_names, load_one_in_fresh_process, structure_only

REQUIRED = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200",
    "resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5", "resnet50b", "resnet50c",
    "resnet50d", "resnet101d", "resnet152d", "resnet50v2", "resnet101v2", "resnet152v2",
    "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
    "seresnet50", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]

# Published counts, written out again so that the test does not trust the table it checks.
PUBLISHED = {
    "resnet50_v1_5": 25_557_032, "resnet101_v1_5": 44_549_160, "resnet152_v1_5": 60_192_808,
    "resnet50v2": 25_613_800, "resnet101v2": 44_675_560, "resnet152v2": 60_380_648,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962, "seresnet50": 28_088_024, "resnet200": 64_673_832,
    "resnet50d": 25_576_264, "resnet101d": 44_568_392, "resnet152d": 60_212_040,
}


def small_shape(preset):
    """32x32: the smallest input of every preset (the ImageNet ones halve it 5 times); the
    names, options and layout do not depend on it, and each call costs less."""
    return (32, 32, 3)


def narrowed(preset):
    """Stage widths a quarter of the ImageNet presets' (the CIFAR ones are small already):
    every layer kind, option and name stays, the weights shrink 16x. The natural-size
    models round-trip in test_save_load; here the 30 configurations matter, not 1.4 GB of
    weights (wide_resnet101_2 alone writes 500 MB)."""
    if preset.input_size == 32:
        return {}
    # GroupNorm's 32 groups need widths of 32 and more: those shrink by half.
    factor = 2 if preset.config.norm == "group" else 4
    return {"widths": tuple(w // factor
                            for w in preset.options.get("widths", (64, 128, 256, 512)))}


def test_every_required_preset_exists_with_a_source():
    assert set(REQUIRED) <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.description
        assert preset.params is None or preset.source, name
        assert preset.counted in ("trainable", "total")


@pytest.mark.parametrize("name", list(PRESETS))
def test_published_parameter_count_at_natural_size(name):
    """Counted from the configuration (no 100-million-weight build): the counts equal the
    built model's for every preset in test_config_of_rebuilds_every_preset, and the
    full-size ResNet-18 ... 152 are built and counted in test_counts."""
    preset = PRESETS[name]
    config = preset.config
    size = preset.input_size
    assert config.input_shape == (size, size, 3)
    assert (config.head, config.classes) == ("fc", preset.classes)
    assert config.model_name == name
    if preset.params is None:
        return
    total, trainable = config.count_params()
    count = total if preset.counted == "total" else trainable
    assert count == preset.params
    if name in PUBLISHED:
        assert count == PUBLISHED[name]


def _block_sums(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]


_SMALL = {}


def small_model(name):
    """The preset built small (see narrowed), with 5 classes, once per test process: its two
    slow tests share the xdist group ``preset_NAME``, so one worker builds it once."""
    if name not in _SMALL:
        preset = PRESETS[name]
        _SMALL[name] = kresnet.build(name, input_shape=small_shape(preset), classes=5,
                                     **narrowed(preset))
    return _SMALL[name]


def small_input(name):
    """Two random images for the preset: the draws of one generator (seed 0) taken in the
    order of PRESETS, so that each preset gets the same input whatever runs before it."""
    rng = np.random.default_rng(0)
    for other, preset in PRESETS.items():
        x = rng.uniform(0, 1, (2, *small_shape(preset))).astype("float32")
        if other == name:
            return x
    raise KeyError(name)


def each_preset():
    """Every preset, in its own xdist group (see small_model)."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(f"preset_{name}"))
            for name in PRESETS]


def _layout(model):
    return [(layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers]


@pytest.mark.slow
@pytest.mark.parametrize("name", each_preset())
def test_config_of_rebuilds_every_preset(name):
    """build(config_of(model)) gives the same layer names, classes and weight shapes, the
    config is the preset's, and its counts equal those of the built model."""
    preset, model = PRESETS[name], small_model(name)
    config = kresnet.config_of(model)
    expected = preset.config.replace(classes=5, input_shape=small_shape(preset),
                                     **narrowed(preset))
    # Where both roundings give these widths, se_divisor is read as the first that does.
    assert config.replace(se_divisor=expected.se_divisor) == expected, name
    # Names, classes and weight shapes: the rebuild declares its weights without making them.
    with structure_only():
        rebuilt = kresnet.build(config)
    assert _layout(rebuilt) == _layout(model)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert config.count_params() == (model.count_params(), trainable)


@pytest.mark.slow
@pytest.mark.parametrize("name", each_preset())
def test_every_preset_small_saves_loads_draws_and_is_named(name, tmp_path):
    """Its shapes and names, its graph, and a .keras file that a new Python without kresnet
    loads, safe_mode on, with the same layer names and outputs."""
    preset, model = PRESETS[name], small_model(name)
    assert model.output_shape == (None, 5), name
    assert automatic_names(model) == [], name
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    sums = _block_sums(model)
    assert len(sums) == sum(len(stage) for stage in kresnet.plan(
        preset.depth, **{k: v for k, v in preset.options.items()
                         if k in ("blocks", "block_type")}).stages)
    assert all(s.startswith("res") for s in sums)
    assert names[:2] == ["input", "conv1" if preset.options.get("stem") == "cifar"
                         else ("conv1a_pad" if "stem" in preset.options else "conv1_pad")]
    # The graph of every preset; test_plot renders pictures and checks them whole.
    dot = open(kresnet.plot_model(model, tmp_path / f"{name}.dot"), encoding="utf-8").read()
    assert all(f'"{layer}"' in dot or f"{layer} " in dot for layer in sums[-1:]), name
    x = small_input(name)
    outputs, loaded_names = load_one_in_fresh_process(model, tmp_path, x)
    # kresnet.load's checks pass on every preset's file (issue 14: the limits are generous
    # enough for real models); the fresh process above is Keras loading the same file.
    saved = sorted(tmp_path.glob("*.keras"))
    assert len(saved) == 1
    assert safety.check_keras_file(str(saved[0])).weight_shapes, saved[0].name
    assert loaded_names == names, model.name
    np.testing.assert_allclose(outputs, np.asarray(model(x, training=False)), atol=1e-6,
                               err_msg=model.name)


def test_build_overrides_and_errors():
    model = kresnet.build("resnet50", input_shape=(64, 64, 3), classes=7, use_bias=True,
                          name_prefix="x_")
    assert model.name == "x_resnet50" and model.output_shape == (None, 7)
    assert model.get_layer("x_res2a_branch2a").use_bias
    assert kresnet.build("resnet18", include_top=False, pooling="avg").output_shape == (None, 512)
    with pytest.raises(ValueError, match="`name` must be one of the presets"):
        kresnet.build("resnet51")
    with pytest.raises(TypeError, match="Unknown option"):
        kresnet.build("resnet50", strides=2)
