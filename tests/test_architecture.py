"""The package's shape: no import cycles, name patterns in naming.py alone, and every public
function that takes a model works on a prefixed ResNet and on a model holding two."""

import ast
import inspect
import os
import pkgutil
import re

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import ROOT, zero_initial_weights

# One pytest-xdist worker runs this file: its fixtures are made once.
pytestmark = pytest.mark.xdist_group("test_architecture")

PACKAGE = os.path.join(ROOT, "kresnet")


def _modules():
    """``{module name: path}`` of every module of the package, subpackages included."""
    found = {}
    for info in pkgutil.walk_packages([PACKAGE], prefix="kresnet."):
        spec = info.module_finder.find_spec(info.name)
        found[info.name] = spec.origin
    found["kresnet"] = os.path.join(PACKAGE, "__init__.py")
    return found


MODULES = _modules()


def _imports(path, module):
    """The kresnet modules that ``module`` imports, at any depth of its code."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # ``from package import module`` depends on the module; the package only where
            # a name of its own is imported.
            found = {f"{base}.{alias.name}" for alias in node.names}
            names.update(found)
            if not all(name in MODULES for name in found):
                names.add(base)
    return names


def test_no_module_imports_one_that_imports_it_back():
    modules = MODULES
    # kresnet/__init__.py imports no module of the package (it names them as strings and
    # imports them on first use), so ``import kresnet`` adds no edge to it.
    assert not [n for n in _imports(modules["kresnet"], "kresnet") if n in modules]
    graph = {name: sorted(n for n in _imports(path, name)
                          if n in modules and n not in (name, "kresnet"))
             for name, path in modules.items()}
    state, cycle = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in graph[node]:
            if state.get(target) == "open":
                cycle.extend(trail[trail.index(target):] + [target])
                return True
            if target not in state and visit(target, trail + [target]):
                return True
        state[node] = "done"
        return False

    for name in graph:
        if name not in state and visit(name, [name]):
            break
    assert not cycle, " -> ".join(cycle)
    # Building knows nothing of weight files.
    assert "kresnet.weights" not in graph["kresnet.builder"]


# Pieces of kresnet's layer names: code that writes one builds or reads a name itself.
NAME_PIECES = re.compile(r"_branch|bn_conv1|conv1[abc]?(_|$)|pool1|post_relu|bn_post|fc_final|"
                         r"fc_01|_relu$|_preact|_se_")
# Pieces that are also words of naming.parse's roles, flagged inside f-strings only.
F_STRING_PIECES = re.compile(r"avg_pool|max_pool|^res$|^bn$|^fc$|^input$")


def _string_pieces(path):
    """String constants of a module's code that look like a piece of a layer name: any
    constant matching NAME_PIECES, f-string parts matching F_STRING_PIECES too. Docstrings
    and texts with spaces (error messages may quote a name) are left out."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    in_f_strings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                    for part in node.values}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings
            and " " not in node.value and (NAME_PIECES.search(node.value) or (
                id(node) in in_f_strings and F_STRING_PIECES.search(node.value)))]


def test_layer_names_are_built_and_read_in_naming_alone():
    """No module but naming.py spells a piece of a kresnet layer name."""
    for name, path in _modules().items():
        if name != "kresnet.naming":
            assert not _string_pieces(path), \
                f"{name} spells layer names itself: {_string_pieces(path)}"


