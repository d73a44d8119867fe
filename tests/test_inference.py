"""kresnet.optimize: the float32, bfloat16 and int8 inference paths give the float32 model's
answers (within stated tolerances), write files that load again, refuse bad arguments
before any work, and keep a really trained model's test accuracy."""

import importlib
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import kresnet

inference = importlib.import_module("kresnet.inference")

REQUIRE = os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1"
ON_TF = keras.backend.backend() == "tensorflow"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tf = pytest.mark.skipif(not ON_TF, reason="int8 exports through TensorFlow; this run "
                              f"uses {keras.backend.backend()!r}")


def _need_onnx():
    for package in ("onnx", "tf2onnx", "onnxruntime"):
        try:
            importlib.import_module(package)
        except ImportError:
            message = f"{package} is not installed (pip install kresnet[export])"
            if REQUIRE:
                pytest.fail(message)
            pytest.skip(message)


def _net(classes=4, activation="softmax"):
    keras.utils.set_random_seed(0)
    model = kresnet.build("resnet20", classes=classes, classifier_activation=activation)
    _randomise_batchnorm(model)
    return model


def _randomise_batchnorm(model, seed=1):
    """Statistics away from (0, 1), so that folding has something to fold."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, variance.shape)])


def _images(n=16, seed=0, shape=(32, 32, 3)):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


# -- float32 --------------------------------------------------------------------------------

def test_float32_is_the_folded_model_with_the_same_outputs():
    model = _net(activation=None)
    fast = kresnet.optimize(model)
    x = _images()
    assert fast.precision == "float32" and fast.onnx is None
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in fast.model.layers)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(fast.predict(x), expected, rtol=1e-4, atol=1e-5)
    # Chunked as asked: the same numbers one image at a time.
    np.testing.assert_allclose(fast.predict(x, batch_size=1), expected, rtol=1e-4, atol=1e-5)
    assert fast.predict(x[:0]).shape == (0, 4)


def test_float32_leaves_the_model_as_it_was():
    model = _net()
    before = [w.copy() for w in model.get_weights()]
    kresnet.optimize(model)
    assert "bn_conv1" in [layer.name for layer in model.layers]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


# -- bfloat16 -------------------------------------------------------------------------------

def test_bfloat16_computes_in_bfloat16_except_the_input_side_and_the_head():
    fast = kresnet.optimize(_net(), "bfloat16")
    dtypes = {layer.name: layer.compute_dtype for layer in fast.model.layers
              if not isinstance(layer, keras.layers.InputLayer)}
    assert dtypes.pop("avg_pool") == dtypes.pop("fc4") == "float32"
    assert set(dtypes.values()) == {"bfloat16"}, dtypes
    assert all(w.dtype == "float32" for w in fast.model.weights)  # variables stay float32
    assert fast.predict(_images(2)).dtype == np.float32


def test_bfloat16_logits_are_within_bfloat16_rounding_of_float32():
    """bfloat16 keeps 8 significant bits (relative step 2**-8 = 0.4%); over a 20-layer net
    the logits stay within 5% of their largest magnitude."""
    model = _net(activation=None)
    x = _images()
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = kresnet.optimize(model, "bfloat16").predict(x)
    assert np.max(np.abs(got - expected)) <= 0.05 * np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) > 0  # it really computed in bfloat16


def test_float32_layers_keeps_normalisation_before_the_first_conv():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Normalization(mean=[1.0] * 3, variance=[4.0] * 3, name="normalize")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv1")(x)
    x = keras.layers.Rescaling(2.0, name="later_scale")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, name="fc")(x)
    model = keras.Model(inputs, outputs)
    assert inference.float32_layers(model) == ["normalize", "pool", "fc"]


def test_bfloat16_keeps_squeeze_excitation_and_eca_blocks_in_bfloat16():
    """Their pools keep the spatial axes (keepdims=True) inside every block: they are no
    head, so everything up to the network's own global pooling computes in bfloat16."""
    for preset, stem_width in (("seresnet18", 8), ("ecaresnet26t", (8, 8, 8))):
        model = kresnet.build(preset, input_shape=(32, 32, 3), classes=3, widths=(8, 8, 8, 8),
                              stem_width=stem_width)
        head = inference.float32_layers(model)
        assert len(head) <= 3, (preset, head)
        copy = inference.bfloat16_copy(model)
        inside = [layer for layer in copy.layers
                  if isinstance(layer, (keras.layers.GlobalAveragePooling2D,
                                        keras.layers.Conv1D, keras.layers.Conv2D))
                  and layer.name not in head]
        assert inside and all(layer.compute_dtype == "bfloat16" for layer in inside), preset


