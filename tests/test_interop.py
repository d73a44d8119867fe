"""Equal to keras.applications, weights by name in both schemes, ImageNet mapping, features."""

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import zero_initial_weights


# The tests that share the module fixtures, or the ResNet-50s at 64x64 of ``full_size``,
# run on one pytest-xdist worker, so that each is made once (test_keras_equivalence's
# ResNet50 and ResNet50V2 join them); the others (the deep models) spread freely.
SHARED = pytest.mark.xdist_group("test_interop")

#: kresnet's ResNet-50 and ResNet-50 v2 at 64x64 with logits: ``full_size.fresh(*R50)``.
R50 = ("ResNet50", {"input_shape": (64, 64, 3), "classifier_activation": None})
R50V2 = ("build", "resnet50v2", {"input_shape": (64, 64, 3), "classifier_activation": None})


def fresh_model(full_size, spec):
    """``full_size.fresh`` of a spec above: the shared model, with its weights as built."""
    *args, options = spec
    return full_size.fresh(*args, **options)

APPS = ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2"]


def randomise_statistics(model, seed=0):
    """Random BN statistics and betas: with fresh ones every BN is near the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma + rng.normal(0, 0.1, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               (np.abs(rng.normal(1, 0.2, variance.shape)) + 0.5)
                               .astype("float32")])


def images(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(b).max() > 0.05
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())


@pytest.mark.slow
@pytest.mark.parametrize("app", APPS)
def test_from_and_to_keras_applications_compute_the_same_function(app):
    keras.backend.clear_session()
    reference = getattr(keras.applications, app)(weights=None, include_top=False,
                                                 pooling="avg", input_shape=(None, None, 3))
    randomise_statistics(reference)
    ours = kresnet.from_keras_applications(reference)
    assert ours.get_layer("bn2a_branch2a").epsilon == pytest.approx(1.001e-5)
    # The reference runs once on both 64x64 pairs (an eager call of a deep model costs
    # about as much at 64 as at 224): images(64) for ``ours``, images(64, seed=1) for ``back``.
    at_64 = np.asarray(reference(np.concatenate([images(64), images(64, seed=1)]),
                                 training=False))
    assert_same(ours(images(64), training=False), at_64[:2])
    x = images(224, n=1)
    assert_same(ours(x, training=False), reference(x, training=False))
    with zero_initial_weights():  # every weight of the reference is transferred
        back = kresnet.to_keras_applications(ours)
    assert_same(back(images(64, seed=1), training=False), at_64[2:])


@SHARED
@pytest.mark.slow
@pytest.mark.parametrize("app,ours", [("ResNet50", R50), ("ResNet50V2", R50V2)],
                         ids=["ResNet50", "ResNet50V2"])
def test_with_heads_both_ways(app, ours, full_size):
    model = fresh_model(full_size, ours)
    randomise_statistics(model)
    with zero_initial_weights():  # every weight of the reference is transferred
        reference = kresnet.to_keras_applications(model)
    assert reference.get_layer("predictions").units == 1000
    x = images(64)
    assert_same(reference(x, training=False), model(x, training=False))
    again = kresnet.from_keras_applications(reference)
    assert_same(again(x, training=False), model(x, training=False))
    assert again.layers[-1].name == "fc1000"


@SHARED
@pytest.mark.slow
def test_a_mismatched_pair_names_the_first_layer_that_does_not_fit(full_size):
    r50 = full_size.fresh("ResNet50", include_top=False, input_shape=(64, 64, 3))
    with zero_initial_weights():  # only the errors are read
        r101 = kresnet.ResNet101(include_top=False, input_shape=(64, 64, 3))
        v15 = kresnet.build("resnet50_v1_5", input_shape=(64, 64, 3), use_bias=True)
        r18 = kresnet.ResNet18(input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="Layer 'res3b1_branch2a' of 'resnet101' has no "
                                         "counterpart 'res3b1_branch2a' in 'resnet50'"):
        kresnet.transfer_weights(r50, r101)
    with pytest.raises(ValueError, match="counterpart"):
        kresnet.transfer_weights(r101, r50)
    with pytest.raises(ValueError, match="layer 'res3a_branch2a'.*strides"):
        kresnet.to_keras_applications(v15)
    with pytest.raises(ValueError, match="keras.applications has ResNet50"):
        kresnet.to_keras_applications(r18)


@pytest.fixture(scope="module")
def pair():
    """A keras.applications ResNet50 with random statistics and kresnet's equivalent.
    Neither is changed by the tests that take it."""
    reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3),
                                            classifier_activation=None)
    randomise_statistics(reference, seed=3)
    return reference, kresnet.from_keras_applications(reference)


@pytest.fixture(scope="module")
def pair_h5(pair, tmp_path_factory):
    """``pair[0].save`` as a Keras 2 style HDF5 file (names inside), written once."""
    path = str(tmp_path_factory.mktemp("pair") / "r50.h5")
    pair[0].save(path)
    return path


@pytest.fixture(scope="module")
def pair_output(pair):
    """``pair[0]`` on ``images(64)``, the expected output of every model loaded from it."""
    return np.asarray(pair[0](images(64), training=False))


@SHARED
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["keras", "kresnet"])
@pytest.mark.parametrize("kind", ["legacy.h5", "weights.h5", "keras"])
def test_load_weights_reads_every_format_in_both_schemes(pair, pair_h5, pair_output, scheme,
                                                        kind, full_size, tmp_path):
    source = pair[0] if scheme == "keras" else pair[1]
    path = str(tmp_path / f"source.{kind}")
    if kind == "legacy.h5" and scheme == "keras":
        path = pair_h5  # pair[0].save(path), written once for the file
    elif kind == "legacy.h5":
        source.save(path)  # a Keras 2 style HDF5 file, names inside
    elif kind == "weights.h5":
        source.save_weights(path)  # Keras 3: no names inside
    else:
        source.save(path)
    target = fresh_model(full_size, R50)
    report = kresnet.load_weights(target, path)
    assert report["skipped"] == [] and len(report["loaded"]) == len(
        [layer for layer in target.layers if layer.weights])
    assert_same(target(images(64), training=False), pair_output)


@SHARED
@pytest.mark.slow
def test_skip_mismatch_reports_a_head_of_another_class_count(pair, pair_h5, full_size):
    path = pair_h5  # pair[0].save(path)
    with zero_initial_weights():  # every weight but fc5's is loaded
        target = kresnet.ResNet50(input_shape=(64, 64, 3), classes=5)
    with pytest.raises(ValueError, match="'fc5'"):
        kresnet.load_weights(target, path)
    report = kresnet.load_weights(target, path, skip_mismatch=True)
    assert report["skipped"] == ["fc5"]
    np.testing.assert_array_equal(np.asarray(target.get_layer("res5c_branch2c").kernel),
                                  np.asarray(pair[0].get_layer("conv5_block3_3_conv").kernel))
    headless = full_size.fresh("ResNet50", include_top=False, input_shape=(64, 64, 3))
    assert kresnet.load_weights(headless, path)["skipped"] == []


@SHARED
@pytest.mark.slow
def test_load_weights_refuses_the_wrong_depth(pair_h5, full_size, tmp_path):
    path = pair_h5  # pair[0].save(path)
    # keras.applications numbers blocks, so stage 3 (4 blocks in both) maps; stage 4 does not.
    with zero_initial_weights():  # only the error is read
        r101 = kresnet.ResNet101(input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="'res4b6_branch2a' of 'resnet101' has no counterpart "
                                         "'conv4_block7_1_conv'"):
        kresnet.load_weights(r101, path)
    with pytest.raises(ValueError, match="no file at"):
        kresnet.load_weights(fresh_model(full_size, R50), str(tmp_path / "missing.h5"))


@SHARED
@pytest.mark.slow
@pytest.mark.parametrize("top", [True, False])
def test_imagenet_weights_are_mapped_by_name(pair, pair_h5, pair_output, top, tmp_path,
                                             monkeypatch):
    """The download is replaced by a file in keras.applications' format made here."""
    with zero_initial_weights():  # filled from pair[0] below
        reference = pair[0] if top else keras.applications.ResNet50(
            weights=None, include_top=False, input_shape=(64, 64, 3))
    if top:
        path = pair_h5  # reference.save(path)
    else:
        kresnet.transfer_weights(pair[0], reference, skip_mismatch=True)
        path = str(tmp_path / "imagenet.h5")
        reference.save(path)
    asked = []

    def fake_get_file(fname, origin, **kwargs):
        asked.append((fname, origin, kwargs.get("file_hash")))
        return path

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    with zero_initial_weights():  # every weight is loaded from the file
        model = kresnet.ResNet50(weights="imagenet", include_top=top,
                                 input_shape=(64, 64, 3), classifier_activation=None)
    suffix = "" if top else "_notop"
    assert asked[0][0] == f"resnet50_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
    assert asked[0][1].startswith("https://") and len(asked[0][2]) == 32
    x = images(64)
    assert_same(model(x, training=False),
                pair_output if top else reference(x, training=False))


