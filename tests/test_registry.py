"""Published weights by name (kresnet.WEIGHTS): the registry's facts against timm's,
torchvision's and keras.applications' own, the download -> check -> convert -> cache path on
local files in each source's own format, preprocessing that comes with the weights, and
freezing for fine-tuning."""

import dataclasses
import hashlib
import json
import os
import subprocess

import keras
import numpy as np
import pytest

import kresnet
from kresnet import downloads, pytorch, registry
from tests.conftest import LOADER, ROOT, run_in_fresh_process
from tests.test_pytorch import write_safetensors


def test_every_entry_is_complete_and_names_an_architecture_kresnet_builds():
    for name, entry in kresnet.WEIGHTS.items():
        assert name == f"{entry.arch}.{entry.tag}"
        assert entry.source in ("torchvision", "timm", "keras.applications")
        assert entry.url.startswith("https://") and entry.licence and entry.top1 > 60
        assert entry.mode in ("caffe", "torch", "tf") and len(entry.mean) == len(entry.std) == 3
        assert entry.preset in kresnet.PRESETS
        if entry.torch:
            assert entry.arch in pytorch.ARCHITECTURES
    for arch, tag in registry.DEFAULT_TAGS.items():
        assert f"{arch}.{tag}" in kresnet.WEIGHTS
    # The figures the issue cites.
    top1 = {name: kresnet.WEIGHTS[name].top1 for name in (
        "resnet50.tv2_in1k", "resnet101.tv2_in1k", "resnet152.tv2_in1k", "resnet50.a1_in1k",
        "resnet50d.ra4_e3600_r224_in1k", "resnet152.a1h_in1k", "resnet50.keras_in1k")}
    assert top1 == {"resnet50.tv2_in1k": 80.858, "resnet101.tv2_in1k": 81.886,
                    "resnet152.tv2_in1k": 82.284, "resnet50.a1_in1k": 80.382,
                    "resnet50d.ra4_e3600_r224_in1k": 80.956, "resnet152.a1h_in1k": 82.818,
                    "resnet50.keras_in1k": 74.9}


def test_keras_entries_carry_keras_applications_own_addresses_and_hashes():
    from keras.src.applications import resnet  # noqa: PLC0415 - where Keras keeps them

    for name, entry in kresnet.WEIGHTS.items():
        if not entry.torch:
            assert entry.url == (f"{resnet.BASE_WEIGHTS_PATH}{entry.arch}"
                                 "_weights_tf_dim_ordering_tf_kernels.h5")
            assert entry.file_hash == resnet.WEIGHTS_HASHES[entry.arch][0]


def test_every_keras_entry_builds_a_network_that_keras_weights_fit():
    from kresnet import weights as weight_files  # noqa: PLC0415
    from kresnet.models import build_config  # noqa: PLC0415

    for entry in kresnet.WEIGHTS.values():
        if not entry.torch:
            config = build_config(entry.preset, **entry.options)
            weight_files.check_imagenet(config)  # raises for a configuration keras lacks
            assert config.keras_applications() is not None, entry.name
    # A stem that pools otherwise is not keras' network, although every shape fits.
    with pytest.raises(ValueError, match="differ: stem_pool"):
        weight_files.check_imagenet(build_config("resnet50v2", stem_pool="ignore"))


@pytest.mark.slow
def test_keras_weights_by_name_with_their_preprocessing_built_in(tmp_path, monkeypatch):
    """resnet50.keras_in1k with include_preprocessing: the Caffe BGR conv keeps its fixed
    weights while the file's are moved by name (the download is a file made here)."""
    reference = keras.applications.ResNet50(weights=None, include_top=False,
                                            input_shape=(64, 64, 3))
    path = str(tmp_path / "resnet50_notop.h5")
    reference.save(path)
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: path)
    model = kresnet.pretrained("resnet50.keras_in1k", include_top=False,
                               input_shape=(64, 64, 3), include_preprocessing=True)
    assert model.layers[1].name == "preprocess_bgr"
    x = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3)).astype("float32")
    expected = np.asarray(reference(keras.applications.resnet.preprocess_input(x.copy())))
    ours = np.asarray(model(x))
    assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.slow