def test_an_adapted_normalization_keeps_its_statistics_in_every_copy():
    """An adapted Normalization computes mean and variance when built or adapted, not when
    its weights are set: the folded, bfloat16 and ONNX-ready copies must compute them."""
    from kresnet.exporting import exportable

    images = _images(32) * 4.0 + 2.0
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(images)
    inputs = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inputs, _net()(norm(inputs)), name="adapted")
    expected = keras.ops.convert_to_numpy(model(images[:4], training=False))
    np.testing.assert_allclose(kresnet.optimize(model).predict(images[:4]), expected,
                               rtol=1e-4, atol=1e-5)
    got = kresnet.optimize(model, "bfloat16").predict(images[:4])
    assert np.max(np.abs(got - expected)) <= 0.05 * np.max(np.abs(expected))
    scaled = keras.ops.convert_to_numpy(norm(images[:4]))
    assert abs(scaled.mean()) < 0.5  # really normalised (the raw images have mean ~4)
    image = keras.Input((32, 32, 3), name="image")
    alone = keras.Model(image, norm(image), name="normalize_only")
    for copy in (kresnet.fold_batchnorm(alone), exportable(kresnet.fold_batchnorm(alone))):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(images[:4])), scaled,
                                   atol=1e-4)


def test_models_with_several_outputs_are_refused():
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1), widths=(4, 8),
                                  stem_width=4, include_top=False, outputs="stages")
    with pytest.raises(ValueError, match="outputs; optimize takes models with one output"):
        kresnet.optimize(model)


def test_an_equal_method_string_is_the_default_on_the_float_paths():
    method = "".join(["percen", "tile"])  # equal to the default, not the same object
    assert kresnet.optimize(_net(), "float32", method=method).precision == "float32"


def test_cli_int8_refuses_an_output_that_is_no_onnx_file_before_building(tmp_path, capsys,
                                                                       monkeypatch):
    from kresnet import cli

    images = tmp_path / "images.npy"
    np.save(images, np.zeros((2, 32, 32, 3), "float32"))
    monkeypatch.setattr(cli, "_import_quietly", lambda: pytest.fail("imported TensorFlow"))
    status = cli.main(["export", "resnet20", "-o", str(tmp_path / "out.bin"), "--precision",
                       "int8", "--calibration", str(images)])
    assert status == 2
    assert "writes an .onnx file" in capsys.readouterr().err


