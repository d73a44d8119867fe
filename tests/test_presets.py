"""Every preset: its published parameter count, shapes, names, save/load and a picture."""

import shutil

import keras
import numpy as np
import pytest

import kresnet
from kresnet import PRESETS
from tests.conftest import automatic_names, load_in_fresh_process

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
    return (32, 32, 3) if preset.input_size == 32 else (64, 64, 3)


def narrowed(preset):
    """Stage widths a quarter of the ImageNet presets' (the CIFAR ones are small already):
    every layer kind, option and name stays, the weights shrink 16x. The natural-size
    models round-trip in test_save_load; here the 30 configurations matter, not 1.4 GB of
    weights (wide_resnet101_2 alone writes 500 MB)."""
    if preset.input_size == 32:
        return {}
    return {"widths": tuple(w // 4 for w in preset.options.get("widths", (64, 128, 256, 512)))}


def test_every_required_preset_exists_with_a_source():
    assert set(REQUIRED) <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.description
        assert preset.params is None or preset.source, name
        assert preset.counted in ("trainable", "total")


@pytest.mark.parametrize("name", list(PRESETS))
def test_published_parameter_count_at_natural_size(name):
    keras.backend.clear_session()
    preset = PRESETS[name]
    model = kresnet.build(name)
    size = preset.input_size
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, preset.classes)
    assert model.name == name
    if preset.params is None:
        return
    if preset.counted == "total":
        count = model.count_params()
    else:
        count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert count == preset.params
    if name in PUBLISHED:
        assert count == PUBLISHED[name]


def _block_sums(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]


def test_every_preset_small_saves_loads_plots_and_is_named(tmp_path):
    models, inputs = [], []
    rng = np.random.default_rng(0)
    for name, preset in PRESETS.items():
        model = kresnet.build(name, input_shape=small_shape(preset), classes=5,
                              **narrowed(preset))
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
        models.append(model)
        inputs.append(rng.uniform(0, 1, (2, *small_shape(preset))).astype("float32"))
    if shutil.which("dot"):
        for model in models:
            kresnet.plot_model(model, tmp_path / f"{model.name}.svg")
    results = load_in_fresh_process(models, tmp_path, inputs)
    for model, x, (outputs, names) in zip(models, inputs, results):
        assert names == [layer.name for layer in model.layers], model.name
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
