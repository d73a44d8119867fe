"""The Caffe naming scheme, layer by layer, for every depth."""

import keras
import pytest

import kresnet
from kresnet import naming
# Every test here reads names and layer settings only: SHAPE_ONLY builds.
from tests.conftest import SHAPE_ONLY, automatic_names

# One pytest-xdist worker runs this file: its module fixtures are made once.
pytestmark = pytest.mark.xdist_group("test_naming")

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def caffe_blocks(stage, n, numbered):
    labels = ["a"] + [f"b{i}" for i in range(1, n)] if numbered else list(LETTERS[:n])
    return [f"res{stage}{label}" for label in labels]


# The original Caffe models (KaimingHe/deep-residual-networks) for 50/101/152; 18/34 have no
# Caffe release and use letters, as ResNet-50 does.
EXPECTED_BLOCKS = {
    18: caffe_blocks(2, 2, False) + caffe_blocks(3, 2, False) + caffe_blocks(4, 2, False)
    + caffe_blocks(5, 2, False),
    34: caffe_blocks(2, 3, False) + caffe_blocks(3, 4, False) + caffe_blocks(4, 6, False)
    + caffe_blocks(5, 3, False),
    50: caffe_blocks(2, 3, False) + caffe_blocks(3, 4, False) + caffe_blocks(4, 6, False)
    + caffe_blocks(5, 3, False),
    101: caffe_blocks(2, 3, False) + caffe_blocks(3, 4, True) + caffe_blocks(4, 23, True)
    + caffe_blocks(5, 3, False),
    152: caffe_blocks(2, 3, False) + caffe_blocks(3, 8, True) + caffe_blocks(4, 36, True)
    + caffe_blocks(5, 3, False),
}


@pytest.fixture(scope="module", params=[
    d if d < 101 else pytest.param(d, marks=pytest.mark.slow) for d in sorted(EXPECTED_BLOCKS)])
def model(request, full_size):
    # Read only; shared with the stride tests below (tests/conftest.py, built once).
    return full_size.structure("create_resnet", (64, 64, 3), 10, request.param)


def test_block_names_follow_the_caffe_models(model):
    depth = int(model.name.removeprefix("resnet"))
    sums = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert sums == EXPECTED_BLOCKS[depth]


def test_no_automatic_names_and_stem_names(model):
    assert automatic_names(model) == []
    assert [layer.name for layer in model.layers[:7]] == [
        "input", "conv1_pad", "conv1", "bn_conv1", "conv1_relu", "pool1_pad", "pool1"]
    assert len({layer.name for layer in model.layers}) == len(model.layers)


def test_every_layer_of_a_block_has_its_caffe_name(model):
    depth = int(model.name.removeprefix("resnet"))
    names = {layer.name for layer in model.layers}
    last = EXPECTED_BLOCKS[depth][-1]  # res5c or res5b
    expected = {f"{last}_branch2a", f"bn{last[3:]}_branch2a", f"{last}_branch2a_relu",
                f"{last}_branch2b", f"bn{last[3:]}_branch2b", last, f"{last}_relu"}
    assert expected <= names
    has_2c = kresnet.DEPTHS[depth].block_type == "bottleneck"
    assert (f"{last}_branch2c" in names) == has_2c
    assert (f"{last}_branch2b_relu" in names) == has_2c
    # Projections only where the shape changes: first blocks of stages 3-5 (and 2 for
    # bottlenecks, whose stage 2 widens 64 -> 256 channels).
    projections = sorted(n for n in names if n.endswith("_branch1") and n.startswith("res"))
    first = ["res2a_branch1"] if has_2c else []
    assert projections == first + ["res3a_branch1", "res4a_branch1", "res5a_branch1"]
    assert {f"bn{p[3:]}" for p in projections} <= names


def test_caffe_landmarks():
    """The labels kresnet plans for the original Caffe ResNet-101/152 (facts of the
    prototxts, written out here), not the table above."""
    def sums(depth):
        return [f"res{b.stage}{b.label}" for stage in kresnet.plan(depth).stages
                for b in stage]

    assert sums(101)[-4] == "res4b22" and sums(101)[3:7] == ["res3a", "res3b1", "res3b2",
                                                              "res3b3"]
    assert "res3b7" in sums(152) and "res4b35" in sums(152) and sums(152)[-3] == "res5a"


def test_stride_sits_on_the_first_1x1_of_a_bottleneck(full_size):
    model = full_size.structure("create_resnet", (64, 64, 3), 10, 50)
    assert model.get_layer("res3a_branch2a").strides == (2, 2)
    assert model.get_layer("res3a_branch2a").kernel_size == (1, 1)
    assert model.get_layer("res3a_branch2b").strides == (1, 1)
    assert model.get_layer("res3a_branch1").strides == (2, 2)
    assert model.get_layer("res2a_branch2a").strides == (1, 1)


