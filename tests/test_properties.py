"""Property-based tests: random arguments of create_resnet, build and the blocks.

Every drawn call either builds a model whose output shape, layer names and model name follow
the documented rules (computed here independently of kresnet's code), or raises ValueError or
TypeError whose message names the bad argument, before any layer is created. Nothing else:
no other exception, no hang (each example runs under an alarm).

Examples per test are set by ``max_examples``; together they are well over 300.
"""

import contextlib
import math
import signal
import threading

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kresnet
from tests.conftest import automatic_names, structure_only

SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Seconds one example may take before it counts as a hang.
EXAMPLE_LIMIT = 60

LETTERS = "abcdefghijklmnopqrstuvwxyz"
STEM_STRIDE = {"classic": 4, "deep": 4, "cifar": 1}
DEFAULT_STEM_WIDTH = {"classic": (64,), "deep": (32, 32, 64), "cifar": (16,)}
LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}


# --- guards --------------------------------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds=EXAMPLE_LIMIT):
    """Fail an example that runs longer than ``seconds`` (a hang) instead of waiting."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not \
            threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise TimeoutError(f"the example ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def layers_created():
    """Count the Keras layers constructed inside the block: ``with layers_created() as n``."""
    created = []
    original = keras.layers.Layer.__init__

    def counting_init(self, *args, **kwargs):
        created.append(type(self).__name__)
        original(self, *args, **kwargs)

    keras.layers.Layer.__init__ = counting_init
    try:
        yield created
    finally:
        keras.layers.Layer.__init__ = original


def expect_error(call, names):
    """``call()`` raises ValueError/TypeError naming one of ``names``, building nothing."""
    with time_limit(), layers_created() as created:
        try:
            result = call()
        except (ValueError, TypeError) as error:
            message = str(error)
        else:
            raise AssertionError(f"no error; built {getattr(result, 'name', result)!r} "
                                 f"although {names} is bad")
    assert any(f"`{name}" in message or f"{name}=" in message or f"{name}[" in message or
               f" {name} " in message for name in names), (names, message)
    assert not created, f"{len(created)} layers were built before the error: {message}"
    return message


# --- the documented rules ------------------------------------------------------------------

def halve(size):
    """A stride-2 layer: explicit symmetric padding (or 1x1/'same' pooling) gives ceil."""
    return None if size is None else math.ceil(size / 2)


def expected_blocks(config):
    """``(stage, label, out_channels, strided)`` of every block, from the documented rules."""
    blocks = config["blocks"]
    widths = config.get("widths") or tuple(64 * 2 ** i for i in range(len(blocks)))
    last = config.get("stride_block", "first") == "last"
    result = []
    for index, (n_blocks, width) in enumerate(zip(blocks, widths)):
        out = width if block_type(config) == "basic" else 4 * width
        for i in range(n_blocks):
            strided = (i == n_blocks - 1 and index < len(blocks) - 1) if last else \
                (i == 0 and index > 0)
            result.append((2 + index, LETTERS[i], out, strided))
    return result


def block_type(config):
    return config.get("_block_type") or config.get("block_type") or "bottleneck"


def min_size(config):
    return STEM_STRIDE[config.get("stem", "classic")] * 2 ** (len(config["blocks"]) - 1)


def check_model(model, config):
    """Output shape, layer names and model name of a built ``create_resnet`` model."""
    prefix = config.get("name_prefix", "")
    channels_last = keras.config.image_data_format() == "channels_last"
    shape = config["in_shape"] if config.get("input_tensor") is None else \
        tuple(config["input_tensor"].shape[1:])
    height, width = shape[:2] if channels_last else shape[1:]
    if config.get("stem", "classic") != "cifar":
        height, width = halve(halve(height)), halve(halve(width))
    levels, stride = {}, STEM_STRIDE[config.get("stem", "classic")]
    for _, _, out, strided in expected_blocks(config):
        if strided:
            height, width, stride = halve(height), halve(width), stride * 2
        levels[f"C{int(math.log2(stride))}"] = (None, height, width, out)
    features = expected_blocks(config)[-1][2]
    head = config.get("head", "tutorial") if config.get("include_top", True) else None
    if config.get("outputs") == "stages":
        assert {k: tuple(v.shape) for k, v in model.output.items()} == levels
    elif head is not None:
        assert model.output_shape == (None, config["n_classes"])
    elif config.get("pooling") in ("avg", "max"):
        assert model.output_shape == (None, features)
    else:
        assert model.output_shape == (None, height, width, features)

    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names)), "repeated layer names"
    assert not automatic_names(model), automatic_names(model)
    sums = sorted(layer.name for layer in model.layers if isinstance(layer, keras.layers.Add))
    assert sums == sorted(f"{prefix}res{stage}{label}"
                          for stage, label, _, _ in expected_blocks(config))
    if config.get("input_tensor") is None:
        assert all(name.startswith(prefix) for name in names)
    depth = LAYERS_PER_BLOCK[block_type(config)] * sum(config["blocks"]) + 2
    assert model.name == (config.get("name") or f"{prefix}resnet{depth}")


# --- strategies ----------------------------------------------------------------------------

small = st.integers(4, 16)


@st.composite
def valid_configs(draw):
    """A random valid create_resnet call (as keyword arguments) with tiny layers."""
    n_stages = draw(st.integers(1, 4))
    config = {"blocks": tuple(draw(st.lists(st.integers(1, 2), min_size=n_stages,
                                            max_size=n_stages))),
              "depth": draw(st.sampled_from([18, 50]))}
    block_type = draw(st.sampled_from(["basic", "bottleneck", None]))
    if block_type is not None:
        config["block_type"] = block_type
    bottleneck = block_type == "bottleneck" or (block_type is None and config["depth"] == 50)
    config["_block_type"] = "bottleneck" if bottleneck else "basic"  # the row's, if None
    shortcut = draw(st.sampled_from(["B", "A", "C", "avg"]))
    stem = draw(st.sampled_from(["classic", "deep", "cifar"]))
    widths = draw(st.lists(small, min_size=n_stages, max_size=n_stages))
    if shortcut == "A":
        widths.sort()  # option A pads channels: they may never shrink
    config.update(widths=tuple(widths), stem=stem, shortcut=shortcut)
    first_out = widths[0] * (4 if bottleneck else 1)
    count = 3 if stem == "deep" else 1
    stem_width = tuple(draw(st.lists(st.integers(2, 16), min_size=count, max_size=count)))
    if shortcut == "A":
        stem_width = stem_width[:-1] + (min(stem_width[-1], first_out),)
    config["stem_width"] = stem_width[0] if count == 1 and draw(st.booleans()) else stem_width
    if bottleneck:
        config["groups"] = draw(st.sampled_from([1, 1, 2, 4]))
        config["width_per_group"] = draw(st.sampled_from([64, 16, 32, 128]))
    config["preact"] = draw(st.booleans())
    config["zero_init_residual"] = False if config["preact"] else draw(st.booleans())
    config["stride_on"] = draw(st.sampled_from(["1x1", "3x3"]))
    config["stride_block"] = draw(st.sampled_from(["first", "last"]))
    config["se_ratio"] = draw(st.sampled_from([0.0, 0.0, 1 / 16, 0.25, 1.0]))
    config["middle_kernel_size"] = draw(st.sampled_from([1, 3, 5, (1, 3), (3, 1), [3, 5]]))
    config["include_top"] = draw(st.booleans())
    config["head"] = draw(st.sampled_from(["tutorial", "fc", None]))
    head = config["head"] if config["include_top"] else None
    config["outputs"] = "final" if head is not None else draw(st.sampled_from(["final",
                                                                              "stages"]))
    config["pooling"] = draw(st.sampled_from([None, "avg", "max"]))
    config["n_classes"] = draw(st.integers(1, 5))
    config["dropout"] = draw(st.sampled_from([0.0, 0.25, 0.5]))
    config["fc_units"] = draw(st.integers(1, 8))
    config["classifier_activation"] = draw(st.sampled_from(
        ["softmax", "sigmoid", "linear", None, keras.activations.softmax]))
    config["use_bias"] = draw(st.booleans())
    config["bn_epsilon"] = draw(st.sampled_from([1e-3, 1.001e-5, 1.0]))
    config["bn_momentum"] = draw(st.sampled_from([0.0, 0.9, 0.99]))
    config["kernel_initializer"] = draw(st.sampled_from(["he_normal", "glorot_uniform",
                                                         "zeros"]))
    config["weight_decay"] = draw(st.sampled_from([0.0, 1e-4, 1.0]))
    config["name_prefix"] = draw(st.sampled_from(["", "", "x_", "left.", "a-"]))
    config["name"] = draw(st.sampled_from([None, None, "net_1"]))
    smallest = min_size(config)
    size = st.one_of(st.none(), st.integers(smallest, max(smallest, 64)))
    shape = (draw(size), draw(size), draw(st.integers(1, 3)))
    if draw(st.integers(0, 9)) == 0:
        config["input_tensor"] = keras.Input(shape, name=f"{config['name_prefix']}image")
        config["in_shape"] = shape
    else:
        config["in_shape"] = shape
    return config


def call_create(config):
    arguments = {key: value for key, value in config.items() if not key.startswith("_")}
    return kresnet.create_resnet(arguments.pop("in_shape"), arguments.pop("n_classes"),
                                 arguments.pop("depth"), **arguments)


@pytest.mark.slow  # 180 models built
@settings(max_examples=180, **SETTINGS)
@given(valid_configs())
def test_valid_arguments_build_the_documented_model(config):
    with time_limit(), structure_only():  # check_model reads the structure alone
        model = call_create(config)
    check_model(model, config)


#: Values no argument may take, by argument: each must raise naming the argument.
BAD = {
    "in_shape": [(8, 8), (8, 8, 3, 1), "64x64", (8.0, 8, 3), (64, True, 3), (64, 64, 0),
                 (64, 64, None), (0, 64, 3), (64, -5, 3), None, 64],
    "n_classes": [0, -1, 2.5, True, None, "3"],
    "depth": [42, 0, "50", 50.0, True, None],
    "blocks": [(), [0], (1, -1), "12", (1,) * 9, (1.5,), (True,), 3, {1: 2}],
    "block_type": ["wide", 1, "Basic"],
    "widths": [(0,), ("a",), 5, (4, 8, 16, 32, 64), (-4,), (4.0,)],
    "middle_kernel_size": [2, 0, -1, (3, 3, 3), 3.0, "3", (3, 4), (True, 3), None],
    "stem": ["big", None, 1, "Classic"],
    "stem_width": [0, -3, "a", (4, 4), 4.5, (0,), [], True],
    "preact": [1, "yes", None],
    "stride_on": ["2x2", None, 1],
    "stride_block": ["middle", None, 0],
    "shortcut": ["D", None, 1, "b"],
    "groups": [0, 1.5, True, "2"],
    "width_per_group": [0, "64", 6.4, -64],
    "se_ratio": [-0.1, 1.5, "a", True, None],
    "zero_init_residual": [1, "no", None],
    "include_top": [1, "yes", None],
    "head": ["mlp", 1, "FC", True],
    "pooling": ["sum", 1, True, "AVG"],
    "outputs": ["all", None, 1],
    "classifier_activation": ["nope", 5, {"a": 1}],
    "dropout": [1.0, -0.1, "0.5", None, True],
    "fc_units": [0, 2.0, None, True],
    "weights": ["no/such/file.weights.h5", 3, ""],
    "input_tensor": [np.zeros((1, 32, 32, 3)), "x", keras.KerasTensor((None, 32))],
    "use_bias": ["no", 0, None],
    "bn_epsilon": [0, 2, "x", -1e-3, None],
    "bn_momentum": [1.0, -1, "x", None],
    "kernel_initializer": ["nonsense", None, 5],
    "weight_decay": [-1, 2, "x", None],
    "name_prefix": ["a b", 5, "a/b", None],
    "name": ["", 5, "a/b"],
}


@st.composite
def one_bad_argument(draw):
    """A valid configuration with exactly one argument replaced by a bad value."""
    config = draw(valid_configs())
    config.pop("input_tensor", None)
    argument = draw(st.sampled_from(sorted(BAD)))
    bad = draw(st.sampled_from(BAD[argument]))
    if argument == "stem_width" and isinstance(bad, tuple) and config["stem"] == "deep":
        bad = (4, 4, 4, 4)  # three widths would be right for the deep stem
    if argument == "widths" and isinstance(bad, tuple) and len(bad) == 5:
        bad = (4,) * (len(config["blocks"]) + 1)
    config[argument] = bad
    return config, argument


@settings(max_examples=250, **SETTINGS)
@given(one_bad_argument())
def test_one_bad_argument_raises_naming_it(case):
    config, argument = case
    expect_error(lambda: call_create(config), [argument])


@st.composite
def conflicting_arguments(draw):
    """Values that are fine alone but not together, and the arguments the error may name."""
    config = draw(valid_configs())
    config.pop("input_tensor", None)
    conflict = draw(st.sampled_from(["groups", "width_per_group", "zero_init", "outputs",
                                     "narrowing", "stem_narrowing", "middle_width",
                                     "in_shape"]))
    if conflict in ("groups", "width_per_group"):
        config.update(block_type="basic", _block_type="basic", groups=1, width_per_group=64)
        config[conflict] = 2 if conflict == "groups" else 32
        return config, ["groups", "width_per_group", "block_type"]
    if conflict == "zero_init":
        config.update(preact=True, zero_init_residual=True)
        return config, ["zero_init_residual", "preact"]
    if conflict == "outputs":
        config.update(include_top=True, head=draw(st.sampled_from(["tutorial", "fc"])),
                      outputs="stages")
        return config, ["outputs", "include_top", "head"]
    if conflict in ("narrowing", "stem_narrowing"):
        config.update(shortcut="A", block_type="basic", _block_type="basic", groups=1,
                      width_per_group=64)
        if conflict == "narrowing":
            config["blocks"] = config["blocks"] + (1,) if len(config["blocks"]) < 4 \
                else config["blocks"]
            n = len(config["blocks"])
            config["widths"] = tuple(16 if i < n - 1 else 8 for i in range(n))
            config["stem_width"] = (4, 4, 4) if config["stem"] == "deep" else 4
        else:
            config["widths"] = (4,) * len(config["blocks"])
            config["stem_width"] = (8, 8, 8) if config["stem"] == "deep" else 8
        config["in_shape"] = (None, None, 3)
        return config, ["shortcut", "widths", "stem_width"]
    if conflict == "middle_width":
        config.update(block_type="bottleneck", _block_type="bottleneck",
                      groups=draw(st.sampled_from([1, 2])),
                      width_per_group=draw(st.sampled_from([1, 4, 8])))
        config["widths"] = (4,) * len(config["blocks"])
        return config, ["widths", "width_per_group"]
    too_small = draw(st.integers(1, min_size(config) - 1)) if min_size(config) > 1 else 0
    config["in_shape"] = (too_small, None, 3) if draw(st.booleans()) else (None, too_small, 3)
    return config, ["in_shape"]


@settings(max_examples=60, **SETTINGS)
@given(conflicting_arguments())
def test_conflicting_arguments_raise_naming_one_of_them(case):
    config, names = case
    expect_error(lambda: call_create(config), names)


# --- build ---------------------------------------------------------------------------------

@st.composite
def preset_calls(draw):
    """A preset, shrunk by overriding its stages, widths and stem widths."""
    name = draw(st.sampled_from(sorted(kresnet.PRESETS)))
    preset = kresnet.PRESETS[name]
    options = dict(preset.options)
    n_stages = draw(st.integers(1, 3))
    blocks = tuple(draw(st.lists(st.integers(1, 2), min_size=n_stages, max_size=n_stages)))
    # ResNeXt's 4 or 8 channels per group need a width of 16 or 8 to leave one channel.
    widths = sorted(draw(st.lists(st.integers(16, 24), min_size=n_stages, max_size=n_stages)))
    stem = options.get("stem", "classic")
    stem_width = (4, 4, 4) if stem == "deep" else 4
    classes = draw(st.integers(1, 5))
    include_top = draw(st.booleans())
    pooling = draw(st.sampled_from([None, "avg", "max"]))
    smallest = STEM_STRIDE[stem] * 2 ** (n_stages - 1)
    if options.get("anti_alias") == "avg":  # its 2x2 pools need sizes that stay even
        side = smallest * draw(st.integers(1, 3))
    else:
        side = draw(st.integers(smallest, max(smallest, 48)))
    call = dict(name=name, input_shape=(side, side, 3), classes=classes,
                include_top=include_top, pooling=pooling, blocks=blocks, widths=tuple(widths),
                stem_width=stem_width)
    if options.get("norm") == "group":  # GroupNorm's groups must divide the drawn widths
        call["norm_groups"] = 1
    config = {"blocks": blocks, "widths": tuple(widths), "stem": stem,
              "block_type": options.get("block_type", "basic" if preset.depth < 50 else
                                        "bottleneck"),
              "stride_block": options.get("stride_block", "first"),
              "in_shape": (side, side, 3), "n_classes": classes, "include_top": include_top,
              "head": "fc", "pooling": pooling, "name": name}
    return call, config


@pytest.mark.slow  # 40 presets built
@settings(max_examples=40, **SETTINGS)
@given(preset_calls())
def test_presets_build_the_documented_model(case):
    call, config = case
    with time_limit(), structure_only():
        model = kresnet.build(**call)
    check_model(model, config)


BAD_BUILD = {
    "name": ["resnet51", "", 50, None, "ResNet50"],
    "classes": [0, 2.5, True, "3"],
    "input_shape": [(8, 8), (0, 0, 3), "32x32", (32, 32, 0), (32, 32.0, 3)],
    "include_top": [1, None],
    "pooling": ["sum", 1],
    "classifier_activation": ["nope", 5],
    "weights": ["no/such/file.h5", 3],
    "input_tensor": ["x", np.zeros((1, 32, 32, 3))],
    "strides": [2],  # not an option of build
    "blocks": [(), (0,)],
    "groups": [0, "2"],
}


@st.composite
def bad_preset_calls(draw):
    call, _ = draw(preset_calls())
    argument = draw(st.sampled_from(sorted(BAD_BUILD)))
    call[argument] = draw(st.sampled_from(BAD_BUILD[argument]))
    return call, argument


@settings(max_examples=50, **SETTINGS)
@given(bad_preset_calls())
def test_bad_build_arguments_raise_naming_them(case):
    call, argument = case
    expect_error(lambda: kresnet.build(**call), [argument])


# --- blocks on a tensor of the wrong width -------------------------------------------------

@settings(max_examples=30, **SETTINGS)
@given(channels=st.integers(1, 32), filters=st.sampled_from([(4, 4, 16), (8, 8), (2, 3, 9)]),
       stage=st.sampled_from([2, 5, "3"]), block=st.sampled_from(["a", "b1", "c"]),
       shortcut=st.sampled_from(["B", "C", "A", "avg"]))
def test_identity_block_names_stage_block_and_both_widths(channels, filters, stage, block,
                                                          shortcut):
    x = keras.Input((8, 8, channels))
    if channels == filters[-1]:
        with time_limit():
            y = kresnet.identity_block(x, 3, filters, stage, block, shortcut=shortcut)
        assert tuple(y.shape) == (None, 8, 8, channels)
        return
    message = expect_error(lambda: kresnet.identity_block(x, 3, filters, stage, block,
                                                          shortcut=shortcut), ["filters"])
    assert f"stage={stage!r} block={block!r}" in message, message
    assert f"{channels} channels" in message and f"filters[-1]={filters[-1]}" in message


@settings(max_examples=20, **SETTINGS)
@given(channels=st.integers(1, 32), filters=st.sampled_from([(4, 4, 16), (8, 8), (2, 2, 8)]),
       strides=st.sampled_from([1, 2, (2, 1)]))
def test_conv_block_with_shortcut_a_refuses_fewer_channels(channels, filters, strides):
    x = keras.Input((8, 8, channels))

    def call():
        return kresnet.conv_block(x, 3, filters, 3, "a", strides=strides, shortcut="A")

    if channels <= filters[-1]:
        with time_limit():
            assert call().shape[-1] == filters[-1]
        return
    message = expect_error(call, ["shortcut"])
    assert f"{channels} input channels" in message and f"filters[-1]={filters[-1]}" in message


# --- found by these tests ---------------------------------------------------------------

def test_build_refuses_an_unhashable_name():
    expect_error(lambda: kresnet.build(["resnet18"]), ["name"])


def test_blocks_refuse_groups_that_do_not_divide_the_first_width():
    x = keras.Input((8, 8, 6))
    expect_error(lambda: kresnet.conv_block(x, 3, (6, 8, 16), 2, "a", groups=4), ["groups"])


def test_conv_block_shortcut_a_error_names_stage_and_block():
    x = keras.Input((8, 8, 32))
    message = expect_error(lambda: kresnet.conv_block(x, 3, (4, 4, 16), 3, "a", shortcut="A"),
                           ["shortcut"])
    assert "stage=3 block='a'" in message