def test_the_name_check_can_fail(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text('"""Doc with res2a_branch2a."""\nNAME = f"{prefix}avg_pool"\n'
                    'ROLE = "avg_pool"\nBN = "bn_conv1"\n')
    assert sorted(_string_pieces(str(path))) == ["avg_pool", "bn_conv1"]


def test_the_import_walk_sees_relative_and_nested_imports():
    """The cycle test must be able to fail: its parser reads the imports it guards."""
    found = _imports(os.path.join(PACKAGE, "models.py"), "kresnet.models")
    assert {"kresnet.weights", "kresnet.builder", "kresnet.config"} <= found


# --- prefixed models and models of two ResNets -----------------------------------------

TINY = dict(blocks=(1, 1), widths=(8, 16), stem_width=8, head=None, pooling="avg")


def _two(x):
    """A ResNet-50 (prefix a_) and a tiny ResNet (prefix b_) side by side on ``x``."""
    a = kresnet.ResNet50(include_top=False, input_tensor=x, pooling="avg", name_prefix="a_")
    b = kresnet.create_resnet(input_tensor=x, depth=18, name_prefix="b_", **TINY)
    joined = keras.layers.Concatenate(name="join")([a.output, b.output])
    return keras.Model(x, joined, name="two"), a, b


class _Outputs(dict):
    """``outputs[name]``: ``models[name](x, training=False)``, computed on first use. The
    models of the fixture are never changed, so each is called once in the session."""

    def __init__(self, models):
        super().__init__()
        self.models = models

    def __missing__(self, name):
        self[name] = np.asarray(self.models[name](self.models["x"], training=False))
        return self[name]


_MODELS = {}


@pytest.fixture(scope="session")
def models():
    """Built once per process (a session fixture: pytest-xdist may run another module's test
    between two of this file's, which would rebuild a module fixture)."""
    if not _MODELS:
        _MODELS.update(_build_models())
    return _MODELS


def _build_models():
    rng = np.random.default_rng(0)
    two, a, b = _two(keras.Input((64, 64, 3), name="image"))
    with zero_initial_weights():  # its weights are transferred from two's
        twin, _, _ = _two(keras.Input((64, 64, 3), name="image"))
    for layer in two.layers:  # BN statistics away from the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, rng.normal(0, 0.1, beta.shape), rng.normal(
                0, 0.1, mean.shape), np.abs(rng.normal(1, 0.2, variance.shape)) + 0.5])
    prefixed = kresnet.ResNet50(input_shape=(64, 64, 3), name_prefix="x_", classes=4,
                                classifier_activation=None)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    built = {"two": two, "a": a, "b": b, "twin": twin, "prefixed": prefixed, "x": x}
    built["outputs"] = _Outputs(built)
    return built


@pytest.fixture(scope="session")
def reference_of_prefixed(models):
    """``to_keras_applications(models["prefixed"])`` and its output on ``x``."""
    if "reference" not in _MODELS:
        with zero_initial_weights():  # every weight of the reference is transferred
            reference = kresnet.to_keras_applications(models["prefixed"])
        _MODELS["reference"] = reference, np.asarray(reference(models["x"], training=False))
    return _MODELS["reference"]


TAKE_A_MODEL = {"count_macs", "describe", "feature_maps", "feature_strides", "fold_batchnorm",
                "config_of",
                "to_keras_applications", "transfer_weights", "load_weights", "plot_model",
                "plot_blocks", "export", "save", "to_torch", "freeze", "optimize"}


def test_every_public_function_that_takes_a_model_is_covered_here():
    takes = {name for name in kresnet.__all__ if callable(getattr(kresnet, name)) and
             not isinstance(getattr(kresnet, name), type) and
             next(iter(inspect.signature(getattr(kresnet, name)).parameters), None) in
             ("model", "source")}
    # from_keras_applications takes a keras.applications model, not a kresnet one, and
    # from_torch a torch state_dict (its `source`).
    assert takes - {"from_keras_applications", "from_torch"} == TAKE_A_MODEL


