"""kresnet.export: ONNX and SavedModel artifacts of fresh models give the Keras outputs."""

import importlib
import os

import keras
import numpy as np
import pytest

import kresnet

export_module = importlib.import_module("kresnet.exporting")
export = export_module.export

REQUIRE = os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1"
ON_TF = keras.backend.backend() == "tensorflow"


def _need(*packages):
    """Skip (fail when KRESNET_REQUIRE_EXTRAS=1, as in CI) unless every package imports."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            message = (f"{package} is not installed; `pip install kresnet[export]` "
                       "(scripts/setup-env.sh does) to run this test")
            if REQUIRE:
                pytest.fail(message)
            pytest.skip(message)


needs_tf = pytest.mark.skipif(not ON_TF, reason="exports from and reloads with the TensorFlow "
                              f"back end; this run uses {keras.backend.backend()!r}")


def small_model():
    return kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1), block_type="basic", head="fc")


def _input(model, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(
        0, 1, (batch, *model.input_shape[1:])).astype("float32")


@pytest.mark.slow
@needs_tf
@pytest.mark.parametrize("make", [
    # 32x32, the smallest input of these stems: the converted graph and weights are the
    # same at any fixed size, and each Keras and onnxruntime call costs less.
    lambda: kresnet.create_resnet((32, 32, 3), 5, 18, head="fc"),
    lambda: kresnet.build("resnet50v2", input_shape=(32, 32, 3), classes=5),
], ids=["resnet18", "resnet50v2"])
def test_onnx_of_a_never_called_model_matches_keras(make, tmp_path):
    _need("onnx", "tf2onnx", "onnxruntime")
    import onnxruntime

    keras.utils.set_random_seed(0)
    model = make()
    assert getattr(model, "_called", False) is False, "the model must be fresh for this test"
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an older export")
    assert export(model, path) == str(path)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"], "a temporary file was left behind"

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_input,) = session.get_inputs()
    for batch in (1, 3):  # the batch size stays variable
        x = _input(model, batch, seed=batch)
        (got,) = session.run(None, {onnx_input.name: x})
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)


@pytest.mark.slow
@needs_tf
def test_savedmodel_reloads_and_replaces_the_old_folder(tmp_path):
    model = small_model()
    path = tmp_path / "saved"
    path.mkdir()
    (path / "stale.txt").write_text("from an older export")
    assert export(model, str(path), format="savedmodel") == str(path)
    assert sorted(os.listdir(tmp_path)) == ["saved"]
    assert "stale.txt" not in os.listdir(path) and "saved_model.pb" in os.listdir(path)

    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
    x = _input(model)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(model(x, training=False)),
                               atol=1e-5)


@pytest.mark.slow
@needs_tf
def test_variable_input_size_is_kept(tmp_path):
    """A model with None height/width is called at 224 when fresh and exports any size."""
    model = kresnet.ResNet18(include_top=False, input_shape=(None, None, 3), pooling="avg")
    path = export(model, tmp_path / "features", format="savedmodel")
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
    x = np.random.default_rng(3).uniform(0, 1, (1, 40, 72, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(model(x, training=False)),
                               atol=1e-5)


@pytest.mark.parametrize("format", ["tflite", "ONNX", None, "tf_saved_model"])
def test_unknown_format_is_refused_before_anything_happens(format, tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match=r"`format` must be one of 'onnx', 'savedmodel'"):
        export(model, tmp_path / "model.onnx", format=format)
    assert not getattr(model, "_called", False) and os.listdir(tmp_path) == []


def test_a_non_model_is_refused(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        export(keras.layers.Dense(2), tmp_path / "model.onnx")
    with pytest.raises(TypeError, match="`path`"):
        export(small_model(), None)


def test_missing_packages_are_named(monkeypatch, tmp_path):
    model = small_model()
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tf2onnx", "onnx") else real(name, *a))
    monkeypatch.setattr(export_module.keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ImportError, match=r"tf2onnx, onnx.*pip install kresnet\[export\]"):
        export(model, tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_onnx_on_another_back_end_is_refused(backend, monkeypatch, tmp_path):
    model = small_model()
    monkeypatch.setattr(export_module.keras.backend, "backend", lambda: backend)
    with pytest.raises(RuntimeError, match=f"back end to be tensorflow; it is '{backend}'"):
        export(model, tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


@needs_tf
def test_a_folder_is_not_replaced_by_a_file(tmp_path):
    _need("onnx", "tf2onnx")
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        export(small_model(), tmp_path / "model.onnx")


@needs_tf
@pytest.mark.parametrize("format", ["onnx", "savedmodel"])
def test_a_failed_export_keeps_the_old_artifact(format, monkeypatch, tmp_path):
    """Failing half-way, the export leaves the old file or folder as it was, and no
    temporary file behind."""
    if format == "onnx":
        _need("onnx", "tf2onnx")
    model = small_model()
    target = tmp_path / ("model.onnx" if format == "onnx" else "saved")
    if format == "onnx":
        target.write_bytes(b"old")
    else:
        target.mkdir()
        (target / "saved_model.pb").write_bytes(b"old")

    def half_written_then_fail(path, **kwargs):
        with open(path, "wb") as half:
            half.write(b"half")
        raise RuntimeError("export interrupted")

    monkeypatch.setattr(model, "export", half_written_then_fail)
    with pytest.raises(RuntimeError, match="export interrupted"):
        export(model, target, format=format)
    old = target if format == "onnx" else target / "saved_model.pb"
    assert old.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == [target.name], "a temporary file was left behind"


@pytest.mark.slow
@needs_tf
def test_onnx_of_a_model_with_normalization_runs_without_extra_inputs(tmp_path):
    """Keras' Normalization keeps its statistics as eager tensors, which tf2onnx made into
    graph inputs that nobody feeds: export writes them as a Rescaling of the same map."""
    _need("onnx", "tf2onnx", "onnxruntime")
    import onnxruntime

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    norm = keras.layers.Normalization(mean=[0.2, 0.4, 0.6], variance=[0.04, 0.09, 1e-9],
                                      name="normalize")
    body = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), widths=(8,), stem_width=8,
                                 head="fc")
    model = keras.Model(inputs, body(norm(inputs)), name="with_normalization")
    copy = export_module.exportable(model)
    assert type(copy.get_layer("normalize")) is keras.layers.Rescaling
    assert model.get_layer("normalize").__class__ is keras.layers.Normalization  # unchanged
    path = tmp_path / "normalized.onnx"
    export(model, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == 1
    x = _input(model, 3)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)
    # A model without Normalization is exported as it is, not copied.
    plain = small_model()
    assert export_module.exportable(plain) is plain
