"""from_torch and to_torch: torchvision's and timm's own models on the same weights and
inputs (in .venv-torch, through scripts/torch_reference.py), round trips, and the errors."""

import json
import os
import subprocess

import keras
import numpy as np
import pytest

import kresnet
from kresnet import pytorch
from tests.conftest import LOADER, ROOT, run_in_fresh_process

REFERENCE = os.path.join(ROOT, "scripts", "torch_reference.py")
TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
TIMM = ["resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d", "resnet200d",
        "seresnet50", "seresnet101", "seresnext50_32x4d", "resnext50d_32x4d", "resnetv2_50",
        "resnetv2_101"]
#: timm's second tier (issue 16): tiered stems, ECA, GroupNorm, anti-aliasing, ResNet-RS.
TIMM_TIER = ["resnet10t", "resnet14t", "resnet26", "resnet26d", "ecaresnet26t",
             "ecaresnet50d", "seresnet18", "resnet50_gn", "resnetaa50", "resnetaa50d",
             "resnetblur50", "resnetblur50d", "resnetrs50", "resnetrs101"]
#: Too deep to run in the suite's time: their parameter counts are compared with timm's own
#: (test_every_preset_of_timm_counts_what_timm_counts), their blocks are the others'.
COUNTED = ["ecaresnet101d", "resnetrs152", "resnetrs200", "resnetrs270", "resnetrs350",
           "resnetrs420"]
#: The blur pads by reflection: sizes whose feature maps turn odd check its last row too.
ODD = {"resnetblur50": [72, 88], "resnetblur50d": [72, 88]}
#: Every architecture at a small non-square size; these three at 224x224 and 160x192 too.
LARGE = {"resnet50", "resnet50d", "seresnext50_32x4d"}
SMALL = (64, 96)
#: Converted without the head as well (from_torch(include_top=False)).
HEADLESS = {"resnet50d", "seresnext50_32x4d", "resnetv2_50"}
#: Converted for other channel counts too, against timm's in_chans (deep and classic stems).
CHANNELS = {"resnet50d": [1, 4], "seresnet50": [2, 5]}


def relative(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_every_architecture_is_a_preset_with_torch_settings():
    assert set(pytorch.ARCHITECTURES) == set(TORCHVISION) | set(TIMM) | set(TIMM_TIER) | \
        set(COUNTED)
    for arch in pytorch.ARCHITECTURES:
        config = pytorch.torch_config(arch)
        assert config.bn_epsilon == 1e-5 and not config.use_bias, arch
        assert config.plan.block_type == "basic" or config.stride_on == "3x3", arch
        # timm's pre-activation stem pools its conv's raw output: padding that never wins.
        assert config.stem_pool == ("ignore" if config.preact else
                                    "conv" if arch.startswith("resnetrs") else "zeros"), arch


@pytest.mark.parametrize("preset,options", [
    ("resnet18", {}), ("resnet50d", {}), ("seresnet50", {"stride_on": "3x3"}),
    ("resnext50d_32x4d", {}), ("resnet50v2_paper", {"stem_pool": "ignore"}),
    ("resnetrs50", {}), ("ecaresnet50d", {}), ("resnetblur50", {})])
def test_to_torch_and_back_is_the_same_model(preset, options):
    keras.utils.set_random_seed(0)
    ours = kresnet.build(preset, input_shape=(64, 64, 3), classes=6, widths=(16, 32, 64, 128),
                         classifier_activation=None, **pytorch.TORCH_OPTIONS, **options)
    state = kresnet.to_torch(ours)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    first_bn = "norm" if preset.endswith("paper") else "bn1"
    assert state[f"{first_bn}.num_batches_tracked"].dtype == np.int64
    arch = {"resnet18": "resnet18", "resnet50d": "resnet50d", "seresnet50": "seresnet50",
            "resnext50d_32x4d": "resnext50d_32x4d", "resnet50v2_paper": "resnetv2_50"}.get(
                preset, preset)
    back = kresnet.from_torch(state, arch=arch, input_shape=(64, 64, 3),
                              widths=(16, 32, 64, 128))
    assert [layer.name for layer in back.layers] == [layer.name for layer in ours.layers]
    # Built without random draws, but configured (and saved) as a plain build.
    assert kresnet.config_of(back) == kresnet.config_of(ours)
    assert [layer.get_config() for layer in back.layers] == \
        [layer.get_config() for layer in ours.layers]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(ours(x)))