@pytest.mark.slow
def test_float_paths_export_keras_files_that_load_in_a_fresh_process(tmp_path):
    model = _net()
    x = _images(4)
    np.save(tmp_path / "x.npy", x)
    for precision in ("float32", "bfloat16"):
        fast = kresnet.optimize(model, precision)
        path = fast.export(tmp_path / f"{precision}.keras")
        code = ("import json, sys, numpy as np, keras\n"
                "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
                "np.save(sys.argv[2], np.asarray(m.predict(np.load(sys.argv[3]), verbose=0)))\n"
                "print(json.dumps(m.get_layer('res2a_branch2a').dtype_policy.name))\n")
        out = tmp_path / f"{precision}.npy"
        result = subprocess.run([sys.executable, "-c", code, path, str(out),
                                 str(tmp_path / "x.npy")], capture_output=True, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        policy = json.loads(result.stdout.strip().splitlines()[-1])
        assert policy == ("mixed_bfloat16" if precision == "bfloat16" else "float32")
        np.testing.assert_allclose(np.load(out), fast.predict(x), rtol=1e-3, atol=1e-4)


# -- int8 -----------------------------------------------------------------------------------

@pytest.mark.slow
@needs_tf
def test_int8_quantizes_all_but_the_first_conv_and_the_classifier(tmp_path):
    _need_onnx()
    import onnx
    import onnxruntime

    model = _net(activation=None)
    calibration, x = _images(64, seed=1), _images(16, seed=2)
    fast = kresnet.optimize(model, "int8", calibration=calibration, progress=False)
    assert fast.model is None and fast.keep_float == ("conv1", "fc4")
    graph = onnx.load_from_string(fast.onnx).graph
    quantized_inputs = {name for node in graph.node if node.op_type == "Conv"
                        for name in node.input}
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = {node.name: set(node.input) & dequantized for node in graph.node
             if node.op_type == "Conv"}
    assert quantized_inputs & dequantized
    first = [name for name in convs if "/conv1_" in name]
    assert len(first) == 1 and not convs[first[0]], "conv1 is kept in float"
    assert sum(1 for name, inputs in convs.items() if len(inputs) >= 2) == len(convs) - 1, \
        "every other conv takes a dequantized input and dequantized weights"
    # Within int8 rounding: logits to 10% of their range, and the answers mostly agree.
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = fast.predict(x)
    spread = np.max(expected) - np.min(expected)
    assert np.max(np.abs(got - expected)) <= 0.1 * spread
    # The exported file is what predict runs.
    path = fast.export(tmp_path / "net.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    again = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(again, got)
    with pytest.raises(ValueError, match=r"`path` must end in '\.onnx'"):
        fast.export(tmp_path / "net.keras")


@pytest.mark.slow
@needs_tf
def test_int8_keep_float_can_quantize_everything_and_takes_batches():
    _need_onnx()
    import onnx

    model = _net()
    batches = [(_images(8, seed=s), np.zeros(8)) for s in range(3)]  # (images, labels) pairs
    fast = kresnet.optimize(model, "int8", calibration=iter(batches), keep_float=[],
                            method="minmax", progress=False)
    graph = onnx.load_from_string(fast.onnx).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    assert all(len(set(node.input) & dequantized) >= 2 for node in convs)
    assert fast.predict(_images(3)).shape == (3, 4)


# -- checks and fallbacks -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"precision": "fp16"}, ValueError, r"`precision` must be one of 'float32', 'bfloat16', "
     r"'int8'"),
    ({"precision": "float32", "calibration": np.zeros((1, 32, 32, 3))}, ValueError,
     r"`calibration` is used by precision='int8' only"),
    ({"precision": "bfloat16", "keep_float": ["conv1"]}, ValueError,
     r"`keep_float` is used by precision='int8' only"),
    ({"precision": "float32", "method": "entropy"}, ValueError,
     r"`method` is used by precision='int8' only"),
    ({"precision": "int8"}, ValueError, r"precision='int8' needs `calibration`"),
    ({"precision": "int8", "calibration": np.zeros((4, 28, 28, 3))}, ValueError,
     r"`calibration` must have the shape \(N, 32, 32, 3\).*\(4, 28, 28, 3\)"),
    ({"precision": "int8", "calibration": np.zeros((0, 32, 32, 3))}, ValueError,
     r"`calibration` holds no images"),
    ({"precision": "int8", "calibration": 3}, TypeError, r"`calibration` must be an array"),
    ({"precision": "int8", "calibration": np.zeros((1, 32, 32, 3)), "keep_float": ["nope"]},
     ValueError, r"`keep_float` names no Conv2D or Dense layer.*\['nope'\]"),
    ({"precision": "int8", "calibration": np.zeros((1, 32, 32, 3)), "keep_float": "conv1"},
     TypeError, r"`keep_float` must be None or a list of layer names"),
    ({"method": "kl"}, ValueError, r"`method` must be one of 'minmax', 'percentile'"),
    ({"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1"),
    ({"progress": 1}, TypeError, r"`progress` must be True or False"),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, error, match, monkeypatch):
    def no_folding(*args, **kw):
        raise AssertionError("folded before the arguments were checked")

    monkeypatch.setattr("kresnet.folding.fold_batchnorm", no_folding)
    with pytest.raises(error, match=match):
        kresnet.optimize(_net(), **kwargs)


def test_a_model_that_is_no_model_is_refused():
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        kresnet.optimize("resnet50")


def test_predict_checks_its_input():
    fast = kresnet.optimize(_net())
    with pytest.raises(ValueError, match=r"`x` must have the shape \(N, 32, 32, 3\)"):
        fast.predict(np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer >= 1"):
        fast.predict(_images(1), batch_size=0)
    with pytest.raises(ValueError, match=r"`path` must end in '\.keras'"):
        fast.export("net.onnx")


def test_int8_refuses_other_back_ends_and_missing_packages(monkeypatch):
    x = np.zeros((2, 32, 32, 3), "float32")
    monkeypatch.setattr(inference.keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match=r"exports through TensorFlow.*'jax'"):
        kresnet.optimize(_net(), "int8", calibration=x)
    monkeypatch.setattr(inference.keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr(inference.importlib.util, "find_spec",
                        lambda name: None if name == "tf2onnx" else object())
    with pytest.raises(ImportError, match=r"needs tf2onnx.*pip install kresnet\[export\]"):
        kresnet.optimize(_net(), "int8", calibration=x)


@pytest.mark.parametrize("flags, precision, warns", [
    (frozenset({"avx2", "avx512f"}), "bfloat16", True),
    (frozenset({"avx2", "avx512f", "avx512_bf16"}), "bfloat16", False),
    (frozenset({"avx2"}), "int8", True),
    (frozenset({"avx2", "avx_vnni"}), "int8", False),
    (frozenset({"avx2"}), "float32", False),
    (None, "bfloat16", False),  # not known: nothing is claimed
])
def test_a_cpu_without_the_instructions_gets_a_warning_that_says_the_cost(
        flags, precision, warns, monkeypatch):
    monkeypatch.setattr(inference, "cpu_flags", lambda: flags)
    assert inference.native(precision) is (None if flags is None and precision != "float32"
                                           else not warns)
    monkeypatch.setattr(inference, "_quantize", lambda *args: b"")
    monkeypatch.setattr(inference, "InferenceModel", lambda *args, **kwargs: None)
    calibration = np.zeros((1, 32, 32, 3)) if precision == "int8" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if precision == "int8" and not ON_TF:
            pytest.skip("int8 needs the TensorFlow back end")
        kresnet.optimize(_net(), precision, calibration=calibration)
    messages = [str(w.message) for w in caught if w.category is inference.PerformanceWarning]
    assert bool(messages) is warns, messages
    if warns:
        assert "slower" in messages[0] or "half of VNNI's speed" in messages[0]


def test_cpu_flags_reads_this_machine():
    flags = inference.cpu_flags()
    if os.path.exists("/proc/cpuinfo"):
        assert flags and ({"sse2", "fp", "asimd"} & flags or any("avx" in f for f in flags))


# -- the CLI --------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, match", [
    (["--precision", "int8"], "needs --calibration"),
    (["--precision", "int8", "--calibration", "missing.npy"], "no file at 'missing.npy'"),
    (["--precision", "int8", "--format", "savedmodel", "--calibration", "x.npy"],
     "writes an ONNX file"),
    (["--precision", "bfloat16"], "bfloat16 runs in TensorFlow"),
    (["--calibration", "x.npy"], "go with --precision int8"),
    (["--format", "keras"], "writes a .keras file"),
])
def test_cli_export_refuses_combinations_before_building(arguments, match, capsys,
                                                         monkeypatch):
    from kresnet import cli

    monkeypatch.setattr(cli, "_import_quietly", lambda: pytest.fail("imported TensorFlow"))
    status = cli.main(["export", "resnet20", "-o", "out.onnx", *arguments])
    assert status == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow
def test_cli_export_writes_each_precision(tmp_path, capsys):
    from kresnet import cli

    model = _net()
    source = kresnet.save(model, tmp_path / "net.keras")
    x = _images(4)
    for precision in ("float32", "bfloat16"):
        target = tmp_path / f"{precision}.keras"
        assert cli.main(["export", source, "-o", str(target), "--precision", precision]) == 0
        loaded = kresnet.load(str(target))
        expected = kresnet.optimize(model, precision).predict(x)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-3,
                                   atol=1e-4)
    if ON_TF:
        _need_onnx()
        import onnxruntime

        np.save(tmp_path / "cal.npy", _images(32, seed=3))
        target = tmp_path / "int8.onnx"
        assert cli.main(["export", source, "-o", str(target), "--precision", "int8",
                         "--calibration", str(tmp_path / "cal.npy")]) == 0
        session = onnxruntime.InferenceSession(str(target),
                                               providers=["CPUExecutionProvider"])
        names = {node.op_type for node in __import__("onnx").load(str(target)).graph.node}
        assert "QuantizeLinear" in names
        assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (4, 4)
    assert str(tmp_path) in capsys.readouterr().out


