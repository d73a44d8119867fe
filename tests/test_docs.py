"""The README and docs stay true: their Python examples run, and every public name is documented."""

import glob
import os
import re

import pytest

import kresnet
from tests.conftest import ROOT

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("path", DOCS, ids=os.path.basename)
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