def test_timm_and_torchvision_entries_match_their_own_metadata(tmp_path):
    """timm's pretrained_cfg and torchvision's Weights enum, run in .venv-torch."""
    python = os.environ.get("KRESNET_TORCH_PYTHON")
    if not python:
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            pytest.fail("KRESNET_TORCH_PYTHON is not set: bash scripts/test.sh sets it")
        pytest.skip("torchvision and timm are not set up (KRESNET_TORCH_PYTHON)")
    names = [name for name, entry in kresnet.WEIGHTS.items() if entry.torch]
    (tmp_path / "names.json").write_text(json.dumps(names), encoding="utf-8")
    result = subprocess.run([python, os.path.join(ROOT, "scripts", "torch_reference.py"),
                             "registry", str(tmp_path), str(tmp_path / "names.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads((tmp_path / "registry.json").read_text(encoding="utf-8"))
    for name in names:
        entry, timm = kresnet.WEIGHTS[name], facts[name]["timm"]
        assert timm["num_classes"] == 1000, name
        assert timm["license"] == entry.licence, name
        assert tuple(timm["mean"]) == entry.mean and tuple(timm["std"]) == entry.std, name
        if entry.source == "timm":
            assert timm["hf_hub_id"] == f"timm/{name}", name
            assert timm["input_size"] == [3, entry.input_size, entry.input_size], name
            assert (timm["test_input_size"] or [None])[-1] == entry.test_input_size, name
            assert (timm["crop_pct"], timm["interpolation"]) == (
                entry.crop_pct, entry.interpolation), name
        else:
            vision = facts[name]["torchvision"]
            assert timm["url"] == entry.url and vision is not None, name
            assert vision["acc1"] == entry.top1, name
            assert vision["crop"] == entry.input_size == 224, name
            assert entry.crop_pct == 224 / vision["resize"], name
            assert vision["interpolation"] == entry.interpolation, name
            assert tuple(vision["mean"]) == entry.mean and tuple(vision["std"]) == entry.std


@pytest.fixture
def published(tmp_path, monkeypatch):
    """Two published files made here, in their sources' own formats: torchvision's
    resnet18 as a ``torch.save``d state_dict, timm's resnet18d as a safetensors file, with
    random weights; the registry serves them from ``file://`` addresses, with the .pth
    file's real SHA-256 prefix, and the cache lives in ``tmp_path``."""
    torch = pytest.importorskip("torch")
    files, originals = {}, {}
    entries = dict(registry.WEIGHTS)
    for name, preset, extra in (("resnet18.tv_in1k", "resnet18", {}),
                                ("resnet18d.ra2_in1k", "resnet18", pytorch._D)):
        source = kresnet.build(preset, input_shape=(32, 32, 3), classifier_activation=None,
                               **pytorch.TORCH_OPTIONS, **extra)
        state = kresnet.to_torch(source)
        if name.endswith("tv_in1k"):
            path = tmp_path / "served" / "resnet18-f37072fd.pth"
            path.parent.mkdir()
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        else:
            path = tmp_path / "served" / "model.safetensors"
            write_safetensors(path, {k: v for k, v in state.items()
                                     if not k.endswith("num_batches_tracked")})
            digest = None
        entries[name] = dataclasses.replace(entries[name], url=path.as_uri(),
                                            file_hash=digest)
        files[name], originals[name] = path, source
    monkeypatch.setattr(registry, "WEIGHTS", entries)
    monkeypatch.setenv("KRESNET_CACHE", str(tmp_path / "cache"))
    return files, originals


def test_named_weights_download_once_convert_once_and_load_from_the_cache(published,
                                                                          tmp_path):
    files, originals = published
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model = kresnet.build("resnet18", weights="tv_in1k", input_shape=(32, 32, 3),
                          classifier_activation=None)
    expected = np.asarray(originals["resnet18.tv_in1k"](x))
    np.testing.assert_allclose(model(x), expected, rtol=0, atol=1e-5)
    cache = tmp_path / "cache" / "kresnet"
    assert sorted(os.listdir(cache)) == ["converted", "resnet18-f37072fd.pth"]
    assert os.listdir(cache / "converted") == ["resnet18.tv_in1k.h5"]
    # From now on the converted file is read: the published one may be gone.
    files["resnet18.tv_in1k"].unlink()
    (cache / "resnet18-f37072fd.pth").unlink()
    again = kresnet.build("resnet18", weights="resnet18.tv_in1k", include_top=False,
                          pooling="avg", input_shape=(32, 32, 3), name_prefix="tv_")
    features = keras.Model(originals["resnet18.tv_in1k"].input,
                           originals["resnet18.tv_in1k"].get_layer("avg_pool").output)
    np.testing.assert_allclose(again(x), features(x), rtol=0, atol=1e-5)
    # A timm net that no preset is, from a safetensors file whose hash nobody published.
    with pytest.warns(UserWarning, match="No hash of resnet18d.ra2_in1k's file"):
        deep = kresnet.pretrained("resnet18d", input_shape=(32, 32, 3),
                                  classifier_activation=None)
    assert deep.name == "resnet18d" and kresnet.config_of(deep).stem == "deep"
    np.testing.assert_allclose(deep(x), originals["resnet18d.ra2_in1k"](x), rtol=0, atol=1e-5)


def test_a_file_that_fails_its_hash_is_deleted_and_nothing_is_built(published, tmp_path):
    files, _ = published
    entry = registry.WEIGHTS["resnet18.tv_in1k"]
    registry.WEIGHTS["resnet18.tv_in1k"] = dataclasses.replace(entry, file_hash="00000000")
    with pytest.raises(ValueError, match="does not start with the published 00000000"):
        kresnet.build("resnet18", weights="tv_in1k")
    cache = tmp_path / "cache" / "kresnet"
    assert not (cache / "resnet18-f37072fd.pth").exists()
    assert not (cache / "converted").exists()
    registry.WEIGHTS["resnet18.tv_in1k"] = dataclasses.replace(entry, url="file:///nowhere.pth")
    with pytest.raises(RuntimeError, match="Without internet, fetch the file elsewhere"):
        kresnet.build("resnet18", weights="tv_in1k")


def test_an_unusable_unhashed_download_is_deleted_and_a_callers_layers_keep_theirs(
        published, tmp_path):
    files, originals = published
    files["resnet18d.ra2_in1k"].write_bytes(b"<html>not found</html>")
    with pytest.warns(UserWarning), pytest.raises(ValueError):
        kresnet.pretrained("resnet18d.ra2_in1k", input_shape=(32, 32, 3))
    cache = tmp_path / "cache" / "kresnet"
    assert not (cache / "resnet18d.ra2_in1k.safetensors").exists()
    assert not (cache / "converted").exists()
    # The caller's own layers in front of the ResNet keep their weights.
    image = keras.Input((32, 32, 3), name="image")
    mine = keras.layers.Conv2D(3, 1, name="colour_mix")(image)
    before = [np.array(w) for w in mine._keras_history.operation.weights]
    model = kresnet.build("resnet18", weights="tv_in1k", input_tensor=mine,
                          classifier_activation=None)
    assert all(np.array_equal(a, np.array(b)) for a, b in
               zip(before, model.get_layer("colour_mix").weights))
    x = np.random.default_rng(6).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    mixed = np.asarray(model.get_layer("colour_mix")(x))
    np.testing.assert_allclose(model(x), originals["resnet18.tv_in1k"](mixed), atol=1e-5)


@pytest.mark.slow
def test_included_preprocessing_takes_raw_images_and_loads_without_kresnet(published,
                                                                          tmp_path):
    _, originals = published
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    model = kresnet.build("resnet18", weights="tv_in1k", input_shape=(32, 32, 3),
                          classifier_activation=None, include_preprocessing=True)
    assert [layer.name for layer in model.layers[:4]] == [
        "input", "preprocess_rescale", "preprocess_normalize", "conv1_pad"]
    expected = np.asarray(originals["resnet18.tv_in1k"](
        kresnet.preprocess_input(x, weights="resnet18.tv_in1k")))
    ours = np.asarray(model(x))
    assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()
    assert kresnet.config_of(model).model_name == "resnet18"
    # The preprocessing is no part of the torch network: the same state_dict comes back.
    state, original = kresnet.to_torch(model), kresnet.to_torch(originals["resnet18.tv_in1k"])
    assert sorted(state) == sorted(original)
    np.testing.assert_array_equal(state["conv1.weight"], original["conv1.weight"])
    saved = tmp_path / "preprocessed.keras"
    model.save(saved)
    np.save(f"{saved}.in.npy", x)
    loaded = run_in_fresh_process(LOADER, [saved])
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    np.testing.assert_allclose(np.load(f"{saved}.out.npy"), ours, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_preprocessing_layers_equal_preprocess_input(mode):
    x = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    from kresnet.preprocessing import preprocessing_layers  # noqa: PLC0415

    layers = keras.Model(inputs, preprocessing_layers(inputs, mode))
    expected = kresnet.preprocess_input(x, mode=mode)
    if mode == "caffe":  # a 1x1 conv of ones and zeros: the same numbers exactly
        np.testing.assert_array_equal(layers(x), expected)
    else:
        np.testing.assert_allclose(layers(x), expected, rtol=0, atol=2e-6)


def test_the_default_preprocessing_follows_the_weights():
    x = np.random.default_rng(3).integers(0, 256, (1, 4, 4, 3)).astype("uint8")
    from keras.applications import resnet, resnet_v2  # noqa: PLC0415

    np.testing.assert_array_equal(kresnet.preprocess_input(x),
                                  resnet.preprocess_input(x.astype("float32")))
    np.testing.assert_array_equal(kresnet.preprocess_input(x, weights="resnet50.keras_in1k"),
                                  kresnet.preprocess_input(x))
    np.testing.assert_allclose(kresnet.preprocess_input(x, weights="resnet50v2.keras_in1k"),
                               resnet_v2.preprocess_input(x.astype("float32")), atol=1e-6)
    np.testing.assert_array_equal(kresnet.preprocess_input(x, weights="resnet50.tv2_in1k"),
                                  kresnet.preprocess_input(x, mode="torch"))
    inception = kresnet.preprocess_input(x, weights="resnet50d.ra4_e3600_r224_in1k")
    np.testing.assert_allclose(inception, x / 127.5 - 1, atol=1e-6)
    # An explicit mode wins over the weights' own.
    np.testing.assert_array_equal(
        kresnet.preprocess_input(x, mode="caffe", weights="resnet50.tv2_in1k"),
        kresnet.preprocess_input(x))


@pytest.mark.parametrize("call,error,message", [
    (lambda: kresnet.build("resnet50", weights="tv2_in1k"), ValueError,
     r"'resnet50.tv2_in1k' is 'resnet50_v1_5''s \(kresnet.build\('resnet50_v1_5'"),
    (lambda: kresnet.build("resnet18", weights="resnet18d.ra2_in1k"), ValueError,
     r"belongs to 'resnet18d', which kresnet builds as 'resnet18d'.*"
     r"kresnet.pretrained\('resnet18d.ra2_in1k'\)"),
    (lambda: kresnet.build("resnet18", weights="tv_in1k", bn_epsilon=1e-3), ValueError,
     r"`bn_epsilon`=0.001 does not fit the weights 'resnet18.tv_in1k', which need "
     r"bn_epsilon=1e-05"),
    (lambda: kresnet.build("resnet50_v1_5", weights="tv2_in1k", stride_on="1x1"), ValueError,
     r"`stride_on`='1x1' does not fit"),
    (lambda: kresnet.pretrained("resnet18.tv_in1k", classes=10), ValueError,
     r"1000-class 'fc' head: pass include_top=False"),
    (lambda: kresnet.pretrained("resnet18.nothing"), ValueError,
     r"the weights of 'resnet18' are resnet18.tv_in1k, "),
    (lambda: kresnet.pretrained(50), TypeError, r"`name` must be a weights name"),
    (lambda: kresnet.build("resnet18", weights="nothing"), ValueError,
     r"'nothing' is not a tag of the weights of 'resnet18'"),
    (lambda: kresnet.build(kresnet.PRESETS["resnet18"].config, weights="tv_in1k"),
     ValueError, r"need a preset name"),
    (lambda: kresnet.build("resnet18", include_preprocessing=True), ValueError,
     r"`include_preprocessing`=True takes the preprocessing of named weights"),
    (lambda: kresnet.build("resnet18", include_preprocessing="bgr"), ValueError,
     r"`include_preprocessing` must be one of True, False, 'caffe', 'torch', 'tf'"),
    (lambda: kresnet.build("resnet18", input_shape=(32, 32, 1), include_preprocessing="tf"),
     ValueError, r"must have 3 channels"),
    (lambda: kresnet.create_resnet(weights="tv_in1k"), ValueError,
     r"a name of kresnet.WEIGHTS; no file at 'tv_in1k'"),
])
def test_bad_weights_names_and_options_are_refused_before_anything_is_built(call, error,
                                                                           message):
    with pytest.raises(error, match=message):
        call()


def test_frozen_stages_run_batch_norm_in_inference_mode_and_stay_unchanged():
    model = kresnet.build("resnet18", input_shape=(32, 32, 3), classes=3,
                          widths=(8, 16, 32, 64), stem_width=8)
    frozen = kresnet.freeze(model, "res3")
    assert "res3b_branch2b" in frozen and "res4a_branch2a" not in frozen
    assert not model.get_layer("bn_conv1").trainable and model.get_layer("bn4a_branch1").trainable
    before = {name: [np.array(w) for w in model.get_layer(name).weights]
              for name in ("bn_conv1", "res3b_branch2b", "bn3b_branch2b", "fc3")}
    # In training mode a frozen BN normalises with its moving statistics, as in inference.
    probe = keras.Model(model.input, model.get_layer("bn3b_branch2b").output)
    x = np.random.default_rng(4).normal(size=(8, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(probe(x, training=True), probe(x, training=False),
                               rtol=0, atol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    for name in ("bn_conv1", "res3b_branch2b", "bn3b_branch2b"):
        for old, new in zip(before[name], model.get_layer(name).weights):
            np.testing.assert_array_equal(old, np.array(new), err_msg=name)
    assert not np.array_equal(before["fc3"][0], np.array(model.get_layer("fc3").kernel))
    # The second phase moves the boundary; None trains everything.
    assert "res3b_branch2b" not in kresnet.freeze(model, "res2")
    assert kresnet.freeze(model, None) == [] and all(layer.trainable for layer in model.layers)
    with pytest.raises(ValueError, match=r"`up_to` must be one of None, 'stem', 'res2', "
                                         r"'res3', 'res4', 'res5'"):
        kresnet.freeze(model, "res6")