# -- a trained model keeps its accuracy -----------------------------------------------------

@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """The demo's digits ResNet (resnet18, CIFAR stem, width 16), trained 4 epochs by
    ``kresnet train``: about 98% test accuracy, 35 s on 2 cores."""
    pytest.importorskip("sklearn")
    from kresnet import training
    from kresnet.training.data import load_digits

    folder = tmp_path_factory.mktemp("digits")
    status = training.main(["--model", "resnet18", "--config", "stem=cifar", "--width", "16",
                            "--lr", "3e-3", "--epochs", "4", "--seed", "0", "--verbose", "0",
                            "--out", str(folder / "run")])
    assert status == 0
    model = kresnet.load(str(folder / "run" / "best.keras"), compile=False)
    return model, load_digits()


@pytest.mark.slow
def test_each_path_keeps_a_trained_models_test_accuracy(digits_model):
    """float32, bfloat16 and int8 each within 0.5 points of the float32 model's accuracy on
    the 359 test digits (one image is 0.28 points); int8 calibrated on 256 training images
    given as a tf.data-style iterable of (images, labels) batches where TensorFlow runs."""
    model, data = digits_model
    x = data.test.images.astype("float32")
    y = np.asarray(data.test.labels)
    reference = np.asarray(model.predict(x, verbose=0)).argmax(1)
    accuracy = float(np.mean(reference == y))
    assert accuracy > 0.9, "the fixture did not train"
    precisions = ["float32", "bfloat16"] + (["int8"] if ON_TF else [])
    report = {}
    for precision in precisions:
        options = {}
        if precision == "int8":
            _need_onnx()
            import tensorflow as tf

            images = data.train.images[:256].astype("float32")
            options = {"calibration": tf.data.Dataset.from_tensor_slices(
                (images, np.asarray(data.train.labels[:256]))).batch(32), "progress": False}
        answers = kresnet.optimize(model, precision, **options).predict(x).argmax(1)
        report[precision] = {"accuracy": float(np.mean(answers == y)),
                             "agreement": float(np.mean(answers == reference))}
    print(json.dumps({"float32 model": accuracy, **report}, indent=1))
    for precision, result in report.items():
        assert abs(result["accuracy"] - accuracy) <= 0.005, (precision, report)
        assert result["agreement"] >= 0.99, (precision, report)
    assert report["float32"]["agreement"] == 1.0