def test_imagenet_download_failure_and_wrong_configuration(monkeypatch, count_layers):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="Could not download the ImageNet weights "
                                           "resnet101v2_weights"), zero_initial_weights():
        kresnet.build("resnet101v2", weights="imagenet", include_top=False)
    before = count_layers()
    with pytest.raises(ValueError, match="these arguments differ: use_bias"):
        kresnet.ResNet50(weights="imagenet", use_bias=False)
    with pytest.raises(ValueError, match="differ: .*n_classes"):
        kresnet.ResNet50(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="differ: preact/stride_on/stride_block"):
        kresnet.build("resnet50_v1_5", weights="imagenet", use_bias=True)
    assert count_layers() == before


@pytest.mark.parametrize("name,expected", [
    ("resnet50", {"C2": (56, 256), "C3": (28, 512), "C4": (14, 1024), "C5": (7, 2048)}),
    ("resnet18", {"C2": (56, 64), "C3": (28, 128), "C4": (14, 256), "C5": (7, 512)}),
    ("resnet50v2", {"C2": (56, 256), "C3": (28, 512), "C4": (14, 1024), "C5": (7, 2048)}),
    ("resnet50d", {"C2": (56, 256), "C3": (28, 512), "C4": (14, 1024), "C5": (7, 2048)}),
])
def test_feature_maps_are_c2_to_c5(name, expected):
    with zero_initial_weights():  # shapes and names only
        model = kresnet.build(name, include_top=False, input_shape=(224, 224, 3))
    maps = kresnet.feature_maps(model)
    assert {k: (v.shape[1], v.shape[-1]) for k, v in maps.items()} == expected
    if name == "resnet50v2":
        assert maps["C5"]._keras_history.operation.name == "post_relu"
        assert maps["C2"]._keras_history.operation.name == "res2b"
    if name == "resnet50":
        assert maps["C4"]._keras_history.operation.name == "res4f_relu"


