"""The README and docs stay true: their Python examples run, and every public name is documented."""

import glob
import os
import re
import runpy
import shutil
from xml.etree import ElementTree

import pytest

import kresnet
from tests.conftest import ROOT

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
# The README's examples are quick; the pages' build many models (slow tier).
DOC_CASES = [path if path.endswith("README.md") else pytest.param(path, marks=pytest.mark.slow)
             for path in DOCS]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("path", DOC_CASES, ids=os.path.basename)
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(FENCE.findall(open(path, encoding="utf-8").read())):
        exec(compile(block, f"{os.path.basename(path)}[python block {i + 1}]", "exec"),
             namespace)


def test_readme_starts_with_the_two_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert text.index("```bash") < text.index("\n## ")


def test_every_public_name_has_an_api_entry_and_a_docstring_example():
    api = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    for name in kresnet.__all__:
        assert f"### `{name}`" in api, f"docs/api.md has no entry for {name}"
        obj = getattr(kresnet, name)
        if callable(obj):
            assert ">>> " in (obj.__doc__ or ""), f"{name} has no example in its docstring"


def _table(text, first_header):
    """The rows of the Markdown table whose header starts with ``| {first_header} |``, as
    dictionaries keyed by the header cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


def test_presets_table_lists_every_preset_with_its_count():
    text = open(os.path.join(ROOT, "docs", "variants.md"), encoding="utf-8").read()
    rows = _table(text, "Preset")
    names = [row["Preset"].strip("`") for row in rows]
    assert len(names) == len(set(names)), "a preset is listed twice"
    assert sorted(names) == sorted(kresnet.PRESETS), "docs/variants.md: presets table"
    for row, name in zip(rows, names):
        preset = kresnet.PRESETS[name]
        params = "—" if preset.params is None else f"{preset.params:,}"
        assert row["Parameters"] == params, name
        assert row["Counted"] == preset.counted, name
        options = ", ".join(f"{key}={value!r}" for key, value in preset.options.items())
        assert row["Options"] == f"`{options}`", name


IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", DOCS, ids=os.path.basename)
def test_every_image_link_points_to_a_file(path):
    folder = os.path.dirname(path)
    for link in IMAGE.findall(open(path, encoding="utf-8").read()):
        assert os.path.isfile(os.path.join(folder, link)), f"{path}: no file for {link}"


# Each figure of scripts/make_figures.py and one layer name that must appear in it.
FIGURES = {
    "basic_identity_block": "res2b_branch2b",
    "basic_conv_block": "res3a_branch2a_pad",
    "bottleneck_identity_block": "res2b_branch2c",
    "bottleneck_conv_block": "res3a_branch1",
    "bottleneck_stride_3x3_block": "res3a_branch2b_pad",
    "preact_block": "bn3a_preact",
    "se_block": "res2b_se_scale",
    "shortcut_a_block": "res3a_branch1_zeros",
    "shortcut_c_block": "res2b_branch1",
    "shortcut_avg_block": "res3a_branch1_pool",
    "resnext_block": "res2b_branch2b",
    "drop_path_block": "res2b_drop_path",
    "blur_block": "res3a_branch2b_aa_stride",
    "eca_block": "res2b_eca_conv",
    "stem_classic": "pool1",
    "stem_deep": "conv1c",
    "stem_cifar": "conv1_relu",
    "resnet18": "fc1000",
    "resnet152_blocks": "res4b35",
}


@pytest.mark.slow
def test_make_figures_writes_every_figure(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz' dot is not installed")
    script = runpy.run_path(os.path.join(ROOT, "scripts", "make_figures.py"),
                            run_name="make_figures")
    assert script["main"](["--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(f"{name}.svg" for name in FIGURES)
    for name, layer in FIGURES.items():
        svg = ElementTree.parse(tmp_path / f"{name}.svg").getroot()
        text = " ".join(svg.itertext())
        assert name in text and layer in text, name
    committed = os.path.join(ROOT, "docs", "figures")
    assert sorted(os.listdir(committed)) == sorted(os.listdir(tmp_path))


def test_api_signatures_match_the_code():
    """docs/api.md shows each function's signature in a ```text block under its heading."""
    import inspect

    api = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    for name in kresnet.__all__:
        obj = getattr(kresnet, name)
        if not callable(obj):
            continue
        section = api.split(f"### `{name}`", 1)[1]
        block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
        documented = " ".join(block.split())
        actual = f"{name}{inspect.signature(obj)}"
        assert actual.replace(" ", "") in documented.replace(" ", ""), (name, actual)


SVGS = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.svg"), recursive=True))


@pytest.mark.parametrize("path", SVGS, ids=os.path.basename)
def test_every_svg_under_docs_shows_its_whole_drawing(path, tmp_path):
    """Rendered as a reader sees it (librsvg), every figure is whole: its drawing lies in
    its viewBox and its last node (the final ReLU, the head) is drawn at the bottom."""
    from tests.test_plot import check_svg_is_whole  # noqa: PLC0415

    check_svg_is_whole(path, tmp_folder=str(tmp_path))


def test_there_are_svgs_under_docs():
    assert len(SVGS) >= len(FIGURES)


def test_generated_parts_of_the_api_page_are_up_to_date():
    """docs/api.md's signature blocks and options table are what scripts/make_docs.py
    writes from the code: adding an option or changing a signature without running it
    fails here."""
    script = runpy.run_path(os.path.join(ROOT, "scripts", "make_docs.py"), run_name="make_docs")
    assert script["stale"]() == [], "docs/api.md is stale: run python scripts/make_docs.py"
    table = script["options_table"]()
    from kresnet.config import FIELDS  # noqa: PLC0415

    for name, spec in FIELDS.items():
        assert f"| `{name}` | `{spec.default!r}` |" in table, name
        assert spec.metadata["doc"] in table, name


def test_the_docs_check_fails_on_a_stale_page(tmp_path):
    script = runpy.run_path(os.path.join(ROOT, "scripts", "make_docs.py"), run_name="make_docs")
    api = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    stale = api.replace("| `groups` | `1` |", "| `groups` | `2` |", 1)
    stale = stale.replace("plan(depth: int = 50,", "plan(depth: int = 18,", 1)
    path = tmp_path / "api.md"
    path.write_text(stale, encoding="utf-8")
    assert script["stale"](str(path)) == ["signature of plan", "options table"]
    assert script["main"](["--check", "--path", str(path)]) == 1
    assert script["main"](["--path", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == api


def test_weights_page_lists_every_published_weight_with_its_facts():
    text = open(os.path.join(ROOT, "docs", "weights.md"), encoding="utf-8").read()
    table = text[text.index("<!-- weights:begin -->"):text.index("<!-- weights:end -->")]
    rows = _table(table, "name")
    listed = {row["name"].split("`")[1]: row for row in rows}
    assert sorted(listed) == sorted(kresnet.WEIGHTS) and len(rows) == len(listed)
    for name, row in listed.items():
        entry = kresnet.WEIGHTS[name]
        assert (row["source"], float(row["top-1 %"]), row["licence"]) == (
            entry.source, entry.top1, entry.licence), name
        assert row["input (test)"].split()[0] == str(entry.input_size), name
        assert ("(default)" in row["name"]) == (
            kresnet.registry.DEFAULT_TAGS.get(entry.arch) == entry.tag), name
        assert entry.mode in row["preprocessing"], name