def test_basic_block_strides_its_first_3x3_with_explicit_padding(full_size):
    model = full_size.structure("create_resnet", (64, 64, 3), 10, 18)
    conv = model.get_layer("res3a_branch2a")
    assert (conv.kernel_size, conv.strides, conv.padding) == ((3, 3), (2, 2), "valid")
    assert model.get_layer("res3a_branch2a_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("res3a_branch2b").padding == "same"


def test_custom_stage_lists_use_letters_up_to_26_blocks():
    model = kresnet.create_resnet((32, 32, 3), 10, blocks=(26, 27), block_type="basic",
                                  head=None, **SHAPE_ONLY)
    sums = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert sums[:26] == [f"res2{c}" for c in LETTERS]
    assert sums[26:] == ["res3a"] + [f"res3b{i}" for i in range(1, 27)]
    assert model.name == "resnet108"


def test_name_prefix_lets_two_resnets_share_one_graph():
    inputs = keras.Input((64, 64, 3), name="image")
    left = kresnet.create_resnet(input_tensor=inputs, depth=18, head=None, pooling="avg",
                                 name_prefix="left_", **SHAPE_ONLY)
    right = kresnet.create_resnet(input_tensor=inputs, depth=18, head=None, pooling="max",
                                  name_prefix="right_", **SHAPE_ONLY)
    both = keras.layers.Concatenate(name="both")([left.output, right.output])
    model = keras.Model(inputs, both)
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    assert all(n.startswith(("left_", "right_")) for n in names if n not in ("image", "both"))
    assert "left_res2a_branch2a" in names and "right_bn5b_branch2b" in names
    assert (left.name, right.name) == ("left_resnet18", "right_resnet18")
    assert model.output_shape == (None, 1024)


def test_a_repeated_name_upstream_is_refused_before_building(count_layers):
    inputs = keras.Input((64, 64, 3))
    first = kresnet.create_resnet(input_tensor=inputs, depth=18, blocks=(1,), head=None)
    before = count_layers()
    with pytest.raises(ValueError, match="repeat layer name.*conv1"):
        kresnet.create_resnet(input_tensor=first.output, depth=18, blocks=(1,), head=None)
    assert count_layers() == before
    second = kresnet.create_resnet(input_tensor=first.output, blocks=(1,), head=None,
                                   name_prefix="top_")
    assert second.get_layer("top_res2a").name == "top_res2a"


def test_a_repeated_block_is_refused_before_building(count_layers):
    x = keras.Input((16, 16, 32))
    y = kresnet.identity_block(x, 3, [8, 8, 32], stage=2, block="b")
    before = count_layers()
    with pytest.raises(ValueError, match=r"stage=2 block='b'.*res2b"):
        kresnet.identity_block(y, 3, [8, 8, 32], stage=2, block="b")
    assert count_layers() == before


def test_naming_functions():
    assert naming.stage_labels(3) == ["a", "b", "c"]
    assert naming.stage_labels(3, numbered=True) == ["a", "b1", "b2"]
    assert naming.stage_labels(28)[-1] == "b27"
    names = naming.BlockNames(4, "b22", "x_")
    assert (names.conv("2c"), names.bn("1"), names.out) == (
        "x_res4b22_branch2c", "x_bn4b22_branch1", "x_res4b22_relu")
    assert {"conv1_pad", "conv1", "bn_conv1", "conv1_relu", "pool1_pad", "pool1", "conv1a",
            "bn_conv1c", "bn_post", "post_relu"} <= set(naming.StemNames().all())


@pytest.mark.parametrize("prefix", ["", "x_", "a.b-"])
def test_parse_reads_back_every_name_naming_gives(prefix):
    for stage, block in ((2, "a"), (4, "b22"), (13, "c")):
        names = naming.BlockNames(stage, block, prefix)
        for name in names.all():
            parsed = naming.parse(name, prefix)
            assert parsed is not None, name
            assert (parsed.part, parsed.stage, parsed.block, parsed.prefix) == \
                ("block", stage, block, prefix), name
        assert naming.parse(names.conv("2b"), prefix).role == "conv"
        assert naming.parse(names.bn("1"), prefix).branch == "1"
        assert naming.parse(names.pad("2a"), prefix).role == "pad"
        assert naming.parse(names.shortcut("zeros"), prefix).role == "zeros"
        assert naming.parse(names.se("excite"), prefix).role == "se_excite"
        assert naming.parse(names.preact_relu, prefix).role == "preact_relu"
        assert (naming.parse(names.sum, prefix).role, naming.parse(names.out, prefix).role) \
            == ("sum", "out")
    for name in naming.StemNames(prefix).all():
        assert naming.parse(name, prefix).part in ("stem", "post"), name
    for name in naming.HeadNames(prefix).all(7):
        assert naming.parse(name, prefix).part == "head", name
    assert naming.parse(naming.HeadNames(prefix).fc(7), prefix).classes == 7
    assert naming.parse(naming.input_name(prefix), prefix).part == "input"
    for other in ("conv2d", "dense_1", f"{prefix}res", f"{prefix}bn_conv1_relu"):
        assert naming.parse(other, prefix) is None, other


def test_every_layer_of_every_kind_of_model_parses():
    for model in (kresnet.build("resnet50d", input_shape=(64, 64, 3), name_prefix="p_",
                                **SHAPE_ONLY),
                  kresnet.build("resnet20", **SHAPE_ONLY), kresnet.create_resnet(
                      (64, 64, 3), depth=18, preact=True, se_ratio=0.25, shortcut="C",
                      **SHAPE_ONLY)):
        prefix = naming.prefixes(layer.name for layer in model.layers)[0]
        unread = [layer.name for layer in model.layers
                  if naming.parse(layer.name, prefix) is None]
        assert unread == [], (model.name, unread)