def test_to_torch_converts_one_resnet_of_two_by_prefix():
    image = keras.Input((32, 32, 3), name="image")
    halves = [kresnet.build("resnet18", input_tensor=image, include_top=False, pooling="avg",
                            widths=(8, 16, 32, 64), name_prefix=prefix, use_bias=False,
                            bn_epsilon=1e-5) for prefix in ("a_", "b_")]
    two = keras.Model(image, keras.layers.Concatenate(name="join")(
        [half.output for half in halves]), name="two")
    with pytest.raises(ValueError, match="holds 2 ResNets"):
        kresnet.to_torch(two)
    state = kresnet.to_torch(two, prefix="b_")
    np.testing.assert_array_equal(
        state["layer4.1.conv2.weight"],
        two.get_layer("b_res5b_branch2b").get_weights()[0].transpose(3, 2, 0, 1))
    assert not any(key.startswith("fc") for key in state)
    assert kresnet.to_torch(kresnet.build("resnet18", input_shape=(32, 32, 3), classes=3,
                                          widths=(8, 16, 32, 64), name_prefix="x_",
                                          use_bias=False))["fc.weight"].shape == (3, 64)


def test_freeze_sets_one_resnet_of_two_by_prefix():
    image = keras.Input((32, 32, 3), name="image")
    two, a, b = _two(image)
    with pytest.raises(ValueError, match="holds 2 ResNets"):
        kresnet.freeze(two)
    frozen = kresnet.freeze(two, "res2", prefix="b_")
    assert frozen == ["b_conv1", "b_bn_conv1", "b_res2a_branch2a", "b_bn2a_branch2a",
                      "b_res2a_branch2b", "b_bn2a_branch2b"]
    assert all(layer.trainable for layer in a.layers)
    assert two.get_layer("b_res3a_branch1").trainable


def test_counts_tables_and_blocks(models):
    two, a, b = models["two"], models["a"], models["b"]
    assert kresnet.count_macs(two) == kresnet.count_macs(a) + kresnet.count_macs(b)
    rows = kresnet.describe(two)
    stages = [row["stage"] for row in rows]
    assert {"a_stem", "a_res5", "b_stem", "b_res3", "b_head"} <= set(stages), stages
    assert sum(row["params"] for row in rows) == two.count_params()
    assert sum(row["blocks"] for row in rows) == 16 + 2
    names = [row["name"] for row in kresnet.analysis.blocks(two)]
    assert names[0] == "a_res2a" and names[-1] == "b_res3a" and len(names) == 18
    single = kresnet.describe(models["prefixed"])
    assert [row["stage"] for row in single] == ["stem", "res2", "res3", "res4", "res5", "head"]
    assert single[-1]["last"] == "x_fc4"


def test_feature_maps_and_config_of_pick_a_resnet_by_prefix(models):
    two = models["two"]
    for function in (kresnet.feature_maps, kresnet.feature_strides, kresnet.config_of):
        with pytest.raises(ValueError, match="holds 2 ResNets .*'a_', 'b_'.*prefix="):
            function(two)
        with pytest.raises(ValueError, match="`prefix`='c_' names no ResNet"):
            function(two, prefix="c_")
    maps = kresnet.feature_maps(two, prefix="b_")
    assert {k: tuple(v.shape) for k, v in maps.items()} == {"C2": (None, 16, 16, 8),
                                                             "C3": (None, 8, 8, 16)}
    assert maps["C3"]._keras_history.operation.name == "b_res3a_relu"
    assert kresnet.feature_strides(two, prefix="b_") == {"C2": 4, "C3": 8}
    assert kresnet.feature_maps(models["prefixed"])["C5"]._keras_history.operation.name == \
        "x_res5c_relu"
    for prefix, part in (("a_", models["a"]), ("b_", models["b"])):
        config = kresnet.config_of(two, prefix=prefix)
        assert config.name_prefix == prefix
        rebuilt = kresnet.build(config)
        assert [layer.name for layer in rebuilt.layers[1:]] == \
            [layer.name for layer in part.layers[1:]]
    config = kresnet.config_of(models["prefixed"])
    assert (config.name_prefix, config.head, config.classes) == ("x_", "fc", 4)