def test_a_prefixed_model_converts_under_torch_keys(tmp_path):
    ours = kresnet.build("resnet18", input_shape=(32, 32, 3), classes=3, name_prefix="x_",
                         widths=(8, 16, 32, 64), **pytorch.TORCH_OPTIONS)
    state = kresnet.to_torch(ours)
    assert "conv1.weight" in state and not any(k.startswith("x_") for k in state)
    back = kresnet.from_torch(state, input_shape=(32, 32, 3), name_prefix="y_",
                              widths=(8, 16, 32, 64))
    assert back.get_layer("y_res5b_branch2b").get_weights()[0].shape == (3, 3, 64, 64)


def test_rgb_weights_adapt_to_other_channel_counts():
    """One channel sums the RGB kernel: a grey image gives what the RGB image of three equal
    channels gave. Six repeat it, scaled by 3/6: the image twice over gives the RGB output.
    (tests/test_pytorch.py's reference test compares with timm's own in_chans.)"""
    keras.utils.set_random_seed(0)
    ours = kresnet.build("resnet50d", input_shape=(32, 32, 3), classes=4,
                         widths=(8, 16, 32, 64), classifier_activation=None,
                         **pytorch.TORCH_OPTIONS)
    state = kresnet.to_torch(ours)
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 1)).astype("float32")
    grey = kresnet.from_torch(state, arch="resnet50d", input_shape=(32, 32, 1),
                              widths=(8, 16, 32, 64))
    assert grey.get_layer("conv1a").kernel.shape == (3, 3, 1, 32)
    np.testing.assert_allclose(np.asarray(grey(x)), np.asarray(ours(np.repeat(x, 3, -1))),
                               rtol=1e-4, atol=1e-5)
    rgb = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    six = kresnet.from_torch(state, arch="resnet50d", input_shape=(32, 32, 6),
                             widths=(8, 16, 32, 64))
    np.testing.assert_allclose(np.asarray(six(np.concatenate([rgb, rgb], -1))),
                               np.asarray(ours(rgb)), rtol=1e-4, atol=1e-5)
    assert "conv1.0.weight" in state and state["conv1.0.weight"].shape == (32, 3, 3, 3)
    one = kresnet.to_torch(grey)
    with pytest.raises(ValueError, match="'conv1.0.weight' takes 1 input channels and the "
                                         "model 4: only RGB"):
        kresnet.from_torch(one, arch="resnet50d", input_shape=(32, 32, 4),
                           widths=(8, 16, 32, 64))
    assert kresnet.from_torch(one, arch="resnet50d", input_shape=(32, 32, 1),
                              widths=(8, 16, 32, 64)).count_params() == grey.count_params()


def small_state():
    model = kresnet.build("resnet18", input_shape=(32, 32, 3), classes=3,
                          widths=(8, 16, 32, 64), **pytorch.TORCH_OPTIONS)
    return kresnet.to_torch(model)


@pytest.mark.parametrize("change,error,message", [
    (lambda s: s.pop("layer2.0.bn1.running_var"), ValueError,
     "`source` has no 'layer2.0.bn1.running_var': resnet18 needs it with shape (16,)"),
    (lambda s: s.update({"layer1.0.conv1.weight": np.zeros((8, 8, 1, 1), "float32")}),
     ValueError, "`source`'s 'layer1.0.conv1.weight' has shape (8, 8, 1, 1); resnet18 needs "
     "(8, 64, 3, 3) (layer 'res2a_branch2a')"),
    (lambda s: s.update({"extra.weight": np.zeros(2)}), ValueError,
     "1 key(s) that resnet18 does not use, the first 'extra.weight' with shape (2,)"),
])
def test_a_state_dict_that_does_not_fit_names_the_key_and_both_shapes(change, error,
                                                                       message):
    state = small_state()
    change(state)
    with pytest.raises(error) as raised:
        kresnet.from_torch(state, arch="resnet18", input_shape=(32, 32, 3),
                           widths=(8, 16, 32, 64))
    assert message in str(raised.value)


def test_bad_sources_and_architectures_are_refused(tmp_path):
    with pytest.raises(TypeError, match="`source` must be a state_dict"):
        kresnet.from_torch(42)
    with pytest.raises(ValueError, match="no file at"):
        kresnet.from_torch(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="`arch` must be one of 'resnet18', 'resnet34'"):
        kresnet.from_torch(small_state(), arch="resnet51")
    with pytest.raises(ValueError, match="from_torch takes its weights from `source`"):
        kresnet.from_torch(small_state(), weights="imagenet")
    narrow = kresnet.to_torch(kresnet.build(
        "resnet50_v1_5", input_shape=(32, 32, 3), classes=3, widths=(8, 16, 32, 64),
        **pytorch.TORCH_OPTIONS))
    with pytest.raises(ValueError, match="matches none of the architectures"):
        kresnet.from_torch(narrow)  # 8 channels in the first 3x3: no torch ResNet-50
    with pytest.raises(ValueError, match="is not a torchvision or timm ResNet"):
        kresnet.from_torch({"fc.weight": np.zeros((2, 3))})


