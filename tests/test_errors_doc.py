"""docs/errors.md stays true: every argument of every public function has a row, and every
row's bad example raises the documented error with the documented message."""

import ast
import inspect
import os

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import ROOT
from tests.test_files import FILE_CASES, FILE_MESSAGES

# One pytest-xdist worker runs this file: its module fixtures are made once.
pytestmark = pytest.mark.xdist_group("test_errors_doc")

DOC = os.path.join(ROOT, "docs", "errors.md")
DASH = "—"


def _cell(text):
    """A cell without its code-span backticks: ``` `` `a` b `` ``` -> ``"`a` b"``."""
    text = text.strip()
    for fence in ("``", "`"):
        if len(text) >= 2 * len(fence) and text.startswith(fence) and text.endswith(fence):
            return text[len(fence):-len(fence)].strip()
    return text


def tables(text):
    """Every Markdown table of ``text`` as a list of dicts keyed by its header cells."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                assert len(cells) == len(header), lines[i]
                rows.append(dict(zip(header, cells)))
                i += 1
            found.append(rows)
        i += 1
    return found


TEXT = open(DOC, encoding="utf-8").read()
ARGUMENT_ROWS = [row for table in tables(TEXT) if "argument" in table[0] for row in table]
FILE_ROWS = [row for table in tables(TEXT) if "case" in table[0] for row in table]


def _functions(row):
    return [name.strip() for name in row["function"].split(",")]


def _parameters(function):
    """Argument names of a public function as the table writes them (``**options``)."""
    return [f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name
            for p in inspect.signature(getattr(kresnet, function)).parameters.values()]


def test_every_argument_of_every_public_function_has_a_row():
    documented = {(function, row["argument"]) for row in ARGUMENT_ROWS
                  for function in _functions(row)}
    public = {(name, parameter) for name in kresnet.__all__
              if callable(getattr(kresnet, name)) and not isinstance(getattr(kresnet, name), type)
              for parameter in _parameters(name)}
    assert sorted(public - documented) == [], "arguments without a row in docs/errors.md"
    assert sorted(documented - public) == [], "rows for arguments that do not exist"


def test_every_row_says_what_it_accepts_or_gives_an_example():
    first = {}
    for row in ARGUMENT_ROWS:
        for function in _functions(row):
            first.setdefault((function, row["argument"]), row)
    for key, row in first.items():
        assert row["accepts"], f"{key}: the first row must say what the argument accepts"
    for row in ARGUMENT_ROWS:
        if row["bad example"] == DASH:
            assert "not checked" in row["accepts"] and row["error"] == DASH, row
        else:
            assert row["error"] in ("ValueError", "TypeError"), row


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    """The names the bad examples use, and small valid arguments of each function."""
    folder = tmp_path_factory.mktemp("errors_doc")
    tiny = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    x = keras.Input((4,), name="x")
    plain = keras.Model(x, keras.layers.Dense(2, name="out")(x), name="plain")
    saved = kresnet.save(tiny, folder / "tiny.keras")
    weights = str(folder / "tiny.weights.h5")
    tiny.save_weights(weights)
    image = keras.Input((32, 32, 3), name="image")
    halves = [kresnet.create_resnet(input_tensor=image, n_classes=3, blocks=(1,),
                                    include_top=False, pooling="avg", name_prefix=prefix)
              for prefix in ("a_", "b_")]
    two = keras.Model(image, keras.layers.Concatenate(name="join")(
        [half.output for half in halves]), name="two")
    names = {
        "keras": keras, "np": np, "kresnet": kresnet, "tiny": tiny, "plain": plain, "two": two,
        "free": kresnet.create_resnet((None, None, 3), 3, blocks=(1,)),
        "tensor": keras.Input((8, 8, 32)),
        "stem_output": kresnet.do_first_conv(keras.Input((32, 32, 3))),
        "block_output": kresnet.identity_block(keras.Input((8, 8, 16)), 3, (4, 4, 16), 2, "a"),
    }
    small = dict(blocks=(1,), widths=(4,), stem_width=4)
    block = dict(input_tensor=keras.Input((8, 8, 16)), middle_kernel_size=3,
                 filters=(4, 4, 16), stage=2, block="a")
    base = {
        "create_resnet": dict(in_shape=(32, 32, 3), **small),
        "build": dict(name="resnet18", input_shape=(32, 32, 3), **small),
        "plan": {},
        "do_first_conv": dict(input_tensor=keras.Input((32, 32, 3))),
        "conv_block": block, "identity_block": block,
        "count_macs": dict(model=tiny), "describe": dict(model=tiny),
        "config_of": dict(model=tiny),
        "feature_maps": dict(model=tiny), "feature_strides": dict(model=tiny),
        "from_keras_applications": dict(model=tiny),
        "to_keras_applications": dict(model=tiny),
        "transfer_weights": dict(source=tiny, target=tiny),
        "load_weights": dict(model=tiny, path=weights),
        "plot_model": dict(model=tiny, path=str(folder / "tiny.dot")),
        "plot_blocks": dict(model=tiny, path=str(folder / "tiny.dot")),
        "export": dict(model=tiny, path=str(folder / "net"), format="savedmodel"),
        "fold_batchnorm": dict(model=tiny),
        "optimize": dict(model=tiny),
        "save": dict(model=tiny, path=str(folder / "again.keras")),
        "load": dict(path=saved),
        "inspect": dict(path=saved),
        "from_torch": dict(source=kresnet.to_torch(kresnet.build(
            "resnet18", input_shape=(32, 32, 3), classes=3, widths=(8, 16, 32, 64),
            **kresnet.pytorch.TORCH_OPTIONS)), arch="resnet18", input_shape=(32, 32, 3),
            widths=(8, 16, 32, 64)),
        "to_torch": dict(model=tiny),
        "preprocess_input": dict(x=np.zeros((1, 4, 4, 3), "float32"),
                                 data_format="channels_last"),
        "pretrained": dict(name="resnet18d.ra2_in1k", input_shape=(32, 32, 3)),
        "freeze": dict(model=tiny),
    }
    for depth in (18, 34, 50, 101, 152):
        base[f"ResNet{depth}"] = dict(input_shape=(32, 32, 3), **small)
    return names, base


def _keywords(example, names):
    """``"a=1, b=x"`` -> ``{"a": 1, "b": names["x"]}``."""
    call = ast.parse(f"f({example})", mode="eval").body
    assert not call.args, example
    return {k.arg: eval(compile(ast.Expression(k.value), "<example>", "eval"), dict(names))
            for k in call.keywords}


CASES = [(function, row) for row in ARGUMENT_ROWS if row["bad example"] != DASH
         for function in _functions(row)]


@pytest.mark.parametrize("function,row", CASES,
                         ids=[f"{f}-{r['bad example'].strip('`')[:40]}" for f, r in CASES])
def test_each_bad_example_raises_the_documented_error(function, row, namespace):
    names, base = namespace
    bad = _keywords(_cell(row["bad example"]), names)
    error = {"ValueError": ValueError, "TypeError": TypeError}[row["error"]]
    with pytest.raises(error) as raised:
        getattr(kresnet, function)(**{**base[function], **bad})
    fragment = _cell(row["message fragment"])
    assert fragment in str(raised.value), (fragment, str(raised.value))


def test_the_files_table_lists_every_broken_file_with_its_message():
    documented = {row["case"]: _cell(row["message fragment"]) for row in FILE_ROWS}
    assert documented == FILE_MESSAGES
    assert sorted(documented) == sorted(FILE_CASES)