def test_keras_applications_conversion_reads_the_prefix(models, reference_of_prefixed):
    two, x, outputs = models["two"], models["x"], models["outputs"]
    with zero_initial_weights():  # every weight of the reference is transferred
        reference = kresnet.to_keras_applications(two, prefix="a_")
    np.testing.assert_allclose(reference(x, training=False), outputs["a"],
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="keras.applications has ResNet50"):
        kresnet.to_keras_applications(two, prefix="b_")
    with pytest.raises(ValueError, match="pass `prefix=`"):
        kresnet.to_keras_applications(two)
    back, back_output = reference_of_prefixed  # to_keras_applications(models["prefixed"])
    assert back.get_layer("predictions").units == 4
    np.testing.assert_allclose(back_output, outputs["prefixed"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["legacy.h5", "weights.h5"])
def test_keras_applications_files_load_into_a_prefixed_model(models, reference_of_prefixed,
                                                             kind, tmp_path):
    reference, expected = reference_of_prefixed  # to_keras_applications(models["prefixed"])
    path = str(tmp_path / f"reference.{kind}")
    reference.save(path) if kind == "legacy.h5" else reference.save_weights(path)
    with zero_initial_weights():  # every weight is loaded (a layer left out: zeros)
        fresh = kresnet.ResNet50(input_shape=(64, 64, 3), name_prefix="x_", classes=4,
                                 classifier_activation=None)
    report = kresnet.load_weights(fresh, path)
    assert report["skipped"] == [] and "x_fc4" in report["loaded"]
    x = models["x"]
    np.testing.assert_allclose(fresh(x, training=False), expected, atol=1e-4, rtol=1e-4)


def test_weights_move_between_models_of_two_resnets(models, tmp_path):
    two, twin, x = models["two"], models["twin"], models["x"]
    expected = models["outputs"]["two"]  # two(x, training=False)
    report = kresnet.transfer_weights(two, twin)
    assert report["skipped"] == [] and report["unused"] == []
    np.testing.assert_allclose(twin(x, training=False), expected, atol=1e-6)
    path = kresnet.save(two, tmp_path / "two.keras")
    with zero_initial_weights():  # every weight is loaded (a layer left out: zeros)
        again, _, _ = _two(keras.Input((64, 64, 3), name="image"))
    assert kresnet.load_weights(again, path)["skipped"] == []
    np.testing.assert_allclose(again(x, training=False), expected, atol=1e-6)
    loaded = kresnet.load(path, expect=two)
    np.testing.assert_allclose(loaded(x, training=False), expected, atol=1e-6)


def test_folding_drawing_and_export(models, tmp_path):
    two, x = models["two"], models["x"]
    folded = kresnet.fold_batchnorm(two)
    np.testing.assert_allclose(folded(x), models["outputs"]["two"], atol=1e-4, rtol=1e-4)
    dot = open(kresnet.plot_model(two, tmp_path / "two.dot"), encoding="utf-8").read()
    assert "a_res5c_relu" in dot and "b_res3a_relu" in dot and "join" in dot
    blocks = open(kresnet.plot_blocks(two, tmp_path / "blocks.dot"), encoding="utf-8").read()
    assert "a_res5c" in blocks and "b_res3a" in blocks
    for precision, tolerance in (("float32", 1e-4), ("bfloat16", 0.05)):
        fast = kresnet.optimize(two, precision)
        got = fast.predict(x)
        np.testing.assert_allclose(got, models["outputs"]["two"], atol=tolerance * np.max(
            np.abs(got)), rtol=tolerance)
    # Both ResNets compute in bfloat16; only their poolings (the heads) stay float32.
    assert kresnet.inference.float32_layers(two) == ["a_avg_pool", "b_avg_pool", "join"]
    small = kresnet.create_resnet((32, 32, 3), 3, depth=18, name_prefix="x_", **TINY)
    path = kresnet.export(small, tmp_path / "net", "savedmodel")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