def test_to_torch_refuses_what_torch_cannot_express():
    for options, what in (({"preact": True, "stride_block": "last"}, "pre-activation"),
                          ({"preact": True, "stride_on": "3x3"}, "stem_pool='ignore'"),
                          ({"use_bias": True}, "convolutions with bias"),
                          ({}, "stride on the first 1x1 conv")):
        model = kresnet.build("resnet50", input_shape=(32, 32, 3), classes=2,
                              widths=(8, 16, 32, 64), **{"use_bias": False, **options})
        with pytest.raises(ValueError, match=what):
            kresnet.to_torch(model)
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        kresnet.to_torch("resnet50")


def reference(tmp_path_factory, library):
    """The torch side's files for ``library``'s architectures: weights, inputs, logits."""
    python = os.environ.get("KRESNET_TORCH_PYTHON")
    if not python:
        message = ("torchvision and timm are not set up: bash scripts/test.sh makes "
                   ".venv-torch (scripts/setup-torch-reference.sh) and sets "
                   "KRESNET_TORCH_PYTHON")
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp(f"torch_reference_{library}")
    archs = {"torchvision": TORCHVISION, "timm": TIMM, "timm_tier": TIMM_TIER}[library]
    library = "timm" if library == "timm_tier" else library
    spec = {"archs": {arch: {"library": library,
                             "format": "pth" if library == "torchvision" else "safetensors",
                             "sizes": [list(SMALL)] + ([[224, 224], [160, 192]]
                                                       if arch in LARGE else [])
                             + ([ODD[arch]] if arch in ODD else []),
                             "channels": CHANNELS.get(arch, [])}
                      for arch in archs}}
    path = out / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")

    def run(command):
        # One thread: the other pytest worker has the other core.
        result = subprocess.run([python, REFERENCE, command, str(out), str(path)],
                                capture_output=True, text=True, timeout=1200,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-4000:]

    run("make")
    return out, spec, run


# One test per library, each on a worker of its own (xdist groups), as they take minutes.
@pytest.mark.slow
@pytest.mark.parametrize("library", [
    pytest.param(library, marks=pytest.mark.xdist_group(f"test_pytorch_{library}"))
    for library in ("torchvision", "timm", "timm_tier")])
def test_every_architecture_equals_torchvisions_and_timms_own(tmp_path_factory, library):
    """Each file converted with its architecture detected gives the torch model's logits
    (and timm's forward_features) within 1e-5 relative, at every size (one model with
    free height and width runs them all), and for other channel counts timm's model with
    ``in_chans`` on the same RGB weights; to_torch's arrays load into a new torch model
    with strict=True and give the same logits again."""
    out, spec, run = reference(tmp_path_factory, library)
    errors = {}
    for arch, entry in spec["archs"].items():
        source = out / f"{arch}.{entry['format']}"
        # The anti-aliased nets have their plain peers' state_dicts: they are named.
        named = arch if arch.startswith(("resnetaa", "resnetblur")) else None
        model = kresnet.from_torch(source, arch=named, input_shape=(None, None, 3))
        assert model.output_shape == (None, 1000), arch
        # Logits and C5 in one pass through the trunk (the layers are the model's own).
        both = keras.Model(model.input, [model.output, kresnet.feature_maps(model)["C5"]])
        for size in entry["sizes"]:
            stem = out / f"{arch}.{size[0]}x{size[1]}"
            x = np.load(f"{stem}.x.npy")
            logits, features = both(x)
            errors[arch, tuple(size)] = relative(logits, np.load(f"{stem}.logits.npy"))
            if entry["library"] == "timm":
                errors[arch, tuple(size), "features"] = relative(
                    features, np.load(f"{stem}.features.npy"))
            if arch in HEADLESS and size == entry["sizes"][0]:
                headless = kresnet.from_torch(source, arch=arch, include_top=False,
                                              input_shape=(*size, 3))
                errors[arch, "include_top=False"] = relative(
                    headless(x), np.load(f"{stem}.features.npy"))
        for channels in entry["channels"]:
            # RGB weights adapted to the channel count as timm adapts them (in_chans).
            stem = out / f"{arch}.c{channels}"
            adapted = kresnet.from_torch(source, input_shape=(None, None, channels))
            errors[arch, f"{channels} channels"] = relative(
                adapted(np.load(f"{stem}.x.npy")), np.load(f"{stem}.logits.npy"))
        np.savez(out / f"{arch}.back.npz", **kresnet.to_torch(model))
        keras.backend.clear_session()
    bad = {key: error for key, error in errors.items() if not error <= 1e-5}
    assert bad == {}, bad
    run("back")
    for arch, entry in spec["archs"].items():
        for size in entry["sizes"]:
            stem = out / f"{arch}.{size[0]}x{size[1]}"
            np.testing.assert_allclose(np.load(f"{stem}.back.npy"),
                                       np.load(f"{stem}.logits.npy"), rtol=0, atol=1e-6,
                                       err_msg=arch)


