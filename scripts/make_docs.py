"""Regenerate the parts of docs/api.md that are read off the code.

Two kinds of text in docs/api.md are written by this script, never by hand:

- the ```text signature block right under the ``### `NAME` `` heading of every callable
  in ``kresnet.__all__``: ``NAME{inspect.signature(obj)}``, type hints and defaults
  included, wrapped between parameters;
- the options table between ``<!-- options:begin -->`` and ``<!-- options:end -->``: one
  row per field of :class:`kresnet.ResNetConfig` (``kresnet.config.FIELDS``), grouped as
  declared (network, block, head, layer, model), with its default, the values it allows
  and its doc line, all taken from the declaration (``kresnet.config.option``).

Usage, from the repository root::

    python scripts/make_docs.py            # rewrite docs/api.md in place
    python scripts/make_docs.py --check    # exit 1 and name what is stale; change nothing

tests/test_docs.py runs the check, so adding an option or changing a signature without
running this script fails the tests. From Python::

    import runpy
    script = runpy.run_path("scripts/make_docs.py", run_name="make_docs")
    script["stale"]()        # [] when docs/api.md is up to date
    script["signature_text"]("plan", kresnet.plan)
    # 'plan(depth: int = 50, **options) -> kresnet.config.Plan'
"""

import argparse
import inspect
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kresnet, not an installed one

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import kresnet  # noqa: E402
from kresnet import config as config_module  # noqa: E402

API = os.path.join(ROOT, "docs", "api.md")
BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"
WIDTH = 92
#: The groups of kresnet.config.option, in the order of the table, with their titles.
GROUPS = {
    config_module.NETWORK: "Network: which blocks, how wide",
    config_module.BLOCK: "Blocks: how each residual block is built",
    config_module.HEAD: "Head: what follows the last stage",
    config_module.LAYER: "Layers: settings of every conv, batch norm and dense layer",
    config_module.MODEL: "Model: its input and name",
}


def _split_parameters(text):
    """The top-level comma-separated pieces of a parameter list (brackets and quotes kept)."""
    pieces, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        pieces.append(current.strip())
    return pieces


def signature_text(name, obj, width=WIDTH):
    """``NAME(parameters) -> return``, as ``inspect.signature`` writes it, wrapped between
    parameters so that no line is longer than ``width`` where a parameter allows."""
    signature = inspect.signature(obj)
    text = str(signature)
    returns = ""
    if signature.return_annotation is not inspect.Signature.empty:
        text, returns = text.rsplit(" -> ", 1)
        returns = " -> " + returns
    inner = text[1:-1]
    pieces = _split_parameters(inner)
    indent = " " * (len(name) + 1)
    lines, line = [], f"{name}("
    for i, piece in enumerate(pieces):
        piece += "," if i < len(pieces) - 1 else ")" + returns
        if i == 0:
            line += piece
        elif len(line) + 1 + len(piece) <= width:
            line += " " + piece
        else:
            lines.append(line)
            line = indent + piece
    if not pieces:
        line += ")" + returns
    lines.append(line)
    return "\n".join(lines)


def _cell(text):
    return str(text).replace("|", "\\|")


def options_table():
    """The Markdown of the options table, one table per group of the declarations."""
    out = []
    fields = config_module.FIELDS
    for group, title in GROUPS.items():
        names = [n for n, spec in fields.items() if spec.metadata["group"] == group]
        out += [f"**{title}**", "", "| option | default | allowed | what it does |",
                "|---|---|---|---|"]
        for name in names:
            spec = fields[name]
            out.append(f"| `{name}` | `{_cell(repr(spec.default))}` | "
                       f"{_cell(spec.metadata['allowed'])} | {_cell(spec.metadata['doc'])} |")
        out.append("")
    unknown = {spec.metadata["group"] for spec in fields.values()} - set(GROUPS)
    if unknown:
        raise ValueError(f"Options of group(s) {sorted(unknown)} have no title in GROUPS.")
    return "\n".join(out).rstrip("\n")


def _heading(name):
    return re.compile(rf"^### `{re.escape(name)}`\n\n```text\n(.*?)```", re.S | re.M)


def render(text):
    """``text`` (docs/api.md) with every generated part rewritten, and the names of the
    headings that have no signature block to rewrite."""
    missing = []
    for name in kresnet.__all__:
        obj = getattr(kresnet, name)
        if not callable(obj):
            continue
        pattern = _heading(name)
        block = signature_text(name, obj)
        text, count = pattern.subn(
            lambda match: f"### `{name}`\n\n```text\n{block}\n```", text, count=1)
        if not count:
            missing.append(f"signature of {name} (no ```text block right under its heading)")
    if BEGIN not in text or END not in text:
        missing.append(f"options table (no {BEGIN} ... {END} markers)")
    else:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = f"{head}{BEGIN}\n{options_table()}\n{END}{tail}"
    return text, missing


def stale(path=API):
    """What is out of date in ``path``: ``[]``, or one line per stale generated part."""
    text = open(path, encoding="utf-8").read()
    fresh, missing = render(text)
    found = list(missing)
    for name in kresnet.__all__:
        old = _heading(name).search(text)
        if callable(getattr(kresnet, name)) and old is not None and \
                old.group(1) != _heading(name).search(fresh).group(1):
            found.append(f"signature of {name}")
    if BEGIN in text and END in text:
        if text.split(BEGIN, 1)[1].split(END, 1)[0] != \
                fresh.split(BEGIN, 1)[1].split(END, 1)[0]:
            found.append("options table")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 naming what is stale, without writing")
    parser.add_argument("--path", default=API, help="the file (default: docs/api.md)")
    args = parser.parse_args(argv)
    if args.check:
        found = stale(args.path)
        for line in found:
            print(f"{os.path.relpath(args.path, ROOT)}: stale: {line}")
        if found:
            print("Run: python scripts/make_docs.py")
        return 1 if found else 0
    text = open(args.path, encoding="utf-8").read()
    fresh, missing = render(text)
    for line in missing:
        print(f"{os.path.relpath(args.path, ROOT)}: cannot write: {line}", file=sys.stderr)
    if fresh != text:
        with open(args.path, "w", encoding="utf-8") as file:
            file.write(fresh)
        print(f"wrote {os.path.relpath(args.path, ROOT)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