@pytest.mark.slow
def test_stages_backbone_trains_a_small_fpn_head():
    backbone = kresnet.create_resnet((64, 64, 3), depth=18, include_top=False,
                                     outputs="stages", name_prefix="bb_")
    assert sorted(backbone.output) == ["C2", "C3", "C4", "C5"]
    features = backbone.output
    layers = keras.layers
    top = layers.Conv2D(32, 1, name="lateral5")(features["C5"])
    for level in (4, 3, 2):
        top = layers.UpSampling2D(name=f"up{level}")(top)
        lateral = layers.Conv2D(32, 1, name=f"lateral{level}")(features[f"C{level}"])
        top = layers.Add(name=f"p{level}")([top, lateral])
    mask = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="mask")(top)
    model = keras.Model(backbone.input, mask)
    assert model.output_shape == (None, 16, 16, 1)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 64, 64, 3)).astype("float32")
    y = (rng.uniform(0, 1, (4, 16, 16, 1)) > 0.5).astype("float32")
    before = [np.asarray(w).copy() for w in model.trainable_weights[:3]]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, np.asarray(b))
               for a, b in zip(before, model.trainable_weights[:3]))
    with pytest.raises(ValueError, match="`outputs`='stages'.*include_top=False"):
        kresnet.create_resnet((64, 64, 3), outputs="stages")