@pytest.mark.slow
def test_every_preset_of_timm_counts_what_timm_counts(tmp_path):
    """Every timm architecture kresnet converts, and every preset named after a timm model,
    has timm's own parameter count (timm's code, run on the meta device) and is built at
    timm's training size."""
    python = os.environ.get("KRESNET_TORCH_PYTHON")
    if not python:
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            pytest.fail("timm is not set up: bash scripts/test.sh sets KRESNET_TORCH_PYTHON")
        pytest.skip("timm is not set up")
    timm_presets = [name for name, preset in kresnet.PRESETS.items()
                    if preset.source.startswith("timm")]
    names = sorted(set(TIMM) | set(TIMM_TIER) | set(COUNTED) | set(timm_presets))
    (tmp_path / "names.json").write_text(json.dumps(names), encoding="utf-8")
    result = subprocess.run([python, REFERENCE, "counts", str(tmp_path),
                             str(tmp_path / "names.json")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    timm = json.loads((tmp_path / "counts.json").read_text(encoding="utf-8"))
    ours = {name: pytorch.torch_config(name).count_params()[1] if name in pytorch.ARCHITECTURES
            else kresnet.PRESETS[name].config.count_params()[1] for name in names}
    assert ours == {name: timm[name]["params"] for name in names}
    sizes = {name: kresnet.PRESETS[name].input_size for name in timm_presets}
    assert sizes == {name: timm[name]["input_size"][1] for name in timm_presets}


def write_safetensors(path, arrays):
    """The safetensors layout (as timm publishes weights): the header's length (8 bytes,
    little-endian), a JSON header of name -> dtype, shape, byte range, then the bytes."""
    header, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": {"float32": "F32", "int64": "I64"}[str(array.dtype)],
                        "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(chunks))


@pytest.mark.slow
def test_safetensors_convert_without_torch_and_pth_names_the_extra(tmp_path):
    """In a Python where torch cannot be imported, a .safetensors file converts and
    torchvision is never imported; a .pth file says which extra reads it. The converted
    model saves and loads in a fresh process without kresnet, safe_mode on."""
    ours = kresnet.build("resnet18", input_shape=(32, 32, 3), classes=3,
                         widths=(8, 16, 32, 64), classifier_activation=None,
                         **pytorch.TORCH_OPTIONS)
    path = tmp_path / "resnet18.safetensors"
    write_safetensors(path, kresnet.to_torch(ours))
    (tmp_path / "resnet18.pth").write_bytes(b"not read")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    code = f"""
import sys
sys.modules["torch"] = None  # as where torch is not installed: importing it fails
import numpy as np, kresnet
model = kresnet.from_torch({str(path)!r}, input_shape=(32, 32, 3), widths=(8, 16, 32, 64))
assert "torchvision" not in sys.modules
np.save({str(tmp_path / "y.npy")!r}, np.asarray(model(np.load({str(tmp_path / "x.npy")!r}))))
model.save({str(tmp_path / "converted.keras")!r})
try:
    kresnet.from_torch({str(tmp_path / "resnet18.pth")!r})
except ImportError as error:
    print(error)
"""
    result = run_in_fresh_process(code=code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'pip install "kresnet[torch]"' in result.stdout
    expected = np.asarray(ours(x))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)
    # The file the converting process saved, loaded by a Python that never imports kresnet.
    saved = tmp_path / "converted.keras"
    np.save(f"{saved}.in.npy", x)
    loaded = run_in_fresh_process(LOADER, [saved])
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    names = open(f"{saved}.names.txt", encoding="utf-8").read().split()
    assert names == [layer.name for layer in ours.layers]
    np.testing.assert_allclose(np.load(f"{saved}.out.npy"), expected, rtol=0, atol=1e-6)
